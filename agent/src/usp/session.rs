//! One USP endpoint on one MQTT connection (TR-369 "MQTT Binding"): the agent subscribes to its
//! own topic, hands each received Record to [`Endpoint::handle_record`] and publishes the reply
//! to the request's Response Topic (else the controller's configured topic), with Content Type
//! `usp.msg` and its own topic as Response Topic. Notifications (`Boot!` and OnBoardRequest on
//! connect, then `DUStateChange!`, OperationComplete, ValueChange, ...) go to the controller's
//! topic. The MQTT client reconnects by itself (capped, jittered back-off); its queues are
//! bounded and what does not fit is dropped and counted here.
//!
//! The daemon starts one [`Session`] from its `--usp FILE` ([`UspFile`]); the fleet test hosts
//! hundreds in one process with [`Session::start_with`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpevisor_usp::mqtt::codec::Publish;
use cpevisor_usp::mqtt::{
    is_usp_content_type, Event as MqttEvent, MqttClient, MqttConfig, USP_CONTENT_TYPE,
};
use cpevisor_usp::record::Limits;
use serde::Deserialize;

use super::config::{ControllerConfig, DeviceInfoConfig, Role, UspConfig};
use super::dm::{DataModel, RebootHook};
use super::endpoint::Endpoint;
use super::topic_auth::check_bare_topic_roles;
use super::ws_session::{self, WsTarget};
use crate::lifecycle::Agent;

/// How long the loop waits for MQTT traffic before it looks at the agent's events.
const TICK: Duration = Duration::from_millis(100);
/// Even without events, the data model is polled this often (completions of commands that
/// published no event, objects that changed behind the event log's back).
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Most reply topics learned from requests of controllers that have no configured topic.
const MAX_LEARNED_TOPICS: usize = 64;
/// Longest topic accepted from a peer's Response Topic.
const MAX_TOPIC_LEN: usize = 1024;
/// MQTT packet overhead allowed above the largest Record (fixed header, topic, properties).
const PACKET_OVERHEAD: u32 = 4096;
const THREAD_STACK: usize = 256 * 1024;

/// The agent's `--usp FILE`: where the broker is, who we are, who may manage us.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UspFile {
    /// The MQTT broker; not needed when `websocket` is given.
    #[serde(default)]
    pub broker_host: String,
    #[serde(default = "default_port")]
    pub broker_port: u16,
    /// The CA that signed the broker's certificate. Absent: plain TCP (only for a broker on
    /// loopback or a private link; the daemon logs a warning).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Our client certificate chain and key (PEM), presented to the broker.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the broker's certificate must carry (default: `broker_host`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Our USP endpoint ID (also the MQTT client id).
    pub endpoint_id: String,
    /// The topic we subscribe to (default `usp/agent/<endpoint_id>`).
    #[serde(default)]
    pub topic: Option<String>,
    pub controllers: Vec<ControllerEntry>,
    #[serde(default)]
    pub device_info: DeviceInfoConfig,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u16,
    /// Largest Record accepted or sent (default 64 KiB).
    #[serde(default)]
    pub max_record_bytes: Option<usize>,
    /// What `Device.Reboot()` runs (argv); absent: the command is refused.
    #[serde(default)]
    pub reboot_command: Option<Vec<String>>,
    /// Present: the MTP is a WebSocket to the controller (the agent connects), not MQTT;
    /// `ca_file`, `cert_file`, `key_file` then apply to it.
    #[serde(default)]
    pub websocket: Option<WsTarget>,
}

