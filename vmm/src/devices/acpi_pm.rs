//! ACPI power management registers of a hardware-reduced platform (x86 guests): how a guest
//! with ACPI powers off and reboots. The FADT points the guest at three byte-wide registers
//! at fixed offsets from one base port:
//!
//! | offset | register | what a write does |
//! |---|---|---|
//! | [`SLEEP_CONTROL`] | sleep control | SLP_EN (bit 5) with SLP_TYP (bits 2-4) = [`S5_SLEEP_TYPE`] (the value of the DSDT's `\_S5`): power off |
//! | [`SLEEP_STATUS`] | sleep status | nothing (reads 0: the guest never wakes) |
//! | [`RESET`] | reset register | [`RESET_VALUE`]: reboot |
//!
//! A request sets the shared [`SystemRequest`], which the VMM's event loop watches through its
//! eventfd, as for the i8042 reset. The first request wins; later ones are ignored.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::BusDevice;

/// Register offsets from the device's base port; the range is [`LEN`] bytes.
pub const SLEEP_CONTROL: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS: u64 = 1;
/// Offset of the reset register.
pub const RESET: u64 = 2;
/// Length of the register block.
pub const LEN: u64 = 3;
/// What the guest writes to the reset register to reboot.
pub const RESET_VALUE: u8 = 0x0e;
/// SLP_TYP for S5 (soft off), as the DSDT's `\_S5` package states it.
pub const S5_SLEEP_TYPE: u8 = 5;

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111 << SLP_TYP_SHIFT;

/// What the guest asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Sleep state S5 (soft off).
    PowerOff,
    /// The reset register was written with the reset value.
    Reset,
}

const NONE: u8 = 0;
const POWER_OFF: u8 = 1;
const RESET_REQUESTED: u8 = 2;

/// A guest's power-off or reset request, shared between the device and the event loop.
pub struct SystemRequest {
    state: AtomicU8,
    event: EventFd,
}

impl SystemRequest {
    /// No request pending, eventfd unsignalled.
    pub fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(SystemRequest {
            state: AtomicU8::new(NONE),
            event: EventFd::new(EFD_NONBLOCK)?,
        }))
    }

    /// Records `req` unless an earlier request is pending, and wakes the event loop.
    pub fn request(&self, req: Request) {
        let v = match req {
            Request::PowerOff => POWER_OFF,
            Request::Reset => RESET_REQUESTED,
        };
        if self
            .state
            .compare_exchange(NONE, v, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            if let Err(e) = self.event.write(1) {
                // The state is set regardless; the log names the lost wake-up.
                crate::log(&format!("ACPI PM: cannot signal {req:?}: {e}"));
            }
        }
    }

    /// The pending request, if any (it stays set).
    pub fn requested(&self) -> Option<Request> {
        match self.state.load(Ordering::SeqCst) {
            POWER_OFF => Some(Request::PowerOff),
            RESET_REQUESTED => Some(Request::Reset),
            _ => None,
        }
    }

    /// Readable once a request is pending.
    pub fn as_raw_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    /// Consumes the eventfd's count: call after waking on the fd.
    pub fn acknowledge(&self) {
        let _ = self.event.read();
    }
}

impl crate::devices::PlatformRequests for SystemRequest {
    fn event_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn take_request(&self) -> Option<crate::devices::PlatformRequest> {
        use crate::devices::PlatformRequest;
        self.acknowledge();
        self.requested().map(|r| match r {
            Request::PowerOff => PlatformRequest::PowerOff,
            Request::Reset => PlatformRequest::Reset,
        })
    }
}

/// The register block.
pub struct AcpiPm {
    request: Arc<SystemRequest>,
}

impl AcpiPm {
    /// The registers, reporting to `request`.
    pub fn new(request: Arc<SystemRequest>) -> Self {
        AcpiPm { request }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Byte registers: wider or misplaced writes are not the guest's ACPI code.
        let [value] = data else {
            return;
        };
        match offset {
            SLEEP_CONTROL => {
                let sleep_type = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
                // Other sleep states (S1-S4) are not offered in the DSDT: ignored.
                if value & SLP_EN != 0 && sleep_type == S5_SLEEP_TYPE {
                    self.request.request(Request::PowerOff);
                }
            }
            RESET if *value == RESET_VALUE => self.request.request(Request::Reset),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> (Arc<SystemRequest>, AcpiPm) {
        let r = SystemRequest::new().unwrap();
        (r.clone(), AcpiPm::new(r))
    }

    /// What the event loop sees through `PlatformRequests`: nothing until the guest asks, then
    /// its request, with the eventfd consumed so a level-triggered poll does not spin.
    #[test]
    fn platform_requests_report_power_off_and_reset() {
        use crate::devices::{PlatformRequest, PlatformRequests};
        let readable = |r: &SystemRequest| {
            let mut p = libc::pollfd {
                fd: r.event_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        let (r, mut d) = device();
        assert_eq!(r.take_request(), None);
        d.write(SLEEP_CONTROL, &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        assert!(readable(&r));
        assert_eq!(r.take_request(), Some(PlatformRequest::PowerOff));
        assert!(!readable(&r), "the wake-up was not consumed");
        let (r, mut d) = device();
        d.write(RESET, &[RESET_VALUE]);
        assert_eq!(r.take_request(), Some(PlatformRequest::Reset));
    }

    #[test]
    fn s5_with_sleep_enable_powers_off() {
        let (r, mut d) = device();
        // SLP_TYP 5 without SLP_EN: the guest is only preparing.
        d.write(SLEEP_CONTROL, &[S5_SLEEP_TYPE << 2]);
        // Other sleep types with SLP_EN: not offered, ignored.
        d.write(SLEEP_CONTROL, &[(3 << 2) | SLP_EN]);
        // Wake status clear and wide writes: ignored.
        d.write(SLEEP_STATUS, &[0x80]);
        d.write(SLEEP_CONTROL, &[(S5_SLEEP_TYPE << 2) | SLP_EN, 0]);
        assert_eq!(r.requested(), None);
        assert!(r.event.read().is_err(), "no wake-up yet");
        d.write(SLEEP_CONTROL, &[(S5_SLEEP_TYPE << 2) | SLP_EN]);
        assert_eq!(r.requested(), Some(Request::PowerOff));
        assert_eq!(r.event.read().unwrap(), 1);
        // A later reset does not replace the power-off.
        d.write(RESET, &[RESET_VALUE]);
        assert_eq!(r.requested(), Some(Request::PowerOff));
        r.acknowledge();
    }

    #[test]
    fn reset_register_reboots_on_its_value_only() {
        let (r, mut d) = device();
        d.write(RESET, &[RESET_VALUE ^ 1]);
        d.write(RESET, &[RESET_VALUE, 0]);
        assert_eq!(r.requested(), None);
        d.write(RESET, &[RESET_VALUE]);
        assert_eq!(r.requested(), Some(Request::Reset));
        let mut b = [0xffu8; 1];
        d.read(SLEEP_STATUS, &mut b);
        assert_eq!(b, [0]);
    }
}
