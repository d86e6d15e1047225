//! Stopping apps. A stop sends SIGTERM to the backend's process group: a jail or process app
//! gets it directly, a microVM's VMM presses the guest's power button and waits for the guest
//! to power off within the app's deadline. The agent waits the app's deadline (plus the
//! backend's margin, `Backend::stop_grace`), then SIGKILLs the group. A stop that needed the
//! kill, or that the VMM had to force, ends Idle with ExecutionFaultCode FailureOnStop (TR-181:
//! the EU failed to stop when asked) and the reason in ExecutionFaultMessage and the log.
//!
//! `stop_all` (daemon shutdown, a router's reboot) stops every app at once: the whole takes as
//! long as the slowest app, and each app's stop is bounded.

use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use super::shared::{lock, signal_group, wait_run_until, EuUpdate};
use super::{Runner, Supervisor};
use crate::model::{EuStatus, ExecutionFaultCode};

/// How long a stop waits, after SIGKILL, for the watcher to reap the backend (a process stuck
/// in the kernel may take a while): then the stop returns and the exit is reported when it
/// comes. Bounds a stop at `stop_grace + KILL_WAIT`.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Stops the app: SIGTERM to its process group, SIGKILL after its stop grace. Blocks until
    /// the watcher has seen it exit, at most `stop_grace + KILL_WAIT`. False when it was not
    /// running. It cannot fail: a backend that outlives its SIGKILL is reported when it exits.
    pub fn stop(&self, eu_id: &str) -> bool {
        let run = match lock(&self.apps).get(eu_id) {
            Some(app) => app.run.clone(),
            None => return false,
        };
        let (m, cv) = &*run;
        if lock(m).finished {
            return false;
        }
        // Published without holding the run lock: the sink takes the lifecycle's lock, which
        // in turn may query us.
        self.sink.eu_update(EuUpdate {
            eu_id: eu_id.to_string(),
            status: EuStatus::Stopping,
            fault_code: ExecutionFaultCode::NoFault,
            fault_message: String::new(),
            retry_count: 0,
            next_restart: 0,
        });
        let mut r = lock(m);
        if r.finished {
            return true;
        }
        r.stop_requested = true;
        if let Some(pgid) = r.pgid {
            signal_group(pgid, libc::SIGTERM);
        }
        cv.notify_all();
        let grace = r.grace;
        r = wait_run_until(cv, r, Instant::now() + grace, |r| r.finished);
        if !r.finished {
            if let Some(pgid) = r.pgid {
                let why = format!(
                    "did not stop within {} ms of the stop request; killed",
                    grace.as_millis()
                );
                crate::log_warn!("{eu_id}: {why}");
                r.forced = Some(why);
                signal_group(pgid, libc::SIGKILL);
            }
            r = wait_run_until(cv, r, Instant::now() + KILL_WAIT, |r| r.finished);
            if !r.finished {
                crate::log_error!(
                    "{eu_id}: still not reaped {} s after SIGKILL; its exit is reported when it comes",
                    KILL_WAIT.as_secs()
                );
            }
        }
        true
    }

    /// Stops every running app at once (daemon shutdown); returns once all have ended, at most
    /// the longest `stop_grace + KILL_WAIT` of them. Returns the ids of the apps it stopped.
    pub fn stop_all(&self) -> Vec<String> {
        // No balloon target while the VMs go down.
        let ticker = lock(&self.balloon_ticker).take();
        drop(ticker);
        let ids: Vec<String> = lock(&self.apps).keys().cloned().collect();
        let mut stopped = Vec::new();
        thread::scope(|s| {
            let mut handles = Vec::new();
            for id in &ids {
                let spawned = thread::Builder::new()
                    .name(format!("stop-{id}"))
                    .stack_size(64 * 1024)
                    .spawn_scoped(s, || (id.as_str(), self.stop(id)));
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        // No thread to spare: this one is stopped in turn with the others running.
                        crate::log_warn!("{id}: stopping in line, no thread: {e}");
                        if self.stop(id) {
                            stopped.push(id.clone());
                        }
                    }
                }
            }
            for h in handles {
                if let Ok((id, true)) = h.join() {
                    stopped.push(id.to_string());
                }
            }
        });
        stopped.sort();
        stopped
    }
}

impl Runner {
    /// The EU's fault once a run ended on a stop request: FailureOnStop when the stop was
    /// forced (SIGKILL by the stop, or the backend's own forced stop), else NoFault.
    pub(super) fn stop_outcome(&self, status: ExitStatus) -> (ExecutionFaultCode, String) {
        let forced = lock(&self.run.0)
            .forced
            .take()
            .or_else(|| self.backend.forced_stop(&self.spec, status));
        match forced {
            Some(why) => {
                crate::log_warn!("{}: stop forced: {why}", self.spec.eu_id);
                self.push_log(format!("[cpevisord] stop forced: {why}\n").as_bytes());
                (ExecutionFaultCode::FailureOnStop, why)
            }
            None => (ExecutionFaultCode::NoFault, String::new()),
        }
    }
}
