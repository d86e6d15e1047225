//! When a started app counts as up. A run goes Starting -> Active only once the backend says
//! the app is up (a microVM: the guest's boot-ready signal on the VMM's readiness pipe; a jail:
//! the app's command exec'd; a host process: spawned) and, where the package declares a health
//! probe, that probe has passed, all within the start deadline. Missing it ends the run as a
//! start failure; a probe that fails `failure_threshold` times in a row while Active ends it as
//! FailureWhileActive. Either way the supervisor's AutoRestart decides what comes next.
//!
//! The watcher runs beside the runner thread (which sits in `wait`), only where there is
//! something to wait for: a readiness pipe or a probe.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::probe::{self, Outcome, Target};
use super::shared::{lock, signal_group, EuUpdate, Run, StatusSink};
use crate::model::{now_secs, rfc3339, EuStatus, ExecutionFaultCode, HealthStatus};
use crate::package::{HealthCheck, ProbeKind};

/// Start deadline when the package sets none. A router boots a small microVM in about a
/// second; nested guests on the emulated (TCG) test boards signalled boot-ready after 2.4-48 s
/// under load (rootfs/files/guest/README.md): two minutes finds a hung guest without failing
/// a slow one.
pub const DEFAULT_START_DEADLINE_S: u32 = 120;

/// What a run must reach, and by when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPolicy {
    /// How long a start may take to reach Active: the process running, then the health probe
    /// passing.
    pub deadline: Duration,
    /// The health probe that must pass before Active and keep passing while Active.
    pub health: Option<HealthCheck>,
}

impl StartPolicy {
    /// A policy with `deadline_s` (default `DEFAULT_START_DEADLINE_S`) and `health`.
    pub fn new(deadline_s: Option<u32>, health: Option<HealthCheck>) -> StartPolicy {
        StartPolicy {
            deadline: Duration::from_secs(u64::from(
                deadline_s.unwrap_or(DEFAULT_START_DEADLINE_S),
            )),
            health,
        }
    }
}

impl Default for StartPolicy {
    fn default() -> Self {
        StartPolicy::new(None, None)
    }
}

/// How a backend will say that its app is up.
pub enum AppUp {
    /// It is, once spawned (a host process; a jail, whose runner answered once the command
    /// was exec'd).
    Now,
    /// One byte on this pipe (a microVM: the VMM's `ready_fd`); EOF without it: never.
    Pipe(OwnedFd),
}

/// Why the watcher ended a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The fault the EU gets (FailureOnStart, FailureOnAutoStart or FailureWhileActive).
    pub code: ExecutionFaultCode,
    /// Its `ExecutionFaultMessage`.
    pub message: String,
}

/// What the runner learns once the run is over.
#[derive(Debug, Default)]
pub struct WatchEnd {
    /// The run was ended by the watcher, for this reason.
    pub failure: Option<Failure>,
    /// When it became Active (None: it never did).
    pub active_since: Option<Instant>,
}

/// The last probe result of every app, for the data model and `cpevisorctl`.
#[derive(Default, Clone)]
pub struct HealthBoard(Arc<Mutex<HashMap<String, HealthStatus>>>);

impl HealthBoard {
    /// Every app's last probe result, by EUID.
    pub fn get_all(&self) -> HashMap<String, HealthStatus> {
        lock(&self.0).clone()
    }
    /// Drops the result of `eu_id` (its app was uninstalled).
    pub fn forget(&self, eu_id: &str) {
        lock(&self.0).remove(eu_id);
    }
    fn record(&self, eu_id: &str, o: &Outcome) {
        lock(&self.0).insert(
            eu_id.to_string(),
            HealthStatus {
                state: if o.ok { "ok" } else { "failing" }.into(),
                time: rfc3339(now_secs()),
                message: o.message.clone(),
            },
        );
    }
}

