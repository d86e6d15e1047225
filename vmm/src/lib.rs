//! cpevisor-vmm: a minimal microVM monitor on the rust-vmm crates.
//!
//! Layout (after Firecracker's split):
//! - `arch/`    architecture seam: boot protocol, device tree / boot params, interrupt controller,
//!   platform devices, vCPU register setup, as named functions in `arch` (structs for the
//!   many-input steps). A new board architecture touches only this folder.
//! - `devices/` device models (serial, RTC, virtio-mmio transport and virtio devices, boot signal),
//!   testable against guest memory without KVM.
//! - `vstate/`  KVM state: the VM, its vCPUs and guest memory.
//! - `builder`  wires a `config::VmConfig` into a running VM (construction only).
//! - `run_loop` serves devices, signals and the control socket while it runs; graceful shutdown.
//! - `signals`  the stop signals (SIGTERM, SIGINT, SIGHUP) as an eventfd for the run loop.
//! - `control`  the Unix control socket (status, pause, resume, stop).
//! - `confine`  namespaces, identity and capabilities of a jailed VMM; `seccomp` its per-thread
//!   syscall filters.

pub mod arch;
pub mod builder;
pub mod config;
pub mod confine;
pub mod control;
pub mod devices;
pub mod initrd;
pub mod run_loop;
pub mod seccomp;
pub mod signals;
pub mod vstate;

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

/// Process exit codes, documented in README.md and `--help`.
pub mod exit_code {
    /// Guest powered off, or the VMM was stopped cleanly (SIGTERM, control `stop`).
    pub const OK: i32 = 0;
    /// Host or KVM setup failure (no /dev/kvm, an ioctl failed, a device could not be set up).
    pub const HOST_ERROR: i32 = 1;
    /// Configuration or usage error; nothing was started.
    pub const CONFIG_ERROR: i32 = 2;
    /// The guest asked for a reboot; the supervisor decides whether to start it again.
    pub const GUEST_REBOOT: i32 = 3;
    /// The guest crashed or KVM failed while running it.
    pub const GUEST_CRASH: i32 = 4;
    /// A shutdown request pressed the guest's power button and the guest did not power off
    /// within `shutdown_timeout_ms`: the VM was stopped (its disks may miss unflushed writes).
    pub const SHUTDOWN_FORCED: i32 = 5;

    use crate::vstate::vcpu::VmEvent;

    /// The exit code for how the VM ended.
    pub fn for_event(event: &VmEvent) -> i32 {
        match event {
            VmEvent::PowerOff | VmEvent::Stopped => OK,
            VmEvent::Reset => GUEST_REBOOT,
            VmEvent::Crash(_) => GUEST_CRASH,
            VmEvent::ShutdownForced(_) => SHUTDOWN_FORCED,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn exit_codes_follow_the_documented_table() {
            assert_eq!(for_event(&VmEvent::PowerOff), 0);
            assert_eq!(for_event(&VmEvent::Stopped), 0);
            assert_eq!(for_event(&VmEvent::Reset), 3);
            assert_eq!(for_event(&VmEvent::Crash("x".into())), 4);
            assert_eq!(for_event(&VmEvent::ShutdownForced(10)), 5);
        }
    }
}

static START: OnceLock<Instant> = OnceLock::new();

/// Marks the process start; `main` calls it first so timings cover all of the VMM's own work.
pub fn mark_start() {
    START.get_or_init(Instant::now);
}

/// Milliseconds since `mark_start` (or since the first call, if `main` did not mark it).
pub fn elapsed_ms() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

/// One log line on stderr, prefixed so it can be told apart from the guest console on stdout.
pub fn log(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "cpevisor-vmm: {msg}");
}
