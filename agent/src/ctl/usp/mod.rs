//! `cpevisorctl usp ...`: the operator's USP controller. It connects to the MQTT broker with
//! its own endpoint ID, topic and client certificate, sends one request (or one command) to
//! every addressed agent in parallel, follows OperationComplete / `DUStateChange!` /
//! ValueChange until each agent is done or `--timeout` passes, and prints a table or JSON. The
//! exit code is 1 when any agent failed, 2 when the command line or the broker was the problem.

pub mod engine;
mod render;
pub mod ws_server;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpevisor_usp::mqtt::{
    is_usp_content_type, Event as MqttEvent, MqttClient, MqttConfig, MqttError, USP_CONTENT_TYPE,
};
use serde::{Deserialize, Serialize};

use engine::{Controller, Inbound, Op};

pub const USAGE: &str = "usage: cpevisorctl usp [OPTIONS] COMMAND [ARGS]

commands:
  agents                       agents that announce themselves (Boot!, OnBoardRequest) during
                               --listen, and the --agent ones that answer a DeviceInfo probe
  get PATH...                  Get (partial paths end in '.')
  set PATH=VALUE...            Set (all or nothing)
  instances PATH...            GetInstances
  supported PATH...            GetSupportedDM
  operate CMD [ARG=VALUE...]   Operate, e.g. Device.SoftwareModules.ExecEnv.1.Reset()
  install URL [--env REF]      InstallDU (REF: Device.SoftwareModules.ExecEnv.N)
  update UUID [URL]            DeploymentUnit Update()
  uninstall UUID               DeploymentUnit Uninstall()
  start EUID | stop EUID       ExecutionUnit SetRequestedState() Active / Idle

agents (one or more):
  --agent EP                   an agent's endpoint ID (repeatable)
  --agents-file FILE           endpoint IDs, one per line ('#' comments)
  --all                        every agent in the --roster file

options:
  --config FILE                controller settings, JSON: broker_host, broker_port, ca_file,
                               cert_file, key_file, server_name, endpoint_id, topic,
                               agent_topic, identity, session_expiry_s
                               (default $CPEVISOR_USP_CONFIG)
  --broker HOST[:PORT]  --ca FILE  --cert FILE  --key FILE  --id EP  --topic TOPIC
  --agent-topic TEMPLATE       where agents listen, {id} = endpoint ID (default usp/agent/{id})
  --identity CN                publish to <agent topic>/CN, the sub-topic the broker binds to
                               our certificate (see agent/README.md, USP)
  --roster FILE                agents seen are added here by `agents`; read by --all
  --timeout SECS               give up on agents not done by then (default 60)
  --listen SECS                how long `agents` listens (default 5)
  --json                       JSON instead of a table
  --ws-listen HOST:PORT        be a USP WebSocket server (subprotocol v1.usp) that agents
                               connect to, instead of using a broker; with --ws-cert FILE
                               --ws-key FILE (our server certificate) and --ca FILE (the CA
                               agents' client certificates must come from) it is TLS with
                               client certificates required";

/// The controller's connection settings (`--config FILE`, flags override).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtlConfig {
    #[serde(default)]
    pub broker_host: String,
    #[serde(default)]
    pub broker_port: Option<u16>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub endpoint_id: String,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub agent_topic: Option<String>,
    /// Our identity as the broker authenticates it (the client certificate's CN). When set,
    /// requests go to `<agent topic>/<identity>`, the sub-topic the broker's ACL lets only us
    /// write, and agents configured with that identity accept nothing else as us.
    #[serde(default)]
    pub identity: Option<String>,
    /// Above 0: a persistent MQTT session, so announcements made while we were away are kept
    /// by the broker for the next run.
    #[serde(default)]
    pub session_expiry_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UspCli {
    pub config: CtlConfig,
    pub json: bool,
    pub agents: Vec<String>,
    pub all: bool,
    pub roster: Option<PathBuf>,
    pub timeout: Duration,
    pub listen: Duration,
    /// None for `agents`.
    pub op: Option<Op>,
    /// `--ws-listen`: serve agents over WebSocket instead of the broker.
    pub ws: Option<WsListen>,
}

/// The WebSocket server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsListen {
    pub addr: String,
    /// Our server certificate and key; None: plain TCP.
    pub cert: Option<(PathBuf, PathBuf)>,
}