/// Everything the watcher needs of one run.
pub(super) struct Watch {
    pub(super) eu_id: String,
    pub(super) pid: u32,
    pub(super) up: AppUp,
    pub(super) policy: StartPolicy,
    /// The fault a missed start is reported with (FailureOnStart, or FailureOnAutoStart).
    pub(super) start_code: ExecutionFaultCode,
    pub(super) target: Target,
    pub(super) run: Arc<(Mutex<Run>, Condvar)>,
    pub(super) sink: Arc<dyn StatusSink>,
    pub(super) board: HealthBoard,
    /// Started at (the deadline counts from here).
    pub(super) started: Instant,
    pub(super) retry: u32,
    /// SIGTERM to SIGKILL, when the watcher ends a run.
    pub(super) stop_timeout: Duration,
}

/// Active at once when nothing is to be awaited (no thread); otherwise a watcher thread.
pub(super) enum Watching {
    Done(WatchEnd),
    Thread(JoinHandle<WatchEnd>),
}

impl Watching {
    /// The watcher's verdict; call once the app has ended (and `Run.pgid` was cleared).
    pub(super) fn end(self) -> WatchEnd {
        match self {
            Watching::Done(end) => end,
            Watching::Thread(t) => t.join().unwrap_or_default(),
        }
    }
}

pub(super) fn start(w: Watch) -> Watching {
    if matches!(w.up, AppUp::Now) && w.policy.health.is_none() {
        w.active();
        return Watching::Done(WatchEnd {
            failure: None,
            active_since: Some(Instant::now()),
        });
    }
    let name = format!("ready-{}", w.eu_id);
    let (sink, eu_id, retry) = (w.sink.clone(), w.eu_id.clone(), w.retry);
    let spawned = thread::Builder::new()
        .name(name)
        .stack_size(128 * 1024)
        .spawn(move || w.watch());
    match spawned {
        Ok(t) => Watching::Thread(t),
        Err(e) => {
            // No watcher (no memory for a thread): the app is reported up once spawned, as
            // before readiness was watched, rather than left Starting for good.
            crate::log_warn!("{eu_id}: cannot start the readiness watcher: {e}");
            active_update(&sink, &eu_id, retry);
            Watching::Done(WatchEnd {
                failure: None,
                active_since: Some(Instant::now()),
            })
        }
    }
}

fn active_update(sink: &Arc<dyn StatusSink>, eu_id: &str, retry: u32) {
    sink.eu_update(EuUpdate {
        eu_id: eu_id.to_string(),
        status: EuStatus::Active,
        fault_code: ExecutionFaultCode::NoFault,
        fault_message: String::new(),
        retry_count: retry,
        next_restart: 0,
    });
}

impl Watch {
    fn active(&self) {
        active_update(&self.sink, &self.eu_id, self.retry);
    }

    /// Still this run's process, and nobody asked it to stop.
    fn alive(&self) -> bool {
        let r = lock(&self.run.0);
        r.pgid == Some(self.pid as i32) && !r.stop_requested
    }

