//! A fleet of thousands of agents in one process, for the controller's scale test
//! (usp_fleet_scale.rs, `make bench` group `fleet`).
//!
//! What is real, per agent: its own `Agent` on its own state dir (the real install path:
//! download from the package server, signature and digest checks, unpack into its store, its
//! state files), the agent's own USP `DataModel` and `Endpoint` over it (every Get, Add,
//! Operate, OperateResp, OperationComplete, `DUStateChange!`, ValueChange, `Boot!`,
//! OnBoardRequest and MQTTConnect Record is the agent's code), its own EndpointID, client id and
//! MQTT 5 session with TLS (client certificate) to the broker, subscribed to its own topic and
//! `<topic>/+` with No Local, publishing at QoS 1 with Content Type `usp.msg` and its topic as
//! Response Topic, as `cpevisor_agent::usp::mqtt` does.
//!
//! What is simulated: the transport's threads. The agent's MQTT client
//! (`cpevisor_usp::mqtt::MqttClient`) runs a session thread, a connection thread and a reader
//! thread per session, 30,000 threads for 10,000 agents where this machine's pid_max is 32,768;
//! here `WORKERS` threads each drive their share of the sessions with rustls on non-blocking
//! sockets and epoll, with the same codec (`cpevisor_usp::mqtt::codec`) and the same routing as
//! `agent/src/usp/mqtt.rs` (replies to the request's Response Topic, notifications to the
//! controller's configured topic, greeting Records first on each connection). Differences that
//! the controller could observe only in timing: reconnects wait a fixed 1-2 s (the agent's
//! back-off starts at 1 s), PINGREQ every 45 s of silence (keep-alive 60 s), no flow control
//! beyond the broker's Receive Maximum (a simulated agent has a handful of Records out at once).
//! The apps of the packages are not started (the ExecEnv's `process` runner would add a
//! process and two threads per agent): the controller's rollout needs the new version
//! installed, which the agents report.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpevisor_agent::lifecycle::config::AgentConfig;
use cpevisor_agent::lifecycle::Agent;
use cpevisor_agent::model::Event as AgentEvent;
use cpevisor_agent::usp::config::{DeviceInfoConfig, Role};
use cpevisor_agent::usp::dm::DataModel;
use cpevisor_agent::usp::endpoint::{Endpoint, Outgoing};
use cpevisor_agent::usp::file::{ControllerEntry, UspFile};
use cpevisor_usp::broker::{Identity, TestBroker};
use cpevisor_usp::mqtt::codec::{self, Connect, Incoming, Publish, Subscribe};
use cpevisor_usp::mqtt::{
    is_usp_content_type, valid_topic, MqttConfig, MqttSettings, USP_CONTENT_TYPE,
};
use rustls::ClientConnection;

/// Threads driving the sessions.
pub const WORKERS: usize = 4;
/// How often a worker looks at its agents' events (the agent's session TICK).
const TICK: Duration = Duration::from_millis(100);
/// Notifications are asked for at least this often (the agent's IDLE_POLL).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// PINGREQ after this long without sending (keep-alive 60 s).
const PING_AFTER: Duration = Duration::from_secs(45);
/// Connections a worker has between TCP connect and SUBACK at once: a fleet that connects all
/// at once queues TLS handshakes at the broker until they time out.
const MAX_OPENING: usize = 24;
/// Most reply topics learned from controllers without a configured one (the agent's bound).
const MAX_LEARNED_TOPICS: usize = 64;
/// Largest packet accepted from the broker (the agent's default Record bound and overhead).
const MAX_PACKET: usize = 1 << 20;

