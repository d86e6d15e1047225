//! A blocking MQTT 5 client: one connection-manager thread (connects, writes, keeps alive,
//! reconnects with back-off) and one reader thread per live connection. Outgoing messages wait
//! in a bounded queue; incoming ones and state changes arrive on a bounded channel, and
//! messages that find it full are dropped and counted rather than stalling the connection.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::codec::{self, CodecError, Connect, Incoming, Publish, Subscribe};
use crate::tls::{self, ReadHalf, WriteHalf};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked holder leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Thread stacks: the client's threads use little, and a router counts every page.
const THREAD_STACK: usize = 128 * 1024;
/// How many QoS 1 messages we keep unacknowledged at most (fewer if the server says so).
const MAX_INFLIGHT: usize = 32;

/// How to reach the broker and how to behave there.
#[derive(Clone)]
pub struct MqttConfig {
    /// The broker's host name or address.
    pub host: String,
    /// The broker's TCP port (8883 for MQTT over TLS, 1883 plain).
    pub port: u16,
    /// TLS: client configuration (CA, client certificate) and the server name to verify.
    /// `None` is plain TCP (a broker on loopback, tests).
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
    /// Client Identifier; USP uses the Endpoint ID. Empty asks the server to assign one.
    pub client_id: String,
    /// User Name in CONNECT, if the broker wants one.
    pub username: Option<String>,
    /// Password in CONNECT, if the broker wants one.
    pub password: Option<Vec<u8>>,
    /// Keep Alive; 0 turns keep-alive off. The server may override it (Server Keep Alive).
    pub keep_alive: Duration,
    /// Session Expiry Interval in seconds; 0 ends the session with the connection.
    pub session_expiry_s: u32,
    /// The largest packet we accept (announced as Maximum Packet Size): bounds incoming
    /// records. Also caps what we send.
    pub max_packet_size: u32,
    /// Announced Receive Maximum: QoS 1 messages the server may have in flight to us.
    pub receive_maximum: u16,
    /// Ask for Response Information in CONNACK (USP: the topic an agent should subscribe to).
    pub request_response_information: bool,
    /// Topic filters subscribed after every (re)connect, before `Event::Connected`.
    pub subscriptions: Vec<String>,
    /// Capacity of the event channel (incoming messages and state changes).
    pub incoming_capacity: usize,
    /// How many publications may wait for the connection.
    pub outgoing_capacity: usize,
    /// The delay between reconnect attempts.
    pub backoff: Backoff,
    /// Each step of connecting (TCP connect, TLS handshake, CONNACK) waits at most this.
    pub connect_timeout: Duration,
    /// Resolves the broker's host name; `None` uses the C library (see `tls::Resolver`).
    pub resolver: Option<tls::Resolver>,
    /// User Properties sent in CONNECT (USP: `usp-endpoint-id`, R-MQTT.13).
    pub user_properties: Vec<(String, String)>,
    /// Publications every connection starts with, ahead of resends and of what was queued
    /// while disconnected (USP: the MQTTConnect Records, R-MTP.6/R-MTP.8). QoS as given (at
    /// most the server's); the packet identifier is assigned per connection.
    pub greeting: Vec<Publish>,
}

impl MqttConfig {
    /// A configuration with the defaults: plain TCP, keep alive 60 s, clean session, 1 MiB
    /// packets, 64-entry queues, back-off 1 s .. 60 s.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        MqttConfig {
            host: host.into(),
            port,
            tls: None,
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: Duration::from_secs(60),
            session_expiry_s: 0,
            max_packet_size: 1 << 20,
            receive_maximum: 16,
            request_response_information: true,
            subscriptions: Vec::new(),
            incoming_capacity: 64,
            outgoing_capacity: 64,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(15),
            resolver: None,
            user_properties: Vec::new(),
            greeting: Vec::new(),
        }
    }

    /// Adds the User Property `usp-endpoint-id` that R-MQTT.13 asks every USP endpoint's
    /// CONNECT to carry.
    pub fn with_usp_endpoint_id(mut self, endpoint_id: &str) -> Self {
        self.user_properties
            .retain(|(n, _)| n != USP_ENDPOINT_ID_PROPERTY);
        self.user_properties
            .push((USP_ENDPOINT_ID_PROPERTY.into(), endpoint_id.into()));
        self
    }
}