/// Largest config, agents or roster file read.
const MAX_FILE: u64 = 1 << 20;
/// How long to wait for the broker's CONNACK and our subscription.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a publish may wait for room in the client's queue before it counts as failed.
const QUEUE_WAIT: Duration = Duration::from_secs(20);

fn read_bounded(path: &Path, what: &str) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "{what} {}: larger than {MAX_FILE} bytes",
            path.display()
        ));
    }
    Ok(text)
}

fn parse_secs(flag: &str, v: &str) -> Result<Duration, String> {
    let n: f64 = v
        .parse()
        .map_err(|_| format!("{flag}: {v:?} is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&n) {
        return Err(format!("{flag}: {v} is outside 0..86400 seconds"));
    }
    Ok(Duration::from_secs_f64(n))
}

/// Endpoint IDs from a file: one per line, blank lines and '#' comments skipped.
pub fn parse_agents_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        check_endpoint(l).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(l.to_string());
        if out.len() > engine::MAX_AGENTS {
            return Err(format!("more than {} agents", engine::MAX_AGENTS));
        }
    }
    Ok(out)
}

fn check_endpoint(ep: &str) -> Result<(), String> {
    if ep.is_empty() || ep.len() > 256 || ep.chars().any(|c| c.is_control() || c == ' ') {
        Err(format!(
            "endpoint ID {ep:?}: must be 1..256 printable bytes without spaces"
        ))
    } else {
        Ok(())
    }
}

