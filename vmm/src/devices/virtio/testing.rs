//! Test support: a guest-side virtio driver acting on plain guest memory, and helpers to prove
//! that hostile requests change nothing outside the bytes a device may write.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use super::mmio::MmioTransport;
use super::{VirtioDevice, FEATURE_VERSION_1};
use crate::devices::{BusDevice, IrqLine};

pub const MEM_SIZE: usize = 1 << 20;

/// Serialises the opt-in tests that attach the one real tap (a tap takes one reader).
pub static REAL_TAP: Mutex<()> = Mutex::new(());

/// Two regions with a hole between them, so tests can aim at "just outside" memory:
/// [0, 512 KiB) and [768 KiB, 1 MiB + 256 KiB).
pub fn guest_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), MEM_SIZE / 2),
        (GuestAddress(0xc_0000), MEM_SIZE / 2),
    ])
    .unwrap()
}

/// Start of the hole between the two regions.
pub const HOLE: u64 = 0x8_0000;
/// End of guest memory.
pub const MEM_END: u64 = 0x14_0000;

/// A full copy of guest memory, to compare before/after a request.
pub fn snapshot(mem: &GuestMemoryMmap) -> Vec<(u64, Vec<u8>)> {
    mem.iter()
        .map(|r| {
            let mut buf = vec![0u8; r.len() as usize];
            mem.read_slice(&mut buf, r.start_addr()).unwrap();
            (r.start_addr().0, buf)
        })
        .collect()
}

/// Asserts that the only bytes that changed lie in `allowed` ranges `(addr, len)`.
pub fn assert_only_changed(
    before: &[(u64, Vec<u8>)],
    after: &[(u64, Vec<u8>)],
    allowed: &[(u64, u64)],
) {
    const CHUNK: usize = 4096;
    for ((base, old), (_, new)) in before.iter().zip(after) {
        for (c, (o_chunk, n_chunk)) in old.chunks(CHUNK).zip(new.chunks(CHUNK)).enumerate() {
            if o_chunk == n_chunk {
                continue;
            }
            for (i, (o, n)) in o_chunk.iter().zip(n_chunk).enumerate() {
                let addr = base + (c * CHUNK + i) as u64;
                if o != n {
                    assert!(
                        allowed.iter().any(|&(a, l)| addr >= a && addr - a < l),
                        "byte at {addr:#x} changed ({o:#x} -> {n:#x}) outside the allowed ranges"
                    );
                }
            }
        }
    }
}

/// Like `assert_only_changed`, but a byte outside `allowed` may also have become zero (a
/// device that discards guest pages).
pub fn assert_only_changed_or_zeroed(
    before: &[(u64, Vec<u8>)],
    after: &[(u64, Vec<u8>)],
    allowed: &[(u64, u64)],
) {
    for ((base, old), (_, new)) in before.iter().zip(after) {
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            let addr = base + i as u64;
            if o != n && *n != 0 {
                assert!(
                    allowed.iter().any(|&(a, l)| addr >= a && addr - a < l),
                    "byte at {addr:#x} changed ({o:#x} -> {n:#x}) outside the allowed ranges"
                );
            }
        }
    }
}

#[derive(Default)]
pub struct CountingIrq(AtomicUsize);

impl CountingIrq {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl IrqLine for CountingIrq {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Ring layout of one queue in guest memory.
#[derive(Clone, Copy)]
pub struct Ring {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

impl Ring {
    /// Lays out a ring at `base` (page aligned areas for simplicity).
    pub fn at(base: u64, size: u16) -> Self {
        Ring {
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        }
    }

    /// The descriptor table and available ring: written by the driver, never by the device.
    pub fn driver_ranges(&self) -> [(u64, u64); 2] {
        [(self.desc, 0x1000), (self.avail, 0x1000)]
    }

