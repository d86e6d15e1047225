//! The controller's protocol engine, transport-free: it turns one operator command into USP
//! requests to many agents at once, matches their responses by msg_id and their
//! OperationComplete / `DUStateChange!` / ValueChange notifications by agent and command key,
//! and ends each agent's job with an [`Outcome`]. The MQTT side only hands it received payloads
//! ([`Inbound`]) and carries what it sends ([`Sender`]), so the same engine runs in
//! `cpevisorctl usp` and in tests without a broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use cpevisor_usp::errors::UspError;
use cpevisor_usp::proto::notify::Notification;
use cpevisor_usp::proto::operate_resp::operation_result::OperationResp;
use cpevisor_usp::proto::response::RespType;
use cpevisor_usp::proto::{add, body, request, set, Msg, NotifyResp, Record};
use cpevisor_usp::record::{decode_msg, decode_record, encode_record, Limits, RecordContent};

/// Most agents one command addresses: each holds a job and its results in memory.
pub const MAX_AGENTS: usize = 10_000;
/// Most events kept per agent for the report (older ones are counted, not kept).
pub const MAX_EVENTS_PER_AGENT: usize = 32;
/// How often a start/stop checks the EU's Status when no ValueChange came.
const STATUS_POLL: Duration = Duration::from_millis(1000);
/// How long a finished DU command waits for its `DUStateChange!`, which an agent may send
/// just after the OperationComplete.
const DU_EVENT_GRACE: Duration = Duration::from_secs(2);

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
    fn needs_subscriptions(&self) -> bool {
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
    fn lookup(&self) -> Option<(&'static str, &'static str, &str)> {
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
    fn new(agent: &str) -> Outcome {
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
enum Phase {
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

struct Job {
    op: Op,
    phase: Phase,
    /// msg_id of the request whose answer moves the job on.
    waiting_for: Option<String>,
    /// The instance path a lookup found (`Device.SoftwareModules.DeploymentUnit.3.`).
    target: Option<String>,
    command_key: String,
    outcome: Outcome,
}

/// The controller: its endpoint ID and topic, and how to reach agents.
pub struct Controller {
    id: String,
    /// `{id}` is replaced by the agent's endpoint ID.
    agent_topic_template: String,
    send: Sender,
    rx: Receiver<Inbound>,
    limits: Limits,
    seq: u64,
    /// Makes this run's msg_ids and command keys differ from earlier runs' (a persistent MQTT
    /// session may deliver answers to those).
    nonce: u64,
    stats: Stats,
    /// Topics learned from agents' Response Topic.
    topics: HashMap<String, String>,
    seen: BTreeMap<String, SeenAgent>,
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

impl Controller {
    pub fn new(
        id: &str,
        agent_topic_template: &str,
        send: Sender,
        rx: Receiver<Inbound>,
    ) -> Controller {
        Controller {
            id: id.to_string(),
            agent_topic_template: agent_topic_template.to_string(),
            send,
            rx,
            // A controller reads whole data models back: allow more than an agent does.
            limits: Limits {
                max_record_bytes: 1 << 20,
                max_items: 1 << 16,
                ..Limits::default()
            },
            seq: 0,
            nonce: run_nonce(),
            stats: Stats::default(),
            topics: HashMap::new(),
            seen: BTreeMap::new(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn seen(&self) -> &BTreeMap<String, SeenAgent> {
        &self.seen
    }

    /// Where `agent` listens: the topic it told us, else the template.
    pub fn agent_topic(&self, agent: &str) -> String {
        self.topics
            .get(agent)
            .cloned()
            .unwrap_or_else(|| self.agent_topic_template.replace("{id}", agent))
    }

    fn next_id(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("{what}-{:x}-{}", self.nonce, self.seq)
    }

    fn send_msg(&mut self, agent: &str, msg: &Msg) -> Result<(), UspError> {
        let record = Record::no_session_msg(agent, self.id.clone(), msg);
        let bytes = encode_record(&record, &self.limits)?;
        let topic = self.agent_topic(agent);
        (self.send)(&topic, bytes)
            .map_err(|e| UspError::new(0, format!("publish to {topic}: {e}")))?;
        self.stats.sent += 1;
        Ok(())
    }

    /// Listens for `window`, collecting agents that announce themselves (Boot!,
    /// OnBoardRequest) and answering the Notifies that want a response.
    pub fn listen(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        let mut none: HashMap<String, Job> = HashMap::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(inb) => self.on_inbound(inb, &mut none),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Runs `op` on every agent in parallel until each is done or `timeout` passes.
    pub fn run(&mut self, agents: &[String], op: &Op, timeout: Duration) -> Vec<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut jobs: HashMap<String, Job> = HashMap::new();
        let mut order = Vec::new();
        for a in agents.iter().take(MAX_AGENTS) {
            if jobs.contains_key(a) {
                continue;
            }
            order.push(a.clone());
            let key = self.next_id("ck");
            let mut job = Job {
                op: op.clone(),
                phase: Phase::Lookup,
                waiting_for: None,
                target: None,
                command_key: key,
                outcome: Outcome::new(a),
            };
            self.start(a, &mut job);
            jobs.insert(a.clone(), job);
        }
        while jobs.values().any(|j| j.phase != Phase::Done) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.poll_status(&mut jobs, now);
            for job in jobs.values_mut() {
                if matches!(job.phase, Phase::AwaitDuEvent { until } if until <= now) {
                    job.phase = Phase::Done;
                }
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            match self.rx.recv_timeout(wait) {
                Ok(inb) => self.on_inbound(inb, &mut jobs),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        order
            .into_iter()
            .map(|a| {
                let mut job = jobs.remove(&a).expect("one job per agent");
                if matches!(job.phase, Phase::AwaitDuEvent { .. }) {
                    job.phase = Phase::Done;
                }
                if job.phase != Phase::Done {
                    job.outcome.ok = false;
                    job.outcome.fault = Some(UspError::new(
                        0,
                        format!("timed out after {:?} {}", timeout, phase_name(&job.phase)),
                    ));
                }
                job.outcome
            })
            .collect()
    }

    fn fail(job: &mut Job, err: UspError) {
        job.outcome.ok = false;
        job.outcome.fault = Some(err);
        job.phase = Phase::Done;
    }

    fn succeed(job: &mut Job) {
        job.outcome.ok = true;
        job.phase = Phase::Done;
    }

    /// The OperationComplete ended the command; a DU command also reports its
    /// `DUStateChange!`, which the operator wants to see: wait briefly unless it came already.
    fn completed(job: &mut Job, result: Result<(), UspError>) {
        match result {
            Ok(()) => job.outcome.ok = true,
            Err(e) => {
                job.outcome.ok = false;
                job.outcome.fault = Some(e);
            }
        }
        let du_op = matches!(
            job.op,
            Op::Install { .. } | Op::Update { .. } | Op::Uninstall { .. }
        );
        let seen = job
            .outcome
            .events
            .iter()
            .any(|e| e.kind == "DUStateChange!");
        job.phase = if du_op && !seen {
            Phase::AwaitDuEvent {
                until: Instant::now() + DU_EVENT_GRACE,
            }
        } else {
            Phase::Done
        };
    }

    fn request(&mut self, agent: &str, job: &mut Job, phase: Phase, msg: Msg) {
        job.waiting_for = Some(msg.msg_id().to_string());
        job.phase = phase;
        if let Err(e) = self.send_msg(agent, &msg) {
            Self::fail(job, e);
        }
    }

    fn start(&mut self, agent: &str, job: &mut Job) {
        if let Some((table, key, _)) = job.op.lookup() {
            let id = self.next_id("lookup");
            let path = format!("Device.SoftwareModules.{table}.*.{key}");
            self.request(agent, job, Phase::Lookup, Msg::get(id, [path], 0));
        } else {
            self.after_lookup(agent, job);
        }
    }

    fn after_lookup(&mut self, agent: &str, job: &mut Job) {
        if job.op.needs_subscriptions() {
            let id = self.next_id("sub");
            let msg = Msg::add(id, true, self.subscriptions());
            self.request(agent, job, Phase::Subscribe, msg);
        } else {
            self.main_request(agent, job);
        }
    }

    /// The subscriptions commands rely on, with IDs fixed per controller so that adding them
    /// again is refused as a duplicate (7025) instead of piling up.
    fn subscriptions(&self) -> Vec<add::CreateObject> {
        let sub = |suffix: &str, notif: &str, refs: &str| add::CreateObject {
            obj_path: "Device.LocalAgent.Subscription.".to_string(),
            param_settings: [
                ("ID", format!("{}-{suffix}", self.id)),
                ("NotifType", notif.to_string()),
                ("ReferenceList", refs.to_string()),
                ("Enable", "true".to_string()),
                ("Persistent", "true".to_string()),
            ]
            .into_iter()
            .map(|(p, v)| add::CreateParamSetting {
                param: p.to_string(),
                value: v,
                required: true,
            })
            .collect(),
        };
        vec![
            sub("opc", "OperationComplete", "Device."),
            sub("du", "Event", "Device.SoftwareModules.DUStateChange!"),
            sub("boot", "Event", "Device.Boot!"),
            sub(
                "vc",
                "ValueChange",
                "Device.SoftwareModules.ExecutionUnit.*.Status",
            ),
        ]
    }

    fn main_request(&mut self, agent: &str, job: &mut Job) {
        let id = self.next_id("req");
        let key = job.command_key.clone();
        let target = job.target.clone().unwrap_or_default();
        let operate = |cmd: String, args: Vec<(&str, String)>| {
            let args: BTreeMap<String, String> = args
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            Msg::operate(id.clone(), cmd, key.clone(), true, args)
        };
        let msg = match &job.op {
            Op::Get { paths, max_depth } => Msg::get(id.clone(), paths.clone(), *max_depth),
            Op::Probe => Msg::get(id.clone(), ["Device.DeviceInfo."], 1),
            Op::Instances { paths } => Msg::get_instances(id.clone(), paths.clone(), false),
            Op::Supported { paths } => Msg::get_supported_dm(id.clone(), paths.clone(), false),
            Op::Set { params } => {
                let mut objs: Vec<set::UpdateObject> = Vec::new();
                for (path, value) in params {
                    let (obj, name) = split_param(path).unwrap_or((path, ""));
                    let setting = set::UpdateParamSetting {
                        param: name.to_string(),
                        value: value.clone(),
                        required: true,
                    };
                    match objs.iter_mut().find(|o| o.obj_path == obj) {
                        Some(o) => o.param_settings.push(setting),
                        None => objs.push(set::UpdateObject {
                            obj_path: obj.to_string(),
                            param_settings: vec![setting],
                        }),
                    }
                }
                Msg::set(id.clone(), false, objs)
            }
            Op::Operate { command, args } => {
                Msg::operate(id.clone(), command.clone(), key.clone(), true, args.clone())
            }
            Op::Install { url, env } => operate(
                "Device.SoftwareModules.InstallDU()".into(),
                vec![
                    ("URL", url.clone()),
                    ("ExecutionEnvRef", env.clone().unwrap_or_default()),
                ],
            ),
            Op::Update { url, .. } => operate(
                format!("{}Update()", instance_of(&target, &job.op)),
                vec![("URL", url.clone().unwrap_or_default())],
            ),
            Op::Uninstall { .. } => operate(
                format!("{}Uninstall()", instance_of(&target, &job.op)),
                vec![],
            ),
            Op::Start { .. } | Op::Stop { .. } => {
                let want = if matches!(job.op, Op::Start { .. }) {
                    "Active"
                } else {
                    "Idle"
                };
                operate(
                    format!("{}SetRequestedState()", instance_of(&target, &job.op)),
                    vec![("RequestedState", want.to_string())],
                )
            }
        };
        self.request(agent, job, Phase::Request, msg);
    }

    fn poll_status(&mut self, jobs: &mut HashMap<String, Job>, now: Instant) {
        let due: Vec<String> = jobs
            .iter()
            .filter(|(_, j)| {
                matches!(&j.phase, Phase::AwaitStatus { next_poll, .. } if *next_poll <= now)
                    && j.waiting_for.is_none()
            })
            .map(|(a, _)| a.clone())
            .collect();
        for agent in due {
            let job = jobs.get_mut(&agent).expect("listed above");
            let Phase::AwaitStatus {
                status_path, want, ..
            } = job.phase.clone()
            else {
                continue;
            };
            let id = self.next_id("status");
            job.waiting_for = Some(id.clone());
            job.phase = Phase::AwaitStatus {
                status_path: status_path.clone(),
                want,
                next_poll: now + STATUS_POLL,
            };
            if let Err(e) = self.send_msg(&agent, &Msg::get(id, [status_path], 0)) {
                Self::fail(job, e);
            }
        }
    }

    /// One received payload: a response moves its job on, a notification is recorded (and may
    /// end a job), anything else is counted and ignored.
    fn on_inbound(&mut self, inb: Inbound, jobs: &mut HashMap<String, Job>) {
        self.stats.received += 1;
        let record = match decode_record(&inb.payload, &self.id, &self.limits) {
            Ok(r) => r,
            Err(_) => {
                self.stats.ignored += 1;
                return;
            }
        };
        let from = record.from_id.clone();
        if let Some(t) = inb
            .response_topic
            .filter(|t| !t.is_empty() && t.len() <= 1024)
        {
            if self.topics.len() < MAX_AGENTS || self.topics.contains_key(&from) {
                self.topics.insert(from.clone(), t);
            }
        }
        let payload = match record.content() {
            Ok(RecordContent::Msg(p)) => p.to_vec(),
            // An agent's MQTTConnect Record says it is there (and where).
            Ok(RecordContent::MqttConnect {
                subscribed_topic, ..
            }) => {
                if !subscribed_topic.is_empty() {
                    self.topics
                        .insert(from.clone(), subscribed_topic.to_string());
                }
                self.note_seen(&from, "MQTTConnect");
                return;
            }
            _ => {
                self.stats.ignored += 1;
                return;
            }
        };
        let msg = match decode_msg(&payload, &self.limits) {
            Ok(m) => m,
            Err(_) => {
                self.stats.ignored += 1;
                return;
            }
        };
        match msg.body.as_ref().and_then(|b| b.msg_body.as_ref()) {
            Some(body::MsgBody::Request(r)) => match &r.req_type {
                Some(request::ReqType::Notify(n)) => {
                    if n.send_resp {
                        let resp = Msg::response(
                            msg.msg_id(),
                            RespType::NotifyResp(NotifyResp {
                                subscription_id: n.subscription_id.clone(),
                            }),
                        );
                        let _ = self.send_msg(&from, &resp);
                    }
                    if let Some(note) = &n.notification {
                        self.on_notification(&from, note, jobs);
                    }
                }
                _ => self.stats.ignored += 1,
            },
            Some(body::MsgBody::Response(_)) | Some(body::MsgBody::Error(_)) => {
                self.note_seen(&from, "Response");
                let Some(job) = jobs.get_mut(&from) else {
                    return;
                };
                if job.waiting_for.as_deref() != Some(msg.msg_id()) {
                    return;
                }
                job.waiting_for = None;
                self.on_answer(&from, job, &msg);
            }
            None => self.stats.ignored += 1,
        }
    }

    fn note_seen(&mut self, from: &str, how: &str) {
        if self.seen.len() >= MAX_AGENTS && !self.seen.contains_key(from) {
            return;
        }
        let topic = self.topics.get(from).cloned();
        let entry = self
            .seen
            .entry(from.to_string())
            .or_insert_with(|| SeenAgent {
                endpoint_id: from.to_string(),
                topic: None,
                how: how.to_string(),
            });
        entry.topic = topic;
        // An announcement says more than an answer: keep it.
        if how != "Response" {
            entry.how = how.to_string();
        }
    }

    fn on_notification(
        &mut self,
        from: &str,
        note: &Notification,
        jobs: &mut HashMap<String, Job>,
    ) {
        let event = match note {
            Notification::Event(e) => SeenEvent {
                kind: e.event_name.clone(),
                path: e.obj_path.clone(),
                params: e.params.clone(),
            },
            Notification::ValueChange(v) => SeenEvent {
                kind: "ValueChange".into(),
                path: v.param_path.clone(),
                params: BTreeMap::from([("value".to_string(), v.param_value.clone())]),
            },
            Notification::ObjCreation(o) => SeenEvent {
                kind: "ObjectCreation".into(),
                path: o.obj_path.clone(),
                params: o.unique_keys.clone(),
            },
            Notification::ObjDeletion(o) => SeenEvent {
                kind: "ObjectDeletion".into(),
                path: o.obj_path.clone(),
                params: BTreeMap::new(),
            },
            Notification::OperComplete(c) => {
                use cpevisor_usp::proto::notify::operation_complete::OperationResp as R;
                let mut params = match &c.operation_resp {
                    Some(R::ReqOutputArgs(a)) => a.output_args.clone(),
                    Some(R::CmdFailure(f)) => BTreeMap::from([
                        ("err_code".to_string(), f.err_code.to_string()),
                        ("err_msg".to_string(), f.err_msg.clone()),
                    ]),
                    None => BTreeMap::new(),
                };
                params.insert("command_key".into(), c.command_key.clone());
                SeenEvent {
                    kind: "OperationComplete".into(),
                    path: format!("{}{}", c.obj_path, c.command_name),
                    params,
                }
            }
            Notification::OnBoardReq(o) => SeenEvent {
                kind: "OnBoardRequest".into(),
                path: String::new(),
                params: BTreeMap::from([
                    ("OUI".to_string(), o.oui.clone()),
                    ("ProductClass".to_string(), o.product_class.clone()),
                    ("SerialNumber".to_string(), o.serial_number.clone()),
                ]),
            },
        };
        if event.kind == "Boot!" || event.kind == "OnBoardRequest" {
            self.note_seen(from, &event.kind);
        }
        let Some(job) = jobs.get_mut(from) else {
            return;
        };
        if job.phase == Phase::Done {
            return;
        }
        if job.outcome.events.len() < MAX_EVENTS_PER_AGENT {
            job.outcome.events.push(event.clone());
        } else {
            job.outcome.events_dropped += 1;
        }
        match (&job.phase, note) {
            (_, Notification::OperComplete(c)) if c.command_key == job.command_key => {
                use cpevisor_usp::proto::notify::operation_complete::OperationResp as R;
                match &c.operation_resp {
                    Some(R::ReqOutputArgs(a)) => {
                        job.outcome
                            .rows
                            .extend(a.output_args.iter().map(|(k, v)| (k.clone(), v.clone())));
                        Self::completed(job, Ok(()));
                    }
                    Some(R::CmdFailure(f)) => {
                        Self::completed(job, Err(UspError::new(f.err_code, f.err_msg.clone())))
                    }
                    None => Self::fail(
                        job,
                        UspError::new(0, "OperationComplete without a result".to_string()),
                    ),
                }
            }
            (Phase::AwaitDuEvent { .. }, Notification::Event(e))
                if e.event_name == "DUStateChange!" =>
            {
                job.phase = Phase::Done;
            }
            (
                Phase::AwaitStatus {
                    status_path, want, ..
                },
                Notification::ValueChange(v),
            ) if &v.param_path == status_path && &v.param_value == want => {
                job.outcome
                    .rows
                    .push((v.param_path.clone(), v.param_value.clone()));
                Self::succeed(job);
            }
            _ => {}
        }
    }

    fn on_answer(&mut self, agent: &str, job: &mut Job, msg: &Msg) {
        // The OperationComplete overtook the OperateResp and already ended the job.
        if matches!(job.phase, Phase::AwaitDuEvent { .. } | Phase::Done) {
            if let Some(RespType::OperateResp(o)) = msg.response_body() {
                if let Some(OperationResp::ReqObjPath(p)) = o
                    .operation_results
                    .first()
                    .and_then(|r| r.operation_resp.as_ref())
                {
                    job.outcome.rows.insert(0, ("Request".into(), p.clone()));
                }
            }
            return;
        }
        if let Some(e) = msg.error_body() {
            let mut text = e.err_msg.clone();
            for pe in e.param_errs.iter().take(4) {
                text.push_str(&format!(
                    "; {}: {} {}",
                    pe.param_path, pe.err_code, pe.err_msg
                ));
            }
            // A refused subscription (e.g. a read-only role) does not stop the request itself:
            // the agent then answers the request with its own error.
            if job.phase == Phase::Subscribe {
                self.main_request(agent, job);
                return;
            }
            if let Phase::AwaitStatus { .. } = job.phase {
                return;
            }
            Self::fail(job, UspError::new(e.err_code, text));
            return;
        }
        let Some(resp) = msg.response_body() else {
            return;
        };
        match (&job.phase.clone(), resp) {
            (Phase::Lookup, RespType::GetResp(g)) => {
                let Some((table, key, name)) = job.op.lookup() else {
                    return;
                };
                let found = g
                    .req_path_results
                    .iter()
                    .flat_map(|r| r.resolved_path_results.iter())
                    .find(|r| r.result_params.get(key).map(String::as_str) == Some(name))
                    .map(|r| r.resolved_path.clone());
                match found {
                    Some(path) => {
                        job.target = Some(path);
                        self.after_lookup(agent, job);
                    }
                    None => Self::fail(
                        job,
                        UspError::new(
                            cpevisor_usp::errors::OBJECT_DOES_NOT_EXIST,
                            format!("no {table} with {key} {name}"),
                        ),
                    ),
                }
            }
            (Phase::Subscribe, RespType::AddResp(_)) => self.main_request(agent, job),
            (Phase::Request, RespType::OperateResp(o)) => {
                let Some(r) = o.operation_results.first() else {
                    Self::fail(job, UspError::new(0, "OperateResp without a result"));
                    return;
                };
                match &r.operation_resp {
                    Some(OperationResp::ReqObjPath(p)) => {
                        job.outcome.rows.push(("Request".into(), p.clone()));
                        // The OperationComplete may have overtaken the response.
                        let done = job.outcome.events.iter().any(|e| {
                            e.kind == "OperationComplete"
                                && e.params.get("command_key") == Some(&job.command_key)
                        });
                        if !done {
                            job.phase = Phase::AwaitComplete;
                        }
                        if done {
                            self.replay_completion(job);
                        }
                    }
                    Some(OperationResp::ReqOutputArgs(a)) => {
                        job.outcome
                            .rows
                            .extend(a.output_args.iter().map(|(k, v)| (k.clone(), v.clone())));
                        match &job.op {
                            Op::Start { .. } | Op::Stop { .. } => {
                                let want = if matches!(job.op, Op::Start { .. }) {
                                    "Active"
                                } else {
                                    "Idle"
                                };
                                let status_path = format!(
                                    "{}Status",
                                    instance_of(job.target.as_deref().unwrap_or(""), &job.op)
                                );
                                let reached = job.outcome.events.iter().any(|e| {
                                    e.kind == "ValueChange"
                                        && e.path == status_path
                                        && e.params.get("value").map(String::as_str) == Some(want)
                                });
                                if reached {
                                    job.outcome.rows.push((status_path, want.to_string()));
                                    Self::succeed(job);
                                } else {
                                    job.phase = Phase::AwaitStatus {
                                        status_path,
                                        want: want.to_string(),
                                        next_poll: Instant::now() + STATUS_POLL,
                                    };
                                }
                            }
                            _ => Self::succeed(job),
                        }
                    }
                    Some(OperationResp::CmdFailure(f)) => {
                        Self::fail(job, UspError::new(f.err_code, f.err_msg.clone()))
                    }
                    None => Self::fail(job, UspError::new(0, "OperateResp without a result")),
                }
            }
            (Phase::Request, RespType::GetResp(g)) => {
                for r in &g.req_path_results {
                    if r.err_code != 0 {
                        job.outcome.fault.get_or_insert(UspError::new(
                            r.err_code,
                            format!("{}: {}", r.requested_path, r.err_msg),
                        ));
                    }
                    for rp in &r.resolved_path_results {
                        for (k, v) in &rp.result_params {
                            job.outcome
                                .rows
                                .push((format!("{}{k}", rp.resolved_path), v.clone()));
                        }
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (Phase::Request, RespType::GetInstancesResp(g)) => {
                for r in &g.req_path_results {
                    if r.err_code != 0 {
                        job.outcome.fault.get_or_insert(UspError::new(
                            r.err_code,
                            format!("{}: {}", r.requested_path, r.err_msg),
                        ));
                    }
                    for c in &r.curr_insts {
                        let keys: Vec<String> = c
                            .unique_keys
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        job.outcome
                            .rows
                            .push((c.instantiated_obj_path.clone(), keys.join(",")));
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (Phase::Request, RespType::GetSupportedDmResp(g)) => {
                for r in &g.req_obj_results {
                    if r.err_code != 0 {
                        job.outcome.fault.get_or_insert(UspError::new(
                            r.err_code,
                            format!("{}: {}", r.req_obj_path, r.err_msg),
                        ));
                    }
                    for o in &r.supported_objs {
                        let p = &o.supported_obj_path;
                        job.outcome.rows.push((p.clone(), "object".into()));
                        for c in &o.supported_commands {
                            job.outcome.rows.push((
                                format!("{p}{}", c.command_name),
                                format!("command({})", c.input_arg_names.join(",")),
                            ));
                        }
                        for e in &o.supported_events {
                            job.outcome.rows.push((
                                format!("{p}{}", e.event_name),
                                format!("event({})", e.arg_names.join(",")),
                            ));
                        }
                        for prm in &o.supported_params {
                            job.outcome
                                .rows
                                .push((format!("{p}{}", prm.param_name), "param".into()));
                        }
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (Phase::Request, RespType::SetResp(s)) => {
                use cpevisor_usp::proto::set_resp::updated_object_result::operation_status::OperStatus;
                for r in &s.updated_obj_results {
                    match r.oper_status.as_ref().and_then(|s| s.oper_status.as_ref()) {
                        Some(OperStatus::OperSuccess(ok)) => {
                            for i in &ok.updated_inst_results {
                                for (k, v) in &i.updated_params {
                                    job.outcome
                                        .rows
                                        .push((format!("{}{k}", i.affected_path), v.clone()));
                                }
                                if let Some(pe) = i.param_errs.first() {
                                    job.outcome.fault.get_or_insert(UspError::new(
                                        pe.err_code,
                                        format!("{}{}: {}", i.affected_path, pe.param, pe.err_msg),
                                    ));
                                }
                            }
                        }
                        Some(OperStatus::OperFailure(f)) => {
                            job.outcome.fault.get_or_insert(UspError::new(
                                f.err_code,
                                format!("{}: {}", r.requested_path, f.err_msg),
                            ));
                        }
                        None => {}
                    }
                }
                job.outcome.ok = job.outcome.fault.is_none();
                job.phase = Phase::Done;
            }
            (
                Phase::AwaitStatus {
                    status_path, want, ..
                },
                RespType::GetResp(g),
            ) => {
                let now = g
                    .req_path_results
                    .iter()
                    .flat_map(|r| r.resolved_path_results.iter())
                    .flat_map(|r| r.result_params.values())
                    .next()
                    .cloned();
                if now.as_deref() == Some(want.as_str()) {
                    job.outcome.rows.push((status_path.clone(), want.clone()));
                    Self::succeed(job);
                }
            }
            (phase, other) => Self::fail(
                job,
                UspError::new(
                    0,
                    format!(
                        "unexpected {:?} while {}",
                        other.msg_type(),
                        phase_name(phase)
                    ),
                ),
            ),
        }
    }

    /// Ends a job whose OperationComplete arrived before the OperateResp.
    fn replay_completion(&mut self, job: &mut Job) {
        let Some(e) = job
            .outcome
            .events
            .iter()
            .find(|e| {
                e.kind == "OperationComplete"
                    && e.params.get("command_key") == Some(&job.command_key)
            })
            .cloned()
        else {
            return;
        };
        match e.params.get("err_code") {
            Some(code) => Self::completed(
                job,
                Err(UspError::new(
                    code.parse().unwrap_or(0),
                    e.params.get("err_msg").cloned().unwrap_or_default(),
                )),
            ),
            None => {
                job.outcome.rows.extend(
                    e.params
                        .iter()
                        .filter(|(k, _)| k.as_str() != "command_key")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
                Self::completed(job, Ok(()));
            }
        }
    }
}

/// The object a DU/EU command applies to: the looked-up instance or the path given.
fn instance_of(target: &str, op: &Op) -> String {
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

fn phase_name(p: &Phase) -> &'static str {
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

fn run_nonce() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    //! The engine against scripted agents on threads: what each agent answers to each request
    //! is a function of the decoded Msg, so orderings a broker may produce (notifications
    //! overtaking responses, silence, errors) are tested without one.

    use super::*;
    use cpevisor_usp::errors::PERMISSION_DENIED;
    use cpevisor_usp::proto::get_resp::{RequestedPathResult, ResolvedPathResult};
    use cpevisor_usp::proto::operate_resp::OperationResult;
    use cpevisor_usp::proto::{AddResp, GetResp, OperateResp};
    use std::sync::mpsc::{channel, sync_channel, Sender as ChanSender, SyncSender};
    use std::sync::{Arc, Mutex};

    const CTL: &str = "self::ctl";

    type Script = dyn Fn(&str, &Msg) -> Vec<Msg> + Send + Sync;
    /// What the controller published: (topic, Msg).
    type Published = Arc<Mutex<Vec<(String, Msg)>>>;

    /// A controller whose agents are answered by `script(agent, request)`; also returns every
    /// (topic, Msg) the controller published.
    fn rig(script: Arc<Script>) -> (Controller, Published) {
        let (in_tx, in_rx) = sync_channel::<Inbound>(1024);
        let (out_tx, out_rx) = channel::<(String, Vec<u8>)>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let out_tx: Mutex<ChanSender<(String, Vec<u8>)>> = Mutex::new(out_tx);
        let send: Sender = Box::new(move |topic: &str, bytes: Vec<u8>| {
            out_tx
                .lock()
                .unwrap()
                .send((topic.to_string(), bytes))
                .map_err(|e| e.to_string())
        });
        let seen = log.clone();
        std::thread::spawn(move || fake_agents(out_rx, in_tx, script, seen));
        (Controller::new(CTL, "usp/agent/{id}", send, in_rx), log)
    }

    fn fake_agents(
        out_rx: Receiver<(String, Vec<u8>)>,
        in_tx: SyncSender<Inbound>,
        script: Arc<Script>,
        log: Published,
    ) {
        let limits = Limits::default();
        for (topic, bytes) in out_rx {
            let agent = topic.strip_prefix("usp/agent/").unwrap().to_string();
            let rec = decode_record(&bytes, &agent, &limits).unwrap();
            assert_eq!(rec.from_id, CTL);
            let msg = decode_msg(rec.no_session_payload().unwrap(), &limits).unwrap();
            log.lock().unwrap().push((topic.clone(), msg.clone()));
            for reply in script(&agent, &msg) {
                let r = Record::no_session_msg(CTL, agent.clone(), &reply);
                let inb = Inbound {
                    payload: encode_record(&r, &limits).unwrap(),
                    response_topic: Some(format!("usp/agent/{agent}")),
                };
                if in_tx.send(inb).is_err() {
                    return;
                }
            }
        }
    }

    fn operate_of(m: &Msg) -> Option<&cpevisor_usp::proto::Operate> {
        match m.request_body()? {
            request::ReqType::Operate(o) => Some(o),
            _ => None,
        }
    }

    fn ok_add(m: &Msg) -> Option<Msg> {
        matches!(m.request_body()?, request::ReqType::Add(_))
            .then(|| Msg::response(m.msg_id(), RespType::AddResp(AddResp::default())))
    }

    fn get_resp(m: &Msg, rows: &[(&str, &str, &str)]) -> Msg {
        let resolved = rows
            .iter()
            .map(|(obj, k, v)| ResolvedPathResult {
                resolved_path: obj.to_string(),
                result_params: BTreeMap::from([(k.to_string(), v.to_string())]),
            })
            .collect();
        Msg::response(
            m.msg_id(),
            RespType::GetResp(GetResp {
                req_path_results: vec![RequestedPathResult {
                    requested_path: "x".into(),
                    err_code: 0,
                    err_msg: String::new(),
                    resolved_path_results: resolved,
                }],
            }),
        )
    }

    fn du_event(uuid: &str) -> Msg {
        Msg::notify_event(
            "n-du",
            "self::ctl-du",
            false,
            "Device.SoftwareModules.",
            "DUStateChange!",
            BTreeMap::from([
                ("UUID".to_string(), uuid.to_string()),
                ("CurrentState".to_string(), "Installed".to_string()),
            ]),
        )
    }

    #[test]
    fn install_on_many_agents_with_completion_overtaking_the_response() {
        let script: Arc<Script> = Arc::new(|agent: &str, m: &Msg| {
            if let Some(r) = ok_add(m) {
                return vec![r];
            }
            let Some(o) = operate_of(m) else {
                return vec![];
            };
            assert_eq!(o.command, "Device.SoftwareModules.InstallDU()");
            assert_eq!(o.input_args["URL"], "http://h/a.cpkg");
            assert!(
                !o.input_args.contains_key("ExecutionEnvRef"),
                "empty args are left out"
            );
            let uuid = format!("uuid-{agent}");
            let done = Msg::operation_complete(
                "n-oc",
                "self::ctl-opc",
                false,
                "Device.SoftwareModules.",
                "InstallDU()",
                o.command_key.clone(),
                Ok(BTreeMap::from([("UUID".to_string(), uuid.clone())])),
            );
            let resp = Msg::response(
                m.msg_id(),
                RespType::OperateResp(OperateResp {
                    operation_results: vec![OperationResult::started(
                        o.command.clone(),
                        "Device.LocalAgent.Request.1.",
                    )],
                }),
            );
            vec![done, resp, du_event(&uuid)]
        });
        let (mut ctl, log) = rig(script);
        let agents: Vec<String> = (0..20).map(|i| format!("os::a{i}")).collect();
        let op = Op::Install {
            url: "http://h/a.cpkg".into(),
            env: None,
        };
        let out = ctl.run(&agents, &op, Duration::from_secs(10));
        assert_eq!(out.len(), 20);
        for o in &out {
            assert!(o.ok, "{o:?}");
            let uuid = format!("uuid-{}", o.agent);
            assert!(
                o.rows.contains(&("UUID".to_string(), uuid.clone())),
                "{o:?}"
            );
            assert!(o
                .events
                .iter()
                .any(|e| e.kind == "DUStateChange!" && e.params["UUID"] == uuid));
        }
        // Per agent: the subscriptions, then the command; every topic is the agent's own.
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 40);
        assert!(log.iter().all(|(t, _)| t.starts_with("usp/agent/os::a")));
        assert_eq!(ctl.stats().sent, 40);
        assert_eq!(ctl.stats().received, 80);
    }

    #[test]
    fn refusals_silence_and_missing_objects() {
        let script: Arc<Script> = Arc::new(|agent: &str, m: &Msg| {
            let deny = Msg::from_usp_error(
                m.msg_id(),
                &UspError::new(PERMISSION_DENIED, "ReadOnly controllers may not"),
            );
            match (agent, m.request_body()) {
                ("os::ro", _) => vec![deny],
                ("os::mute", Some(request::ReqType::Add(_))) => vec![ok_add(m).unwrap()],
                ("os::mute", _) => vec![],
                (_, Some(request::ReqType::Get(_))) => vec![get_resp(
                    m,
                    &[("Device.SoftwareModules.DeploymentUnit.1.", "UUID", "other")],
                )],
                _ => vec![],
            }
        });
        let (mut ctl, _) = rig(script);
        let agents = ["os::ro", "os::mute", "os::nodu"].map(String::from);
        let op = Op::Uninstall { du: "u-1".into() };
        let out = ctl.run(&agents, &op, Duration::from_millis(800));
        let by = |a: &str| out.iter().find(|o| o.agent == a).unwrap();
        assert_eq!(by("os::ro").fault.as_ref().unwrap().code, PERMISSION_DENIED);
        let mute = by("os::mute");
        assert!(!mute.ok);
        assert!(
            mute.fault.as_ref().unwrap().message.contains("timed out"),
            "{mute:?}"
        );
        let nodu = by("os::nodu");
        assert_eq!(nodu.fault.as_ref().unwrap().code, 7016);
        assert!(nodu.fault.as_ref().unwrap().message.contains("UUID u-1"));
        assert!(out.iter().all(|o| !o.ok));
    }

    #[test]
    fn start_follows_the_value_change_and_answers_notifies() {
        let script: Arc<Script> = Arc::new(|_: &str, m: &Msg| {
            if let Some(r) = ok_add(m) {
                // An announcement that wants an answer arrives meanwhile.
                let mut notify = Msg::notify_event(
                    "boot-1",
                    "self::ctl-boot",
                    true,
                    "Device.",
                    "Boot!",
                    BTreeMap::new(),
                );
                notify.header.as_mut().unwrap().msg_id = "boot-1".into();
                return vec![r, notify];
            }
            match m.request_body() {
                Some(request::ReqType::Get(_)) => vec![get_resp(
                    m,
                    &[("Device.SoftwareModules.ExecutionUnit.4.", "EUID", "eu-9")],
                )],
                Some(request::ReqType::Operate(o)) => {
                    assert_eq!(
                        o.command,
                        "Device.SoftwareModules.ExecutionUnit.4.SetRequestedState()"
                    );
                    assert_eq!(o.input_args["RequestedState"], "Active");
                    vec![
                        Msg::response(
                            m.msg_id(),
                            RespType::OperateResp(OperateResp {
                                operation_results: vec![OperationResult::sync(
                                    o.command.clone(),
                                    Ok(BTreeMap::new()),
                                )],
                            }),
                        ),
                        Msg::notify_value_change(
                            "vc-1",
                            "self::ctl-vc",
                            false,
                            "Device.SoftwareModules.ExecutionUnit.4.Status",
                            "Starting",
                        ),
                        Msg::notify_value_change(
                            "vc-2",
                            "self::ctl-vc",
                            false,
                            "Device.SoftwareModules.ExecutionUnit.4.Status",
                            "Active",
                        ),
                    ]
                }
                _ => vec![],
            }
        });
        let (mut ctl, log) = rig(script);
        let out = ctl.run(
            &["os::a".to_string()],
            &Op::Start { eu: "eu-9".into() },
            Duration::from_secs(5),
        );
        assert!(out[0].ok, "{:?}", out[0]);
        assert!(out[0].rows.contains(&(
            "Device.SoftwareModules.ExecutionUnit.4.Status".to_string(),
            "Active".to_string()
        )));
        assert_eq!(ctl.seen()["os::a"].how, "Boot!");
        // The Boot! asked for a response: a NotifyResp with its msg_id went back.
        std::thread::sleep(Duration::from_millis(100));
        let log = log.lock().unwrap();
        assert!(log.iter().any(|(_, m)| m.msg_id() == "boot-1"
            && matches!(m.response_body(), Some(RespType::NotifyResp(_)))));
    }
}