/// Parses the words after `usp`.
pub fn parse(args: &[String]) -> Result<UspCli, String> {
    let mut config_file = std::env::var_os("CPEVISOR_USP_CONFIG").map(PathBuf::from);
    let mut over = CtlConfig::default();
    let mut json = false;
    let mut agents = Vec::new();
    let mut agents_files = Vec::new();
    let mut all = false;
    let mut roster = None;
    let mut timeout = Duration::from_secs(60);
    let mut listen = Duration::from_secs(5);
    let mut env = None;
    let mut ws_listen: Option<String> = None;
    let mut ws_cert: Option<PathBuf> = None;
    let mut ws_key: Option<PathBuf> = None;
    let mut words: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let mut value = || {
            i += 1;
            args.get(i)
                .map(String::as_str)
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a {
            "--json" => json = true,
            "--all" => all = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            "--config" => config_file = Some(PathBuf::from(value()?)),
            "--broker" => {
                let v = value()?;
                match v.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                        over.broker_host = h.trim_matches(['[', ']']).to_string();
                        over.broker_port = Some(
                            p.parse()
                                .map_err(|_| format!("--broker: bad port in {v:?}"))?,
                        );
                    }
                    _ => over.broker_host = v.to_string(),
                }
            }
            "--ca" => over.ca_file = Some(value()?.into()),
            "--cert" => over.cert_file = Some(value()?.into()),
            "--key" => over.key_file = Some(value()?.into()),
            "--id" => over.endpoint_id = value()?.to_string(),
            "--topic" => over.topic = Some(value()?.to_string()),
            "--agent-topic" => over.agent_topic = Some(value()?.to_string()),
            "--identity" => over.identity = Some(value()?.to_string()),
            "--agent" => {
                let v = value()?;
                check_endpoint(v).map_err(|e| format!("--agent: {e}"))?;
                agents.push(v.to_string());
            }
            "--agents-file" => agents_files.push(PathBuf::from(value()?)),
            "--roster" => roster = Some(PathBuf::from(value()?)),
            "--timeout" => timeout = parse_secs(a, value()?)?,
            "--listen" => listen = parse_secs(a, value()?)?,
            "--env" => env = Some(value()?.to_string()),
            "--ws-listen" => ws_listen = Some(value()?.to_string()),
            "--ws-cert" => ws_cert = Some(value()?.into()),
            "--ws-key" => ws_key = Some(value()?.into()),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => words.push(a),
        }
        i += 1;
    }
    let mut config = match &config_file {
        Some(f) => serde_json::from_str::<CtlConfig>(&read_bounded(f, "usp config")?)
            .map_err(|e| format!("usp config {}: {e}", f.display()))?,
        None => CtlConfig::default(),
    };
    merge(&mut config, over);
    for f in &agents_files {
        agents.extend(
            parse_agents_file(&read_bounded(f, "agents file")?)
                .map_err(|e| format!("agents file {}: {e}", f.display()))?,
        );
    }
    if all {
        let r = roster.as_ref().ok_or("--all needs --roster FILE")?;
        agents.extend(load_roster(r)?.into_iter().map(|a| a.endpoint_id));
    }
    let Some((&cmd, rest)) = words.split_first() else {
        return Err("no usp command given (see cpevisorctl usp --help)".into());
    };
    let strings = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let need = |n: std::ops::RangeInclusive<usize>| {
        if n.contains(&rest.len()) {
            Ok(())
        } else {
            Err(format!("usp {cmd}: wrong number of arguments (see --help)"))
        }
    };
    if env.is_some() && cmd != "install" {
        return Err(format!("--env does not apply to usp {cmd}"));
    }
    let op = match cmd {
        "agents" => {
            need(0..=0)?;
            None
        }
        "get" => {
            need(1..=256)?;
            Some(Op::Get {
                paths: strings(rest),
                max_depth: 0,
            })
        }
        "instances" => {
            need(1..=256)?;
            Some(Op::Instances {
                paths: strings(rest),
            })
        }
        "supported" => {
            need(1..=256)?;
            Some(Op::Supported {
                paths: strings(rest),
            })
        }
        "set" => {
            need(1..=256)?;
            let mut params = Vec::new();
            for w in rest {
                let (p, v) = w
                    .split_once('=')
                    .ok_or_else(|| format!("usp set: {w:?} is not PATH=VALUE"))?;
                if engine::split_param(p).is_none() {
                    return Err(format!("usp set: {p:?} is not a parameter path"));
                }
                params.push((p.to_string(), v.to_string()));
            }
            Some(Op::Set { params })
        }
        "operate" => {
            need(1..=257)?;
            let mut args = BTreeMap::new();
            for w in &rest[1..] {
                let (k, v) = w
                    .split_once('=')
                    .ok_or_else(|| format!("usp operate: {w:?} is not NAME=VALUE"))?;
                args.insert(k.to_string(), v.to_string());
            }
            if !rest[0].ends_with("()") {
                return Err(format!("usp operate: {:?} is not a command (X())", rest[0]));
            }
            Some(Op::Operate {
                command: rest[0].to_string(),
                args,
            })
        }
        "install" => {
            need(1..=1)?;
            Some(Op::Install {
                url: rest[0].to_string(),
                env,
            })
        }
        "update" => {
            need(1..=2)?;
            Some(Op::Update {
                du: rest[0].to_string(),
                url: rest.get(1).map(|s| s.to_string()),
            })
        }
        "uninstall" => {
            need(1..=1)?;
            Some(Op::Uninstall {
                du: rest[0].to_string(),
            })
        }
        "start" | "stop" => {
            need(1..=1)?;
            let eu = rest[0].to_string();
            Some(if cmd == "start" {
                Op::Start { eu }
            } else {
                Op::Stop { eu }
            })
        }
        other => return Err(format!("unknown usp command {other:?} (see --help)")),
    };
    if op.is_some() && agents.is_empty() {
        return Err(format!(
            "usp {cmd}: name the agents (--agent EP, --agents-file FILE or --all)"
        ));
    }
    let ws = match (ws_listen, ws_cert, ws_key) {
        (Some(addr), Some(c), Some(k)) => {
            if config.ca_file.is_none() {
                return Err("--ws-listen with TLS needs --ca FILE (the agents' CA)".into());
            }
            Some(WsListen {
                addr,
                cert: Some((c, k)),
            })
        }
        (Some(addr), None, None) => Some(WsListen { addr, cert: None }),
        (Some(_), _, _) => return Err("--ws-cert and --ws-key go together".into()),
        (None, None, None) => None,
        (None, _, _) => return Err("--ws-cert and --ws-key need --ws-listen".into()),
    };
    if ws.is_none() && config.broker_host.is_empty() {
        return Err("no broker: give --broker HOST[:PORT] or --config FILE".into());
    }
    if config.endpoint_id.is_empty() {
        return Err("no controller endpoint ID: give --id EP or --config FILE".into());
    }
    check_endpoint(&config.endpoint_id).map_err(|e| format!("--id: {e}"))?;
    if let Some(id) = &config.identity {
        if !crate::usp::file::valid_topic_level(id) {
            return Err(format!(
                "--identity {id:?}: must be one MQTT topic level (no '/', '+', '#')"
            ));
        }
    }
    if config.cert_file.is_some() != config.key_file.is_some() {
        return Err("--cert and --key go together".into());
    }
    if config.cert_file.is_some() && config.ca_file.is_none() {
        return Err("a client certificate needs TLS: give --ca FILE".into());
    }
    agents.sort();
    agents.dedup();
    Ok(UspCli {
        config,
        json,
        agents,
        all,
        roster,
        timeout,
        listen,
        op,
        ws,
    })
}

