//! Address bus: maps guest-physical (MMIO) or port-I/O ranges to devices.
//!
//! One `Bus` type serves both address spaces; the VMM keeps one instance per space. Ranges are
//! fixed at setup time, so lookups take no lock other than the target device's own mutex.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::BusDevice;

/// A device as the bus stores it: shared, because the VMM also keeps a handle (event loop,
/// status) and several vCPU threads may reach it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Wraps `device` for a bus: the typed handle the VMM keeps, and the bus's view of the same.
pub fn shared<D: BusDevice + 'static>(device: D) -> (Arc<Mutex<D>>, SharedDevice) {
    let typed = Arc::new(Mutex::new(device));
    let dynamic: SharedDevice = typed.clone();
    (typed, dynamic)
}

/// Why a range could not be added to the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// A range of length zero was requested.
    ZeroLength {
        /// Where it started.
        base: u64,
    },
    /// `base + len` does not fit in 64 bits.
    Overflow {
        /// Start of the requested range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    Overlap {
        /// Start of the requested range.
        base: u64,
        /// Its length.
        len: u64,
        /// Start of the device's range it overlaps.
        existing_base: u64,
        /// That range's length.
        existing_len: u64,
    },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::ZeroLength { base } => {
                write!(f, "bus range at {base:#x} has zero length")
            }
            BusError::Overflow { base, len } => {
                write!(f, "bus range {base:#x}+{len:#x} overflows the address space")
            }
            BusError::Overlap {
                base,
                len,
                existing_base,
                existing_len,
            } => write!(
                f,
                "bus range {base:#x}+{len:#x} overlaps the device at {existing_base:#x}+{existing_len:#x}"
            ),
        }
    }
}

impl std::error::Error for BusError {}

struct BusRange {
    len: u64,
    device: SharedDevice,
}

/// Ranges `[base, base + len)` mapped to devices, non-overlapping.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, BusRange>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength { base });
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overflow { base, len })?;
        // Only two neighbours can overlap: the last range starting below `end`, which is
        // the one that starts closest to (or inside) the new range.
        if let Some((&existing_base, existing)) = self.ranges.range(..end).next_back() {
            if existing_base + existing.len > base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    existing_base,
                    existing_len: existing.len,
                });
            }
        }
        self.ranges.insert(base, BusRange { len, device });
        Ok(())
    }

    /// The device whose range holds the whole access `[addr, addr + size)`, with the offset of
    /// `addr` inside that range.
    pub fn resolve(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (&base, range) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        let end = offset.checked_add(size as u64)?;
        (end <= range.len).then_some((offset, &range.device))
    }

    /// Reads from the device at `addr`. Returns false when no device covers the access; the
    /// caller decides what the guest sees then.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                // A poisoned lock means another vCPU thread panicked mid-access; the device
                // state is still memory-safe, so keep serving rather than cascade the panic.
                device
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`. Returns false when no device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                device
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .write(offset, data);
                true
            }
            None => false,
        }
    }

    /// Number of mapped ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether no device is mapped.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the last access so tests can see which offset reached the device.
    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
        fill: u8,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.fill.wrapping_add(offset as u8));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn recorder(fill: u8) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder {
            fill,
            ..Default::default()
        }))
    }

    #[test]
    fn routes_accesses_with_device_relative_offsets() {
        let mut bus = Bus::new();
        let a = recorder(0x10);
        let b = recorder(0x20);
        bus.insert(a.clone(), 0x1000, 0x100).unwrap();
        bus.insert(b.clone(), 0x3f8, 8).unwrap();

        let mut data = [0u8; 1];
        assert!(bus.read(0x3f8 + 5, &mut data));
        assert_eq!(data, [0x25]);
        assert!(bus.write(0x10fc, &[1, 2, 3, 4]));
        assert_eq!(a.lock().unwrap().last_write, Some((0xfc, vec![1, 2, 3, 4])));
        assert!(b.lock().unwrap().last_write.is_none());
    }

    #[test]
    fn misses_report_false() {
        let mut bus = Bus::new();
        bus.insert(recorder(0), 0x1000, 0x100).unwrap();
        let mut data = [0xaau8; 4];
        assert!(!bus.read(0xfff, &mut data));
        assert!(!bus.read(0x1100, &mut data));
        assert_eq!(data, [0xaa; 4], "a miss leaves the buffer untouched");
        // An access straddling the end of a device is not the device's.
        assert!(!bus.write(0x10fe, &[0; 4]));
        assert!(!bus.write(u64::MAX, &[0; 4]));
    }

    #[test]
    fn insert_rejects_bad_ranges() {
        let mut bus = Bus::new();
        bus.insert(recorder(0), 0x1000, 0x100).unwrap();
        assert_eq!(
            bus.insert(recorder(0), 0x2000, 0),
            Err(BusError::ZeroLength { base: 0x2000 })
        );
        assert!(matches!(
            bus.insert(recorder(0), u64::MAX - 1, 4),
            Err(BusError::Overflow { .. })
        ));
        for (base, len) in [(0x10ff, 1), (0xf00, 0x101), (0x1080, 8), (0, 0x10000)] {
            assert!(
                matches!(
                    bus.insert(recorder(0), base, len),
                    Err(BusError::Overlap {
                        existing_base: 0x1000,
                        ..
                    })
                ),
                "{base:#x}+{len:#x} must overlap"
            );
        }
        // Adjacent ranges are fine on both sides.
        bus.insert(recorder(0), 0xf00, 0x100).unwrap();
        bus.insert(recorder(0), 0x1100, 0x100).unwrap();
        assert_eq!(bus.len(), 3);
    }
}