/// One controller allowed to manage this agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerEntry {
    pub endpoint_id: String,
    /// Where notifications go (default `usp/controller/<endpoint_id>`); replies go to the
    /// Response Topic of each request.
    #[serde(default)]
    pub topic: Option<String>,
    pub role: Role,
    /// The identity the broker authenticated this controller as (its client certificate's CN,
    /// mosquitto `use_identity_as_username`). When set, its Records count only when they arrive
    /// on `<our topic>/<identity>`, a topic the broker's ACL lets no one else write
    /// (`broker::usp_acl`, `IdentitySubTopic`). Unset (standard TR-369 controllers): its
    /// Records count only on our bare topic, which the ACL lets only the listed controllers
    /// write (`AgentTopic`); all controllers without `identity` must then have one role
    /// (`topic_auth`).
    #[serde(default)]
    pub identity: Option<String>,
}

fn default_port() -> u16 {
    8883
}

fn default_keep_alive() -> u16 {
    60
}

/// Largest `--usp` file read.
const MAX_FILE: u64 = 64 * 1024;
/// Largest accepted max_record_bytes: the agent's memory budget is a few MiB.
const MAX_RECORD_CEILING: usize = 1 << 20;

/// A topic we may publish to: non-empty, bounded, no wildcards, no U+0000.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TOPIC_LEN && !t.contains(['+', '#', '\0'])
}

impl UspFile {
    pub fn load(path: &Path) -> Result<UspFile, String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
            .map_err(|e| format!("usp config {}: {e}", path.display()))?;
        if text.len() as u64 > MAX_FILE {
            return Err(format!(
                "usp config {}: larger than {MAX_FILE} bytes",
                path.display()
            ));
        }
        let f: UspFile = serde_json::from_str(&text)
            .map_err(|e| format!("usp config {}: {e}", path.display()))?;
        f.validate()
            .map_err(|e| format!("usp config {}: {e}", path.display()))?;
        Ok(f)
    }

    pub fn validate(&self) -> Result<(), String> {
        match &self.websocket {
            Some(ws) => ws.validate()?,
            None if self.broker_host.is_empty() || self.broker_host.len() > 253 => {
                return Err("broker_host must be 1..253 bytes (or give a websocket object)".into())
            }
            None => {}
        }
        if self.broker_port == 0 {
            return Err("broker_port must not be 0".into());
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("cert_file and key_file go together".into());
        }
        if self.cert_file.is_some() && self.ca_file.is_none() {
            return Err("a client certificate needs TLS: set ca_file".into());
        }
        if !valid_topic(&self.topic()) {
            return Err(format!(
                "topic {:?}: not a valid MQTT topic name",
                self.topic()
            ));
        }
        for c in &self.controllers {
            let t = controller_topic(c);
            if !valid_topic(&t) {
                return Err(format!(
                    "controller {}: topic {t:?} is not a valid MQTT topic name",
                    c.endpoint_id
                ));
            }
            if let Some(id) = &c.identity {
                if !valid_topic_level(id) {
                    return Err(format!(
                        "controller {}: identity {id:?} must be one MQTT topic level \
                         (1-256 bytes, no '/', '+', '#' or U+0000)",
                        c.endpoint_id
                    ));
                }
            }
        }
        if let Some(n) = self.max_record_bytes {
            if !(1024..=MAX_RECORD_CEILING).contains(&n) {
                return Err(format!(
                    "max_record_bytes {n}: must be 1024..={MAX_RECORD_CEILING}"
                ));
            }
        }
        if let Some(cmd) = &self.reboot_command {
            if cmd.is_empty() || cmd[0].is_empty() {
                return Err("reboot_command: give the program and its arguments".into());
            }
        }
        let usp = self.usp_config();
        usp.validate()?;
        if self.websocket.is_none() {
            check_bare_topic_roles(&self.topic(), &usp.controllers)?;
        }
        Ok(())
    }

    pub fn topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("usp/agent/{}", self.endpoint_id))
    }

    /// The data model's view: endpoint ID, controllers with roles and topics, DeviceInfo.
    /// MQTT gives the agent no controller certificate (the broker is its TLS peer): a
    /// controller's identity is the topic suffix the broker's ACL binds to its certificate.
    pub fn usp_config(&self) -> UspConfig {
        UspConfig {
            endpoint_id: self.endpoint_id.clone(),
            controllers: self
                .controllers
                .iter()
                .map(|c| ControllerConfig {
                    endpoint_id: c.endpoint_id.clone(),
                    role: c.role,
                    identity: c.identity.clone(),
                    reply_to: Some(controller_topic(c)),
                })
                .collect(),
            device_info: self.device_info.clone(),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_record_bytes: self
                .max_record_bytes
                .unwrap_or(Limits::default().max_record_bytes),
            ..Limits::default()
        }
    }

    /// The MQTT client configuration: TLS with our certificate when configured, client id =
    /// endpoint ID, packets bounded by the largest Record.
    pub fn mqtt_config(&self) -> Result<MqttConfig, String> {
        let mut m = MqttConfig::new(&self.broker_host, self.broker_port, &self.endpoint_id)
            .with_usp_endpoint_id(&self.endpoint_id);
        if let Some(ca) = &self.ca_file {
            let cert = match (&self.cert_file, &self.key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            let tls = cpevisor_usp::tls::client_config(ca, cert).map_err(|e| e.to_string())?;
            let name = self
                .server_name
                .clone()
                .unwrap_or_else(|| self.broker_host.clone());
            m.tls = Some((tls, name));
        }
        m.keep_alive = Duration::from_secs(u64::from(self.keep_alive_s));
        m.max_packet_size = self.limits().max_record_bytes as u32 + PACKET_OVERHEAD;
        m.subscriptions = vec![self.topic()];
        Ok(m)
    }

    /// `Device.Reboot()`: runs `reboot_command`, or refuses.
    pub fn reboot_hook(&self) -> RebootHook {
        let cmd = self.reboot_command.clone();
        Arc::new(move || match &cmd {
            Some(argv) => std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .status()
                .map_err(|e| format!("{}: {e}", argv[0]))
                .and_then(|st| {
                    if st.success() {
                        Ok(())
                    } else {
                        Err(format!("{} exited with {st}", argv[0]))
                    }
                }),
            None => Err("this agent has no reboot_command configured".into()),
        })
    }
}

