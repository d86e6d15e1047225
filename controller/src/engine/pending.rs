//! Jobs started one by one and collected as they end, for a long-running controller: the same
//! per-agent jobs as [`Controller::run`], without blocking until all of them are done.

use std::collections::HashMap;
use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::controller::Controller;
use super::types::{Job, Op, Outcome, Phase};

/// Most payloads handled by one [`Controller::pump`] after the first: the caller gets control
/// back regularly even under a flood.
const PUMP_BATCH: usize = 512;

/// The jobs in flight, at most one per agent (answers and notifications are matched by agent).
#[derive(Default)]
pub struct JobSet {
    jobs: HashMap<String, Job>,
    deadlines: HashMap<String, (Instant, Duration)>,
}

impl JobSet {
    /// An empty set.
    pub fn new() -> JobSet {
        JobSet::default()
    }

    /// Jobs in flight.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is in flight.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Whether `agent` has a job in flight.
    pub fn busy(&self, agent: &str) -> bool {
        self.jobs.contains_key(agent)
    }
}

impl Controller {
    /// Starts `op` on `agent` in `set`, ending (timed out) after `timeout`; false when the agent
    /// already has a job there.
    pub fn begin(&mut self, set: &mut JobSet, agent: &str, op: Op, timeout: Duration) -> bool {
        if set.busy(agent) {
            return false;
        }
        let mut job = Job {
            op,
            phase: Phase::Lookup,
            waiting_for: None,
            target: None,
            command_key: self.next_id("ck"),
            outcome: Outcome::new(agent),
        };
        self.start(agent, &mut job);
        set.jobs.insert(agent.to_string(), job);
        set.deadlines
            .insert(agent.to_string(), (Instant::now() + timeout, timeout));
        true
    }

    /// Handles what arrives within `wait` (returning as soon as something did and what followed
    /// it at once is handled), moves timers on, and returns the jobs that ended.
    pub fn pump(&mut self, set: &mut JobSet, wait: Duration) -> Vec<Outcome> {
        let now = Instant::now();
        self.poll_status(&mut set.jobs, now);
        match self.rx.recv_timeout(wait) {
            Ok(inb) => {
                self.on_inbound(inb, &mut set.jobs);
                for _ in 0..PUMP_BATCH {
                    match self.rx.try_recv() {
                        Ok(inb) => self.on_inbound(inb, &mut set.jobs),
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        let now = Instant::now();
        let ended: Vec<String> = set
            .jobs
            .iter()
            .filter(|(a, j)| {
                j.phase == Phase::Done
                    || j.phase.notice_overdue(now)
                    || set.deadlines.get(*a).is_some_and(|(d, _)| *d <= now)
            })
            .map(|(a, _)| a.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|a| {
                let job = set.jobs.remove(&a)?;
                let (_, timeout) = set.deadlines.remove(&a).unwrap_or((now, Duration::ZERO));
                Some(Controller::outcome_at_end(job, timeout))
            })
            .collect()
    }
}
