//! The guest's interrupt controller: its model (which the device tree describes, so this builds
//! on every host) and, on arm64, the vGIC handle. A leaf, so that the seam's `BootSetup` can name
//! `IrqChip` without importing the KVM module that uses `BootSetup`.

#[cfg(target_arch = "aarch64")]
use kvm_ioctls::DeviceFd;

/// The guest's interrupt controller model, as KVM created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2 (GIC-400 SoCs): distributor and CPU interface.
    V2,
    /// GICv3: distributor and one redistributor per vCPU.
    V3,
}

/// The vGIC, kept alive for the VM's lifetime.
#[cfg(target_arch = "aarch64")]
pub struct IrqChip {
    pub(super) _fd: DeviceFd,
    /// Which GIC the guest gets (the device tree describes it).
    pub version: GicVersion,
}