/// One level of a topic name: what a controller identity becomes in `<topic>/<identity>`.
pub fn valid_topic_level(level: &str) -> bool {
    !level.is_empty() && level.len() <= 256 && !level.contains(['/', '+', '#', '\0'])
}

/// The sender identity a topic carries: `x` for `<own_topic>/x`, None for our bare topic.
fn topic_identity<'a>(own_topic: &str, topic: &'a str) -> Option<&'a str> {
    topic
        .strip_prefix(own_topic)?
        .strip_prefix('/')
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

fn controller_topic(c: &ControllerEntry) -> String {
    c.topic
        .clone()
        .unwrap_or_else(|| format!("usp/controller/{}", c.endpoint_id))
}

/// What a session did, for logs, tests and the fleet figures. (Behind a mutex: 32-bit MIPS
/// has no 64-bit atomics.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// PUBLISHes received on our topic.
    pub received: u64,
    /// Records handed to the client for publishing.
    pub sent: u64,
    /// Records the client refused (queue full, too large) or with no known topic.
    pub send_dropped: u64,
    /// Received messages with a foreign Content Type.
    pub ignored: u64,
    pub connects: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters(Mutex<SessionStats>);

impl Counters {
    pub(super) fn bump(&self, f: impl FnOnce(&mut SessionStats)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn get(&self) -> SessionStats {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where Records for an endpoint ID go.
struct Routes {
    configured: HashMap<String, String>,
    learned: HashMap<String, String>,
}

impl Routes {
    fn topic(&self, to: &str) -> Option<&String> {
        self.configured.get(to).or_else(|| self.learned.get(to))
    }
}

/// A running session: a thread owning the endpoint and the MQTT client.
pub struct Session {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Counters>,
}

impl Session {
    /// Builds the data model and endpoint over `agent` and connects as `file` says.
    pub fn start(agent: Arc<Agent>, file: &UspFile, state_dir: &Path) -> Result<Session, String> {
        file.validate()?;
        if file.websocket.is_none() && file.ca_file.is_none() {
            crate::log_warn!(
                "usp: no ca_file: talking to {}:{} over plain TCP",
                file.broker_host,
                file.broker_port
            );
        }
        let dm = DataModel::open(
            agent.clone(),
            file.usp_config(),
            state_dir,
            file.reboot_hook(),
        )
        .map_err(|f| format!("usp data model: {f}"))?;
        let endpoint = Endpoint::new(dm);
        if let Some(ws) = &file.websocket {
            return ws_session::start(endpoint, agent, file, ws);
        }
        let mqtt = file.mqtt_config()?;
        Session::start_with(endpoint, agent, mqtt, file.topic())
    }

    /// A session whose thread another MTP (the WebSocket one) started.
    pub(super) fn from_parts(
        stop: Arc<AtomicBool>,
        thread: JoinHandle<()>,
        stats: Arc<Counters>,
    ) -> Session {
        Session {
            stop,
            thread: Some(thread),
            stats,
        }
    }

    /// Runs `endpoint` over a client made from `mqtt` (whose subscriptions must include
    /// `own_topic`). Controllers' topics come from the endpoint's configuration.
    pub fn start_with(
        endpoint: Endpoint,
        agent: Arc<Agent>,
        mut mqtt: MqttConfig,
        own_topic: String,
    ) -> Result<Session, String> {
        if !valid_topic(&own_topic) {
            return Err(format!(
                "topic {own_topic:?} is not a valid MQTT topic name"
            ));
        }
        // Our topic, and one level below it: `<own_topic>/<identity>` for controllers whose
        // identity the broker binds to their topic suffix.
        for t in [own_topic.clone(), format!("{own_topic}/+")] {
            if !mqtt.subscriptions.contains(&t) {
                mqtt.subscriptions.push(t);
            }
        }
        let mut ep = endpoint;
        check_bare_topic_roles(&own_topic, &ep.data_model().config().controllers)?;
        ep.bind_unnamed_controllers_to_bare_topic();
        let configured: HashMap<String, String> = ep
            .data_model()
            .config()
            .controllers
            .iter()
            .filter_map(|c| Some((c.endpoint_id.clone(), c.reply_to.clone()?)))
            .collect();
        // R-MTP.6/R-MTP.8: every connection starts with an MQTTConnect Record to each enabled
        // controller we have a topic for, ahead of anything queued while disconnected; the
        // client sends it (as its greeting) so nothing can overtake it.
        mqtt.greeting = ep
            .mqtt_connect_records(&own_topic)
            .into_iter()
            .filter_map(|(to, payload)| {
                Some(Publish {
                    topic: configured.get(&to)?.clone(),
                    qos: 1,
                    content_type: Some(USP_CONTENT_TYPE.into()),
                    response_topic: Some(own_topic.clone()),
                    payload,
                    ..Publish::default()
                })
            })
            .collect();
        // Subscribe before connecting: no agent event is missed between start and the loop.
        let agent_events = agent.events().subscribe();
        let (client, events) = MqttClient::start(mqtt).map_err(|e| format!("mqtt: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Counters::default());
        let mut runner = Runner {
            endpoint: ep,
            client,
            events,
            agent_events,
            own_topic,
            routes: Routes {
                configured,
                learned: HashMap::new(),
            },
            stop: stop.clone(),
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("usp-session".into())
            .stack_size(THREAD_STACK)
            .spawn(move || runner.run())
            .map_err(|e| format!("cannot start the USP session thread: {e}"))?;
        Ok(Session {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> SessionStats {
        self.stats.get()
    }

    /// Disconnects (MQTT DISCONNECT) and ends the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Runner {
    endpoint: Endpoint,
    client: MqttClient,
    events: Receiver<MqttEvent>,
    agent_events: Receiver<(u64, crate::model::Event)>,
    own_topic: String,
    routes: Routes,
    stop: Arc<AtomicBool>,
    stats: Arc<Counters>,
}

impl Runner {
    fn run(&mut self) {
        let mut last_poll = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            match self.events.recv_timeout(TICK) {
                Ok(MqttEvent::Connected { .. }) => {
                    self.stats.bump(|s| s.connects += 1);
                    crate::log_info!("usp: connected, listening on {}", self.own_topic);
                    // The client already sent the MQTTConnect Records (its greeting).
                    let out = self.endpoint.on_connect();
                    self.send_all(out, None);
                }
                Ok(MqttEvent::Disconnected { reason, retry_in }) => {
                    crate::log_warn!(
                        "usp: broker connection lost ({reason}); retry in {retry_in:?}"
                    );
                }
                Ok(MqttEvent::SubscribeRefused {
                    filter,
                    reason_code,
                }) => {
                    crate::log_error!(
                        "usp: the broker refused our subscription to {filter} ({}): controllers \
                         cannot reach this agent",
                        cpevisor_usp::mqtt::codec::reason_name(reason_code)
                    );
                }
                Ok(MqttEvent::Message(m)) => {
                    self.stats.bump(|s| s.received += 1);
                    // `usp.msg` or the registered MIME type (R-MQTT.27a); MQTT 3.1.1 peers
                    // cannot send any.
                    if !is_usp_content_type(m.content_type.as_deref()) {
                        self.stats.bump(|s| s.ignored += 1);
                        crate::log_debug!(
                            "usp: ignoring a message with Content Type {:?}",
                            m.content_type
                        );
                        continue;
                    }
                    let reply_topic = m.response_topic.filter(|t| valid_topic(t));
                    let identity = topic_identity(&self.own_topic, &m.topic);
                    let out = self.endpoint.handle_record(&m.payload, identity);
                    self.send_all(out, reply_topic.as_deref());
                    // A request may have changed what subscribers watch.
                    let notes = self.endpoint.notifications();
                    self.send_all(notes, None);
                    last_poll = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // The data model reads the events itself; these only say that it is worth asking.
            let woke = self.agent_events.try_iter().count() > 0;
            if woke || last_poll.elapsed() >= IDLE_POLL {
                let notes = self.endpoint.notifications();
                self.send_all(notes, None);
                last_poll = Instant::now();
            }
        }
    }

    /// Publishes Records; a reply goes to `reply_topic` when the request named one (and its
    /// sender's topic is then remembered for notifications if none is configured).
    fn send_all(&mut self, out: Vec<(String, Vec<u8>)>, reply_topic: Option<&str>) {
        for (to, bytes) in out {
            let topic = match reply_topic {
                Some(t) => {
                    if !self.routes.configured.contains_key(&to)
                        && (self.routes.learned.len() < MAX_LEARNED_TOPICS
                            || self.routes.learned.contains_key(&to))
                    {
                        self.routes.learned.insert(to.clone(), t.to_string());
                    }
                    t.to_string()
                }
                None => match self.routes.topic(&to) {
                    Some(t) => t.clone(),
                    None => {
                        self.stats.bump(|s| s.send_dropped += 1);
                        crate::log_warn!("usp: no topic known for {to}: record dropped");
                        continue;
                    }
                },
            };
            match self.client.publish(
                &topic,
                &bytes,
                Some(&self.own_topic),
                Some(USP_CONTENT_TYPE),
            ) {
                Ok(()) => self.stats.bump(|s| s.sent += 1),
                Err(e) => {
                    self.stats.bump(|s| s.send_dropped += 1);
                    crate::log_warn!("usp: record to {to} on {topic} dropped: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> Result<UspFile, String> {
        let f: UspFile = serde_json::from_str(json).map_err(|e| e.to_string())?;
        f.validate()?;
        Ok(f)
    }

    #[test]
    fn defaults_and_topics() {
        let f = file(
            r#"{"broker_host":"10.0.2.2","endpoint_id":"os::cpe-1",
                "controllers":[{"endpoint_id":"self::ctl","role":"FullAccess"},
                               {"endpoint_id":"self::ro","topic":"ops/ro","role":"ReadOnly",
                                "identity":"ro"}]}"#,
        )
        .unwrap();
        assert_eq!(f.broker_port, 8883);
        assert_eq!(f.topic(), "usp/agent/os::cpe-1");
        let cfg = f.usp_config();
        assert_eq!(
            cfg.controllers[0].reply_to.as_deref(),
            Some("usp/controller/self::ctl")
        );
        assert_eq!(cfg.controllers[1].reply_to.as_deref(), Some("ops/ro"));
        assert_eq!(cfg.controllers[0].identity, None);
        assert_eq!(cfg.controllers[1].identity.as_deref(), Some("ro"));
        let m = f.mqtt_config().unwrap();
        assert!(m.tls.is_none());
        assert_eq!(m.client_id, "os::cpe-1");
        assert_eq!(m.subscriptions, vec!["usp/agent/os::cpe-1".to_string()]);
        assert_eq!(m.max_packet_size, 64 * 1024 + PACKET_OVERHEAD);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let base = r#""broker_host":"h","endpoint_id":"os::a","controllers":[]"#;
        let err = |extra: &str| file(&format!("{{{base}{extra}}}")).unwrap_err();
        assert!(err(r#","topic":"usp/+/x""#).contains("not a valid MQTT topic"));
        assert!(err(r#","cert_file":"/c""#).contains("go together"));
        assert!(err(r#","cert_file":"/c","key_file":"/k""#).contains("needs TLS"));
        assert!(err(r#","max_record_bytes":10"#).contains("max_record_bytes"));
        assert!(err(r#","broker_port":0"#).contains("broker_port"));
        assert!(err(r#","reboot_command":[]"#).contains("reboot_command"));
        assert!(err(r#","bogus":1"#).contains("unknown field"));
        let dup = file(
            r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[
                {"endpoint_id":"c","role":"FullAccess"},{"endpoint_id":"c","role":"ReadOnly"}]}"#,
        )
        .unwrap_err();
        assert!(dup.contains("listed twice"), "{dup}");
        // A read-only controller beside a full-access one on the bare topic could act as it.
        let mixed = r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[
                {"endpoint_id":"acs","role":"FullAccess"},{"endpoint_id":"ro","role":"ReadOnly"}
                IDENT]}"#;
        let err = file(&mixed.replace("IDENT", "")).unwrap_err();
        assert!(err.contains("ro could act as acs"), "{err}");
        let ro_sub = mixed.replace(r#""ReadOnly"}"#, r#""ReadOnly","identity":"ro-cn"}"#);
        assert!(file(&ro_sub.replace("IDENT", "")).is_ok());
    }

    #[test]
    fn reboot_refused_without_a_command() {
        let f = file(r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[]}"#).unwrap();
        assert!((f.reboot_hook())()
            .unwrap_err()
            .contains("no reboot_command"));
        let f = file(
            r#"{"broker_host":"h","endpoint_id":"os::a","controllers":[],
                "reboot_command":["/bin/false"]}"#,
        )
        .unwrap();
        assert!((f.reboot_hook())().unwrap_err().contains("exited"));
    }

    #[test]
    fn the_topic_suffix_is_the_identity() {
        let own = "usp/agent/os::cpe-1";
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1/ops"), Some("ops"));
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1"), None);
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1/"), None);
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-10/ops"), None);
        assert_eq!(topic_identity(own, "usp/agent/os::cpe-1/a/b"), None);
    }

    #[test]
    fn topics_with_wildcards_are_not_publishable() {
        assert!(valid_topic("usp/controller/self::ctl"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("a/#"));
        assert!(!valid_topic("a/+/b"));
        assert!(!valid_topic(&"x".repeat(MAX_TOPIC_LEN + 1)));
    }
}
