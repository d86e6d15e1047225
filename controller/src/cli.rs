//! The command line of `cpevisor-controller`: its usage text, flags, commands and the agents
//! file. Parsing only; `run` acts on the result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cpevisor_usp::mqtt::valid_topic_level;

use super::config::{check_endpoint, merge, parse_secs, read_bounded, CtlConfig};
use super::engine::{self, Op};
use super::network;
use super::roster::load_roster;

/// The `cpevisor-controller --help` text.
pub const USAGE: &str = "usage: cpevisor-controller [OPTIONS] COMMAND [ARGS]

The operator's side of cpevisor: a USP (TR-369) controller that drives the cpevisord agents
of a fleet over an MQTT broker (or as a WebSocket server they connect to). Each run sends
one command to the addressed agents, follows it until each is done, and prints a table or
JSON; exit 1 when an agent failed, 2 when the command line or the broker was the problem.
(The service commands, which name a database with --db, are listed after the options.)

commands:
  agents                       agents that announce themselves (Boot!, OnBoardRequest) during
                               --listen, and the --agent ones that answer a DeviceInfo probe
  get PATH...                  Get (partial paths end in '.')
  set PATH=VALUE...            Set (all or nothing)
  instances PATH...            GetInstances
  supported PATH...            GetSupportedDM
  operate CMD [ARG=VALUE...]   Operate, e.g. Device.SoftwareModules.ExecEnv.1.Reset()
  install URL [--env REF] [--network JSON|FILE]
                               InstallDU (REF: Device.SoftwareModules.ExecEnv.N); --network:
                               a network section in place of the package's (agent/README.md)
  update UUID [URL] [--network JSON|FILE|null]
                               DeploymentUnit Update(); the network override in force stays
                               unless given (null: back to the package's section)
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

/// A parsed `cpevisor-controller` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UspCli {
    /// Connection settings: the `--config` file with the flags over it.
    pub config: CtlConfig,
    /// `--json`: JSON instead of a table.
    pub json: bool,
    /// Endpoint IDs from `--agent` and `--agents-file`.
    pub agents: Vec<String>,
    /// `--all`: every agent in the roster.
    pub all: bool,
    /// `--roster FILE`: agents seen by `agents`, read by `--all`.
    pub roster: Option<PathBuf>,
    /// `--timeout`: when to give up on agents not done (default 60 s).
    pub timeout: Duration,
    /// `--listen`: how long `agents` listens (default 5 s).
    pub listen: Duration,
    /// None for `agents`.
    pub op: Option<Op>,
    /// `--ws-listen`: serve agents over WebSocket instead of the broker.
    pub ws: Option<WsListen>,
}

/// The WebSocket server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsListen {
    /// `HOST:PORT` to listen on.
    pub addr: String,
    /// Our server certificate and key; None: plain TCP.
    pub cert: Option<(PathBuf, PathBuf)>,
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
    let mut network = None;
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
                        over.mqtt.broker_host = h.trim_matches(['[', ']']).to_string();
                        over.mqtt.broker_port = Some(
                            p.parse()
                                .map_err(|_| format!("--broker: bad port in {v:?}"))?,
                        );
                    }
                    _ => over.mqtt.broker_host = v.to_string(),
                }
            }
            "--ca" => over.mqtt.ca_file = Some(value()?.into()),
            "--cert" => over.mqtt.cert_file = Some(value()?.into()),
            "--key" => over.mqtt.key_file = Some(value()?.into()),
            "--id" => over.mqtt.endpoint_id = value()?.to_string(),
            "--topic" => over.mqtt.topic = Some(value()?.to_string()),
            "--agent-topic" => over.agent_topic = Some(value()?.to_string()),
            "--identity" => over.identity = Some(value()?.to_string()),
            "--agent" => {
                let v = value()?;
                check_endpoint(v).map_err(|e| format!("--agent: {e}"))?;
                agents.push(v.to_string());
            }
            "--agents-file" => agents_files.push(PathBuf::from(value()?)),
            "--roster" => roster = Some(PathBuf::from(value()?)),
            "--timeout" => timeout = parse_secs(a, value()?, 0.0)?,
            "--listen" => listen = parse_secs(a, value()?, 0.0)?,
            "--env" => env = Some(value()?.to_string()),
            "--network" => network = Some(network::arg(value()?)?),
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
        return Err("no command given (see cpevisor-controller --help)".into());
    };
    let strings = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let need = |n: std::ops::RangeInclusive<usize>| {
        if n.contains(&rest.len()) {
            Ok(())
        } else {
            Err(format!("{cmd}: wrong number of arguments (see --help)"))
        }
    };
    if env.is_some() && cmd != "install" {
        return Err(format!("--env does not apply to {cmd}"));
    }
    if network.is_some() && cmd != "install" && cmd != "update" {
        return Err(format!("--network does not apply to {cmd}"));
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
                    .ok_or_else(|| format!("set: {w:?} is not PATH=VALUE"))?;
                if engine::split_param(p).is_none() {
                    return Err(format!("set: {p:?} is not a parameter path"));
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
                    .ok_or_else(|| format!("operate: {w:?} is not NAME=VALUE"))?;
                args.insert(k.to_string(), v.to_string());
            }
            if !rest[0].ends_with("()") {
                return Err(format!("operate: {:?} is not a command (X())", rest[0]));
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
                network,
            })
        }
        "update" => {
            need(1..=2)?;
            Some(Op::Update {
                du: rest[0].to_string(),
                url: rest.get(1).map(|s| s.to_string()),
                network,
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
        other => return Err(format!("unknown command {other:?} (see --help)")),
    };
    if op.is_some() && agents.is_empty() {
        return Err(format!(
            "{cmd}: name the agents (--agent EP, --agents-file FILE or --all)"
        ));
    }
    let ws = match (ws_listen, ws_cert, ws_key) {
        (Some(addr), Some(c), Some(k)) => {
            if config.mqtt.ca_file.is_none() {
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
    if ws.is_none() && config.mqtt.broker_host.is_empty() {
        return Err("no broker: give --broker HOST[:PORT] or --config FILE".into());
    }
    if config.mqtt.endpoint_id.is_empty() {
        return Err("no controller endpoint ID: give --id EP or --config FILE".into());
    }
    check_endpoint(&config.mqtt.endpoint_id).map_err(|e| format!("--id: {e}"))?;
    if let Some(id) = &config.identity {
        if !valid_topic_level(id) {
            return Err(format!(
                "--identity {id:?}: must be one MQTT topic level (no '/', '+', '#')"
            ));
        }
    }
    // The rules every MQTT settings file follows (the agent's too); a field's flag: --broker,
    // --ca, --cert, --key.
    config.mqtt.validate(ws.is_none())?;
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
