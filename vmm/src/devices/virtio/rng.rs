//! virtio-rng (entropy device): fills the driver's device-writable buffers from the host's
//! `/dev/urandom`, at most `MAX_BYTES_PER_REQUEST` per request.

use std::fs::File;
use std::path::Path;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use vm_memory::Bytes;

use super::chain::ranges;
use super::{ActiveQueues, DeviceError, SetupError, VirtioDevice, FEATURE_VERSION_1};

/// Descriptors in the one virtqueue.
pub const QUEUE_SIZE: u16 = 64;
/// Bound per request, so one request cannot keep the vCPU in the host for long.
pub const MAX_BYTES_PER_REQUEST: u64 = 64 * 1024;

/// virtio-rng fed from the host's /dev/urandom.
pub struct Rng {
    source: File,
    active: Option<ActiveQueues>,
}

impl Rng {
    /// Opens the host entropy source (`/dev/urandom`).
    pub fn new() -> Result<Self, SetupError> {
        Self::with_source(Path::new("/dev/urandom"))
    }

    /// Uses any readable file as the entropy source (tests use a fixed pattern).
    pub fn with_source(path: &Path) -> Result<Self, SetupError> {
        let source = File::open(path).map_err(|source| SetupError {
            what: format!("virtio-rng source {}", path.display()),
            source,
        })?;
        Ok(Rng {
            source,
            active: None,
        })
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURE_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), DeviceError> {
        self.active = Some(active);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActive)?;
        active.serve_queue(index, |mem, chain| {
            // A request with device-readable or empty buffers is malformed: return it unfilled.
            let mut written = 0u32;
            if chain.readable.is_empty() && chain.well_formed() {
                let want = chain.writable_len().min(MAX_BYTES_PER_REQUEST);
                for (addr, len) in ranges(&chain.writable, 0, want) {
                    if mem
                        .read_exact_volatile_from(addr, &mut self.source, len)
                        .is_err()
                    {
                        break;
                    }
                    written += len as u32;
                }
            }
            written
        })
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use std::io::Write;
    use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;

    /// A source file of a known pattern, so tests can tell filled bytes apart.
    fn pattern_source(tag: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "cpevisor-rng-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = File::create(&path).unwrap();
        let data: Vec<u8> = (0..(256 * 1024)).map(|i| (i % 255 + 1) as u8).collect();
        f.write_all(&data).unwrap();
        path
    }

    fn driver(tag: &str) -> Driver {
        let path = pattern_source(tag);
        let rng = Rng::with_source(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut d = Driver::new(Box::new(rng));
        d.init();
        d
    }

    #[test]
    fn fills_writable_buffers_from_the_source() {
        let mut d = driver("fill");
        let head = d.post(0, &[(0x4_0000, 100, true), (0x4_1000, 28, true)]);
        let irqs = d.irq.count();
        d.notify(0);
        assert_eq!(d.used_idx(0), 1);
        assert_eq!(d.used_elem(0, 0), (u32::from(head), 128));
        assert!(d.irq.count() > irqs);
        assert!(d.bytes(0x4_0000, 100).iter().all(|&b| b != 0));
        assert_eq!(d.bytes(0x4_0000 + 100, 1), [0], "nothing past the buffer");
        assert_eq!(d.bytes(0x4_1000, 28)[0], 101);
    }

    #[test]
    fn requests_are_bounded() {
        let mut d = driver("bound");
        // 96 KiB asked in two buffers: only MAX_BYTES_PER_REQUEST are filled.
        d.post(0, &[(0x2_0000, 0x1_0000, true), (0x4_0000, 0x8000, true)]);
        d.notify(0);
        assert_eq!(d.used_elem(0, 0).1 as u64, MAX_BYTES_PER_REQUEST);
        assert_eq!(d.bytes(0x4_0000, 16), [0; 16]);
    }

    #[test]
    fn readable_or_empty_buffers_fail_the_request_only() {
        let mut d = driver("dir");
        let before = snapshot(&d.mem);
        d.post(0, &[(0x4_0000, 64, false)]);
        d.post(0, &[(0x4_1000, 0, true)]);
        d.post(0, &[(0x4_2000, 16, true), (0x4_3000, 16, false)]);
        d.notify(0);
        assert!(!d.failed());
        assert_eq!(d.used_idx(0), 3);
        for n in 0..3 {
            assert_eq!(d.used_elem(0, n).1, 0, "request {n} must fill nothing");
        }
        let after = snapshot(&d.mem);
        // Only the ring bookkeeping the driver or device owns changed.
        let ring = d.rings[0];
        assert_only_changed(
            &before,
            &after,
            &[
                ring.used_range(),
                ring.driver_ranges()[0],
                ring.driver_ranges()[1],
            ],
        );
        // The device still works.
        d.post(0, &[(0x4_4000, 8, true)]);
        d.notify(0);
        assert_eq!(d.used_elem(0, 3).1, 8);
    }

    /// Every hostile chain: the device is marked failed and no guest byte changes, not even
    /// the used ring.
    #[test]
    fn hostile_chains_fail_the_device_without_touching_memory() {
        type Setup = fn(&mut Driver);
        let cases: Vec<(&str, Setup)> = vec![
            ("buffer beyond the end of memory", |d| {
                d.post(0, &[(MEM_END - 8, 64, true)]);
            }),
            ("buffer spanning the hole between regions", |d| {
                d.post(0, &[(HOLE - 16, 64, true)]);
            }),
            ("buffer at an address that wraps", |d| {
                d.post(0, &[(u64::MAX - 4, 64, true)]);
            }),
            ("descriptor loop", |d| {
                d.set_desc(0, 0, 0x4_0000, 16, (VRING_DESC_F_NEXT | 2) as u16, 1);
                d.set_desc(0, 1, 0x4_1000, 16, (VRING_DESC_F_NEXT | 2) as u16, 0);
                d.publish(0, 0);
            }),
            ("chain longer than the queue", |d| {
                let size = d.rings[0].size;
                for i in 0..size {
                    d.set_desc(
                        0,
                        i,
                        0x4_0000,
                        1,
                        (VRING_DESC_F_NEXT | 2) as u16,
                        (i + 1) % size,
                    );
                }
                d.publish(0, 0);
            }),
            ("next index outside the table", |d| {
                d.set_desc(0, 0, 0x4_0000, 16, (VRING_DESC_F_NEXT | 2) as u16, 5000);
                d.publish(0, 0);
            }),
            ("head index outside the table", |d| {
                d.publish(0, 4000);
            }),
            ("available index jumping past the queue size", |d| {
                d.post(0, &[(0x4_0000, 16, true)]);
                d.set_avail_idx(0, 1000);
            }),
        ];
        for (name, setup) in cases {
            let mut d = driver("hostile");
            setup(&mut d);
            let before = snapshot(&d.mem);
            let irqs = d.irq.count();
            d.notify(0);
            assert!(d.failed(), "{name}: device must be marked failed");
            assert_eq!(
                d.read32(virtio_bindings::virtio_mmio::VIRTIO_MMIO_INTERRUPT_STATUS)
                    & crate::devices::virtio::INTERRUPT_CONFIG,
                crate::devices::virtio::INTERRUPT_CONFIG,
                "{name}: config interrupt pending"
            );
            assert!(d.irq.count() > irqs, "{name}: guest interrupted");
            assert_only_changed(&before, &snapshot(&d.mem), &[]);
            // Further notifies do nothing until reset.
            d.notify(0);
            assert_only_changed(&before, &snapshot(&d.mem), &[]);
        }
    }
}
