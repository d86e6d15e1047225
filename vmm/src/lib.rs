//! cpevisor-vmm: a minimal microVM monitor on the rust-vmm crates.
//!
//! Layout (after Firecracker's split):
//! - `arch/`    architecture seam: boot protocol, device tree / boot params, interrupt controller,
//!   platform devices, vCPU register setup, as named functions in `arch` (structs for the
//!   many-input steps). A new board architecture touches only this folder.
//! - `devices/` device models (serial, RTC, virtio-mmio transport and virtio devices, boot signal),
//!   testable against guest memory without KVM.
//! - `vstate/`  KVM state: the VM, its vCPUs and guest memory.
//! - `cli`      the command line (`--help`, `kvm-info`, run): the binary's whole `main`.
//! - `builder`  wires a `config::VmConfig` into a running VM (construction only).
//! - `run_loop` serves devices, signals and the control socket while it runs; graceful shutdown.
//! - `signals`  the stop signals (SIGTERM, SIGINT, SIGHUP) as an eventfd for the run loop.
//! - `control`  the Unix control socket (status, pause, resume, stop).
//! - `confine`  namespaces, identity and capabilities of a jailed VMM; `seccomp` its per-thread
//!   syscall filters.

pub mod arch;
pub mod builder;
pub mod cli;
pub mod config;
pub mod confine;
pub mod control;
pub mod devices;
pub mod exit_code;
pub mod initrd;
pub mod run_loop;
pub mod seccomp;
pub mod signals;
pub mod vstate;

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

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
