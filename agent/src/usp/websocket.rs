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

use super::endpoint::{Endpoint, Outgoing};
use super::file::{UspFile, WsTarget};
use super::session::{Counters, Session, Wakeup, THREAD_STACK, TICK};
use crate::lifecycle::Agent;

/// Records kept for the controller while the connection is down (oldest dropped first).
const MAX_PENDING: usize = 256;
/// Received Records waiting for the endpoint: the reader stops reading when this is full.
const INBOX: usize = 64;
/// A ping this often keeps NATs open and proves the controller is there...
const PING_EVERY: Duration = Duration::from_secs(30);
/// ...and a connection silent for this long (no pong either) is dead: reconnect.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);

/// Starts the session thread for `endpoint` as `file` (with its `websocket` object) says.
pub fn start(
    endpoint: Endpoint,
    agent: Arc<Agent>,
    file: &UspFile,
    target: &WsTarget,
) -> Result<Session, String> {
    target.validate()?;
    let name = target
        .server_name
        .clone()
        .unwrap_or_else(|| target.host.clone());
    let tls = file.mqtt.tls(name)?;
    if tls.is_none() {
        crate::log_warn!(
            "usp: no ca_file: WebSocket to {}:{} without TLS",
            target.host,
            target.port
        );
    }
    let ws_config = WsConfig {
        max_message: file.limits().max_record_bytes,
        endpoint_id: Some(file.mqtt.endpoint_id.clone()),
        ..WsConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Counters::default());
    let mut runner = Runner {
        endpoint,
        wakeup: Wakeup::new(agent.events().subscribe()),
        target: target.clone(),
        tls,
        ws_config,
        backoff: target.backoff(),
        pending: VecDeque::new(),
        stop: stop.clone(),
        stats: stats.clone(),
    };
    Session::spawn("usp-ws-session", stop, stats, move || runner.run())
}

struct Runner {
    endpoint: Endpoint,
    wakeup: Wakeup,
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
        self.wakeup.polled();
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
                    self.wakeup.polled();
                }
                Ok(Err(e)) => return e.to_string(),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return "reader ended".into(),
            }
            if self.wakeup.due() {
                let notes = self.endpoint.notifications();
                self.queue(notes);
                self.wakeup.polled();
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
        if self.wakeup.woke() {
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
