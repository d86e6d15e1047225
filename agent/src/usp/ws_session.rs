//! One USP endpoint on a WebSocket (TR-369 "WebSocket Binding"): the agent is the client. It
//! connects to the controller's `wss://host:port/path` with subprotocol `v1.usp`, presents its
//! client certificate, verifies the controller's server certificate against `ca_file`, and
//! announces its Endpoint ID in the handshake. Each binary message is a Record, handed to
//! [`Endpoint::handle_record`] with the controller certificate's CN as the transport identity
//! (TLS is end to end here, so a controller entry's `identity` is checked for real); replies and
//! notifications go back on the same connection. A lost connection is retried with the MQTT
//! client's capped, jittered back-off; `on_connect` (`Boot!`, OnBoardRequest) runs on every
//! connect. Notifications made while disconnected wait in a bounded queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpevisor_usp::mqtt::backoff::Backoff;
use cpevisor_usp::ws::{self, WsConfig, WsError, WsWriter};
use serde::Deserialize;

use super::endpoint::{Endpoint, Outgoing};
use super::session::{Counters, Session, UspFile};
use crate::lifecycle::Agent;

/// How long the loop waits for a message before it looks at the agent's events.
const TICK: Duration = Duration::from_millis(100);
/// Even without events, the data model is polled this often.
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Records kept for the controller while the connection is down (oldest dropped first).
const MAX_PENDING: usize = 256;
/// Received Records waiting for the endpoint: the reader stops reading when this is full.
const INBOX: usize = 64;
const THREAD_STACK: usize = 256 * 1024;
/// A ping this often keeps NATs open and proves the controller is there...
const PING_EVERY: Duration = Duration::from_secs(30);
/// ...and a connection silent for this long (no pong either) is dead: reconnect.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);

/// The `websocket` object of the `--usp` file: where the controller's WebSocket server is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsTarget {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_path")]
    pub path: String,
    /// The name the controller's certificate must carry (default: `host`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Reconnect back-off (TR-369 SessionRetryMinimumWaitInterval, doubling per attempt up
    /// to the maximum), in milliseconds: defaults 1000 and 60000.
    #[serde(default)]
    pub retry_min_ms: Option<u64>,
    #[serde(default)]
    pub retry_max_ms: Option<u64>,
}

fn default_port() -> u16 {
    443
}

fn default_path() -> String {
    "/usp".into()
}

impl WsTarget {
    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() || self.host.len() > 253 {
            return Err("websocket.host must be 1..253 bytes".into());
        }
        if self.port == 0 {
            return Err("websocket.port must not be 0".into());
        }
        if !self.path.starts_with('/')
            || self.path.len() > 1024
            || self.path.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(format!(
                "websocket.path {:?}: must start with '/', without spaces or control characters",
                self.path
            ));
        }
        self.backoff()
            .check()
            .map_err(|e| format!("websocket retry: {e}"))
    }

    pub fn backoff(&self) -> Backoff {
        let d = Backoff::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        Backoff {
            min: ms(self.retry_min_ms, d.min),
            max: ms(self.retry_max_ms, d.max),
            ..d
        }
    }
}