/// What the whole fleet did; counters only grow, `up` is the sessions connected now.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub up: AtomicU64,
    pub connects: AtomicU64,
    /// USP Records published by the agents (replies, notifications, greetings).
    pub sent: AtomicU64,
    /// USP Records received by the agents.
    pub received: AtomicU64,
    /// Connections lost or refused.
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// The running fleet: its agents and the workers carrying their sessions.
pub struct SimFleet {
    pub agents: Vec<(String, Arc<Agent>)>,
    pub stats: Arc<FleetStats>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl SimFleet {
    /// Opens an agent per id under `root/agents/` with the agent config at `config`, each managed
    /// by `ctl_id` (FullAccess) and connecting to `broker` with `cert`, driven by `WORKERS`
    /// threads. Returns once every agent is open; the sessions connect in the background.
    pub fn start(
        root: &Path,
        config: &Path,
        broker: &TestBroker,
        cert: &Identity,
        ctl_id: &str,
        ids: &[String],
    ) -> Result<SimFleet, String> {
        let cfg = AgentConfig::load(config).map_err(|f| format!("{config:?}: {f}"))?;
        let file_for = |id: &str| UspFile {
            mqtt: MqttSettings {
                broker_host: broker.host().into(),
                broker_port: Some(broker.port()),
                ca_file: Some(broker.ca()),
                cert_file: Some(cert.cert.clone()),
                key_file: Some(cert.key.clone()),
                server_name: None,
                endpoint_id: id.into(),
                topic: None,
            },
            controllers: vec![ControllerEntry {
                endpoint_id: ctl_id.into(),
                topic: None,
                role: Role::FullAccess,
                identity: None,
            }],
            device_info: DeviceInfoConfig {
                manufacturer: "acme".into(),
                model_name: "cpe-sim".into(),
                serial_number: id.into(),
                ..DeviceInfoConfig::default()
            },
            keep_alive_s: 60,
            max_record_bytes: None,
            reboot_command: None,
            websocket: None,
        };
        // One TLS client configuration for all (the fleet shares one certificate, as
        // usp_fleet.rs does; loading it 10,000 times would only measure PEM parsing).
        let base = file_for(ids.first().ok_or("no agents")?).mqtt_config()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FleetStats::default());
        let (opened_tx, opened_rx) = channel();
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let mine: Vec<(usize, UspFile)> = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % WORKERS == w)
                .map(|(i, id)| (i, file_for(id)))
                .collect();
            let (cfg, base, root) = (cfg.clone(), base.clone(), root.to_path_buf());
            let (stop, stats, opened) = (stop.clone(), stats.clone(), opened_tx.clone());
            let t = std::thread::Builder::new()
                .name(format!("sim-fleet-{w}"))
                .spawn(move || {
                    let mut sims = Vec::with_capacity(mine.len());
                    for (i, file) in mine {
                        match Sim::open(&root, &cfg, &base, file) {
                            Ok(sim) => {
                                let _ = opened.send((i, Ok(sim.agent.clone())));
                                sims.push(sim);
                            }
                            Err(e) => {
                                let _ = opened.send((i, Err(e)));
                                return;
                            }
                        }
                    }
                    drop(opened);
                    match Worker::new(sims, base, stats.clone()) {
                        Ok(mut worker) => worker.run(&stop),
                        Err(e) => stats.fail(e),
                    }
                })
                .map_err(|e| format!("worker thread: {e}"))?;
            workers.push(t);
        }
        drop(opened_tx);
        let mut agents: Vec<Option<Arc<Agent>>> = vec![None; ids.len()];
        for (i, agent) in opened_rx {
            agents[i] = Some(agent?);
        }
        let agents = agents
            .into_iter()
            .zip(ids)
            .map(|(a, id)| Ok((id.clone(), a.ok_or(format!("{id} not opened"))?)))
            .collect::<Result<_, String>>()?;
        Ok(SimFleet {
            agents,
            stats,
            stop,
            workers,
        })
    }

    /// Sessions connected and subscribed now.
    pub fn up(&self) -> u64 {
        self.stats.up.load(Ordering::Relaxed)
    }

    /// Records published by the agents plus those they received so far.
    pub fn messages(&self) -> (u64, u64) {
        (
            self.stats.sent.load(Ordering::Relaxed),
            self.stats.received.load(Ordering::Relaxed),
        )
    }

    /// Disconnects every session (MQTT DISCONNECT) and shuts the agents down.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.workers.drain(..) {
            let _ = t.join();
        }
        for (_, a) in &self.agents {
            a.shutdown();
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.workers.drain(..) {
            let _ = t.join();
        }
    }
}

