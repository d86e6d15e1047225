//! Process exit codes, documented in README.md and `--help`.

use crate::vstate::vcpu::VmEvent;

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
