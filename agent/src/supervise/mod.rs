//! Supervision: one backend process per running app, watched by its own thread (blocking
//! `wait`), AutoRestart with the TR-181 back-off, cgroup v2 memory limits, console logs in RAM.
//!
//! The supervisor reports every EU status change through `StatusSink`; it never calls back into
//! the lifecycle while holding its own locks, and the lifecycle must not hold its state lock while
//! calling the blocking `stop`.

pub mod backend;
pub mod balloon;
pub mod cgroup;
pub mod jail;
pub mod logring;
pub mod net;
pub mod probe;
pub mod ready;
pub mod rundir;
mod shared;
mod stop;

pub(crate) use shared::lock;
use shared::{describe_exit, signal_group, wait_run_until, Run};
pub use shared::{EuUpdate, StatusSink};

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::model::{now_secs, AutoRestart, EuStatus, ExecutionFaultCode};
use backend::{Backend, LaunchSpec};
use cgroup::{AppCgroup, CgroupParent};
use logring::{LogRing, DEFAULT_LOG_CAPACITY};
use ready::{HealthBoard, WatchEnd};

/// Why a run was started: a failure to start is reported as FailureOnAutoStart or FailureOnStart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartReason {
    /// SetRequestedState(Active) from a controller or `cpevisorctl`: failure is FailureOnStart.
    Operator,
    /// AutoStart at boot or install: failure is FailureOnAutoStart.
    AutoStart,
}

struct App {
    run: Arc<(Mutex<Run>, Condvar)>,
    logs: Arc<Mutex<LogRing>>,
    cgroup: Arc<Mutex<Option<AppCgroup>>>,
}

/// Why `Supervisor::start` did not start an app: the step that failed, with its cause.
#[derive(Debug)]
pub enum StartError {
    /// The EU's backend is running already.
    AlreadyRunning(String),
    /// No thread for the app's watcher.
    Thread(io::Error),
    /// The watcher thread ended before it said whether the backend started.
    ThreadEnded,
    /// The backend did not start (its console pipe, or the spawn itself, failed).
    Spawn {
        /// `Backend::name` (`kvm`, `jail`, `process`).
        backend: &'static str,
        /// Why.
        source: io::Error,
    },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::AlreadyRunning(eu_id) => write!(f, "{eu_id} is already running"),
            StartError::Thread(e) => write!(f, "cannot start the supervisor thread: {e}"),
            StartError::ThreadEnded => f.write_str("supervisor thread ended early"),
            StartError::Spawn { backend, source } => {
                write!(f, "{backend} backend failed to start: {source}")
            }
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Thread(e) | StartError::Spawn { source: e, .. } => Some(e),
            StartError::AlreadyRunning(_) | StartError::ThreadEnded => None,
        }
    }
}

/// The watcher's first word to `start`: the backend is up (or was stopped while starting),
/// or why it did not start.
type ReadyTx = std::sync::mpsc::Sender<Result<(), StartError>>;

/// Runs the apps: one backend process per running EU, with its watcher, restarts, logs and cgroup.
pub struct Supervisor {
    apps: Mutex<HashMap<String, App>>,
    /// Logs outlive a run so a crashed app's console can still be read.
    logs: Mutex<HashMap<String, Arc<Mutex<LogRing>>>>,
    cgroups: Option<CgroupParent>,
    sink: Arc<dyn StatusSink>,
    /// Each app's last health probe result.
    health: HealthBoard,
    /// The running microVMs' control sockets and balloon figures.
    balloons: balloon::BalloonBoard,
    /// The balloon work, once started.
    balloon_ticker: Mutex<Option<balloon::Ticker>>,
}

impl Supervisor {
    /// `cgroups`: the prepared parent cgroup, or None (the caller logged why).
    pub fn new(cgroups: Option<CgroupParent>, sink: Arc<dyn StatusSink>) -> Self {
        Supervisor {
            apps: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            cgroups,
            sink,
            health: HealthBoard::default(),
            balloons: balloon::BalloonBoard::default(),
            balloon_ticker: Mutex::new(None),
        }
    }

    /// Starts setting the running microVMs' balloon targets (`balloon`), unless `settings`
    /// turn it off; stopped by `stop_all` or when the supervisor is dropped.
    pub fn start_balloons(&self, settings: balloon::BalloonSettings) {
        *lock(&self.balloon_ticker) = balloon::Ticker::start(self.balloons.clone(), settings);
    }

    /// The balloon figures of every running microVM app, as of the last balloon tick.
    pub fn balloon_all(&self) -> HashMap<String, balloon::BalloonFigures> {
        self.balloons.figures_all()
    }