/// Starts the session thread for `endpoint` as `file` (with its `websocket` object) says.
pub fn start(
    endpoint: Endpoint,
    agent: Arc<Agent>,
    file: &UspFile,
    target: &WsTarget,
) -> Result<Session, String> {
    target.validate()?;
    let tls = match &file.ca_file {
        Some(ca) => {
            let cert = match (&file.cert_file, &file.key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            let config = cpevisor_usp::tls::client_config(ca, cert).map_err(|e| e.to_string())?;
            let name = target
                .server_name
                .clone()
                .unwrap_or_else(|| target.host.clone());
            Some((config, name))
        }
        None => {
            crate::log_warn!(
                "usp: no ca_file: WebSocket to {}:{} without TLS",
                target.host,
                target.port
            );
            None
        }
    };
    let ws_config = WsConfig {
        max_message: file.limits().max_record_bytes,
        endpoint_id: Some(file.endpoint_id.clone()),
        ..WsConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Counters::default());
    let mut runner = Runner {
        endpoint,
        agent_events: agent.events().subscribe(),
        target: target.clone(),
        tls,
        ws_config,
        backoff: target.backoff(),
        pending: VecDeque::new(),
        stop: stop.clone(),
        stats: stats.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("usp-ws-session".into())
        .stack_size(THREAD_STACK)
        .spawn(move || runner.run())
        .map_err(|e| format!("cannot start the USP session thread: {e}"))?;
    Ok(Session::from_parts(stop, thread, stats))
}

struct Runner {
    endpoint: Endpoint,
    agent_events: Receiver<(u64, crate::model::Event)>,
    target: WsTarget,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    ws_config: WsConfig,
    backoff: Backoff,
    pending: VecDeque<Outgoing>,
    stop: Arc<AtomicBool>,
    stats: Arc<Counters>,
}

/// One open connection as the loop sees it.
struct Link {
    writer: WsWriter,
    inbox: Receiver<Result<Vec<u8>, WsError>>,
    /// The controller certificate's CN: the identity its Records are checked against.
    identity: Option<String>,
    /// The controller's Endpoint ID from the handshake; Records for others are not sent here.
    peer_eid: Option<String>,
}

impl Runner {
    fn run(&mut self) {
        let mut rng = self.backoff.rng();
        let mut attempt = 0u32;
        while !self.stopped() {
            match self.open() {
                Ok(link) => {
                    attempt = 0;
                    self.stats.bump(|s| s.connects += 1);
                    crate::log_info!(
                        "usp: WebSocket to {}:{}{} open (controller {:?})",
                        self.target.host,
                        self.target.port,
                        self.target.path,
                        link.peer_eid
                    );
                    let reason = self.serve(&link);
                    link.writer.abort();
                    if self.stopped() {
                        break;
                    }
                    crate::log_warn!("usp: WebSocket lost ({reason})");
                }
                Err(e) => crate::log_warn!("usp: WebSocket connect: {e}"),
            }
            attempt = attempt.saturating_add(1);
            let wait = self.backoff.delay(attempt, &mut rng);
            let until = Instant::now() + wait;
            // Wait in ticks: a stop must not wait for a long back-off.
            while !self.stopped() && Instant::now() < until {
                self.poll_while_down();
                std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn open(&mut self) -> Result<Link, WsError> {
        let tls = self.tls.as_ref().map(|(c, n)| (c, n.as_str()));
        let conn = ws::connect(
            &self.target.host,
            self.target.port,
            &self.target.path,
            tls,
            &self.ws_config,
        )?;
        let identity = conn.peer.as_ref().and_then(|p| p.common_name.clone());
        let (tx, inbox) = mpsc::sync_channel(INBOX);
        let mut reader = conn.reader;
        reader.set_read_timeout(Some(SILENCE_LIMIT))?;
        // The reader blocks in recv; it ends when the connection does (the loop aborts it).
        std::thread::Builder::new()
            .name("usp-ws-reader".into())
            .stack_size(THREAD_STACK)
            .spawn(move || loop {
                let got = reader.recv();
                let end = got.is_err();
                if tx.send(got).is_err() || end {
                    break;
                }
            })
            .map_err(WsError::Io)?;
        Ok(Link {
            writer: conn.writer,
            inbox,
            identity,
            peer_eid: conn.peer_endpoint_id,
        })
    }

    /// Runs one connection until it ends or the session stops; returns why it ended.
    fn serve(&mut self, link: &Link) -> String {
        // R-MTP.6/R-MTP.8: the WebSocket Connect Record first, ahead of anything queued.
        for (_, bytes) in self
            .endpoint
            .websocket_connect_records(link.peer_eid.as_deref())
        {
            if let Err(e) = link.writer.send(&bytes) {
                return e.to_string();
            }
            self.stats.bump(|s| s.sent += 1);
        }
        let boot = self.endpoint.on_connect();
        self.queue(boot);
        if let Err(e) = self.flush(link) {
            return e;
        }
        let mut last_poll = Instant::now();
        let mut last_ping = Instant::now();
        while !self.stopped() {
            if last_ping.elapsed() >= PING_EVERY {
                if let Err(e) = link.writer.ping(b"cpevisor") {
                    return e.to_string();
                }
                last_ping = Instant::now();
            }
            match link.inbox.recv_timeout(TICK) {
                Ok(Ok(bytes)) => {
                    self.stats.bump(|s| s.received += 1);
                    let out = self
                        .endpoint
                        .handle_record(&bytes, link.identity.as_deref());
                    self.queue(out);
                    // A request may have changed what subscribers watch.
                    let notes = self.endpoint.notifications();
                    self.queue(notes);
                    last_poll = Instant::now();
                }
                Ok(Err(e)) => return e.to_string(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return "reader ended".into(),
            }
            let woke = self.agent_events.try_iter().count() > 0;
            if woke || last_poll.elapsed() >= IDLE_POLL {
                let notes = self.endpoint.notifications();
                self.queue(notes);
                last_poll = Instant::now();
            }
            if let Err(e) = self.flush(link) {
                return e;
            }
        }
        let _ = link.writer.close(1000, "agent stopping");
        "stopped".into()
    }

    /// Keeps the data model's notifications while there is no connection (bounded).
    fn poll_while_down(&mut self) {
        if self.agent_events.try_iter().count() > 0 {
            let notes = self.endpoint.notifications();
            self.queue(notes);
        }
    }

    fn queue(&mut self, out: Vec<Outgoing>) {
        for o in out {
            if self.pending.len() >= MAX_PENDING {
                self.pending.pop_front();
                self.stats.bump(|s| s.send_dropped += 1);
            }
            self.pending.push_back(o);
        }
    }

    /// Sends what is queued for this connection's controller; an error ends the connection
    /// (the unsent Record stays queued for the next one).
    fn flush(&mut self, link: &Link) -> Result<(), String> {
        while let Some((to, bytes)) = self.pending.pop_front() {
            if link.peer_eid.as_deref().is_some_and(|eid| eid != to) {
                // Another controller: it is not on this connection.
                self.stats.bump(|s| s.send_dropped += 1);
                crate::log_debug!("usp: record for {to} dropped: not on this WebSocket");
                continue;
            }
            if let Err(e) = link.writer.send(&bytes) {
                self.pending.push_front((to, bytes));
                return Err(e.to_string());
            }
            self.stats.bump(|s| s.sent += 1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked() {
        let t: WsTarget = serde_json::from_str(r#"{"host":"10.0.2.2"}"#).unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/usp"));
        assert!(t.validate().is_ok());
        let bad = |j: &str| {
            serde_json::from_str::<WsTarget>(j)
                .map_err(|e| e.to_string())
                .and_then(|t| t.validate())
                .unwrap_err()
        };
        assert!(bad(r#"{"host":""}"#).contains("host"));
        assert!(bad(r#"{"host":"h","port":0}"#).contains("port"));
        assert!(bad(r#"{"host":"h","path":"usp"}"#).contains("path"));
        assert!(bad(r#"{"host":"h","path":"/a b"}"#).contains("path"));
        assert!(bad(r#"{"host":"h","bogus":1}"#).contains("unknown field"));
        assert!(bad(r#"{"host":"h","retry_min_ms":0}"#).contains("retry"));
        assert!(bad(r#"{"host":"h","retry_min_ms":5000,"retry_max_ms":10}"#).contains("retry"));
        let t: WsTarget =
            serde_json::from_str(r#"{"host":"h","retry_min_ms":200,"retry_max_ms":500}"#).unwrap();
        let b = t.backoff();
        assert_eq!(
            (b.min, b.max),
            (Duration::from_millis(200), Duration::from_millis(500))
        );
    }
}
