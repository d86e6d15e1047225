//! The architecture seam: the one API a board architecture implements, and the only way the
//! rest of the VMM reaches architecture code. Each architecture module (`x86_64`,
//! `aarch64::kvm`) provides the functions and types this module forwards to, with the same
//! signatures; a new architecture adds its module and one `imp` line below, and nothing
//! outside `arch/` changes.
//! The types the seam and the architecture modules share (`BootSetup`, `DeviceMap`, `ArchError`,
//! ...) live in the leaf `types` and are re-exported here, so no architecture module imports
//! the seam that calls it.
//!
//! In build order (`builder`):
//! - [`check_kernel`], [`max_vcpus`]: checks before KVM is touched;
//! - [`ram_regions`]: guest RAM layout;
//! - [`prepare_vm`], [`create_irqchip`] (before or after the vCPUs: [`IRQCHIP_BEFORE_VCPUS`]),
//!   [`init_vcpu`];
//! - [`device_map`], [`attach_platform_devices`]: where the platform devices live, and putting
//!   them on the buses;
//! - [`load_kernel`], [`finalize_cmdline`], [`configure_system`] ([`BootSetup`]),
//!   [`setup_vcpu`] ([`VcpuBoot`]): kernel, boot data and boot registers;
//! - [`kvm_capabilities`]: what `kvm-info` prints.
//!
//! Pure parts of the aarch64 port (Image header, device tree) build on every host so their unit
//! tests run in CI; the KVM parts build only for their own architecture.

use std::path::Path;

use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::config::{ConfigError, KernelFormat, VmConfig};
use crate::vstate::vm::Vm;

pub mod aarch64;
mod types;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

pub use self::types::{
    random_bytes, ArchError, BootSeeds, BootSetup, DeviceMap, DeviceSlot, LoadedKernel, Platform,
    PlatformSetup, VcpuBoot, RNG_SEED_LEN,
};

#[cfg(target_arch = "aarch64")]
use self::aarch64::kvm as imp;
#[cfg(target_arch = "x86_64")]
use self::x86_64 as imp;

/// The in-kernel interrupt controller, kept alive for the VM's lifetime.
pub use self::imp::IrqChip;

/// Whether the interrupt controller is created before the vCPUs (x86: each vCPU then gets an
/// in-kernel LAPIC) or after them (arm64: the vGIC sizes its redistributors by vCPU count).
pub const IRQCHIP_BEFORE_VCPUS: bool = imp::IRQCHIP_BEFORE_VCPUS;

/// The most vCPUs this architecture's boot tables describe.
pub fn max_vcpus() -> u64 {
    imp::max_vcpus()
}

/// Guest RAM regions (address, bytes) for `bytes` of guest memory.
pub fn ram_regions(bytes: u64) -> Vec<(GuestAddress, usize)> {
    imp::ram_regions(bytes)
}

/// Kernel header checks done before KVM is touched; errors name the file and what is wrong.
pub fn check_kernel(format: KernelFormat, path: &Path) -> Result<(), ConfigError> {
    imp::check_kernel(format, path)
}

/// Addresses and interrupts of the platform devices and of `n_virtio` virtio-mmio slots.
pub fn device_map(n_virtio: usize) -> Result<DeviceMap, ArchError> {
    imp::device_map(n_virtio)
}

/// VM-wide setup needed before guest memory is registered (x86: the TSS pages).
pub fn prepare_vm(vm: &Vm) -> Result<(), ArchError> {
    imp::prepare_vm(vm)
}

/// Creates the in-kernel interrupt controller for `vcpus` vCPUs.
pub fn create_irqchip(vm: &Vm, vcpus: u64) -> Result<IrqChip, ArchError> {
    imp::create_irqchip(vm, vcpus)
}

/// Initializes vCPU `id` of `count` right after it is created (arm64: KVM_ARM_VCPU_INIT).
pub fn init_vcpu(vm: &Vm, vcpu: &VcpuFd, id: u64, count: u64) -> Result<(), ArchError> {
    imp::init_vcpu(vm, vcpu, id, count)
}

/// Loads the kernel (and initrd) of `cfg` into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, cfg: &VmConfig) -> Result<LoadedKernel, ArchError> {
    imp::load_kernel(mem, cfg)
}

/// The kernel command line the guest gets: the user's, plus what the architecture announces
/// there (x86: the virtio-mmio devices).
pub fn finalize_cmdline(user: &str, devices: &DeviceMap) -> Result<String, ArchError> {
    imp::finalize_cmdline(user, devices)
}

/// Writes the boot data into guest memory; returns the address the boot vCPU is handed
/// (arm64: the device tree in X0; x86: the zero page in RSI).
pub fn configure_system(setup: &BootSetup) -> Result<u64, ArchError> {
    imp::configure_system(setup)
}

/// Sets one vCPU's registers (and on x86 its CPUID, MSRs, FPU and LAPIC) for the boot.
pub fn setup_vcpu(boot: &VcpuBoot) -> Result<(), ArchError> {
    imp::setup_vcpu(boot)
}

/// Puts the serial port, boot signal, power button and the architecture's own platform devices
/// (arm64: PL031 RTC; x86: ACPI PM, i8042) on the buses.
pub fn attach_platform_devices(setup: PlatformSetup) -> Result<Platform, ArchError> {
    imp::attach_platform_devices(setup)
}

/// Lines for `kvm-info`: the host's KVM features this architecture uses.
pub fn kvm_capabilities(kvm: &Kvm, vm: &Vm) -> Vec<String> {
    imp::kvm_capabilities(kvm, vm)
}
