//! The daemon side of the socket: accept loop, one thread per connection (bounded), dispatch to
//! the lifecycle.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Progress, ReplyLine, Request, MAX_REQUEST_BYTES};
use crate::fault::FaultCode;
use crate::lifecycle::{Agent, OpResult};
use crate::model::{EventFault, RequestedState};

const MAX_CONNECTIONS: usize = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `path`, replacing a stale socket file but refusing to steal a live one.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another cpevisord is listening", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

/// Serves until the listener fails (the daemon exits on SIGTERM from another thread).
pub fn serve(listener: UnixListener, agent: Arc<Agent>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                crate::log_warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let _ = send(
                &mut stream,
                &ReplyLine::fault(EventFault {
                    code: FaultCode::ResourcesExceeded.code(),
                    message: format!("busy: {MAX_CONNECTIONS} requests already in progress"),
                }),
            );
            continue;
        }
        let agent = agent.clone();
        let active2 = active.clone();
        let spawned = std::thread::Builder::new()
            .name("api".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                handle(stream, &agent);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn send(stream: &mut UnixStream, line: &ReplyLine) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

fn bad_request(msg: String) -> EventFault {
    EventFault {
        code: FaultCode::InvalidArguments.code(),
        message: msg,
    }
}

/// Reads one request line of at most MAX_REQUEST_BYTES within REQUEST_TIMEOUT in total (a
/// client trickling bytes cannot hold its thread longer).
fn read_request(mut stream: &UnixStream) -> Result<Request, EventFault> {
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(bad_request(format!(
                "no complete request within {REQUEST_TIMEOUT:?}"
            )));
        }
        let _ = stream.set_read_timeout(Some(left));
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue; // the deadline check above answers
            }
            Err(e) => return Err(bad_request(format!("reading the request: {e}"))),
        };
        if n == 0 {
            return Err(bad_request("request not terminated by a newline".into()));
        }
        let chunk = &buf[..n];
        if let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&chunk[..pos]);
            if line.len() > MAX_REQUEST_BYTES {
                break;
            }
            return serde_json::from_slice(&line)
                .map_err(|e| bad_request(format!("malformed request: {e}")));
        }
        line.extend_from_slice(chunk);
        if line.len() > MAX_REQUEST_BYTES {
            break;
        }
    }
    Err(bad_request(format!(
        "request longer than {MAX_REQUEST_BYTES} bytes"
    )))
}

fn handle(mut stream: UnixStream, agent: &Agent) {
    let reply = match read_request(&stream) {
        Ok(req) => {
            crate::log_debug!("request {req:?}");
            dispatch(req, agent, &mut stream)
        }
        Err(f) => Err(f),
    };
    let line = match reply {
        Ok(v) => ReplyLine::ok(v),
        Err(f) => ReplyLine::fault(f),
    };
    let _ = send(&mut stream, &line);
    // Closing with unread input would reset the connection and the client could lose the
    // reply (an oversized request): drain a bounded amount first.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = io::copy(&mut (&stream).take(1 << 20), &mut io::sink());
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn dispatch(req: Request, agent: &Agent, stream: &mut UnixStream) -> OpResult<Value> {
    // Progress lines at most every 64 KiB so a fast download does not flood the socket;
    // a client that stopped reading only loses progress, never the operation.
    let mut last = 0u64;
    let mut writable = true;
    let mut progress = |bytes: u64, total: Option<u64>| {
        if writable && (bytes >= last + (64 << 10) || Some(bytes) == total) {
            last = bytes;
            let line = ReplyLine::Progress {
                progress: Progress { bytes, total },
            };
            writable = send(stream, &line).is_ok();
        }
    };
    match req {
        Request::Install { url, digest, env } => agent
            .install(&url, digest.as_deref(), env.as_deref(), &mut progress)
            .map(to_value),
        Request::Update { uuid, url } => agent
            .update(&uuid, url.as_deref(), &mut progress)
            .map(to_value),
        Request::Uninstall { uuid, keep_data } => agent
            .uninstall(&uuid, keep_data)
            .map(|()| json!({ "uuid": uuid })),
        Request::List {} => Ok(to_value(agent.snapshot())),
        Request::Status { id } => {
            let snap = agent.snapshot();
            if let Some(du) = snap.deployment_units.iter().find(|d| d.uuid == id) {
                let eus: Vec<_> = snap
                    .execution_units
                    .iter()
                    .filter(|e| e.du_uuid == id)
                    .collect();
                Ok(json!({ "deployment_unit": du, "execution_units": eus }))
            } else if let Some(eu) = snap.execution_units.iter().find(|e| e.eu_id == id) {
                Ok(json!({ "execution_unit": eu }))
            } else {
                Err(EventFault {
                    code: FaultCode::InvalidDeploymentUnitState.code(),
                    message: format!(
                        "no DeploymentUnit or ExecutionUnit {:?}",
                        id.chars().take(64).collect::<String>()
                    ),
                })
            }
        }
        Request::Start { eu } => agent
            .set_requested_state(&eu, RequestedState::Active)
            .map(to_value),
        Request::Stop { eu } => agent
            .set_requested_state(&eu, RequestedState::Idle)
            .map(to_value),
        Request::Restart { eu } => agent.restart(&eu).map(to_value),
        Request::Logs { eu } => agent.logs(&eu).map(|t| json!({ "eu": eu, "log": t })),
        Request::Events { after } => {
            let events: Vec<Value> = agent
                .events()
                .since(after)
                .into_iter()
                .map(|(seq, ev)| {
                    let mut v = to_value(ev);
                    if let Value::Object(m) = &mut v {
                        m.insert("seq".into(), json!(seq));
                    }
                    v
                })
                .collect();
            Ok(Value::Array(events))
        }
        Request::Reset { env } => agent.reset_env(&env).map(|u| json!({ "uninstalled": u })),
        Request::SetEnvEnable { env, enable } => agent.set_env_enable(&env, enable).map(to_value),
    }
}
