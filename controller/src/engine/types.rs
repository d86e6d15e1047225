//! What the engine takes and returns ([`Op`], [`Inbound`], [`Sender`], [`Outcome`], ...), the
//! per-agent job it keeps, its bounds, and small helpers the other parts share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpevisor_usp::errors::UspError;

/// Most agents one command addresses: each holds a job and its results in memory.
pub const MAX_AGENTS: usize = 10_000;
/// Most events kept per agent for the report (older ones are counted, not kept).
pub const MAX_EVENTS_PER_AGENT: usize = 32;
/// How often a start/stop checks the EU's Status when no ValueChange came.
pub(super) const STATUS_POLL: Duration = Duration::from_millis(1000);
/// How long a finished command waits for the notification that reports it (a DU command's
/// `DUStateChange!`, a start's or stop's ValueChange on the Status), which an agent may send
/// just after the answer that ended the command.
pub(super) const NOTICE_GRACE: Duration = Duration::from_secs(2);

/// A payload the MTP received on the controller's topic.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The encoded USP Record.
    pub payload: Vec<u8>,
    /// The MQTT Response Topic: where the sending agent wants replies (its own topic).
    pub response_topic: Option<String>,
}

/// Publishes `payload` (an encoded Record) to `topic`; the engine's only way out.
pub type Sender = Box<dyn FnMut(&str, Vec<u8>) -> Result<(), String> + Send>;

/// What the operator asked for, for every addressed agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Get of parameter paths.
    Get {
        /// Paths to get (wildcards and partial paths allowed).
        paths: Vec<String>,
        /// USP `max_depth` of partial paths; 0: no limit.
        max_depth: u32,
    },
    /// Set of parameters.
    Set {
        /// (full parameter path, value) pairs.
        params: Vec<(String, String)>,
    },
    /// GetInstances of tables.
    Instances {
        /// Object paths.
        paths: Vec<String>,
    },
    /// GetSupportedDM.
    Supported {
        /// Object paths.
        paths: Vec<String>,
    },
    /// Operate of any command.
    Operate {
        /// Full command path (`Device.Reboot()`).
        command: String,
        /// Input arguments.
        args: BTreeMap<String, String>,
    },
    /// `SoftwareModules.InstallDU()`.
    Install {
        /// Package URL.
        url: String,
        /// `ExecutionEnvRef` argument (the ExecEnv instance path); None: the agent picks.
        env: Option<String>,
        /// `X_CPEVISOR_NetworkConfig`: a network section (JSON) in place of the package's;
        /// None: the package's.
        network: Option<String>,
    },
    /// `DeploymentUnit.{i}.Update()`.
    Update {
        /// The DU: its UUID or its full path.
        du: String,
        /// Package URL; default: the one it was installed from.
        url: Option<String>,
        /// `X_CPEVISOR_NetworkConfig` (`null`: back to the package's); None: the agent keeps
        /// the override in force.
        network: Option<String>,
    },
    /// `DeploymentUnit.{i}.Uninstall()`.
    Uninstall {
        /// The DU: its UUID or its full path.
        du: String,
    },
    /// `ExecutionUnit.{i}.SetRequestedState(Active)`, waiting for Status Active.
    Start {
        /// The EU: its EUID or its full path.
        eu: String,
    },
    /// `ExecutionUnit.{i}.SetRequestedState(Idle)`, waiting for Status Idle.
    Stop {
        /// The EU: its EUID or its full path.
        eu: String,
    },
    /// Get `Device.DeviceInfo.` (who answers).
    Probe,
}

impl Op {
    /// Async commands and start/stop follow notifications: the controller subscribes first.
    pub(super) fn needs_subscriptions(&self) -> bool {
        matches!(
            self,
            Op::Operate { .. }
                | Op::Install { .. }
                | Op::Update { .. }
                | Op::Uninstall { .. }
                | Op::Start { .. }
                | Op::Stop { .. }
        )
    }

    /// The table a name (UUID / EUID) must be looked up in, unless a path was given.
    pub(super) fn lookup(&self) -> Option<(&'static str, &'static str, &str)> {
        let (table, key, name) = match self {
            Op::Update { du, .. } | Op::Uninstall { du } => ("DeploymentUnit", "UUID", du),
            Op::Start { eu } | Op::Stop { eu } => ("ExecutionUnit", "EUID", eu),
            _ => return None,
        };
        if name.starts_with("Device.") {
            None
        } else {
            Some((table, key, name.as_str()))
        }
    }
}

/// A notification seen from an agent while its job ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    /// `DUStateChange!`, `Boot!`, `ValueChange`, `OperationComplete`, ...
    pub kind: String,
    /// The object or parameter path it concerns.
    pub path: String,
    /// Its arguments or parameter values.
    pub params: BTreeMap<String, String>,
}