fn merge(base: &mut CtlConfig, over: CtlConfig) {
    if !over.broker_host.is_empty() {
        base.broker_host = over.broker_host;
    }
    if !over.endpoint_id.is_empty() {
        base.endpoint_id = over.endpoint_id;
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if over.$f.is_some() { base.$f = over.$f; } )* };
    }
    take!(
        broker_port,
        ca_file,
        cert_file,
        key_file,
        server_name,
        topic,
        agent_topic,
        identity
    );
}

impl CtlConfig {
    pub fn topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("usp/controller/{}", self.endpoint_id))
    }

    pub fn agent_topic(&self) -> String {
        self.agent_topic
            .clone()
            .unwrap_or_else(|| "usp/agent/{id}".to_string())
    }

    fn mqtt_config(&self) -> Result<MqttConfig, String> {
        let port = self
            .broker_port
            .unwrap_or(if self.ca_file.is_some() { 8883 } else { 1883 });
        // A clean session gets a client id of its own, so two runs at once do not take each
        // other's connection over; a persistent one must keep the same id to find its session.
        let client_id = if self.session_expiry_s == 0 {
            format!("{}-{}", self.endpoint_id, std::process::id())
        } else {
            self.endpoint_id.clone()
        };
        let mut m = MqttConfig::new(&self.broker_host, port, client_id)
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
        m.subscriptions = vec![self.topic()];
        m.session_expiry_s = self.session_expiry_s;
        // A fleet answers at once: room for every agent's replies and our requests.
        m.incoming_capacity = 4096;
        m.outgoing_capacity = 4096;
        m.receive_maximum = 256;
        // One connection attempt per run: a refused client should fail, not back off.
        m.backoff.min = Duration::from_millis(500);
        m.backoff.max = Duration::from_secs(2);
        Ok(m)
    }
}

/// One line of the roster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub endpoint_id: String,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub how: String,
}

pub fn load_roster(path: &Path) -> Result<Vec<RosterEntry>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let list: Vec<RosterEntry> = serde_json::from_str(&read_bounded(path, "roster")?)
        .map_err(|e| format!("roster {}: {e}", path.display()))?;
    if list.len() > engine::MAX_AGENTS {
        return Err(format!(
            "roster {}: more than {} agents",
            path.display(),
            engine::MAX_AGENTS
        ));
    }
    for e in &list {
        check_endpoint(&e.endpoint_id).map_err(|m| format!("roster {}: {m}", path.display()))?;
    }
    Ok(list)
}

/// Adds `seen` to the roster (write to a temporary file, then rename: never half a file).
fn save_roster(path: &Path, seen: &[RosterEntry]) -> Result<(), String> {
    let mut list = load_roster(path)?;
    for s in seen {
        match list.iter().position(|e| e.endpoint_id == s.endpoint_id) {
            Some(i) => list[i] = s.clone(),
            None if list.len() < engine::MAX_AGENTS => list.push(s.clone()),
            None => {}
        }
    }
    list.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("roster {}: {e}", path.display()))
}

/// A connected controller: the engine plus the MQTT client behind it.
pub struct Connection {
    pub controller: Controller,
    client: Option<Arc<MqttClient>>,
    /// Set when agents connect to us over WebSocket instead.
    server: Option<ws_server::WsServer>,
}