/// The CONNECT User Property naming the USP Endpoint ID (R-MQTT.13).
pub const USP_ENDPOINT_ID_PROPERTY: &str = "usp-endpoint-id";

/// A message received on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The Topic Name it was published to.
    pub topic: String,
    /// The Application Message (for USP, one encoded Record).
    pub payload: Vec<u8>,
    /// USP requires `usp.msg` here (MQTT 5).
    pub content_type: Option<String>,
    /// Where the sender wants the answer published.
    pub response_topic: Option<String>,
    /// Correlation Data, to echo back with the answer.
    pub correlation_data: Option<Vec<u8>>,
}

/// What the client reports, in order, on its event channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Connected, and every configured subscription acknowledged.
    Connected {
        /// The server resumed a session it kept for us (CONNACK Session Present).
        session_present: bool,
        /// The server's Response Information (a USP agent's topic), when it sent one.
        response_information: Option<String>,
        /// The Client Identifier the server assigned, when we sent an empty one.
        assigned_client_id: Option<String>,
    },
    /// The connection failed or ended; the client retries after `retry_in`.
    Disconnected {
        /// What went wrong, for logs.
        reason: String,
        /// The back-off delay before the next attempt.
        retry_in: Duration,
    },
    /// A message on a subscribed topic.
    Message(Message),
    /// The server refused a subscription (reason code, see `codec::reason_name`).
    SubscribeRefused {
        /// The topic filter refused.
        filter: String,
        /// The SUBACK reason code (0x80 and up).
        reason_code: u8,
    },
}

/// Why a request to the client failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttError {
    /// The message would exceed the Maximum Packet Size in force (the server's or ours).
    TooLarge {
        /// The encoded PUBLISH's size in bytes.
        size: u64,
        /// The Maximum Packet Size it exceeds.
        max: u32,
    },
    /// The outgoing queue is full (the broker is unreachable or slow).
    QueueFull {
        /// The queue's capacity (`MqttConfig::outgoing_capacity`).
        capacity: usize,
    },
    /// The topic, filter or a property is not acceptable; the text says which.
    Invalid(String),
    /// The client was shut down.
    Closed,
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttError::TooLarge { size, max } => {
                write!(
                    f,
                    "MQTT message of {size} bytes exceeds the maximum packet size {max}"
                )
            }
            MqttError::QueueFull { capacity } => {
                write!(f, "MQTT outgoing queue full ({capacity} messages waiting)")
            }
            MqttError::Invalid(why) => write!(f, "MQTT: {why}"),
            MqttError::Closed => f.write_str("MQTT client is shut down"),
        }
    }
}

impl std::error::Error for MqttError {}

/// Counters, for logs and the data model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections established (CONNACK accepted).
    pub connects: u64,
    /// Connections lost and connection attempts failed, each followed by a back-off.
    pub disconnects: u64,
    /// PUBLISH packets written to the server (resends included).
    pub published: u64,
    /// PUBLISH packets received from the server (dropped ones included).
    pub received: u64,
    /// Incoming messages dropped because the event channel was full.
    pub incoming_dropped: u64,
    /// State events dropped because the event channel was full.
    pub events_dropped: u64,
}

/// What the manager thread is asked to do (by the API or by the reader).
enum Command {
    Publish(Outgoing),
    Subscribe(String),
    Unsubscribe(String),
    /// From the reader of session `.0`: the server acknowledged a QoS 1 publication.
    PubAck(u64, u16),
    /// From the reader of session `.0`: the connection ended.
    ReaderDone(u64, String),
    /// From the reader of session `.0`: the server granted at least one of the initial
    /// subscriptions; publications may go out (TR-369 R-MQTT.17).
    Subscribed(u64),
    Shutdown,
}

/// An encoded PUBLISH waiting to be written.
struct Outgoing {
    bytes: Vec<u8>,
    /// Packet identifier of a QoS 1 publication.
    packet_id: Option<u16>,
    /// Part of a connection's greeting: a new connection replaces it with its own.
    greeting: bool,
}

