//! cpevisor-vmm: a minimal microVM monitor on the rust-vmm crates.
//!
//! Layout (after Firecracker's split):
//! - `arch/`    architecture seam: boot protocol, device tree / boot params, interrupt controller,
//!              vCPU register setup. A new board architecture touches only this folder.
//! - `devices/` device models (serial, RTC, virtio-mmio transport and virtio devices, boot signal),
//!              testable against guest memory without KVM.
//! - `vstate/`  KVM state: the VM, its vCPUs and guest memory.
//! - `builder`  wires a `config::VmConfig` into a running VM.

pub mod arch;
pub mod builder;
pub mod config;
pub mod control;
pub mod devices;
pub mod vstate;