/// How one agent's job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The agent's endpoint ID.
    pub agent: String,
    /// Whether the job succeeded.
    pub ok: bool,
    /// The USP error or TR-181 fault that ended it; code 0 for a local one (timeout, send).
    pub fault: Option<UspError>,
    /// (path or name, value) rows: parameters got, output arguments, instances.
    pub rows: Vec<(String, String)>,
    /// Notifications seen while the job ran, at most `MAX_EVENTS_PER_AGENT`.
    pub events: Vec<SeenEvent>,
    /// Notifications beyond that, counted.
    pub events_dropped: usize,
}

impl Outcome {
    pub(super) fn new(agent: &str) -> Outcome {
        Outcome {
            agent: agent.to_string(),
            ok: false,
            fault: None,
            rows: Vec::new(),
            events: Vec::new(),
            events_dropped: 0,
        }
    }
}

/// Message counts, for the fleet figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records published.
    pub sent: u64,
    /// Records received (understood or not).
    pub received: u64,
    /// Payloads that were not Records for us, or not understood.
    pub ignored: u64,
}

/// An agent that made itself known (Boot!, OnBoardRequest) or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenAgent {
    /// The agent's endpoint ID.
    pub endpoint_id: String,
    /// Its topic, from the Response Topic it sent with.
    pub topic: Option<String>,
    /// Boot!, OnBoardRequest, or Response.
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    Lookup,
    Subscribe,
    Request,
    /// An async command runs: its OperationComplete carries this command key.
    AwaitComplete,
    /// Start/stop: waiting for the EU's Status to reach the wanted value.
    AwaitStatus {
        status_path: String,
        want: String,
        next_poll: Instant,
    },
    /// Finished (the outcome is known); waiting until `until` for the notification that
    /// reports it, which the operator wants to see.
    AwaitNotice {
        notice: Notice,
        until: Instant,
    },
    Done,
}

impl Phase {
    /// Whether the job is finished but for a notification whose wait ended at or before `now`.
    pub(super) fn notice_overdue(&self, now: Instant) -> bool {
        matches!(self, Phase::AwaitNotice { until, .. } if *until <= now)
    }
}

/// The notification a finished job still waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Notice {
    DuStateChange,
    ValueChange { path: String, value: String },
}

impl Notice {
    /// Whether `event` is this notification.
    pub(super) fn is(&self, event: &SeenEvent) -> bool {
        match self {
            Notice::DuStateChange => event.kind == "DUStateChange!",
            Notice::ValueChange { path, value } => {
                event.kind == "ValueChange"
                    && &event.path == path
                    && event.params.get("value") == Some(value)
            }
        }
    }
}

pub(super) struct Job {
    pub(super) op: Op,
    pub(super) phase: Phase,
    /// msg_id of the request whose answer moves the job on.
    pub(super) waiting_for: Option<String>,
    /// The instance path a lookup found (`Device.SoftwareModules.DeploymentUnit.3.`).
    pub(super) target: Option<String>,
    pub(super) command_key: String,
    pub(super) outcome: Outcome,
}

/// Splits `Device.X.Y.Param` into (`Device.X.Y.`, `Param`).
pub fn split_param(path: &str) -> Option<(&str, &str)> {
    let dot = path.rfind('.')?;
    let (obj, name) = path.split_at(dot + 1);
    if obj.is_empty() || name.is_empty() {
        None
    } else {
        Some((obj, name))
    }
}

/// The object a DU/EU command applies to: the looked-up instance or the path given.
pub(super) fn instance_of(target: &str, op: &Op) -> String {
    let given = match op {
        Op::Update { du, .. } | Op::Uninstall { du } => du.as_str(),
        Op::Start { eu } | Op::Stop { eu } => eu.as_str(),
        _ => "",
    };
    let p = if target.is_empty() { given } else { target };
    if p.ends_with('.') {
        p.to_string()
    } else {
        format!("{p}.")
    }
}

pub(super) fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Lookup => "looking the object up",
        Phase::Subscribe => "subscribing",
        Phase::Request => "waiting for the response",
        Phase::AwaitComplete => "waiting for OperationComplete",
        Phase::AwaitStatus { .. } => "waiting for the Status to change",
        Phase::AwaitNotice {
            notice: Notice::DuStateChange,
            ..
        } => "waiting for DUStateChange!",
        Phase::AwaitNotice {
            notice: Notice::ValueChange { .. },
            ..
        } => "waiting for the Status's ValueChange",
        Phase::Done => "done",
    }
}

pub(super) fn run_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}
