//! What the supervisor shares with its watcher (`ready`), its probes and its stops: a run's
//! state, the status reports, and the process helpers. A leaf, so that those modules need not
//! import the supervisor that uses them.

use std::process::ExitStatus;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::model::{EuStatus, ExecutionFaultCode};

/// One status change of an EU, as the supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EuUpdate {
    /// EUID of the unit.
    pub eu_id: String,
    /// Its new `Status`.
    pub status: EuStatus,
    /// Its `ExecutionFaultCode` now.
    pub fault_code: ExecutionFaultCode,
    /// Its `ExecutionFaultMessage` now; empty without a fault.
    pub fault_message: String,
    /// AutoRestart `RetryCount` now.
    pub retry_count: u32,
    /// Unix seconds of the scheduled restart, 0 when none.
    pub next_restart: u64,
}

/// Where the supervisor reports status changes (the lifecycle, which updates the model and
/// publishes events).
pub trait StatusSink: Send + Sync {
    /// Takes one status change; called from supervisor threads, so it must not block for long.
    fn eu_update(&self, update: EuUpdate);
}

/// Shared between the runner thread and the API.
pub(super) struct Run {
    pub(super) stop_requested: bool,
    /// Process group of the running backend (= its pid), while it runs.
    pub(super) pgid: Option<i32>,
    pub(super) pid: Option<u32>,
    pub(super) finished: bool,
    /// How long a stop waits after SIGTERM before SIGKILL (`Backend::stop_grace`).
    pub(super) grace: Duration,
    /// Set by a stop that had to SIGKILL: why the stop counts as forced.
    pub(super) forced: Option<String>,
}

pub(super) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".to_string(),
    }
}

pub(super) fn signal_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Locks a mutex, recovering the data if a holder panicked (state stays usable).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits on the run's condvar until `done` holds for the run or `deadline` passes; returns the
/// guard either way (the caller reads the state it waited for).
pub(super) fn wait_run_until<'a>(
    cv: &Condvar,
    mut r: MutexGuard<'a, Run>,
    deadline: Instant,
    done: impl Fn(&Run) -> bool,
) -> MutexGuard<'a, Run> {
    while !done(&r) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        r = cv
            .wait_timeout(r, deadline - now)
            .map(|g| g.0)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    r
}
