//! ACPI Generic Event Device (x86 guests, `ACPI0013`): how a hardware-reduced platform, which
//! has no fixed power button (the FADT's hardware-reduced flag rules out the PM1 event
//! block), signals the power button. The DSDT (`arch::x86_64::acpi::dsdt`) describes it:
//!
//! - an edge-triggered interrupt ([`GED_IRQ`] on x86) in the GED's `_CRS`; Linux's
//!   drivers/acpi/evged.c runs the GED's `_EVT` method when it fires;
//! - one event register, a byte at [`EVENT_REG`] from the device's base port, which `_EVT`
//!   reads: the events pending since the last read ([`EVENT_POWER_BUTTON`]), cleared by the
//!   read;
//! - `_EVT` then does `Notify(\_SB.PWRB, 0x80)` for the power button: the `PNP0C0C` device
//!   Linux's `button` driver binds, which reports KEY_POWER on its "Power Button" input device.
//!
//! Writes are ignored: the guest has nothing to configure.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::power_button::PowerButton;
use super::{BusDevice, IrqLine};

/// The event register's offset and the device's port range.
pub const EVENT_REG: u64 = 0;
/// Length of the GED's register window (the event register).
pub const LEN: u64 = 1;
/// Event bit: the power button was pressed.
pub const EVENT_POWER_BUTTON: u8 = 1 << 0;

/// The GED's pending events and its interrupt, shared by the device and the power button.
pub struct Ged {
    pending: AtomicU8,
    irq: Arc<dyn IrqLine>,
}

impl Ged {
    /// A GED raising `irq` for its events.
    pub fn new(irq: Arc<dyn IrqLine>) -> Arc<Self> {
        Arc::new(Ged {
            pending: AtomicU8::new(0),
            irq,
        })
    }

    /// Records `event` and raises the interrupt.
    pub fn notify(&self, event: u8) {
        self.pending.fetch_or(event, Ordering::SeqCst);
        if let Err(e) = self.irq.trigger() {
            crate::log(&format!("ACPI GED: cannot raise the interrupt: {e}"));
        }
    }
}

/// The register window on the port bus.
pub struct GedDevice(pub Arc<Ged>);

impl BusDevice for GedDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == EVENT_REG && data.len() == 1 {
            data[0] = self.0.pending.swap(0, Ordering::SeqCst);
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

/// The power button: one press is one GED event; there is nothing to release.
pub struct GedButton(pub Arc<Ged>);

impl PowerButton for GedButton {
    fn press(&self) -> Option<Duration> {
        self.0.notify(EVENT_POWER_BUTTON);
        None
    }

    fn release(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl IrqLine for Count {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn a_press_raises_the_interrupt_and_the_read_clears_the_event() {
        let irq = Arc::new(Count::default());
        let ged = Ged::new(irq.clone());
        let mut dev = GedDevice(ged.clone());
        let read = |dev: &mut GedDevice| {
            let mut b = [0xffu8];
            dev.read(EVENT_REG, &mut b);
            b[0]
        };
        assert_eq!(read(&mut dev), 0, "nothing pending");
        assert_eq!(GedButton(ged.clone()).press(), None);
        assert_eq!(irq.0.load(Ordering::SeqCst), 1);
        dev.write(EVENT_REG, &[0]); // ignored
        assert_eq!(read(&mut dev), EVENT_POWER_BUTTON);
        assert_eq!(read(&mut dev), 0, "the read cleared it");
        let mut wide = [0xffu8; 2];
        ged.notify(EVENT_POWER_BUTTON);
        dev.read(EVENT_REG, &mut wide);
        assert_eq!(wide, [0, 0], "a 2-byte read is not the register");
        assert_eq!(read(&mut dev), EVENT_POWER_BUTTON, "and did not clear it");
    }
}