    /// Bytes of the used ring the device may write.
    pub fn used_range(&self) -> (u64, u64) {
        (self.used, 4 + 8 * u64::from(self.size) + 2)
    }
}

/// The guest driver's view of a transport and its queues.
pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub transport: Arc<Mutex<MmioTransport>>,
    pub irq: Arc<CountingIrq>,
    pub rings: Vec<Ring>,
    avail_idx: Vec<u16>,
    next_desc: Vec<u16>,
}

/// One buffer to post: address, length, device-writable?
pub type Buf = (u64, u32, bool);

impl Driver {
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = guest_memory();
        let irq = Arc::new(CountingIrq::default());
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            mem.clone(),
            irq.clone(),
            device,
        )));
        Driver {
            mem,
            transport,
            irq,
            rings: Vec::new(),
            avail_idx: Vec::new(),
            next_desc: Vec::new(),
        }
    }

    pub fn read32(&self, offset: u32) -> u32 {
        let mut data = [0u8; 4];
        self.transport
            .lock()
            .unwrap()
            .read(u64::from(offset), &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write32(&self, offset: u32, value: u32) {
        self.transport
            .lock()
            .unwrap()
            .write(u64::from(offset), &value.to_le_bytes());
    }

    pub fn status(&self) -> u32 {
        self.read32(VIRTIO_MMIO_STATUS)
    }

    pub fn failed(&self) -> bool {
        self.status() & VIRTIO_CONFIG_S_NEEDS_RESET != 0
    }

    /// Negotiates features, sets up the queues at the given rings (not checked: tests pass
    /// hostile ones too) and sets DRIVER_OK.
    pub fn init_with(&mut self, rings: Vec<Ring>, features: u64) {
        self.write32(VIRTIO_MMIO_STATUS, 0);
        self.write32(VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        self.write32(
            VIRTIO_MMIO_STATUS,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        self.write32(VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        self.write32(VIRTIO_MMIO_STATUS, s);
        assert_ne!(
            self.status() & VIRTIO_CONFIG_S_FEATURES_OK,
            0,
            "features refused"
        );
        for (i, ring) in rings.iter().enumerate() {
            self.write32(VIRTIO_MMIO_QUEUE_SEL, i as u32);
            self.write32(VIRTIO_MMIO_QUEUE_NUM, u32::from(ring.size));
            self.write32(VIRTIO_MMIO_QUEUE_DESC_LOW, ring.desc as u32);
            self.write32(VIRTIO_MMIO_QUEUE_DESC_HIGH, (ring.desc >> 32) as u32);
            self.write32(VIRTIO_MMIO_QUEUE_AVAIL_LOW, ring.avail as u32);
            self.write32(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (ring.avail >> 32) as u32);
            self.write32(VIRTIO_MMIO_QUEUE_USED_LOW, ring.used as u32);
            self.write32(VIRTIO_MMIO_QUEUE_USED_HIGH, (ring.used >> 32) as u32);
            self.write32(VIRTIO_MMIO_QUEUE_READY, 1);
        }
        self.write32(VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
        self.avail_idx = vec![0; rings.len()];
        self.next_desc = vec![0; rings.len()];
        self.rings = rings;
    }

    /// Standard setup: queue i's rings at 0x1_0000 + i * 0x1_0000, with the device's max size.
    pub fn init(&mut self) {
        let sizes: Vec<u16> = {
            let count = self.transport.lock().unwrap().queue_count();
            (0..count)
                .map(|i| {
                    self.write32(VIRTIO_MMIO_QUEUE_SEL, i as u32);
                    self.read32(VIRTIO_MMIO_QUEUE_NUM_MAX) as u16
                })
                .collect()
        };
        let rings = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Ring::at(0x1_0000 * (i as u64 + 1), size))
            .collect();
        self.init_with(rings, FEATURE_VERSION_1);
        assert!(self.transport.lock().unwrap().is_activated());
    }

    /// Writes raw descriptor `index` of queue `q`.
    pub fn set_desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.rings[q].desc + 16 * u64::from(index));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Puts `head` in the available ring and bumps the index.
    pub fn publish(&mut self, q: usize, head: u16) {
        let ring = self.rings[q];
        let slot = self.avail_idx[q] % ring.size;
        self.mem
            .write_obj(head, GuestAddress(ring.avail + 4 + 2 * u64::from(slot)))
            .unwrap();
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        self.set_avail_idx(q, self.avail_idx[q]);
    }

    /// Writes the available index directly (hostile tests make it jump).
    pub fn set_avail_idx(&self, q: usize, idx: u16) {
        self.mem
            .write_obj(idx, GuestAddress(self.rings[q].avail + 2))
            .unwrap();
    }

    /// Builds a chain from `bufs` in fresh descriptors and publishes it; returns its head.
    pub fn post(&mut self, q: usize, bufs: &[Buf]) -> u16 {
        let size = self.rings[q].size;
        let head = self.next_desc[q];
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % size;
            let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            let next = (index + 1) % size;
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.set_desc(q, index, addr, len, flags, next);
        }
        self.next_desc[q] = (head + bufs.len() as u16) % size;
        self.publish(q, head);
        head
    }

    pub fn notify(&self, q: usize) {
        self.write32(VIRTIO_MMIO_QUEUE_NOTIFY, q as u32);
    }

    /// The used ring's index.
    pub fn used_idx(&self, q: usize) -> u16 {
        self.mem
            .read_obj(GuestAddress(self.rings[q].used + 2))
            .unwrap()
    }

    /// Used element `n`: (descriptor head, bytes written).
    pub fn used_elem(&self, q: usize, n: u16) -> (u32, u32) {
        let ring = self.rings[q];
        let at = ring.used + 4 + 8 * u64::from(n % ring.size);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    pub fn fill(&self, addr: u64, len: usize, byte: u8) {
        self.mem
            .write_slice(&vec![byte; len], GuestAddress(addr))
            .unwrap();
    }

    pub fn bytes(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}
