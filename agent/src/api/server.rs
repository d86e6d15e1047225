//! The daemon side of the socket: accept loop, one thread per connection (bounded), dispatch to
//! the lifecycle.
//!
//! Only root and the agent's own uid may talk to it: the socket file is 0600 from the moment
//! it appears, and every peer's credentials (SO_PEERCRED) are checked. A connection has
//! `CLIENT_TIME` in total for everything that waits on its client (reading the request,
//! writing progress and the reply, draining; the final line and drain at least `FINAL_GRACE`),
//! so slow clients cannot hold the slots.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Progress, ReplyLine, Request, MAX_REQUEST_BYTES};
use crate::fault::{Fault, FaultCode};
use crate::lifecycle::{Agent, OpResult};
use crate::model::RequestedState;
use crate::package::network::NetworkArg;

const MAX_CONNECTIONS: usize = 16;
/// Everything a connection waits on its client for, in total (not per read or write).
pub const CLIENT_TIME: Duration = Duration::from_secs(10);
/// What the final line and the drain get when the client used up CLIENT_TIME already (so a
/// client that was too slow still learns why), at most.
const FINAL_GRACE: Duration = Duration::from_secs(1);
/// Unread input drained after the reply (so closing does not reset it away), at most.
const DRAIN_BYTES: u64 = 1 << 20;

