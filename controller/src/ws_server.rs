//! The controller as a USP WebSocket server (TR-369: agents connect to controllers). Every
//! agent must present a client certificate from the CA (mutual TLS) and announce its Endpoint
//! ID in the handshake (`bbf-usp-protocol; eid=`); a certificate carrying
//! `urn:bbf:usp:id:` URIs must name that ID. Records received are fed to the engine's inbound
//! channel (only those whose `from_id` is the connection's ID); the engine's sends for an agent
//! go to that agent's connection ("topic" = the agent's Endpoint ID).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpevisor_usp::record::{decode_record, Limits};
use cpevisor_usp::ws::{self, WsConfig, WsWriter};

use super::engine::{Inbound, Sender};

/// Most agent connections at once (each holds a reader thread).
pub const MAX_CONNECTIONS: usize = 1024;
/// Handshakes in progress at once: slow or silent clients cannot pile up threads.
const MAX_HANDSHAKES: usize = 32;
const THREAD_STACK: usize = 256 * 1024;
/// Largest Record taken from an agent.
const MAX_MESSAGE: usize = 1 << 20;

/// Where the engine's Records for each agent go.
#[derive(Default)]
struct Table {
    /// Endpoint ID -> (connection number, writer).
    agents: HashMap<String, (u64, WsWriter)>,
    next: u64,
}

/// A listening WebSocket server; dropping it closes every connection.
pub struct WsServer {
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    /// The address the server listens on (its port when 0 was asked for).
    pub local_addr: std::net::SocketAddr,
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

impl WsServer {
    /// Listens on `addr`; received Records go to `inbound`. `tls` None: plain TCP (tests
    /// and private links only).
    pub fn start(
        addr: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
        controller_id: &str,
        inbound: SyncSender<Inbound>,
    ) -> Result<WsServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("--ws-listen {addr}: {e}"))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| format!("--ws-listen {addr}: {e}"))?;
        let table = Arc::new(Mutex::new(Table::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(WsConfig {
            max_message: MAX_MESSAGE,
            endpoint_id: Some(controller_id.to_string()),
            ..WsConfig::default()
        });
        let shared = Shared {
            table: table.clone(),
            stop: stop.clone(),
            tls,
            config,
            controller_id: controller_id.to_string(),
            inbound,
            handshakes: Arc::new(AtomicUsize::new(0)),
        };
        std::thread::Builder::new()
            .name("usp-ws-accept".into())
            .stack_size(THREAD_STACK)
            .spawn(move || shared.accept_loop(listener))
            .map_err(|e| format!("cannot start the WebSocket server: {e}"))?;
        Ok(WsServer {
            table,
            stop,
            local_addr,
        })
    }

    /// The engine's way out: a Record for agent `to` goes on its connection.
    pub fn sender(&self) -> Sender {
        let table = self.table.clone();
        Box::new(move |to: &str, bytes: Vec<u8>| {
            let writer = lock(&table).agents.get(to).map(|(_, w)| w.clone());
            match writer {
                Some(w) => w.send(&bytes).map_err(|e| e.to_string()),
                None => Err(format!("agent {to} is not connected")),
            }
        })
    }

    /// Whether agent `agent` (endpoint ID) is connected now.
    pub fn is_connected(&self, agent: &str) -> bool {
        lock(&self.table).agents.contains_key(agent)
    }

    /// Waits until every one of `agents` is connected or `deadline` passes.
    pub fn wait_for(&self, agents: &[String], deadline: Instant) {
        while Instant::now() < deadline && !agents.iter().all(|a| self.is_connected(a)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes every connection (close 1001 "going away") and stops accepting.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        let mut t = lock(&self.table);
        for (_, (_, w)) in t.agents.drain() {
            let _ = w.close(1001, "controller leaving");
        }
        // Wake the accept loop so that it sees the stop.
        let _ = std::net::TcpStream::connect_timeout(&self.local_addr, Duration::from_millis(200));
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Clone)]
struct Shared {
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
    tls: Option<Arc<rustls::ServerConfig>>,
    config: Arc<WsConfig>,
    controller_id: String,
    inbound: SyncSender<Inbound>,
    handshakes: Arc<AtomicUsize>,
}

impl Shared {
    fn accept_loop(self, listener: TcpListener) {
        for tcp in listener.incoming() {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let Ok(tcp) = tcp else { continue };
            if self.handshakes.fetch_add(1, Ordering::AcqRel) >= MAX_HANDSHAKES
                || lock(&self.table).agents.len() >= MAX_CONNECTIONS
            {
                self.handshakes.fetch_sub(1, Ordering::AcqRel);
                continue; // dropped: the agent backs off and retries
            }
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("usp-ws-conn".into())
                .stack_size(THREAD_STACK)
                .spawn(move || me.serve(tcp));
            if spawned.is_err() {
                self.handshakes.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    fn serve(self, tcp: std::net::TcpStream) {
        let opened = ws::accept(tcp, self.tls.as_ref(), &self.config);
        self.handshakes.fetch_sub(1, Ordering::AcqRel);
        let conn = match opened {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cpevisor-controller: WebSocket from an agent refused: {e}");
                return;
            }
        };
        let Some(eid) = conn.peer_endpoint_id.clone() else {
            let _ = conn
                .writer
                .close(1008, "announce your Endpoint ID (bbf-usp-protocol; eid=)");
            return;
        };
        if let Some(peer) = &conn.peer {
            let claimed: Vec<&str> = peer
                .uris
                .iter()
                .filter_map(|u| u.strip_prefix("urn:bbf:usp:id:"))
                .collect();
            if !claimed.is_empty() && !claimed.contains(&eid.as_str()) {
                eprintln!(
                    "cpevisor-controller: agent announced {eid:?} but its certificate names {claimed:?}"
                );
                let _ = conn
                    .writer
                    .close(1008, "Endpoint ID not in the certificate");
                return;
            }
        }
        let id = {
            let mut t = lock(&self.table);
            t.next += 1;
            let id = t.next;
            // A reconnecting agent replaces its old connection.
            if let Some((_, old)) = t.agents.insert(eid.clone(), (id, conn.writer.clone())) {
                old.abort();
            }
            id
        };
        let mut reader = conn.reader;
        let limits = Limits {
            max_record_bytes: MAX_MESSAGE,
            ..Limits::default()
        };
        while let Ok(payload) = reader.recv() {
            // Only the connection's own agent may speak on it.
            match decode_record(&payload, &self.controller_id, &limits) {
                Ok(r) if r.from_id == eid => {}
                _ => continue,
            }
            let inb = Inbound {
                payload,
                response_topic: None,
            };
            if self.inbound.send(inb).is_err() {
                break;
            }
        }
        let mut t = lock(&self.table);
        if t.agents.get(&eid).is_some_and(|(n, _)| *n == id) {
            t.agents.remove(&eid);
        }
    }
}