struct Shared {
    config: MqttConfig,
    events: SyncSender<Event>,
    commands: Sender<Command>,
    /// Publications queued but not yet written (bounds the command channel's publish entries).
    queued: AtomicUsize,
    connected: AtomicBool,
    /// The Maximum Packet Size in force for what we send.
    send_max: AtomicU32,
    next_packet_id: AtomicU16,
    subscriptions: Mutex<Vec<String>>,
    /// SUBSCRIBEs sent after connecting, by packet identifier, until their SUBACK.
    runtime_subscribes: Mutex<HashMap<u16, String>>,
    /// The server's Maximum QoS (CONNACK); publications are sent at most at this QoS.
    max_qos: AtomicU8,
    response_information: Mutex<Option<String>>,
    /// Under a lock: 32-bit MIPS has no 64-bit atomics.
    counters: Mutex<Stats>,
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut Stats)) {
        update(&mut lock(&self.counters));
    }

    fn emit(&self, event: Event) {
        let is_message = matches!(event, Event::Message(_));
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.count(|c| {
                if is_message {
                    c.incoming_dropped += 1
                } else {
                    c.events_dropped += 1
                }
            }),
            Err(TrySendError::Disconnected(_)) => {} // nobody listens any more
        }
    }

    fn packet_id(&self) -> u16 {
        loop {
            let id = self.next_packet_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

/// The client handle; dropping it disconnects cleanly and stops the threads.
pub struct MqttClient {
    shared: Arc<Shared>,
    manager: Option<JoinHandle<()>>,
}

/// The USP MQTT binding's Content Type for a USP Record.
pub const USP_CONTENT_TYPE: &str = "usp.msg";

/// The registered MIME type of a USP Record, which receivers must accept like `usp.msg`
/// (R-MQTT.27a); senders keep writing `usp.msg` (R-MQTT.27).
pub const USP_MIME_TYPE: &str = "application/vnd.bbf.usp.msg";

/// Whether a received Content Type says the payload is a USP Record (R-MQTT.27a). A message
/// without one (MQTT 3.1.1 cannot carry it) is given the benefit of the doubt.
pub fn is_usp_content_type(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|c| c == USP_CONTENT_TYPE || c == USP_MIME_TYPE)
}

/// A topic filter per MQTT 5 section 4.7: `+` and `#` fill a whole level, `#` only the last.
fn check_filter(filter: &str) -> Result<(), MqttError> {
    let invalid = |why: &str| {
        Err(MqttError::Invalid(format!(
            "topic filter {filter:?}: {why}"
        )))
    };
    if filter.is_empty() || filter.len() > u16::MAX as usize || filter.contains('\0') {
        return invalid("empty, too long or holds U+0000");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return invalid("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return invalid("'+' must be a whole level");
        }
    }
    Ok(())
}

impl MqttClient {
    /// Starts the client; it connects in the background and reports on the returned channel.
    pub fn start(config: MqttConfig) -> Result<(MqttClient, Receiver<Event>), MqttError> {
        for f in &config.subscriptions {
            check_filter(f)?;
        }
        for g in &config.greeting {
            let mut p = g.clone();
            p.packet_id = (p.qos == 1).then_some(1);
            codec::encode_publish(&p, config.max_packet_size)
                .map_err(|e| MqttError::Invalid(format!("greeting to {}: {e}", g.topic)))?;
        }
        if config.incoming_capacity == 0 || config.outgoing_capacity == 0 {
            return Err(MqttError::Invalid(
                "queue capacities must be at least 1".into(),
            ));
        }
        if config.max_packet_size < 64 {
            return Err(MqttError::Invalid(format!(
                "maximum packet size {} is below 64 bytes",
                config.max_packet_size
            )));
        }
        if config.keep_alive.as_secs() > u16::MAX as u64 {
            return Err(MqttError::Invalid("keep alive above 65535 s".into()));
        }
        config.backoff.check().map_err(MqttError::Invalid)?;
        let (events_tx, events_rx) = mpsc::sync_channel(config.incoming_capacity);
        let (commands_tx, commands_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            send_max: AtomicU32::new(config.max_packet_size),
            subscriptions: Mutex::new(config.subscriptions.clone()),
            runtime_subscribes: Mutex::new(HashMap::new()),
            max_qos: AtomicU8::new(1),
            config,
            events: events_tx,
            commands: commands_tx,
            queued: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            next_packet_id: AtomicU16::new(1),
            response_information: Mutex::new(None),
            counters: Mutex::new(Stats::default()),
        });
        let manager_shared = shared.clone();
        let manager = std::thread::Builder::new()
            .name("mqtt-conn".into())
            .stack_size(THREAD_STACK)
            .spawn(move || Manager::new(manager_shared, commands_rx).run())
            .map_err(|e| MqttError::Invalid(format!("cannot start the MQTT thread: {e}")))?;
        Ok((
            MqttClient {
                shared,
                manager: Some(manager),
            },
            events_rx,
        ))
    }

    /// Publishes a USP Record-style message at QoS 1: Content Type and Response Topic set
    /// when given. Queued while disconnected (up to the outgoing capacity).
    pub fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        response_topic: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<(), MqttError> {
        self.publish_with(Publish {
            topic: topic.to_owned(),
            qos: 1,
            response_topic: response_topic.map(str::to_owned),
            content_type: content_type.map(str::to_owned),
            payload: payload.to_vec(),
            ..Publish::default()
        })
    }

    /// Publishes with every field under the caller's control (QoS 0 or 1, correlation data,
    /// message expiry). The packet identifier is assigned here.
    pub fn publish_with(&self, mut publish: Publish) -> Result<(), MqttError> {
        let capacity = self.shared.config.outgoing_capacity;
        // A server may cap QoS (CONNACK Maximum QoS); sending above it is a protocol error.
        publish.qos = publish.qos.min(self.shared.max_qos.load(Ordering::Relaxed));
        publish.packet_id = (publish.qos == 1).then(|| self.shared.packet_id());
        publish.dup = false;
        let max = self.shared.send_max.load(Ordering::Relaxed);
        let bytes = codec::encode_publish(&publish, max).map_err(|e| match e {
            CodecError::TooLarge { size, max } => MqttError::TooLarge { size, max },
            other => MqttError::Invalid(other.to_string()),
        })?;
        // Reserve a queue place first, so the queue never holds more than `capacity`.
        if self
            .shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_err()
        {
            return Err(MqttError::QueueFull { capacity });
        }
        let outgoing = Outgoing {
            bytes,
            packet_id: publish.packet_id,
            greeting: false,
        };
        self.shared
            .commands
            .send(Command::Publish(outgoing))
            .map_err(|_| MqttError::Closed)
    }

    /// Subscribes now (if connected) and after every reconnect.
    pub fn subscribe(&self, filter: &str) -> Result<(), MqttError> {
        check_filter(filter)?;
        {
            let mut subs = lock(&self.shared.subscriptions);
            if subs.iter().any(|s| s == filter) {
                return Ok(());
            }
            if subs.len() >= 64 {
                return Err(MqttError::Invalid("more than 64 subscriptions".into()));
            }
            subs.push(filter.to_owned());
        }
        self.shared
            .commands
            .send(Command::Subscribe(filter.to_owned()))
            .map_err(|_| MqttError::Closed)
    }

    /// Unsubscribes now (if connected) and no longer after reconnects.
    pub fn unsubscribe(&self, filter: &str) -> Result<(), MqttError> {
        check_filter(filter)?;
        lock(&self.shared.subscriptions).retain(|s| s != filter);
        self.shared
            .commands
            .send(Command::Unsubscribe(filter.to_owned()))
            .map_err(|_| MqttError::Closed)
    }

    /// Whether a connection is up and its subscriptions acknowledged (`Event::Connected` was
    /// the last state event).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// The Response Information of the last CONNACK that carried one.
    pub fn response_information(&self) -> Option<String> {
        lock(&self.shared.response_information).clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        *lock(&self.shared.counters)
    }

    /// Sends DISCONNECT (if connected), closes the connection and stops the threads. A
    /// connection attempt under way finishes first (at most `connect_timeout`).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(manager) = self.manager.take() {
            let _ = self.shared.commands.send(Command::Shutdown);
            let _ = manager.join();
        }
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One live connection as the manager sees it.
struct Session {
    id: u64,
    writer: WriteHalf,
    reader: Option<JoinHandle<()>>,
    keep_alive: Duration,
    last_write: Instant,
    /// False until a SUBSCRIBE is granted (when there are subscriptions): a USP endpoint that
    /// is subscribed to nothing publishes no Record (R-MQTT.17).
    may_publish: bool,
}