    /// The last health probe result of every app that has a probe.
    pub fn health_all(&self) -> HashMap<String, crate::model::HealthStatus> {
        self.health.get_all()
    }

    /// Whether the EU's backend process is running now.
    pub fn is_running(&self, eu_id: &str) -> bool {
        let apps = lock(&self.apps);
        apps.get(eu_id)
            .map(|a| !lock(&a.run.0).finished)
            .unwrap_or(false)
    }

    /// Starts the app and its watcher thread. Returns once the backend was spawned (Active) or
    /// failed to spawn (the error names why; the EU is then Idle with the start fault).
    pub fn start(
        &self,
        backend: Arc<dyn Backend>,
        spec: LaunchSpec,
        policy: AutoRestart,
        reason: StartReason,
    ) -> Result<(), StartError> {
        let mut apps = lock(&self.apps);
        if let Some(app) = apps.get(&spec.eu_id) {
            if !lock(&app.run.0).finished {
                return Err(StartError::AlreadyRunning(spec.eu_id.clone()));
            }
        }
        let logs = lock(&self.logs)
            .entry(spec.eu_id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(LogRing::new(DEFAULT_LOG_CAPACITY))))
            .clone();
        let cg = match &self.cgroups {
            Some(parent) => match parent.create_app(&spec.eu_id, &backend.limits(&spec)) {
                Ok(cg) => Some(cg),
                Err(e) => {
                    crate::log_warn!("{}: no memory limit, cgroup failed: {e}", spec.eu_id);
                    None
                }
            },
            None => None,
        };
        let grace = backend.stop_grace(&spec);
        let app = App {
            run: Arc::new((
                Mutex::new(Run {
                    stop_requested: false,
                    pgid: None,
                    pid: None,
                    finished: false,
                    grace,
                    forced: None,
                }),
                Condvar::new(),
            )),
            logs,
            cgroup: Arc::new(Mutex::new(cg)),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let runner = Runner {
            backend,
            spec: spec.clone(),
            policy,
            reason,
            run: app.run.clone(),
            logs: app.logs.clone(),
            cgroup: app.cgroup.clone(),
            sink: self.sink.clone(),
            stop_timeout: grace,
            health: self.health.clone(),
            balloons: self.balloons.clone(),
        };
        if let Some(socket) = runner.backend.control_socket(&spec) {
            self.balloons
                .register(&spec.eu_id, socket, spec.memory_mib, app.cgroup.clone());
        }
        apps.insert(spec.eu_id.clone(), app);
        drop(apps);
        thread::Builder::new()
            .name(format!("sup-{}", spec.eu_id))
            .stack_size(128 * 1024)
            .spawn(move || runner.run(ready_tx))
            .map_err(StartError::Thread)?;
        ready_rx.recv().unwrap_or(Err(StartError::ThreadEnded))
    }

    /// The app's console log (kept after it stopped), if it ever ran.
    pub fn logs(&self, eu_id: &str) -> Option<String> {
        lock(&self.logs).get(eu_id).map(|l| lock(l).text())
    }

    /// Forgets an app's logs (uninstall).
    pub fn forget(&self, eu_id: &str) {
        lock(&self.logs).remove(eu_id);
        lock(&self.apps).remove(eu_id);
        self.health.forget(eu_id);
        self.balloons.unregister(eu_id);
    }

    /// MemoryInUse in KiB: the cgroup's memory.current, else the backend process RSS.
    pub fn memory_in_use_kib(&self, eu_id: &str) -> Option<u64> {
        let apps = lock(&self.apps);
        let app = apps.get(eu_id)?;
        if let Some(cg) = lock(&app.cgroup).as_ref() {
            if let Some(bytes) = cg.memory_current() {
                return Some(bytes / 1024);
            }
        }
        let pid = lock(&app.run.0).pid?;
        cgroup::process_rss_kib(pid)
    }
}

struct Runner {
    backend: Arc<dyn Backend>,
    spec: LaunchSpec,
    policy: AutoRestart,
    reason: StartReason,
    run: Arc<(Mutex<Run>, Condvar)>,
    logs: Arc<Mutex<LogRing>>,
    cgroup: Arc<Mutex<Option<AppCgroup>>>,
    sink: Arc<dyn StatusSink>,
    stop_timeout: Duration,
    health: HealthBoard,
    balloons: balloon::BalloonBoard,
}

impl Runner {
    fn update(
        &self,
        status: EuStatus,
        code: ExecutionFaultCode,
        msg: String,
        retry: u32,
        next: u64,
    ) {
        self.sink.eu_update(EuUpdate {
            eu_id: self.spec.eu_id.clone(),
            status,
            fault_code: code,
            fault_message: msg,
            retry_count: retry,
            next_restart: next,
        });
    }

