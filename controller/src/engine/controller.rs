//! The controller itself: its state, the run loop that drives every agent's job to an end,
//! and what it does with each received payload before handing it to the answer or
//! notification handlers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use cpevisor_usp::errors::UspError;
use cpevisor_usp::proto::response::RespType;
use cpevisor_usp::proto::{body, request, Msg, NotifyResp, Record};
use cpevisor_usp::record::{decode_msg, decode_record, encode_record, Limits, RecordContent};

use super::types::{
    phase_name, run_nonce, Inbound, Job, Notice, Op, Outcome, Phase, SeenAgent, SeenEvent, Sender,
    Stats, MAX_AGENTS, NOTICE_GRACE, STATUS_POLL,
};

/// The controller: its endpoint ID and topic, and how to reach agents.
pub struct Controller {
    pub(super) id: String,
    /// `{id}` is replaced by the agent's endpoint ID.
    pub(super) agent_topic_template: String,
    pub(super) send: Sender,
    pub(super) rx: Receiver<Inbound>,
    pub(super) limits: Limits,
    pub(super) seq: u64,
    /// Makes this run's msg_ids and command keys differ from earlier runs' (a persistent MQTT
    /// session may deliver answers to those).
    pub(super) nonce: u64,
    pub(super) stats: Stats,
    /// Topics learned from agents' Response Topic.
    pub(super) topics: HashMap<String, String>,
    pub(super) seen: BTreeMap<String, SeenAgent>,
    /// Every notification received, for a long-running caller (`collect_events`); None: not
    /// kept.
    pub(super) events: Option<EventQueue>,
}

/// Notifications kept for a long-running caller, bounded: past `cap` they are counted and
/// dropped (the caller's periodic sweep makes up for them).
pub(super) struct EventQueue {
    pub(super) queue: VecDeque<(String, SeenEvent)>,
    pub(super) cap: usize,
    pub(super) dropped: u64,
}

impl Controller {
    /// A controller with endpoint ID `id` that reaches agents at `agent_topic_template` (`{id}` for
    /// their endpoint ID), publishes through `send` and reads what the MTP receives from `rx`.
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
            events: None,
        }
    }

    /// Keeps every notification received from now on (at most `cap` not yet taken), for
    /// [`Controller::take_events`]: a long-running controller follows the fleet with them.
    pub fn collect_events(&mut self, cap: usize) {
        self.events = Some(EventQueue {
            queue: VecDeque::new(),
            cap,
            dropped: 0,
        });
    }

    /// The notifications received since the last call, oldest first, as (agent, event); and
    /// how many were dropped because the queue was full.
    pub fn take_events(&mut self) -> (Vec<(String, SeenEvent)>, u64) {
        match &mut self.events {
            Some(q) => (q.queue.drain(..).collect(), std::mem::take(&mut q.dropped)),
            None => (Vec::new(), 0),
        }
    }

    pub(super) fn keep_event(&mut self, from: &str, event: &SeenEvent) {
        if let Some(q) = &mut self.events {
            if q.queue.len() < q.cap {
                q.queue.push_back((from.to_string(), event.clone()));
            } else {
                q.dropped += 1;
            }
        }
    }

    /// Message counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The agents seen so far (announcements and answers), by endpoint ID.
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

    pub(super) fn next_id(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("{what}-{:x}-{}", self.nonce, self.seq)
    }

    pub(super) fn send_msg(&mut self, agent: &str, msg: &Msg) -> Result<(), UspError> {
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
                if job.phase.notice_overdue(now) {
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
            .map(|a| Self::outcome_at_end(jobs.remove(&a).expect("one job per agent"), timeout))
            .collect()
    }

    /// A job's outcome once its time is up: one still waiting only for a notification is done
    /// (the operation itself answered); any other unfinished one failed with a timeout.
    pub(super) fn outcome_at_end(mut job: Job, timeout: Duration) -> Outcome {
        if matches!(job.phase, Phase::AwaitNotice { .. }) {
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
    }

    pub(super) fn fail(job: &mut Job, err: UspError) {
        job.outcome.ok = false;
        job.outcome.fault = Some(err);
        job.phase = Phase::Done;
    }

    pub(super) fn succeed(job: &mut Job) {
        job.outcome.ok = true;
        job.phase = Phase::Done;
    }

    /// The OperationComplete ended the command; a DU command also reports its
    /// `DUStateChange!`, which the operator wants to see: wait briefly unless it came already.
    pub(super) fn completed(job: &mut Job, result: Result<(), UspError>) {
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
        if du_op {
            Self::await_notice(job, Notice::DuStateChange);
        } else {
            job.phase = Phase::Done;
        }
    }

    /// The job's outcome is known; unless `notice` came already, wait a little for it.
    pub(super) fn await_notice(job: &mut Job, notice: Notice) {
        job.phase = if job.outcome.events.iter().any(|e| notice.is(e)) {
            Phase::Done
        } else {
            Phase::AwaitNotice {
                notice,
                until: Instant::now() + NOTICE_GRACE,
            }
        };
    }

    pub(super) fn request(&mut self, agent: &str, job: &mut Job, phase: Phase, msg: Msg) {
        job.waiting_for = Some(msg.msg_id().to_string());
        job.phase = phase;
        if let Err(e) = self.send_msg(agent, &msg) {
            Self::fail(job, e);
        }
    }

    pub(super) fn poll_status(&mut self, jobs: &mut HashMap<String, Job>, now: Instant) {
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
    pub(super) fn on_inbound(&mut self, inb: Inbound, jobs: &mut HashMap<String, Job>) {
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
                let event = SeenEvent {
                    kind: "MQTTConnect".into(),
                    path: String::new(),
                    params: BTreeMap::new(),
                };
                self.keep_event(&from, &event);
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

    pub(super) fn note_seen(&mut self, from: &str, how: &str) {
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
}