enum SessionEnd {
    Lost(String),
    Shutdown,
}

struct Manager {
    shared: Arc<Shared>,
    commands: Receiver<Command>,
    /// Publications waiting for the connection or for an in-flight slot.
    pending: VecDeque<Outgoing>,
    /// QoS 1 publications written but not acknowledged, resent after a reconnect.
    inflight: HashMap<u16, Vec<u8>>,
    inflight_max: usize,
    next_session: u64,
    /// The Client Identifier the server assigned when we had none configured.
    assigned_client_id: Option<String>,
}

impl Manager {
    fn new(shared: Arc<Shared>, commands: Receiver<Command>) -> Self {
        Manager {
            shared,
            commands,
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            inflight_max: MAX_INFLIGHT,
            next_session: 0,
            assigned_client_id: None,
        }
    }

    fn run(mut self) {
        let mut attempt = 0u32;
        let mut rng = self.shared.config.backoff.rng();
        loop {
            let end = match self.connect() {
                Ok(mut session) => {
                    self.shared.count(|c| c.connects += 1);
                    let end = self.serve(&mut session);
                    // A connection whose every subscription was refused is no success: keep
                    // backing off.
                    if session.may_publish {
                        attempt = 0;
                    }
                    self.shared.connected.store(false, Ordering::Release);
                    self.close(session, matches!(end, SessionEnd::Shutdown));
                    end
                }
                Err(reason) => SessionEnd::Lost(reason),
            };
            let SessionEnd::Lost(reason) = end else {
                return;
            };
            self.shared.count(|c| c.disconnects += 1);
            attempt = attempt.saturating_add(1);
            let delay = self.shared.config.backoff.delay(attempt, &mut rng);
            self.shared.emit(Event::Disconnected {
                reason,
                retry_in: delay,
            });
            if !self.wait_disconnected(delay) {
                return;
            }
        }
    }