    fn finish(&self) {
        // Before the run reads as finished: a new run of the EU registers itself after that.
        self.balloons.unregister(&self.spec.eu_id);
        let (m, cv) = &*self.run;
        let mut r = lock(m);
        r.finished = true;
        r.pgid = None;
        r.pid = None;
        cv.notify_all();
        if let Some(cg) = lock(&self.cgroup).as_ref() {
            cg.remove();
        }
    }

    fn run(self, ready: ReadyTx) {
        let mut ready = Some(ready);
        let mut retry = self.policy.retry_count;
        loop {
            self.update(
                EuStatus::Starting,
                ExecutionFaultCode::NoFault,
                String::new(),
                retry,
                0,
            );
            let (status, oom_killed, watched) = match self.spawn_and_wait(&mut ready, retry) {
                Some(s) => s,
                None => return, // spawn failed: reported and finished
            };
            // The readiness watcher's verdict (start deadline, health probe) outranks the exit
            // it caused; an OOM kill outranks both.
            let by_watcher = watched.failure.is_some();
            let (reason, fault) = if oom_killed {
                let limit = self.backend.limits(&self.spec).memory_max_bytes >> 20;
                let msg = format!("killed: exceeded memory.max ({limit} MiB)");
                (msg, ExecutionFaultCode::FailureWhileActive)
            } else if let Some(f) = watched.failure.clone() {
                (f.message, f.code)
            } else if watched.active_since.is_none() {
                let code = self.start_fault();
                (
                    format!("{} before it was ready", describe_exit(status)),
                    code,
                )
            } else {
                (
                    describe_exit(status),
                    ExecutionFaultCode::FailureWhileActive,
                )
            };
            if lock(&self.run.0).stop_requested {
                let (code, msg) = self.stop_outcome(status);
                self.update(EuStatus::Idle, code, msg, 0, 0);
                self.finish();
                return;
            }
            self.push_log(format!("[cpevisord] app {reason}\n").as_bytes());
            // ResetPeriod: an app that stayed up (Active) long enough starts its retry count
            // afresh; one that never got there does not.
            let reset = Duration::from_secs(u64::from(self.policy.reset_period));
            if watched.active_since.is_some_and(|t| t.elapsed() >= reset) {
                retry = 0;
            }
            let exhausted =
                self.policy.maximum_retry_count != 0 && retry >= self.policy.maximum_retry_count;
            if !self.policy.enable || exhausted {
                let msg = if self.policy.enable {
                    format!("{reason}; gave up after {retry} restarts")
                } else {
                    format!("{reason}; AutoRestart disabled")
                };
                crate::log_warn!("{}: {msg}", self.spec.eu_id);
                self.update(EuStatus::Idle, fault, msg, retry, 0);
                self.finish();
                return;
            }
            let wait = Duration::from_millis(self.policy.wait_ms(retry));
            retry += 1;
            let next = now_secs() + wait.as_secs();
            crate::log_info!("{}: {reason}; restart {retry} in {wait:?}", self.spec.eu_id);
            // A crash keeps reporting NoFault while restarting (as before); a missed start or
            // failing probe says so at once, since the app was never (or no longer) serving.
            let restarting_fault = match fault {
                ExecutionFaultCode::FailureWhileActive if !by_watcher => {
                    ExecutionFaultCode::NoFault
                }
                f => f,
            };
            self.update(EuStatus::Restarting, restarting_fault, reason, retry, next);
            // Back-off, cut short by a stop request.
            let (m, cv) = &*self.run;
            let r = wait_run_until(cv, lock(m), Instant::now() + wait, |r| r.stop_requested);
            let stopped = r.stop_requested;
            drop(r);
            if stopped {
                self.update(
                    EuStatus::Idle,
                    ExecutionFaultCode::NoFault,
                    String::new(),
                    0,
                    0,
                );
                self.finish();
                return;
            }
        }
    }

    fn push_log(&self, data: &[u8]) {
        lock(&self.logs).push(data);
    }

