//! The VMM's event loop: serves the devices' host fds, the stop signals and the control socket
//! until the VM ends, and shuts the guest down gracefully.
//!
//! Graceful shutdown: a stop signal (SIGTERM, SIGINT, SIGHUP) or the control socket's
//! `shutdown` presses the guest's power button (`devices::power_button`) and waits up to
//! `shutdown_timeout_ms` for the guest's own power-off (exit 0). Past the deadline the VM is
//! stopped ([`VmEvent::ShutdownForced`], exit 5). A second SIGTERM or SIGINT during the wait
//! stops at once (exit 0, as an immediate stop always was); `shutdown_timeout_ms` = 0 stops at
//! once on the first. The control socket's `stop` always stops at once.

use std::cell::Cell;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::builder::{Pollable, Vmm};
use crate::control::{ControlServer, VmControl};
use crate::devices::boot_signal::BootReady;
use crate::devices::serial::InputState;
use crate::devices::virtio::balloon::BalloonHandle;
use crate::devices::PlatformRequest;
use crate::signals;
use crate::vstate::vcpu::{stop_vcpus, VcpuControl, VmEvent};

/// Why a graceful shutdown began, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Signal(&'static str),
    Control,
}

/// A graceful shutdown in progress.
struct Shutdown {
    pressed: Instant,
    deadline: Instant,
    /// When to let the power button go (aarch64's GPIO key is held, x86's GED is one event).
    release_at: Option<Instant>,
}

impl Vmm {
    /// Serves devices, signals and the control socket until the VM ends; returns why it ended.
    pub fn run(mut self) -> VmEvent {
        let event = match self.event_loop() {
            Ok(ev) => ev,
            Err(e) => VmEvent::Crash(format!("event loop: {e}")),
        };
        stop_vcpus(&self.vcpus, std::mem::take(&mut self.handles));
        event
    }