impl FleetStats {
    fn fail(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting to connect (first time, or after a lost connection).
    Down,
    /// CONNECT written, waiting for CONNACK.
    Connecting,
    /// SUBSCRIBEs out, this many SUBACKs missing.
    Subscribing(u8),
    Up,
}

/// One connection: the socket and its TLS state, and what was read but not yet parsed.
struct Conn {
    sock: TcpStream,
    tls: ClientConnection,
    inbuf: Vec<u8>,
    /// Registered for EPOLLOUT (the socket refused some of what TLS had to send).
    want_out: bool,
}

/// One simulated agent: the agent's own USP endpoint on its own session.
struct Sim {
    agent: Arc<Agent>,
    endpoint: Endpoint,
    events: Receiver<(u64, AgentEvent)>,
    own_topic: String,
    mqtt: MqttConfig,
    /// Controllers' topics by endpoint ID, from the configuration.
    configured: HashMap<String, String>,
    /// Reply topics of controllers without a configured one (as the agent's `Routes`).
    learned: HashMap<String, String>,
    conn: Option<Conn>,
    phase: Phase,
    next_pid: u16,
    /// The server's Maximum Packet Size.
    send_max: u32,
    last_poll: Instant,
    last_out: Instant,
}

impl Sim {
    fn open(
        root: &Path,
        cfg: &AgentConfig,
        base: &MqttConfig,
        file: UspFile,
    ) -> Result<Sim, String> {
        let id = file.mqtt.endpoint_id.clone();
        let dir = root.join("agents").join(id.replace(':', "_"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
        let agent = Arc::new(Agent::open(&dir, cfg.clone()).map_err(|f| format!("{id}: {f}"))?);
        file.validate()?;
        let dm = DataModel::open(agent.clone(), file.usp_config(), &dir, file.reboot_hook())
            .map_err(|f| format!("{id}: usp data model: {f}"))?;
        let mut endpoint = Endpoint::new(dm);
        endpoint.bind_unnamed_controllers_to_bare_topic();
        let own_topic = file.topic();
        let configured = endpoint
            .data_model()
            .config()
            .controllers
            .iter()
            .filter_map(|c| Some((c.endpoint_id.clone(), c.reply_to.clone()?)))
            .collect();
        let mut mqtt = base.clone().with_usp_endpoint_id(&id);
        mqtt.client_id = id;
        mqtt.subscriptions = vec![own_topic.clone(), format!("{own_topic}/+")];
        // Subscribed before the session starts: no agent event is missed.
        let events = agent.events().subscribe();
        Ok(Sim {
            agent,
            endpoint,
            events,
            own_topic,
            mqtt,
            configured,
            learned: HashMap::new(),
            conn: None,
            phase: Phase::Down,
            next_pid: 0,
            send_max: MAX_PACKET as u32,
            last_poll: Instant::now(),
            last_out: Instant::now(),
        })
    }

    fn pid(&mut self) -> u16 {
        self.next_pid = self.next_pid.wrapping_add(1).max(1);
        self.next_pid
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let conn = self.conn.as_mut().ok_or("not connected")?;
        conn.tls
            .writer()
            .write_all(bytes)
            .map_err(|e| e.to_string())?;
        self.last_out = Instant::now();
        Ok(())
    }

    /// One Record at QoS 1 with the USP Content Type and our topic as Response Topic.
    fn publish(&mut self, topic: String, payload: Vec<u8>, stats: &FleetStats) {
        let p = Publish {
            topic,
            qos: 1,
            packet_id: Some(self.pid()),
            content_type: Some(USP_CONTENT_TYPE.into()),
            response_topic: Some(self.own_topic.clone()),
            payload,
            ..Publish::default()
        };
        match codec::encode_publish(&p, self.send_max) {
            Ok(bytes) if self.write(&bytes).is_ok() => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ => stats.fail(format!(
                "{}: a Record to {} not sent",
                self.own_topic, p.topic
            )),
        }
    }

    /// As the agent's `Runner::send_all`: a reply to the request's Response Topic (learned
    /// for a controller with no configured topic), anything else to the controller's topic.
    fn send_all(&mut self, out: Vec<Outgoing>, reply_topic: Option<&str>, stats: &FleetStats) {
        for (to, bytes) in out {
            let topic = match reply_topic {
                Some(t) => {
                    if !self.configured.contains_key(&to)
                        && (self.learned.len() < MAX_LEARNED_TOPICS
                            || self.learned.contains_key(&to))
                    {
                        self.learned.insert(to.clone(), t.to_string());
                    }
                    t.to_string()
                }
                None => match self.configured.get(&to).or_else(|| self.learned.get(&to)) {
                    Some(t) => t.clone(),
                    None => continue,
                },
            };
            self.publish(topic, bytes, stats);
        }
    }

    fn notify(&mut self, stats: &FleetStats) {
        let notes = self.endpoint.notifications();
        self.send_all(notes, None, stats);
        self.last_poll = Instant::now();
    }

    fn on_packet(&mut self, packet: Incoming, stats: &FleetStats) -> Result<(), String> {
        match packet {
            Incoming::ConnAck(ack) => {
                if ack.reason_code != 0 {
                    return Err(format!("CONNACK {}", codec::reason_name(ack.reason_code)));
                }
                if let Some(max) = ack.maximum_packet_size {
                    self.send_max = max;
                }
                let filters = self.mqtt.subscriptions.clone();
                for filter in &filters {
                    let bytes = codec::encode_subscribe(&Subscribe {
                        packet_id: self.pid(),
                        filter: filter.clone(),
                        max_qos: 1,
                        no_local: true,
                    })
                    .map_err(|e| e.to_string())?;
                    self.write(&bytes)?;
                }
                self.phase = Phase::Subscribing(filters.len() as u8);
            }
            Incoming::SubAck(ack) => {
                if let Some(code) = ack.reason_codes.iter().find(|c| **c >= 0x80) {
                    return Err(format!("SUBACK {}", codec::reason_name(*code)));
                }
                if let Phase::Subscribing(n) = self.phase {
                    if n > 1 {
                        self.phase = Phase::Subscribing(n - 1);
                        return Ok(());
                    }
                    self.phase = Phase::Up;
                    stats.up.fetch_add(1, Ordering::Relaxed);
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    // The client's greeting (MQTTConnect Records), then the endpoint's
                    // `Boot!` / OnBoardRequest, as the agent's session on `Connected`.
                    for (to, payload) in self.endpoint.mqtt_connect_records(&self.own_topic) {
                        if let Some(topic) = self.configured.get(&to).cloned() {
                            self.publish(topic, payload, stats);
                        }
                    }
                    let out = self.endpoint.on_connect();
                    self.send_all(out, None, stats);
                }
            }
            Incoming::Publish(m) => {
                if let Some(id) = m.packet_id.filter(|_| m.qos == 1) {
                    self.write(&codec::encode_puback(id, 0))?;
                }
                stats.received.fetch_add(1, Ordering::Relaxed);
                if !is_usp_content_type(m.content_type.as_deref()) {
                    return Ok(());
                }
                let reply = m.response_topic.filter(|t| valid_topic(t));
                let identity = m
                    .topic
                    .strip_prefix(self.own_topic.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .filter(|id| !id.is_empty() && !id.contains('/'))
                    .map(str::to_string);
                let out = self.endpoint.handle_record(&m.payload, identity.as_deref());
                self.send_all(out, reply.as_deref(), stats);
                self.notify(stats);
            }
            Incoming::Disconnect { reason_code, .. } => {
                return Err(format!("DISCONNECT {}", codec::reason_name(reason_code)));
            }
            Incoming::PubAck { .. } | Incoming::UnsubAck(_) | Incoming::PingResp => {}
        }
        Ok(())
    }
}

/// The next complete packet at the front of `buf`, removed from it.
fn take_packet(buf: &mut Vec<u8>) -> Result<Option<Incoming>, String> {
    let mut remaining = 0usize;
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Err("remaining length longer than 4 bytes".into());
        }
    }
    let total = i + remaining;
    if total > MAX_PACKET {
        return Err(format!("a {total}-byte packet"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let p = codec::decode(buf[0], &buf[i..total]).map_err(|e| e.to_string());
    buf.drain(..total);
    p.map(Some)
}

/// An epoll instance, closed when dropped.
struct Epoll(i32);

impl Epoll {
    fn new() -> Result<Epoll, String> {
        // SAFETY: no pointers; the returned descriptor is owned by the Epoll.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Epoll(fd))
    }

    fn ctl(&self, op: i32, fd: i32, events: u32, token: usize) -> Result<(), String> {
        let mut ev = libc::epoll_event {
            events,
            u64: token as u64,
        };
        // SAFETY: `ev` lives across the call; `fd` is a socket this worker owns.
        let rc = unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) };
        if rc < 0 {
            return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn wait(&self, out: &mut [libc::epoll_event], timeout: Duration) -> usize {
        // SAFETY: `out` is a valid buffer of `out.len()` events for the kernel to fill.
        let n = unsafe {
            libc::epoll_wait(
                self.0,
                out.as_mut_ptr(),
                out.len() as i32,
                timeout.as_millis() as i32,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this Epoll owns, once.
        unsafe { libc::close(self.0) };
    }
}

/// One thread's share of the fleet.
struct Worker {
    sims: Vec<Sim>,
    epoll: Epoll,
    /// Agents waiting to connect, with when they may.
    queue: VecDeque<(usize, Instant)>,
    tls: Arc<rustls::ClientConfig>,
    server_name: rustls_pki_types::ServerName<'static>,
    stats: Arc<FleetStats>,
}

impl Worker {
    fn new(sims: Vec<Sim>, base: MqttConfig, stats: Arc<FleetStats>) -> Result<Worker, String> {
        let (tls, name) = base.tls.clone().ok_or("the fleet's sessions need TLS")?;
        let server_name = rustls_pki_types::ServerName::try_from(name)
            .map_err(|e| format!("server name: {e}"))?;
        let now = Instant::now();
        Ok(Worker {
            queue: (0..sims.len()).map(|i| (i, now)).collect(),
            sims,
            epoll: Epoll::new()?,
            tls,
            server_name,
            stats,
        })
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_tick = Instant::now();
        while !stop.load(Ordering::Acquire) {
            self.open_some();
            let n = self.epoll.wait(&mut events, Duration::from_millis(20));
            for ev in &events[..n] {
                let (i, flags) = (ev.u64 as usize, ev.events);
                if let Err(e) = self.on_io(i, flags) {
                    self.lose(i, e);
                }
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                for i in 0..self.sims.len() {
                    if let Err(e) = self.tick(i) {
                        self.lose(i, e);
                    }
                }
            }
        }
        for i in 0..self.sims.len() {
            if self.sims[i].phase == Phase::Up {
                let _ = self.sims[i].write(&codec::encode_disconnect(0));
                let _ = self.flush(i);
            }
        }
    }

    /// Starts connections from the queue while few are opening.
    fn open_some(&mut self) {
        let now = Instant::now();
        let mut opening = self
            .sims
            .iter()
            .filter(|s| matches!(s.phase, Phase::Connecting | Phase::Subscribing(_)))
            .count();
        while opening < MAX_OPENING {
            match self.queue.front() {
                Some(&(i, at)) if at <= now => {
                    self.queue.pop_front();
                    opening += 1;
                    if let Err(e) = self.connect(i) {
                        self.lose(i, e);
                    }
                }
                _ => break,
            }
        }
    }

    fn connect(&mut self, i: usize) -> Result<(), String> {
        let sim = &mut self.sims[i];
        let addr = (sim.mqtt.host.as_str(), sim.mqtt.port);
        let sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = sock.set_nodelay(true);
        let tls = ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(|e| format!("tls: {e}"))?;
        let fd = sock.as_raw_fd();
        sim.conn = Some(Conn {
            sock,
            tls,
            inbuf: Vec::new(),
            want_out: false,
        });
        let connect = Connect {
            client_id: sim.mqtt.client_id.clone(),
            clean_start: sim.mqtt.session_expiry_s == 0,
            keep_alive_s: sim.mqtt.keep_alive.as_secs() as u16,
            session_expiry_s: sim.mqtt.session_expiry_s,
            receive_maximum: sim.mqtt.receive_maximum.max(1),
            maximum_packet_size: MAX_PACKET as u32,
            request_response_information: sim.mqtt.request_response_information,
            username: sim.mqtt.username.clone(),
            password: sim.mqtt.password.clone(),
            user_properties: sim.mqtt.user_properties.clone(),
        };
        // rustls holds it until the handshake is done.
        sim.write(&codec::encode_connect(&connect).map_err(|e| e.to_string())?)?;
        sim.phase = Phase::Connecting;
        sim.send_max = MAX_PACKET as u32;
        self.epoll
            .ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, i)?;
        self.flush(i)
    }

    /// The connection of agent `i` is gone: counted, and tried again in 1-2 s.
    fn lose(&mut self, i: usize, why: String) {
        let sim = &mut self.sims[i];
        if let Some(c) = sim.conn.take() {
            let _ = self
                .epoll
                .ctl(libc::EPOLL_CTL_DEL, c.sock.as_raw_fd(), 0, i);
        }
        match sim.phase {
            Phase::Up => {
                self.stats.up.fetch_sub(1, Ordering::Relaxed);
            }
            Phase::Connecting | Phase::Subscribing(_) | Phase::Down => {}
        }
        sim.phase = Phase::Down;
        self.stats.fail(format!("{}: {why}", sim.mqtt.client_id));
        let jitter = Duration::from_millis((i as u64 * 7919) % 1000);
        self.queue
            .push_back((i, Instant::now() + Duration::from_secs(1) + jitter));
    }

    fn on_io(&mut self, i: usize, flags: u32) -> Result<(), String> {
        let stats = self.stats.clone();
        let sim = &mut self.sims[i];
        let Some(conn) = sim.conn.as_mut() else {
            return Ok(());
        };
        if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match conn.tls.read_tls(&mut conn.sock) {
                    Ok(0) => return Err("the broker closed the connection".into()),
                    Ok(_) => {
                        conn.tls
                            .process_new_packets()
                            .map_err(|e| format!("tls: {e}"))?;
                        loop {
                            match conn.tls.reader().read(&mut buf) {
                                Ok(0) => return Err("TLS closed".into()),
                                Ok(n) => conn.inbuf.extend_from_slice(&buf[..n]),
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(e) => return Err(e.to_string()),
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            let mut inbuf = std::mem::take(&mut conn.inbuf);
            let result = (|| {
                while let Some(p) = take_packet(&mut inbuf)? {
                    sim.on_packet(p, &stats)?;
                }
                Ok::<(), String>(())
            })();
            if let Some(c) = sim.conn.as_mut() {
                c.inbuf = inbuf;
            }
            result?;
        }
        self.flush(i)
    }

    /// Agent events and the idle poll, as the agent's session loop; keep-alive.
    fn tick(&mut self, i: usize) -> Result<(), String> {
        let stats = self.stats.clone();
        let sim = &mut self.sims[i];
        if sim.phase != Phase::Up {
            return Ok(());
        }
        let woke = sim.events.try_iter().count() > 0;
        if woke || sim.last_poll.elapsed() >= IDLE_POLL {
            sim.notify(&stats);
        }
        if sim.last_out.elapsed() >= PING_AFTER {
            sim.write(&codec::encode_pingreq())?;
        }
        self.flush(i)
    }

    /// Writes what TLS has to send; what the socket refuses waits for EPOLLOUT.
    fn flush(&mut self, i: usize) -> Result<(), String> {
        let Some(conn) = self.sims[i].conn.as_mut() else {
            return Ok(());
        };
        let mut blocked = false;
        while conn.tls.wants_write() {
            match conn.tls.write_tls(&mut conn.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        if blocked != conn.want_out {
            conn.want_out = blocked;
            let mut ev = libc::EPOLLIN as u32;
            if blocked {
                ev |= libc::EPOLLOUT as u32;
            }
            self.epoll
                .ctl(libc::EPOLL_CTL_MOD, conn.sock.as_raw_fd(), ev, i)?;
        }
        Ok(())
    }
}

#[test]
fn packets_are_taken_whole_from_the_stream() {
    // PINGRESP, then the first bytes of a PUBACK: one packet now, the next once it is whole.
    let mut buf = vec![0xd0, 0x00, 0x40, 0x02, 0x00];
    assert_eq!(take_packet(&mut buf), Ok(Some(Incoming::PingResp)));
    assert_eq!(take_packet(&mut buf), Ok(None));
    buf.push(0x07);
    assert_eq!(
        take_packet(&mut buf),
        Ok(Some(Incoming::PubAck {
            packet_id: 7,
            reason_code: 0
        }))
    );
    assert!(buf.is_empty());
    // A remaining length that does not end within 4 bytes is refused.
    let mut bad = vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(take_packet(&mut bad).is_err());
}
