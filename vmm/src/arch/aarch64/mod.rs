//! aarch64: arm64 `Image` boot protocol with a generated device tree, vGIC (v3, falling back to
//! v2), PSCI handled by KVM.

pub mod fdt;
pub mod gic;
pub mod image;
pub mod layout;

#[cfg(target_arch = "aarch64")]
pub mod kvm;
#[cfg(target_arch = "aarch64")]
pub mod platform;