    fn event_loop(&mut self) -> std::io::Result<VmEvent> {
        const TOKEN_VM_EVENT: u64 = 1;
        const TOKEN_STOP_SIGNAL: u64 = 2;
        const TOKEN_POLLABLE: u64 = 1 << 32;
        const TOKEN_CONTROL: u64 = 2 << 32;
        let epoll = Epoll::new()?;
        let add = |fd: RawFd, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(self.vcpus.event_fd().as_raw_fd(), TOKEN_VM_EVENT)?;
        let stop_fd = signals::stop_signal_fd()?;
        add(stop_fd, TOKEN_STOP_SIGNAL)?;
        for (i, (fd, p)) in self.pollables.iter().enumerate() {
            let set = match p {
                Pollable::NetRx(_) => EventSet::IN | EventSet::EDGE_TRIGGERED,
                _ => EventSet::IN,
            };
            let r = epoll.ctl(
                ControlOperation::Add,
                *fd,
                EpollEvent::new(set, TOKEN_POLLABLE + i as u64),
            );
            match r {
                Ok(()) => {}
                // Regular files and /dev/null (a console input redirected from them) cannot be
                // polled: there is no input to wait for then.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(e),
            }
        }
        let mut control_fds: Vec<RawFd> = Vec::new();
        let mut events = vec![EpollEvent::default(); 16];
        let mut shutdown: Option<Shutdown> = None;
        // A signal that arrived during setup, before the guest could run a driver for its power
        // button, stops at once. One that arrived after the vCPUs started is still pending on
        // the stop eventfd and presses the button like any later one (the guest may already
        // be running its init, as the console shows).
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        hold_before_the_loop();
        if let Some(name) = self.stopped_before_start {
            crate::log(&format!(
                "stop requested by signal {name} before the guest started"
            ));
            self.vcpus.report(VmEvent::Stopped);
        }
        loop {
            if let Some(server) = &self.control {
                sync_control_fds(&epoll, server, &mut control_fds, TOKEN_CONTROL);
            }
            if let Some(ev) = self.vcpus.event() {
                if let (Some(s), VmEvent::PowerOff) = (&shutdown, &ev) {
                    crate::log(&format!(
                        "shutdown: guest powered off after {} ms",
                        s.pressed.elapsed().as_millis()
                    ));
                }
                return Ok(ev);
            }
            if let Some(s) = shutdown.as_mut() {
                let now = Instant::now();
                if s.release_at.is_some_and(|t| now >= t) {
                    s.release_at = None;
                    self.power_button.release();
                }
                if now >= s.deadline {
                    crate::log(&format!(
                        "shutdown: guest did not power off within {} ms, stopping",
                        self.shutdown_timeout_ms
                    ));
                    self.vcpus
                        .report(VmEvent::ShutdownForced(self.shutdown_timeout_ms));
                    continue;
                }
            }
            let timeout = shutdown.as_ref().map_or(-1, |s| {
                let next = s.release_at.map_or(s.deadline, |r| r.min(s.deadline));
                millis_until(next)
            });
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for ev in &events[..n] {
                let token = ev.data();
                match token {
                    TOKEN_VM_EVENT => {}
                    TOKEN_STOP_SIGNAL => self.on_stop_signals(&mut shutdown),
                    t if t >= TOKEN_CONTROL => {
                        let fd = (t - TOKEN_CONTROL) as RawFd;
                        let view = ControlView {
                            vcpus: &self.vcpus,
                            start: self.start,
                            guest_mib: self.guest_mib,
                            boot_ready: &self.boot_ready,
                            shutdown_requested: Cell::new(false),
                            shutting_down: shutdown.is_some(),
                            balloon: self.balloon.as_ref(),
                        };
                        if let Some(server) = self.control.as_mut() {
                            server.on_readable(fd, &view);
                        }
                        if view.shutdown_requested.get() && shutdown.is_none() {
                            self.begin_shutdown(Origin::Control, &mut shutdown);
                        }
                    }
                    t if t >= TOKEN_POLLABLE => {
                        let i = (t - TOKEN_POLLABLE) as usize;
                        self.serve_pollable(i, &epoll);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Acts on the stop signals received since the last call.
    fn on_stop_signals(&mut self, shutdown: &mut Option<Shutdown>) {
        let pending = signals::take_pending();
        let Some(name) = pending.first() else {
            return;
        };
        if shutdown.is_none() {
            self.begin_shutdown(Origin::Signal(name), shutdown);
            return;
        }
        // A second SIGTERM or SIGINT is the impatient operator's "now"; SIGHUP (a closed
        // terminal) is not.
        if let Some(urgent) = pending.first_urgent() {
            crate::log(&format!(
                "shutdown: {urgent} again while waiting, stopping now"
            ));
            self.vcpus.report(VmEvent::Stopped);
        }
    }

    /// Presses the power button and starts the deadline, or stops at once when the timeout
    /// is 0.
    fn begin_shutdown(&mut self, origin: Origin, shutdown: &mut Option<Shutdown>) {
        let by = match origin {
            Origin::Signal(name) => format!("signal {name}"),
            Origin::Control => "the control socket".to_string(),
        };
        if self.shutdown_timeout_ms == 0 {
            crate::log(&format!("stop requested by {by} (shutdown_timeout_ms 0)"));
            self.vcpus.report(VmEvent::Stopped);
            return;
        }
        // A paused guest cannot see the button.
        if self.vcpus.state() == crate::vstate::vcpu::RunState::Paused {
            self.vcpus.resume();
        }
        let pressed = Instant::now();
        let hold = self.power_button.press();
        crate::log(&format!(
            "shutdown: power button pressed ({by}), waiting up to {} ms for the guest to power off",
            self.shutdown_timeout_ms
        ));
        *shutdown = Some(Shutdown {
            pressed,
            deadline: pressed + Duration::from_millis(self.shutdown_timeout_ms.into()),
            release_at: hold.map(|h| pressed + h),
        });
    }

    fn serve_pollable(&mut self, i: usize, epoll: &Epoll) {
        let Some((fd, p)) = self.pollables.get(i) else {
            return;
        };
        match p {
            Pollable::SerialInput(serial) => {
                let state = serial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .process_input();
                if state == InputState::Closed {
                    let _ = epoll.ctl(ControlOperation::Delete, *fd, EpollEvent::default());
                }
            }
            Pollable::NetRx(t) => t.lock().unwrap_or_else(|e| e.into_inner()).process_rx(),
            Pollable::Platform(source) => match source.take_request() {
                Some(PlatformRequest::PowerOff) => self.vcpus.report(VmEvent::PowerOff),
                Some(PlatformRequest::Reset) => self.vcpus.report(VmEvent::Reset),
                None => {}
            },
        }
    }
}

/// Milliseconds from now until `t`, rounded up so a wait never wakes before it; 0 if past.
fn millis_until(t: Instant) -> i32 {
    let d = t.saturating_duration_since(Instant::now());
    let ms = d.as_micros().div_ceil(1000);
    i32::try_from(ms).unwrap_or(i32::MAX)
}

/// Keeps the epoll set in step with the control server's fds. Adding every current fd (EEXIST
/// ignored) also covers an fd number reused by a new client after an old one closed.
fn sync_control_fds(epoll: &Epoll, server: &ControlServer, known: &mut Vec<RawFd>, base: u64) {
    let now = server.fds();
    for fd in known.iter().filter(|fd| !now.contains(fd)) {
        let _ = epoll.ctl(ControlOperation::Delete, *fd, EpollEvent::default());
    }
    for &fd in &now {
        let _ = epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, base + fd as u64),
        );
    }
    *known = now;
}

struct ControlView<'a> {
    vcpus: &'a VcpuControl,
    start: Instant,
    guest_mib: u64,
    boot_ready: &'a BootReady,
    /// Set by a `shutdown` request; the loop starts the shutdown after the request is served.
    shutdown_requested: Cell<bool>,
    shutting_down: bool,
    balloon: Option<&'a BalloonHandle>,
}

impl VmControl for ControlView<'_> {
    fn state(&self) -> &'static str {
        match self.vcpus.state() {
            crate::vstate::vcpu::RunState::Running if self.shutting_down => "shutting-down",
            s => s.as_str(),
        }
    }
    fn uptime_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn guest_memory_mib(&self) -> u64 {
        self.guest_mib
    }
    fn boot_ready_ms(&self) -> Option<f64> {
        self.boot_ready.ready_ms()
    }
    fn pause(&self) -> &'static str {
        self.vcpus.pause().as_str()
    }
    fn resume(&self) -> &'static str {
        self.vcpus.resume().as_str()
    }
    fn stop(&self) {
        crate::log("stop requested on the control socket");
        self.vcpus.report(VmEvent::Stopped);
    }
    fn shutdown(&self) -> &'static str {
        self.shutdown_requested.set(true);
        "shutting-down"
    }
    fn balloon(&self) -> Option<&BalloonHandle> {
        self.balloon
    }
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    fn test_forbidden_syscall(&self, thread: &str) -> Result<i64, String> {
        match thread {
            "main" => Ok(crate::confine::forbidden_syscall()),
            "vcpu" => {
                self.vcpus.test_forbidden_syscall();
                Ok(0)
            }
            // Not a forbidden syscall of ours, but one glibc's allocator could make (see
            // confine::one_malloc_arena).
            "vcpu-heap" => {
                self.vcpus.test_heap_churn();
                Ok(0)
            }
            other => Err(format!(
                "thread '{other}': expected main, vcpu or vcpu-heap"
            )),
        }
    }
}

/// Test hook: `CPEVISOR_TEST_HOLD_RUN_LOOP_MS` holds the main thread between the vCPUs' start
/// and the run loop, the window a loaded machine opens by itself (the guest already runs).
#[cfg(all(feature = "test-hooks", debug_assertions))]
fn hold_before_the_loop() {
    if let Some(ms) = std::env::var("CPEVISOR_TEST_HOLD_RUN_LOOP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms.min(10_000)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_and_never_go_negative() {
        let now = Instant::now();
        assert_eq!(millis_until(now - Duration::from_secs(1)), 0);
        let t = millis_until(Instant::now() + Duration::from_secs(10));
        assert!((9_000..=10_000).contains(&t), "{t}");
    }
}
