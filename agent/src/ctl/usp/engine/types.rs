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
/// How long a finished DU command waits for its `DUStateChange!`, which an agent may send
/// just after the OperationComplete.
pub(super) const DU_EVENT_GRACE: Duration = Duration::from_secs(2);

/// A payload the MTP received on the controller's topic.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub payload: Vec<u8>,
    /// The MQTT Response Topic: where the sending agent wants replies (its own topic).
    pub response_topic: Option<String>,
}

/// Publishes `payload` (an encoded Record) to `topic`; the engine's only way out.
pub type Sender = Box<dyn FnMut(&str, Vec<u8>) -> Result<(), String> + Send>;

/// What the operator asked for, for every addressed agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Get {
        paths: Vec<String>,
        max_depth: u32,
    },
    Set {
        params: Vec<(String, String)>,
    },
    Instances {
        paths: Vec<String>,
    },
    Supported {
        paths: Vec<String>,
    },
    Operate {
        command: String,
        args: BTreeMap<String, String>,
    },
    Install {
        url: String,
        env: Option<String>,
    },
    Update {
        du: String,
        url: Option<String>,
    },
    Uninstall {
        du: String,
    },
    Start {
        eu: String,
    },
    Stop {
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
    pub path: String,
    pub params: BTreeMap<String, String>,
}

/// How one agent's job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub agent: String,
    pub ok: bool,
    /// The USP error or TR-181 fault that ended it; code 0 for a local one (timeout, send).
    pub fault: Option<UspError>,
    /// (path or name, value) rows: parameters got, output arguments, instances.
    pub rows: Vec<(String, String)>,
    pub events: Vec<SeenEvent>,
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
    pub sent: u64,
    pub received: u64,
    /// Payloads that were not Records for us, or not understood.
    pub ignored: u64,
}

/// An agent that made itself known (Boot!, OnBoardRequest) or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenAgent {
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
    /// Finished; waiting a little for the `DUStateChange!` of a DU command.
    AwaitDuEvent {
        until: Instant,
    },
    Done,
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
        Phase::AwaitDuEvent { .. } => "waiting for DUStateChange!",
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
