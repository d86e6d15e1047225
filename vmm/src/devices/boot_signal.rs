//! Boot-ready signal: the guest's way of saying "my app is up".
//!
//! The guest writes any value to a fixed address; the first write logs, on the VMM's stderr,
//! `boot-ready: <ms> ms since VMM start` (milliseconds with three decimals, measured from the
//! process start instant the VMM passes in) and makes the figure readable through
//! [`BootReady`] (control socket status, benchmarks). Later writes are ignored.
//!
//! Addresses (fixed: guests hard-code them):
//! - x86_64: MMIO page at [`X86_MMIO_ADDR`] = 0xcfff_f000 (just below the virtio-mmio window,
//!   above RAM), any width 1 to 8 at offset 0. From a Linux guest: `devmem 0xcffff000 8 1`.
//!   The I/O port [`X86_PORT`] = 0x3f0 (one byte) works too, for kernels with /dev/port:
//!   `printf '\001' | dd of=/dev/port bs=1 seek=1008 count=1`. Both reach the same device.
//! - aarch64: MMIO page at [`AARCH64_MMIO_ADDR`] = 0x0902_0000 (next to the serial port and
//!   the RTC in the VMM's device area, `arch/aarch64/layout.rs`), any width 1 to 8 at offset
//!   0. From a Linux guest: `devmem 0x09020000 8 1` (busybox).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::BusDevice;

/// x86 port the guest writes to.
pub const X86_PORT: u64 = 0x3f0;
/// Port range length on x86.
pub const X86_PORT_LEN: u64 = 1;
/// x86_64 guest-physical address the guest writes to (no /dev/port needed, only /dev/mem).
pub const X86_MMIO_ADDR: u64 = 0xcfff_f000;
/// MMIO window length on x86_64 (one page).
pub const X86_MMIO_LEN: u64 = 0x1000;
/// aarch64 guest-physical address the guest writes to.
pub const AARCH64_MMIO_ADDR: u64 = 0x0902_0000;
/// MMIO window length on aarch64 (one page, so no other device shares it).
pub const AARCH64_MMIO_LEN: u64 = 0x1000;

const NOT_READY: u64 = u64::MAX;

/// Read side of the signal: cheap to clone, shareable with the control socket thread.
#[derive(Clone)]
pub struct BootReady {
    ready_us: Arc<AtomicU64>,
}

impl BootReady {
    /// Microseconds from VMM start to the guest's signal, once it came.
    pub fn ready_us(&self) -> Option<u64> {
        match self.ready_us.load(Ordering::Acquire) {
            NOT_READY => None,
            us => Some(us),
        }
    }

    /// Milliseconds from VMM start to the guest's signal, once it came.
    pub fn ready_ms(&self) -> Option<f64> {
        self.ready_us().map(|us| us as f64 / 1000.0)
    }
}

/// The device.
pub struct BootSignal {
    vmm_start: Instant,
    ready: BootReady,
}

impl BootSignal {
    /// `vmm_start`: the instant the VMM process started (taken first thing in `main`).
    pub fn new(vmm_start: Instant) -> Self {
        BootSignal {
            vmm_start,
            ready: BootReady {
                ready_us: Arc::new(AtomicU64::new(NOT_READY)),
            },
        }
    }

    /// A handle to read the figure from elsewhere.
    pub fn handle(&self) -> BootReady {
        self.ready.clone()
    }

    fn signal(&self) {
        // Saturate below the sentinel: a VMM running for 584 000 years is not a concern, but
        // the conversion must not wrap.
        let us = u64::try_from(self.vmm_start.elapsed().as_micros())
            .unwrap_or(NOT_READY - 1)
            .min(NOT_READY - 1);
        if self
            .ready
            .ready_us
            .compare_exchange(NOT_READY, us, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Unprefixed, exactly as documented: benchmarks and tests match the line start.
            eprintln!(
                "boot-ready: {}.{:03} ms since VMM start",
                us / 1000,
                us % 1000
            );
        }
    }
}

impl BusDevice for BootSignal {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && (1..=8).contains(&data.len()) {
            self.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_write_records_time_since_start() {
        let start = Instant::now() - Duration::from_millis(250);
        let mut dev = BootSignal::new(start);
        let handle = dev.handle();
        assert_eq!(handle.ready_us(), None);
        dev.write(4, &[1]); // wrong offset: ignored
        dev.write(0, &[]); // empty: ignored
        assert_eq!(handle.ready_us(), None);
        dev.write(0, &[1]);
        let first = handle.ready_us().unwrap();
        assert!((250_000..10_000_000).contains(&first), "{first} us");
        assert!(handle.ready_ms().unwrap() >= 250.0);
        std::thread::sleep(Duration::from_millis(2));
        dev.write(0, &[1, 2, 3, 4]);
        assert_eq!(
            handle.ready_us(),
            Some(first),
            "later writes do not move the figure"
        );
    }
}