    /// Waits until `until` or the run ends; true while it still runs.
    fn pause_until(&self, until: Instant) -> bool {
        let (m, cv) = &*self.run;
        let mut r = lock(m);
        loop {
            if r.pgid != Some(self.pid as i32) || r.stop_requested {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            r = cv
                .wait_timeout(r, until - now)
                .map(|g| g.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn watch(mut self) -> WatchEnd {
        let deadline = self.started + self.policy.deadline;
        let secs = self.policy.deadline.as_secs();
        let up = std::mem::replace(&mut self.up, AppUp::Now);
        if let AppUp::Pipe(fd) = up {
            match wait_byte(fd, deadline) {
                Ok(true) => {}
                // EOF: no signal will come (the VMM is ending, and the runner reports how);
                // one that lives on anyway is failed at the deadline like a silent one.
                Ok(false) if !self.pause_until(deadline) => return WatchEnd::default(),
                Ok(false) | Err(_) => {
                    if !self.alive() {
                        return WatchEnd::default();
                    }
                    return self.fail(
                        self.start_code,
                        format!("not ready within {secs} s: the guest never signalled boot-ready"),
                    );
                }
            }
        }
        let Some(health) = self.policy.health.clone() else {
            if !self.alive() {
                return WatchEnd::default();
            }
            self.active();
            return WatchEnd {
                failure: None,
                active_since: Some(Instant::now()),
            };
        };
        if let (ProbeKind::Tcp | ProbeKind::Http, Err(why)) = (health.kind, &self.target.addr) {
            // Nothing to wait for: the probe can never reach the app.
            let why = format!("health probe: {why}");
            self.board.record(
                &self.eu_id,
                &Outcome {
                    ok: false,
                    message: why.clone(),
                },
            );
            return self.fail(self.start_code, why);
        }
        let interval = Duration::from_secs(u64::from(health.interval_s.max(1)));
        // Until the probe passes: every interval (but at least once a second while starting,
        // so a fast app is not held back a whole interval), up to the deadline.
        let start_interval = interval.min(Duration::from_secs(1));
        loop {
            if !self.alive() {
                return WatchEnd::default();
            }
            let o = probe::run(&health, &self.target);
            self.board.record(&self.eu_id, &o);
            if o.ok {
                break;
            }
            let next = Instant::now() + start_interval;
            if next >= deadline {
                if !self.alive() {
                    return WatchEnd::default();
                }
                return self.fail(
                    self.start_code,
                    format!(
                        "not ready within {secs} s: health probe failing: {}",
                        o.message
                    ),
                );
            }
            if !self.pause_until(next) {
                return WatchEnd::default();
            }
        }
        if !self.alive() {
            return WatchEnd::default();
        }
        self.active();
        let active_since = Some(Instant::now());
        let mut failures = 0u32;
        loop {
            if !self.pause_until(Instant::now() + interval) {
                return WatchEnd {
                    failure: None,
                    active_since,
                };
            }
            let o = probe::run(&health, &self.target);
            self.board.record(&self.eu_id, &o);
            failures = if o.ok { 0 } else { failures + 1 };
            if failures >= health.failure_threshold && self.alive() {
                let mut end = self.fail(
                    ExecutionFaultCode::FailureWhileActive,
                    format!(
                        "health probe failed {failures} times in a row: {}",
                        o.message
                    ),
                );
                end.active_since = active_since;
                return end;
            }
        }
    }

    /// Ends the run: SIGTERM to the app's group, SIGKILL after the stop timeout.
    fn fail(&self, code: ExecutionFaultCode, message: String) -> WatchEnd {
        crate::log_warn!("{}: {message}", self.eu_id);
        signal_group(self.pid as i32, libc::SIGTERM);
        if self.pause_until(Instant::now() + self.stop_timeout) {
            signal_group(self.pid as i32, libc::SIGKILL);
        }
        WatchEnd {
            failure: Some(Failure { code, message }),
            active_since: None,
        }
    }
}

/// Ok(true) once a byte came, Ok(false) on EOF, Err on the deadline or an error.
fn wait_byte(fd: OwnedFd, deadline: Instant) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut file = File::from(fd);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "start deadline"));
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll reads and writes one pollfd valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            continue;
        }
        let mut b = [0u8; 1];
        return match file.read(&mut b) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_readiness_pipe_answers_byte_eof_or_deadline() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        File::from(w).write_all(b"R").unwrap();
        assert!(wait_byte(r, Instant::now() + Duration::from_secs(5)).unwrap());
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(w);
        assert!(!wait_byte(r, Instant::now() + Duration::from_secs(5)).unwrap());
        let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let e = wait_byte(r, Instant::now() + Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn default_deadline_applies_when_the_package_sets_none() {
        assert_eq!(StartPolicy::default().deadline, Duration::from_secs(120));
        assert_eq!(
            StartPolicy::new(Some(7), None).deadline,
            Duration::from_secs(7)
        );
    }
}
