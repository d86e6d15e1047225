//! The guest's power button: how the VMM asks a guest to shut itself down. Each architecture
//! wires it to what its guests' kernels already understand without drivers of ours:
//!
//! - aarch64: a PL061 GPIO line the device tree names as a `gpio-keys` `poweroff` key
//!   (KEY_POWER), as on QEMU's `virt` board ([`super::pl061`]).
//! - x86_64: an ACPI Generic Event Device whose `_EVT` notifies the PNP0C0C power button
//!   device, Linux's `button` driver then reports KEY_POWER ([`super::ged`]).
//!
//! Either way the guest sees an input device named "Power Button" (x86) or "gpio-keys"
//! (aarch64) report KEY_POWER; what it does then is the guest's business (its init should
//! stop its services, flush its disks and power off).

use std::time::Duration;

/// A button the event loop presses on a stop request.
pub trait PowerButton: Send + Sync {
    /// Presses the button. Returns how long to hold it before [`PowerButton::release`], or
    /// `None` when a press is a single event with nothing to release.
    fn press(&self) -> Option<Duration>;
    /// Lets the button go (only after a press that asked for it).
    fn release(&self);
}