    /// Waits out the back-off, queueing publications; false when asked to shut down.
    fn wait_disconnected(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            match self.commands.recv_timeout(until - now) {
                Ok(Command::Publish(p)) => self.pending.push_back(p),
                Ok(Command::Shutdown) => return false,
                // Subscriptions are replayed on connect; old sessions' notices are stale.
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn connect(&mut self) -> Result<Session, String> {
        let config = &self.shared.config;
        let tls = config.tls.as_ref().map(|(c, name)| (c, name.as_str()));
        let (mut reader, writer, _) = tls::connect_with(
            config.resolver.as_ref(),
            &config.host,
            config.port,
            tls,
            config.connect_timeout,
        )
        .map_err(|e| format!("connect to {}:{}: {e}", config.host, config.port))?;
        // With no configured ClientId, the one the server assigned the first time is ours from
        // then on (TR-369 R-MQTT.9, R-MQTT.11).
        let client_id = match &self.assigned_client_id {
            Some(id) if config.client_id.is_empty() => id.clone(),
            _ => config.client_id.clone(),
        };
        let connect = Connect {
            client_id,
            clean_start: config.session_expiry_s == 0,
            keep_alive_s: config.keep_alive.as_secs() as u16,
            session_expiry_s: config.session_expiry_s,
            receive_maximum: config.receive_maximum.max(1),
            maximum_packet_size: config.max_packet_size,
            request_response_information: config.request_response_information,
            username: config.username.clone(),
            password: config.password.clone(),
            user_properties: config.user_properties.clone(),
        };
        let bytes = codec::encode_connect(&connect).map_err(|e| format!("CONNECT: {e}"))?;
        writer
            .set_write_timeout(Some(config.connect_timeout))
            .map_err(|e| e.to_string())?;
        writer
            .send(&bytes)
            .map_err(|e| format!("send CONNECT: {e}"))?;
        reader
            .set_read_timeout(Some(config.connect_timeout))
            .map_err(|e| e.to_string())?;
        let ack = match codec::read_packet(&mut reader, config.max_packet_size) {
            Ok(Incoming::ConnAck(ack)) => ack,
            Ok(Incoming::Disconnect {
                reason_code,
                reason_string,
            }) => {
                return Err(format!(
                    "server refused: {} (0x{reason_code:02X}){}",
                    codec::reason_name(reason_code),
                    reason_string.map(|s| format!(": {s}")).unwrap_or_default()
                ))
            }
            Ok(other) => return Err(format!("expected CONNACK, got {other:?}")),
            Err(e) => return Err(format!("waiting for CONNACK: {e}")),
        };
        if ack.reason_code >= 0x80 {
            writer.close();
            return Err(format!(
                "server refused the connection: {} (0x{:02X}){}",
                codec::reason_name(ack.reason_code),
                ack.reason_code,
                ack.reason_string
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default()
            ));
        }
        let keep_alive = ack
            .server_keep_alive_s
            .map(|s| Duration::from_secs(s.into()))
            .unwrap_or(config.keep_alive);
        let send_max = ack
            .maximum_packet_size
            .unwrap_or(u32::MAX)
            .min(config.max_packet_size);
        self.shared.send_max.store(send_max, Ordering::Relaxed);
        self.shared
            .max_qos
            .store(ack.maximum_qos.unwrap_or(1).min(1), Ordering::Relaxed);
        self.inflight_max = MAX_INFLIGHT.min(ack.receive_maximum.unwrap_or(u16::MAX).into());
        if ack.response_information.is_some() {
            *lock(&self.shared.response_information) = ack.response_information.clone();
        }
        if config.client_id.is_empty() && self.assigned_client_id.is_none() {
            self.assigned_client_id = ack.assigned_client_id.clone();
        }
        // Nothing from the server for 1.5 keep-alive periods means the connection is dead
        // (our PINGREQs every 3/4 period always get an answer from a live server).
        let read_timeout = (!keep_alive.is_zero()).then(|| keep_alive * 3 / 2);
        reader
            .set_read_timeout(read_timeout)
            .map_err(|e| e.to_string())?;
        writer
            .set_write_timeout(Some(config.connect_timeout.max(keep_alive)))
            .map_err(|e| e.to_string())?;

        self.next_session += 1;
        let id = self.next_session;
        let subscriptions = lock(&self.shared.subscriptions).clone();
        let mut awaiting = HashMap::new();
        let mut now = Instant::now();
        for filter in subscriptions {
            let packet_id = self.shared.packet_id();
            let bytes = codec::encode_subscribe(&Subscribe {
                packet_id,
                filter: filter.clone(),
                max_qos: 1,
                no_local: true,
            })
            .map_err(|e| format!("SUBSCRIBE {filter:?}: {e}"))?;
            writer
                .send(&bytes)
                .map_err(|e| format!("send SUBSCRIBE: {e}"))?;
            now = Instant::now();
            awaiting.insert(packet_id, filter);
        }
        let may_publish = awaiting.is_empty();
        let connected = Event::Connected {
            session_present: ack.session_present,
            response_information: ack.response_information,
            assigned_client_id: ack.assigned_client_id,
        };
        let reader_state = Reader {
            shared: self.shared.clone(),
            session: id,
            writer: writer.clone(),
            subscriptions: awaiting,
            granted: false,
            connected: Some(connected),
        };
        let reader = std::thread::Builder::new()
            .name("mqtt-read".into())
            .stack_size(THREAD_STACK)
            .spawn(move || reader_state.run(BufReader::with_capacity(4096, reader)))
            .map_err(|e| format!("cannot start the MQTT reader: {e}"))?;

        // Resend unacknowledged QoS 1 publications first, flagged as duplicates.
        let mut resend: Vec<(u16, Vec<u8>)> = self.inflight.drain().collect();
        resend.sort_by_key(|(id, _)| *id);
        for (packet_id, mut bytes) in resend.into_iter().rev() {
            bytes[0] |= 0x08;
            self.shared.queued.fetch_add(1, Ordering::AcqRel);
            self.pending.push_front(Outgoing {
                bytes,
                packet_id: Some(packet_id),
                greeting: false,
            });
        }
        // The greeting goes first of all, in its order; one a lost connection did not get to
        // send is not sent twice.
        let before = self.pending.len();
        self.pending.retain(|o| !o.greeting);
        let stale = before - self.pending.len();
        self.shared.queued.fetch_sub(stale, Ordering::AcqRel);
        let max_qos = self.shared.max_qos.load(Ordering::Relaxed);
        for g in self.shared.config.greeting.iter().rev() {
            let mut p = g.clone();
            p.qos = p.qos.min(max_qos);
            p.dup = false;
            p.packet_id = (p.qos == 1).then(|| self.shared.packet_id());
            // `start` checked it encodes; only a server's smaller Maximum Packet Size can
            // refuse it now, and then it is not sent (USP Connect Records are tens of bytes).
            if let Ok(bytes) = codec::encode_publish(&p, send_max) {
                self.shared.queued.fetch_add(1, Ordering::AcqRel);
                self.pending.push_front(Outgoing {
                    bytes,
                    packet_id: p.packet_id,
                    greeting: true,
                });
            }
        }
        Ok(Session {
            id,
            writer,
            reader: Some(reader),
            keep_alive,
            last_write: now,
            may_publish,
        })
    }

    /// Writes what may be written now: pending publications while in-flight slots last.
    fn flush_pending(&mut self, session: &mut Session) -> Result<(), String> {
        while let Some(front) = self.pending.front() {
            if front.packet_id.is_some() && self.inflight.len() >= self.inflight_max {
                break;
            }
            let outgoing = self.pending.pop_front().expect("front exists");
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            session
                .writer
                .send(&outgoing.bytes)
                .map_err(|e| format!("send PUBLISH: {e}"))?;
            session.last_write = Instant::now();
            self.shared.count(|c| c.published += 1);
            if let Some(id) = outgoing.packet_id {
                self.inflight.insert(id, outgoing.bytes);
            }
        }
        Ok(())
    }

    fn serve(&mut self, session: &mut Session) -> SessionEnd {
        loop {
            if session.may_publish {
                if let Err(reason) = self.flush_pending(session) {
                    return SessionEnd::Lost(reason);
                }
            }
            let timeout = if session.keep_alive.is_zero() {
                Duration::from_secs(3600)
            } else {
                // PINGREQ after 3/4 of the keep-alive period without a write. Checked on
                // every turn: a stream of commands that write nothing must not starve it.
                let due = session.last_write + session.keep_alive * 3 / 4;
                if Instant::now() >= due {
                    if let Err(e) = session.writer.send(&codec::encode_pingreq()) {
                        return SessionEnd::Lost(format!("send PINGREQ: {e}"));
                    }
                    session.last_write = Instant::now();
                }
                (session.last_write + session.keep_alive * 3 / 4)
                    .saturating_duration_since(Instant::now())
            };
            let command = match self.commands.recv_timeout(timeout) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => continue, // the ping goes out above
                Err(RecvTimeoutError::Disconnected) => return SessionEnd::Shutdown,
            };
            let written = match command {
                Command::Publish(p) => {
                    self.pending.push_back(p);
                    Ok(())
                }
                Command::Subscribe(filter) => {
                    let packet_id = self.shared.packet_id();
                    lock(&self.shared.runtime_subscribes).insert(packet_id, filter.clone());
                    codec::encode_subscribe(&Subscribe {
                        packet_id,
                        filter,
                        max_qos: 1,
                        no_local: true,
                    })
                    .map_err(|e| e.to_string())
                    .and_then(|b| session.writer.send(&b).map_err(|e| e.to_string()))
                }
                Command::Unsubscribe(filter) => {
                    let packet_id = self.shared.packet_id();
                    codec::encode_unsubscribe(packet_id, &filter)
                        .map_err(|e| e.to_string())
                        .and_then(|b| session.writer.send(&b).map_err(|e| e.to_string()))
                }
                Command::PubAck(s, packet_id) if s == session.id => {
                    self.inflight.remove(&packet_id);
                    Ok(())
                }
                Command::ReaderDone(s, reason) if s == session.id => {
                    return SessionEnd::Lost(reason)
                }
                Command::Subscribed(s) if s == session.id => {
                    session.may_publish = true;
                    Ok(())
                }
                // An older session's.
                Command::PubAck(..) | Command::ReaderDone(..) | Command::Subscribed(_) => Ok(()),
                Command::Shutdown => return SessionEnd::Shutdown,
            };
            if let Err(reason) = written {
                return SessionEnd::Lost(reason);
            }
        }
    }

    fn close(&mut self, mut session: Session, polite: bool) {
        if polite {
            let _ = session.writer.send(&codec::encode_disconnect(0));
        }
        session.writer.close();
        if let Some(reader) = session.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The reader thread's state for one connection.
struct Reader {
    shared: Arc<Shared>,
    session: u64,
    writer: WriteHalf,
    /// Initial subscriptions not yet acknowledged; `Connected` waits for them.
    subscriptions: HashMap<u16, String>,
    /// One of the initial subscriptions was granted.
    granted: bool,
    connected: Option<Event>,
}

impl Reader {
    fn run(mut self, mut input: BufReader<ReadHalf>) {
        let reason = self.read_loop(&mut input);
        let _ = self
            .shared
            .commands
            .send(Command::ReaderDone(self.session, reason));
    }

    fn announce_if_ready(&mut self) {
        if self.subscriptions.is_empty() {
            if let Some(event) = self.connected.take() {
                self.shared.connected.store(true, Ordering::Release);
                self.shared.emit(event);
            }
        }
    }

    fn read_loop(&mut self, input: &mut BufReader<ReadHalf>) -> String {
        let max = self.shared.config.max_packet_size;
        self.announce_if_ready();
        loop {
            let packet = match codec::read_packet(input, max) {
                Ok(p) => p,
                Err(CodecError::Io(e)) => return format!("connection lost: {e}"),
                Err(e) => {
                    // Tell the server why we hang up (3.14.2.1: 0x81 malformed, 0x95 too large).
                    let code = if matches!(e, CodecError::TooLarge { .. }) {
                        0x95
                    } else {
                        0x81
                    };
                    let _ = self.writer.send(&codec::encode_disconnect(code));
                    self.writer.close();
                    return format!("bad packet from the server: {e}");
                }
            };
            match packet {
                Incoming::Publish(p) => {
                    if let Some(id) = p.packet_id {
                        if let Err(e) = self.writer.send(&codec::encode_puback(id, 0)) {
                            return format!("send PUBACK: {e}");
                        }
                    }
                    self.shared.count(|c| c.received += 1);
                    self.shared.emit(Event::Message(Message {
                        topic: p.topic,
                        payload: p.payload,
                        content_type: p.content_type,
                        response_topic: p.response_topic,
                        correlation_data: p.correlation_data,
                    }));
                }
                Incoming::PubAck { packet_id, .. } => {
                    let _ = self
                        .shared
                        .commands
                        .send(Command::PubAck(self.session, packet_id));
                }
                Incoming::SubAck(ack) => {
                    let initial = self.subscriptions.remove(&ack.packet_id);
                    let is_initial = initial.is_some();
                    let filter = initial
                        .or_else(|| lock(&self.shared.runtime_subscribes).remove(&ack.packet_id));
                    if let (Some(&code), Some(filter)) = (ack.reason_codes.first(), filter) {
                        if code >= 0x80 {
                            self.shared.emit(Event::SubscribeRefused {
                                filter,
                                reason_code: code,
                            });
                        } else if is_initial {
                            self.granted = true;
                        }
                    }
                    if is_initial && self.subscriptions.is_empty() {
                        if !self.granted {
                            // R-MQTT.17: subscribed to nothing, publish nothing and disconnect.
                            let _ = self.writer.send(&codec::encode_disconnect(0x80));
                            return "the server refused every subscription".into();
                        }
                        let _ = self.shared.commands.send(Command::Subscribed(self.session));
                    }
                    self.announce_if_ready();
                }
                Incoming::UnsubAck(_) | Incoming::PingResp => {}
                Incoming::Disconnect {
                    reason_code,
                    reason_string,
                } => {
                    return format!(
                        "server disconnected: {} (0x{reason_code:02X}){}",
                        codec::reason_name(reason_code),
                        reason_string.map(|s| format!(": {s}")).unwrap_or_default()
                    )
                }
                Incoming::ConnAck(_) => return "second CONNACK from the server".into(),
            }
        }
    }
}