    /// Spawns the backend with its console piped into the log ring and waits for it to exit.
    /// None when it could not be spawned (already reported); else its exit status and whether
    /// the cgroup's OOM killer struck during the run.
    fn spawn_and_wait(
        &self,
        ready: &mut Option<ReadyTx>,
        retry: u32,
    ) -> Option<(ExitStatus, bool, WatchEnd)> {
        let mut spec = self.spec.clone();
        let oom_before = match lock(&self.cgroup).as_ref() {
            Some(cg) => {
                spec.cgroup = Some(cg.path().to_path_buf());
                cg.oom_kills()
            }
            None => 0,
        };
        let attempt_start = Instant::now();
        let spawned = console_pipe().and_then(|(reader, w1, w2)| {
            let (child, up) = self.backend.spawn_ready(&spec, w1, w2)?;
            Ok((child, reader, up))
        });
        // Hold the run lock from spawn to registering the pgid so a concurrent stop sees it.
        let (m, _) = &*self.run;
        let mut r = lock(m);
        let (mut child, reader, up) = match spawned {
            Ok(v) if !r.stop_requested => v,
            Ok((mut child, _, _)) => {
                // Stopped while starting: do not leave the child behind.
                signal_group(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
                self.backend.after_exit(&self.spec);
                drop(r);
                self.update(
                    EuStatus::Idle,
                    ExecutionFaultCode::NoFault,
                    String::new(),
                    0,
                    0,
                );
                self.finish();
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
                return None;
            }
            Err(e) => {
                drop(r);
                let code = self.start_fault();
                let err = StartError::Spawn {
                    backend: self.backend.name(),
                    source: e,
                };
                let msg = err.to_string();
                crate::log_warn!("{}: {msg}", self.spec.eu_id);
                self.push_log(format!("[cpevisord] {msg}\n").as_bytes());
                self.update(EuStatus::Idle, code, msg, retry, 0);
                self.finish();
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(err));
                }
                return None;
            }
        };
        let pid = child.id();
        r.pgid = Some(pid as i32);
        r.pid = Some(pid);
        drop(r);
        if let Some(cg) = lock(&self.cgroup).as_ref() {
            if let Err(e) = cg.add_pid(pid) {
                crate::log_warn!(
                    "{}: cannot move into {}: {e}",
                    self.spec.eu_id,
                    cg.path().display()
                );
            }
        }
        let logs = self.logs.clone();
        let log_thread = thread::Builder::new()
            .name("console".into())
            .stack_size(64 * 1024)
            .spawn(move || pump_console(reader, logs))
            .ok();
        // Active once the app is up (ready.rs): at once, or from the watcher thread.
        let watching = ready::start(self.watch(&spec, pid, up, attempt_start, retry));
        if let Some(tx) = ready.take() {
            let _ = tx.send(Ok(()));
        }
        let status = loop {
            match child.wait() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::log_error!("{}: wait failed: {e}", self.spec.eu_id);
                    break ExitStatus::default();
                }
            }
        };
        {
            let mut r = lock(m);
            r.pgid = None;
            r.pid = None;
            // The watcher waits on this condvar for the run to end.
            self.run.1.notify_all();
        }
        // Leftover members of the group (daemonized children) go with the app.
        signal_group(pid as i32, libc::SIGKILL);
        self.backend.after_exit(&self.spec);
        if let Some(t) = log_thread {
            let _ = t.join();
        }
        let oom_killed = lock(&self.cgroup)
            .as_ref()
            .is_some_and(|cg| cg.oom_kills() > oom_before);
        Some((status, oom_killed, watching.end()))
    }

    /// The fault of a start that failed: TR-181 tells an auto-start from an operator's.
    fn start_fault(&self) -> ExecutionFaultCode {
        match self.reason {
            StartReason::AutoStart => ExecutionFaultCode::FailureOnAutoStart,
            StartReason::Operator => ExecutionFaultCode::FailureOnStart,
        }
    }

    fn watch(
        &self,
        spec: &LaunchSpec,
        pid: u32,
        up: ready::AppUp,
        started: Instant,
        retry: u32,
    ) -> ready::Watch {
        let (backend, probe_spec) = (self.backend.clone(), spec.clone());
        ready::Watch {
            eu_id: spec.eu_id.clone(),
            pid,
            up,
            policy: spec.start.clone(),
            start_code: self.start_fault(),
            target: probe::Target {
                addr: self.backend.probe_addr(spec),
                command: Box::new(move |argv| backend.probe_command(&probe_spec, pid, argv)),
            },
            run: self.run.clone(),
            sink: self.sink.clone(),
            board: self.health.clone(),
            started,
            retry,
            stop_timeout: self.stop_timeout,
        }
    }
}

/// One pipe for the backend's stdout and stderr; the read end stays with us.
fn console_pipe() -> io::Result<(File, Stdio, Stdio)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by pipe2 and are not owned elsewhere.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w2 = w.try_clone()?;
    Ok((File::from(r), Stdio::from(w), Stdio::from(w2)))
}

fn pump_console(mut reader: File, logs: Arc<Mutex<LogRing>>) {
    let mut buf = [0u8; 2048];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => lock(&logs).push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}