impl Connection {
    /// Connects and subscribes to our topic; fails if the broker does not accept us within
    /// `CONNECT_TIMEOUT` (a refused certificate, a wrong CA, nothing listening).
    pub fn open(config: &CtlConfig) -> Result<Connection, String> {
        Connection::open_with(config.mqtt_config()?, config)
    }

    pub fn open_with(mqtt: MqttConfig, config: &CtlConfig) -> Result<Connection, String> {
        let broker = format!("{}:{}", mqtt.host, mqtt.port);
        let (client, events) = MqttClient::start(mqtt).map_err(|e| format!("mqtt: {e}"))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut last = String::from("no answer");
        // A persistent session delivers what the broker kept as soon as it accepts us, even
        // before our SUBACK: keep those for the engine.
        let mut early = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| format!("broker {broker}: cannot connect ({last})"))?;
            match events.recv_timeout(left) {
                Ok(MqttEvent::Connected { .. }) => break,
                Ok(MqttEvent::Disconnected { reason, .. }) => last = reason,
                Ok(MqttEvent::SubscribeRefused {
                    filter,
                    reason_code,
                }) => {
                    return Err(format!(
                        "broker {broker} refused our subscription to {filter} ({})",
                        cpevisor_usp::mqtt::codec::reason_name(reason_code)
                    ))
                }
                Ok(MqttEvent::Message(m)) => {
                    if early.len() < 4096 {
                        early.push(m)
                    }
                }
                Err(_) => return Err(format!("broker {broker}: cannot connect ({last})")),
            }
        }
        let client = Arc::new(client);
        let (tx, rx) = mpsc::sync_channel::<Inbound>(4096);
        // Moves messages from the client's event channel to the engine's; ends with either.
        std::thread::Builder::new()
            .name("usp-ctl-rx".into())
            .spawn(move || {
                let early = early.into_iter().map(MqttEvent::Message);
                for ev in early.chain(events) {
                    if let MqttEvent::Message(m) = ev {
                        if !is_usp_content_type(m.content_type.as_deref()) {
                            continue;
                        }
                        let inb = Inbound {
                            payload: m.payload,
                            response_topic: m.response_topic,
                        };
                        if tx.send(inb).is_err() {
                            break;
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the receiver thread: {e}"))?;
        let own_topic = config.topic();
        let publisher = client.clone();
        let identity = config.identity.clone();
        let send: engine::Sender = Box::new(move |topic: &str, bytes: Vec<u8>| {
            let topic = match &identity {
                Some(id) => format!("{topic}/{id}"),
                None => topic.to_string(),
            };
            let topic = topic.as_str();
            let deadline = Instant::now() + QUEUE_WAIT;
            loop {
                match publisher.publish(topic, &bytes, Some(&own_topic), Some(USP_CONTENT_TYPE)) {
                    Ok(()) => return Ok(()),
                    // Back-pressure: the queue drains as the broker acknowledges.
                    Err(MqttError::QueueFull { .. }) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        let controller = Controller::new(&config.endpoint_id, &config.agent_topic(), send, rx);
        Ok(Connection {
            controller,
            client: Some(client),
            server: None,
        })
    }

    /// Listens for agents' WebSockets as `ws` says; the engine addresses agents by
    /// Endpoint ID, each on its own connection.
    pub fn open_ws(ws: &WsListen, config: &CtlConfig) -> Result<Connection, String> {
        let tls = match (&ws.cert, &config.ca_file) {
            (Some((cert, key)), Some(ca)) => Some(
                cpevisor_usp::tls::server_config(cert, key, Some(ca)).map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let (tx, rx) = mpsc::sync_channel::<Inbound>(4096);
        let server = ws_server::WsServer::start(&ws.addr, tls, &config.endpoint_id, tx)?;
        let controller = Controller::new(&config.endpoint_id, "{id}", server.sender(), rx);
        Ok(Connection {
            controller,
            client: None,
            server: Some(server),
        })
    }

    /// With a WebSocket server: waits until each of `agents` has connected (or `deadline`).
    pub fn wait_for_agents(&self, agents: &[String], deadline: Instant) {
        if let Some(s) = &self.server {
            s.wait_for(agents, deadline);
        }
    }

    /// Waits (up to `wait`) until everything queued has been handed to the broker.
    pub fn flush(&self, wait: Duration) {
        // WebSocket sends are written before they return: nothing to wait for.
        let Some(client) = &self.client else { return };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && client.stats().published < self.controller.stats().sent {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs a parsed `usp` command; returns the exit code.
pub fn run(cli: &UspCli) -> i32 {
    let opened = match &cli.ws {
        Some(ws) => Connection::open_ws(ws, &cli.config),
        None => Connection::open(&cli.config),
    };
    let mut conn = match opened {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cpevisorctl usp: {e}");
            return 2;
        }
    };
    let started = Instant::now();
    let code = match &cli.op {
        None => {
            conn.controller.listen(cli.listen);
            let probed = if cli.agents.is_empty() {
                Vec::new()
            } else {
                conn.wait_for_agents(&cli.agents, started + cli.timeout);
                conn.controller.run(&cli.agents, &Op::Probe, cli.timeout)
            };
            let mut seen: Vec<RosterEntry> = conn
                .controller
                .seen()
                .values()
                .map(|s| RosterEntry {
                    endpoint_id: s.endpoint_id.clone(),
                    topic: s.topic.clone(),
                    how: s.how.clone(),
                })
                .collect();
            seen.retain(|s| {
                s.how != "Response" || probed.iter().any(|p| p.ok && p.agent == s.endpoint_id)
            });
            if let Some(r) = &cli.roster {
                if let Err(e) = save_roster(r, &seen) {
                    eprintln!("cpevisorctl usp: {e}");
                }
            }
            render::print_agents(&seen, &probed, cli.json);
            i32::from(probed.iter().any(|p| !p.ok))
        }
        Some(op) => {
            // Agents reach a WebSocket controller when their back-off lets them.
            conn.wait_for_agents(&cli.agents, started + cli.timeout);
            let left = (started + cli.timeout).saturating_duration_since(Instant::now());
            let outcomes = conn.controller.run(&cli.agents, op, left);
            let stats = conn.controller.stats();
            render::print_outcomes(op, &outcomes, stats, started.elapsed(), cli.json);
            i32::from(outcomes.iter().any(|o| !o.ok))
        }
    };
    // NotifyResps we owe are small; give them a moment to leave.
    conn.flush(Duration::from_secs(2));
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<UspCli, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    const CONN: &str =
        "--broker 127.0.0.1:8883 --ca ca.pem --cert c.pem --key c.key --id self::ctl";

    #[test]
    fn parses_commands() {
        let c = p(&format!("{CONN} --agent os::a --agent os::b --json install http://h/p.cpkg --env Device.SoftwareModules.ExecEnv.1")).unwrap();
        assert_eq!(c.config.broker_host, "127.0.0.1");
        assert_eq!(c.config.broker_port, Some(8883));
        assert_eq!(c.agents, vec!["os::a", "os::b"]);
        assert!(c.json);
        assert_eq!(
            c.op,
            Some(Op::Install {
                url: "http://h/p.cpkg".into(),
                env: Some("Device.SoftwareModules.ExecEnv.1".into())
            })
        );
        assert_eq!(c.config.topic(), "usp/controller/self::ctl");
        let c = p(&format!(
            "{CONN} --agent os::a set Device.LocalAgent.Subscription.1.Enable=false"
        ))
        .unwrap();
        assert_eq!(
            c.op,
            Some(Op::Set {
                params: vec![(
                    "Device.LocalAgent.Subscription.1.Enable".into(),
                    "false".into()
                )]
            })
        );
        let c = p(&format!(
            "{CONN} --agent os::a operate Device.Reboot() CommandKey=k"
        ))
        .unwrap();
        assert!(matches!(c.op, Some(Op::Operate { ref args, .. }) if args["CommandKey"] == "k"));
        assert_eq!(p(&format!("{CONN} agents")).unwrap().op, None);
        assert_eq!(
            p(&format!("{CONN} --agent os::a --timeout 2.5 stop eu-1"))
                .unwrap()
                .timeout,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |s: &str| p(s).unwrap_err();
        assert!(e(&format!("{CONN} get Device.")).contains("name the agents"));
        assert!(e(&format!("{CONN} --agent a frob")).contains("unknown usp command"));
        assert!(e(&format!("{CONN} --agent a set Device.X")).contains("not PATH=VALUE"));
        assert!(e(&format!("{CONN} --agent a operate Device.X")).contains("not a command"));
        assert!(e(&format!("{CONN} --agent a start")).contains("wrong number"));
        assert!(
            e(&format!("{CONN} --agent a --env x get Device.")).contains("--env does not apply")
        );
        assert!(e(&format!("{CONN} --all get Device.")).contains("--roster"));
        assert!(e("--id c --agent a get Device.").contains("no broker"));
        assert!(e("--broker h --agent a get Device.").contains("no controller endpoint"));
        assert!(e("--broker h --id c --cert x --agent a get Device.").contains("go together"));
        assert!(e(&format!("{CONN} --timeout soon --agent a get Device.")).contains("--timeout"));
        assert!(e(&format!("{CONN} --bogus")).contains("unknown option --bogus"));
        assert!(e(&format!("{CONN} --agent")).contains("--agent needs a value"));
    }

    #[test]
    fn websocket_listen_flags() {
        let c = p("--id self::c --ca ca.pem --ws-listen 127.0.0.1:9000 --ws-cert s.pem --ws-key s.key --agent os::a get Device.").unwrap();
        assert_eq!(
            c.ws,
            Some(WsListen {
                addr: "127.0.0.1:9000".into(),
                cert: Some(("s.pem".into(), "s.key".into()))
            })
        );
        let e = |s: &str| p(s).unwrap_err();
        assert!(
            e("--id c --ws-listen h:1 --ws-cert s.pem --agent a get Device.")
                .contains("go together")
        );
        assert!(
            e("--id c --ws-listen h:1 --ws-cert s --ws-key k --agent a get Device.")
                .contains("--ca")
        );
        assert!(e("--id c --ws-cert s --ws-key k --agent a get Device.").contains("--ws-listen"));
        assert!(p("--id c --ws-listen h:1 --agent a get Device.").is_ok());
    }

    #[test]
    fn client_ids_and_topics() {
        let mut c = CtlConfig {
            broker_host: "127.0.0.1".into(),
            endpoint_id: "self::c".into(),
            ..CtlConfig::default()
        };
        let m = c.mqtt_config().unwrap();
        assert_eq!(m.client_id, format!("self::c-{}", std::process::id()));
        assert_eq!(m.port, 1883);
        assert_eq!(m.subscriptions, vec!["usp/controller/self::c".to_string()]);
        c.session_expiry_s = 600;
        c.topic = Some("ops/c".into());
        let m = c.mqtt_config().unwrap();
        assert_eq!(m.client_id, "self::c");
        assert_eq!(m.session_expiry_s, 600);
        assert_eq!(m.subscriptions, vec!["ops/c".to_string()]);
        assert_eq!(c.agent_topic().replace("{id}", "os::a"), "usp/agent/os::a");
    }

    #[test]
    fn agents_files_and_rosters() {
        let list = parse_agents_file("# fleet\nos::a\n\n  os::b  \n").unwrap();
        assert_eq!(list, vec!["os::a", "os::b"]);
        assert!(parse_agents_file("os::a\nbad id\n")
            .unwrap_err()
            .contains("line 2"));
        let dir = std::env::temp_dir().join(format!("cpv-roster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = dir.join("roster.json");
        let e = |id: &str, how: &str| RosterEntry {
            endpoint_id: id.into(),
            topic: None,
            how: how.into(),
        };
        save_roster(&r, &[e("os::b", "Boot!"), e("os::a", "OnBoardRequest")]).unwrap();
        save_roster(&r, &[e("os::b", "Response")]).unwrap();
        let got = load_roster(&r).unwrap();
        assert_eq!(
            got,
            vec![e("os::a", "OnBoardRequest"), e("os::b", "Response")]
        );
        let c = p(&format!(
            "{CONN} --all --roster {} get Device.",
            r.display()
        ))
        .unwrap();
        assert_eq!(c.agents, vec!["os::a", "os::b"]);
        std::fs::write(&r, "[{\"endpoint_id\": \"\"}]").unwrap();
        assert!(load_roster(&r).unwrap_err().contains("endpoint ID"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