/// Binds `path` with mode 0600, replacing a stale socket file but refusing to steal a live
/// one. The socket is bound in a fresh 0700 directory beside `path`, narrowed, then renamed
/// into place: it is never reachable with the mode the umask would give.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() && UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{}: another cpevisord is listening", path.display()),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a socket path", path.display()),
        )
    })?;
    let staging = private_staging_dir(dir, &name.to_string_lossy())?;
    let staged = staging.join("s");
    let bound = UnixListener::bind(&staged).and_then(|l| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        // rename(2) replaces a stale socket (or a link) at `path` itself, never its target.
        std::fs::rename(&staged, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    bound.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// A new 0700 directory in `dir` (mkdir fails on anything already there, so a planted one is
/// never used).
fn private_staging_dir(dir: &Path, name: &str) -> io::Result<PathBuf> {
    let mut last = None;
    for i in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = dir.join(format!(".{name}.{}.{nanos}.{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no staging directory")))
}

/// The peer's uid, from the credentials the kernel recorded at connect(2).
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred we own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Root and the agent's own uid.
fn peer_allowed(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Answers a connection that is not served with one fault line, without ever blocking the
/// accept loop (a fresh socket's buffer takes the line; if not, the client gets nothing).
fn turn_away(stream: UnixStream, fault: Fault) {
    let mut bytes = serde_json::to_vec(&ReplyLine::fault(fault)).unwrap_or_default();
    bytes.push(b'\n');
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(&bytes);
    }
}

/// Serves until the listener fails (the daemon exits on SIGTERM from another thread).
pub fn serve(listener: UnixListener, agent: Arc<Agent>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                crate::log_warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match peer_uid(&stream) {
            Ok(uid) if peer_allowed(uid) => {}
            Ok(uid) => {
                crate::log_warn!(
                    "api: refused a connection from uid {uid} (only root and the agent's uid)"
                );
                turn_away(
                    stream,
                    Fault::new(
                        FaultCode::PermissionDenied,
                        format!("permission denied: uid {uid} may not use the agent's socket"),
                    ),
                );
                continue;
            }
            Err(e) => {
                crate::log_warn!("api: refused a connection: no peer credentials: {e}");
                continue;
            }
        }
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            turn_away(
                stream,
                Fault::new(
                    FaultCode::ResourcesExceeded,
                    format!("busy: {MAX_CONNECTIONS} requests already in progress"),
                ),
            );
            continue;
        }
        let agent = agent.clone();
        let active2 = active.clone();
        let spawned = std::thread::Builder::new()
            .name("api".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                handle(Client::new(stream, CLIENT_TIME), &agent);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One connection and what is left of its `CLIENT_TIME`: every read and write waits at most
/// that long and uses it up.
struct Client {
    stream: UnixStream,
    left: Duration,
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("the client used up its {CLIENT_TIME:?}"),
    )
}

impl Client {
    fn new(stream: UnixStream, budget: Duration) -> Client {
        Client {
            stream,
            left: budget,
        }
    }

    /// Runs one read or write with the remaining time as its timeout, and charges it.
    fn io<T>(
        &mut self,
        write: bool,
        op: impl FnOnce(&mut UnixStream) -> io::Result<T>,
    ) -> io::Result<T> {
        if self.left.is_zero() {
            return Err(timed_out());
        }
        let set = if write {
            self.stream.set_write_timeout(Some(self.left))
        } else {
            self.stream.set_read_timeout(Some(self.left))
        };
        set?;
        let t0 = Instant::now();
        let r = op(&mut self.stream);
        self.left = self.left.saturating_sub(t0.elapsed());
        match r {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.left = Duration::ZERO;
                Err(timed_out())
            }
            r => r,
        }
    }

    fn send(&mut self, line: &ReplyLine) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match self.io(true, |s| s.write(rest)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads unread input after the reply (at most DRAIN_BYTES, within the time left), so
    /// closing does not reset the connection before the client read the reply.
    fn drain(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut buf = [0u8; 4096];
        let mut drained = 0u64;
        while drained < DRAIN_BYTES {
            match self.io(false, |s| s.read(&mut buf)) {
                Ok(0) => return,
                Ok(n) => drained += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

fn bad_request(msg: String) -> Fault {
    Fault::new(FaultCode::InvalidArguments, msg)
}

/// Reads one request line of at most MAX_REQUEST_BYTES within the client's time.
fn read_request(client: &mut Client) -> Result<Request, Fault> {
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match client.io(false, |s| s.read(&mut buf)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(bad_request(format!(
                    "no complete request within {CLIENT_TIME:?}"
                )));
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

fn handle(mut client: Client, agent: &Agent) {
    let reply = match read_request(&mut client) {
        Ok(req) => {
            crate::log_debug!("request {req:?}");
            dispatch(req, agent, &mut client)
        }
        Err(f) => Err(f),
    };
    let line = match reply {
        Ok(v) => ReplyLine::ok(v),
        Err(f) => ReplyLine::fault(f),
    };
    client.left = client.left.max(FINAL_GRACE);
    if client.send(&line).is_ok() {
        client.drain();
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn dispatch(req: Request, agent: &Agent, client: &mut Client) -> OpResult<Value> {
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
            writable = client.send(&line).is_ok();
        }
    };
    match req {
        Request::Install {
            url,
            digest,
            env,
            network,
        } => {
            let network = network.as_deref().map(NetworkArg::parse).transpose()?;
            agent
                .install_with(
                    &url,
                    digest.as_deref(),
                    env.as_deref(),
                    network.as_ref(),
                    &mut progress,
                )
                .map(to_value)
        }
        Request::Update { uuid, url, network } => {
            let network = network.as_deref().map(NetworkArg::parse).transpose()?;
            agent
                .update_with(&uuid, url.as_deref(), network.as_ref(), &mut progress)
                .map(to_value)
        }
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
                Err(Fault::new(
                    FaultCode::InvalidDeploymentUnitState,
                    format!(
                        "no DeploymentUnit or ExecutionUnit {:?}",
                        id.chars().take(64).collect::<String>()
                    ),
                ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cpv-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_socket_is_0600_replaces_a_stale_one_and_refuses_to_steal_a_live_one() {
        let dir = scratch("bind");
        let path = dir.join("d.sock");
        let live = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        // Nothing left of the staging directory.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let e = bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(live);
        let _again = bind(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn peers_are_known_by_uid() {
        let (a, _b) = UnixStream::pair().unwrap();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(peer_uid(&a).unwrap(), me);
        assert!(peer_allowed(0) && peer_allowed(me));
        if me != 65534 {
            assert!(!peer_allowed(65534));
        }
    }

    /// A client trickling a byte at a time is cut off when its whole budget is spent, although
    /// no single read waits long.
    #[test]
    fn the_budget_is_for_the_whole_connection_not_per_read() {
        let (server, mut client) = UnixStream::pair().unwrap();
        let trickle = std::thread::spawn(move || {
            let _ = client.write_all(b"{\"op\":");
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(25));
                if client.write_all(b" ").is_err() {
                    break;
                }
            }
        });
        let mut c = Client::new(server, Duration::from_millis(300));
        let t0 = Instant::now();
        let err = read_request(&mut c).unwrap_err();
        let took = t0.elapsed();
        assert!(
            err.message.contains("no complete request"),
            "{}",
            err.message
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(900), "{took:?}");
        // Spent: a further write fails at once instead of waiting.
        assert_eq!(
            c.send(&ReplyLine::ok(Value::Null)).unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        drop(c);
        trickle.join().unwrap();
    }
}
