//! The balloon's queue handling against a guest-side driver on plain guest memory: discards
//! read back as zeros, and whatever a hostile driver sends (bad PFNs, ranges outside memory,
//! oversized or misshapen chains) is skipped without touching other memory.

use super::*;
use crate::devices::virtio::testing::*;
use crate::devices::virtio::INTERRUPT_CONFIG;
use crate::devices::BusDevice;
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_DRIVER_OK;
use virtio_bindings::virtio_mmio::*;
use vm_memory::Bytes;

const ALL: BalloonOptions = BalloonOptions {
    deflate_on_oom: true,
    free_page_reporting: true,
    target_mib: 0,
};
const FEATURES: u64 = FEATURE_VERSION_1 | FEATURE_DEFLATE_ON_OOM | FEATURE_FREE_PAGE_REPORTING;

/// A balloon with every queue up, and its handle.
fn driver(options: BalloonOptions, features: u64) -> (Driver, BalloonHandle) {
    let balloon = Balloon::new(options);
    let handle = balloon.handle();
    let mut d = Driver::new(Box::new(balloon));
    let queues = if features & FEATURE_FREE_PAGE_REPORTING != 0 {
        3
    } else {
        2
    };
    let rings = (0..queues)
        .map(|i| Ring::at(0x1_0000 * (i as u64 + 1), QUEUE_SIZE))
        .collect();
    d.init_with(rings, features);
    assert!(d.transport.lock().unwrap().is_activated());
    (d, handle)
}

fn pfns(list: &[u32]) -> Vec<u8> {
    list.iter().flat_map(|p| p.to_le_bytes()).collect()
}

/// Fills the data pages 0x40000..0x80000 and 0xc0000..0x140000 with a non-zero pattern.
fn fill_data(d: &Driver) {
    d.fill(0x4_0000, 0x4_0000, 0xaa);
    d.fill(0xc_0000, 0x8_0000, 0xbb);
}

fn zero(d: &Driver, addr: u64, len: usize) -> bool {
    d.bytes(addr, len).iter().all(|&b| b == 0)
}

#[test]
fn offers_its_features_and_compacts_the_reporting_queue() {
    let (d, _) = driver(ALL, FEATURES);
    assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_ID), 5);
    d.write32(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    assert_eq!(d.read32(VIRTIO_MMIO_DEVICE_FEATURES), (1 << 2) | (1 << 5));
    // Reporting negotiated: three queues, the third being reporting (Linux skips stats and
    // free_page_vq, which are not offered).
    assert_eq!(d.transport.lock().unwrap().queue_count(), 3);

    // Without REPORTING the driver sets up inflate and deflate only, and that is enough.
    let (d, _) = driver(ALL, FEATURE_VERSION_1 | FEATURE_DEFLATE_ON_OOM);
    assert!(!d.failed());
    // ... and a notify on index 2 is a protocol violation then.
    d.notify(REPORTING_QUEUE);
    assert!(d.failed());

    // A device not offering REPORTING has two queues.
    let b = Balloon::new(BalloonOptions {
        free_page_reporting: false,
        ..ALL
    });
    assert_eq!(b.queue_max_sizes().len(), 2);
    assert_eq!(b.features() & FEATURE_FREE_PAGE_REPORTING, 0);
}

#[test]
fn reporting_negotiated_needs_its_queue() {
    let mut d = Driver::new(Box::new(Balloon::new(ALL)));
    // Only inflate and deflate set up although REPORTING was accepted.
    d.init_with(
        vec![
            Ring::at(0x1_0000, QUEUE_SIZE),
            Ring::at(0x2_0000, QUEUE_SIZE),
        ],
        FEATURES,
    );
    assert!(d.failed());
    assert!(!d.transport.lock().unwrap().is_activated());
}

#[test]
fn config_carries_the_target_and_the_drivers_actual() {
    let (d, handle) = driver(
        BalloonOptions {
            target_mib: 3,
            ..ALL
        },
        FEATURES,
    );
    assert_eq!(d.read32(0x100), 3 * 256, "num_pages in 4 KiB pages");
    assert_eq!(d.read32(0x104), 0);
    d.write32(0x104, 512);
    assert_eq!(handle.actual_mib(), 2);
    // num_pages is the host's: the driver cannot change it.
    d.write32(0x100, 7);
    assert_eq!(d.read32(0x100), 3 * 256);
    // A byte-wide read of num_pages' second byte.
    let mut b = [0u8; 1];
    d.transport.lock().unwrap().read(0x101, &mut b);
    assert_eq!(b[0], 3);
    // Past the config fields: zeros, and writes there are ignored.
    d.write32(0x110, 0xffff_ffff);
    assert_eq!(d.read32(0x110), 0);

    // A new target reaches the running driver with a configuration-change interrupt.
    d.write32(VIRTIO_MMIO_INTERRUPT_ACK, 0xffff_ffff);
    let irqs = d.irq.count();
    handle.set_target_mib(10);
    assert_eq!(d.read32(0x100), 10 * 256);
    assert_eq!(handle.target_mib(), 10);
    assert!(d.irq.count() > irqs);
    assert_ne!(d.read32(VIRTIO_MMIO_INTERRUPT_STATUS) & INTERRUPT_CONFIG, 0);
    // A reset forgets the driver's actual, not the host's target; no interrupt while reset.
    d.write32(VIRTIO_MMIO_STATUS, 0);
    assert_eq!(handle.actual_mib(), 0);
    let irqs = d.irq.count();
    handle.set_target_mib(u64::MAX);
    assert_eq!(d.irq.count(), irqs);
    assert_eq!(d.read32(0x100), u32::MAX, "saturates");
    assert_eq!(d.status() & VIRTIO_CONFIG_S_DRIVER_OK, 0);
}

#[test]
fn inflate_discards_the_pages_named() {
    let (mut d, handle) = driver(ALL, FEATURES);
    fill_data(&d);
    // Three pages: a run of two in the first region, one in the second.
    d.fill(0x5_0000, 12, 0); // the PFN list's own buffer
    let list = pfns(&[0x41, 0x42, 0xd0]);
    d.mem
        .write_slice(&list, vm_memory::GuestAddress(0x5_0000))
        .unwrap();
    let before_list = snapshot(&d.mem);
    let head = d.post(INFLATE_QUEUE, &[(0x5_0000, 12, false)]);
    d.notify(INFLATE_QUEUE);
    assert!(!d.failed());
    assert_eq!(d.used_elem(INFLATE_QUEUE, 0), (u32::from(head), 0));
    assert!(zero(&d, 0x4_1000, 0x2000));
    assert!(zero(&d, 0xd_0000, 0x1000));
    assert_eq!(d.bytes(0x4_0fff, 1), [0xaa]);
    assert_eq!(d.bytes(0x4_3000, 1), [0xaa]);
    assert_eq!(handle.discarded_bytes(), 3 * 4096);
    let ring = d.rings[INFLATE_QUEUE];
    assert_only_changed(
        &before_list,
        &snapshot(&d.mem),
        &[
            (0x4_1000, 0x2000),
            (0xd_0000, 0x1000),
            ring.used_range(),
            ring.driver_ranges()[0],
            ring.driver_ranges()[1],
        ],
    );

    // Deflate: completed, nothing changes on the host side.
    let snap = snapshot(&d.mem);
    let head = d.post(DEFLATE_QUEUE, &[(0x5_0000, 12, false)]);
    d.notify(DEFLATE_QUEUE);
    assert_eq!(d.used_elem(DEFLATE_QUEUE, 0), (u32::from(head), 0));
    let ring = d.rings[DEFLATE_QUEUE];
    assert_only_changed(
        &snap,
        &snapshot(&d.mem),
        &[
            ring.used_range(),
            ring.driver_ranges()[0],
            ring.driver_ranges()[1],
        ],
    );
    assert_eq!(handle.discarded_bytes(), 3 * 4096);
}

#[test]
fn bad_pfns_are_skipped_and_the_good_ones_served() {
    let (mut d, handle) = driver(ALL, FEATURES);
    fill_data(&d);
    // In the hole, just past the end, far beyond memory, the largest PFN; then a good one.
    let hole = (HOLE >> 12) as u32;
    let end = (MEM_END >> 12) as u32;
    let list = pfns(&[hole, hole + 1, end, 0x10_0000, u32::MAX, 0x45]);
    d.mem
        .write_slice(&list, vm_memory::GuestAddress(0x5_0000))
        .unwrap();
    d.post(INFLATE_QUEUE, &[(0x5_0000, list.len() as u32, false)]);
    let before = snapshot(&d.mem);
    d.notify(INFLATE_QUEUE);
    assert!(!d.failed(), "bad PFNs are data, not a protocol violation");
    assert_eq!(d.used_idx(INFLATE_QUEUE), 1);
    assert!(zero(&d, 0x4_5000, 0x1000));
    assert_eq!(handle.discarded_bytes(), 4096);
    // The run hole..hole+1, end, 0x100000 and u32::MAX: four refused ranges.
    assert_eq!(handle.refused(), 4);
    let ring = d.rings[INFLATE_QUEUE];
    assert_only_changed(
        &before,
        &snapshot(&d.mem),
        &[(0x4_5000, 0x1000), ring.used_range()],
    );
}

#[test]
fn misshapen_or_oversized_inflate_requests_discard_nothing() {
    let cases: Vec<(&str, Vec<Buf>)> = vec![
        (
            "more PFNs than one request may carry",
            vec![(0x4_0000, (MAX_PFNS_PER_REQUEST as u32 + 1) * 4, false)],
        ),
        (
            "oversized across two buffers",
            vec![
                (0x4_0000, MAX_PFNS_PER_REQUEST as u32 * 4, false),
                (0x6_0000, 4, false),
            ],
        ),
        ("not a whole PFN", vec![(0x4_0000, 6, false)]),
        ("device-writable", vec![(0x4_0000, 8, true)]),
        (
            "readable after writable",
            vec![(0x4_0000, 8, true), (0x4_1000, 8, false)],
        ),
        ("empty buffer", vec![(0x4_0000, 0, false)]),
    ];
    for (name, bufs) in cases {
        let (mut d, handle) = driver(ALL, FEATURES);
        // PFNs of data pages everywhere the request could be read from.
        let many: Vec<u32> = (0..2 * MAX_PFNS_PER_REQUEST as u32)
            .map(|i| 0xc0 + i % 0x40)
            .collect();
        d.mem
            .write_slice(&pfns(&many), vm_memory::GuestAddress(0x4_0000))
            .unwrap();
        d.fill(0xc_0000, 0x4_0000, 0xcc);
        d.post(INFLATE_QUEUE, &bufs);
        let before = snapshot(&d.mem);
        d.notify(INFLATE_QUEUE);
        assert!(!d.failed(), "{name}");
        assert_eq!(d.used_idx(INFLATE_QUEUE), 1, "{name}: completed");
        assert_eq!(d.used_elem(INFLATE_QUEUE, 0).1, 0, "{name}");
        assert_eq!(handle.discarded_bytes(), 0, "{name}");
        assert_eq!(handle.refused(), 1, "{name}");
        assert_only_changed(
            &before,
            &snapshot(&d.mem),
            &[d.rings[INFLATE_QUEUE].used_range()],
        );
    }
}

#[test]
fn reported_ranges_are_discarded() {
    let (mut d, handle) = driver(ALL, FEATURES);
    fill_data(&d);
    // Two ranges (a 64 KiB block and the last 16 KiB of memory) and an unaligned one.
    let head = d.post(
        REPORTING_QUEUE,
        &[
            (0xe_0000, 0x1_0000, true),
            (MEM_END - 0x4000, 0x4000, true),
            (0x4_0800, 0x1000, true),
        ],
    );
    let before = snapshot(&d.mem);
    d.notify(REPORTING_QUEUE);
    assert!(!d.failed());
    assert_eq!(d.used_elem(REPORTING_QUEUE, 0), (u32::from(head), 0));
    assert!(zero(&d, 0xe_0000, 0x1_0000));
    assert!(zero(&d, MEM_END - 0x4000, 0x4000));
    assert_eq!(d.bytes(0x4_0800, 1), [0xaa], "unaligned range skipped");
    assert_eq!(handle.discarded_bytes(), 0x1_4000);
    assert_eq!(handle.refused(), 1);
    assert_only_changed(
        &before,
        &snapshot(&d.mem),
        &[
            (0xe_0000, 0x1_0000),
            (MEM_END - 0x4000, 0x4000),
            d.rings[REPORTING_QUEUE].used_range(),
        ],
    );
    // Device-readable report buffers are refused whole.
    d.post(REPORTING_QUEUE, &[(0x4_0000, 0x1000, false)]);
    d.notify(REPORTING_QUEUE);
    assert!(!d.failed());
    assert_eq!(d.bytes(0x4_0000, 1), [0xaa]);
    assert_eq!(handle.refused(), 2);
}

/// Ranges not inside guest memory, and chains the queue cannot hold, are protocol violations
/// (the chain layer's checks): the device is marked failed and no byte changes.
#[test]
fn reports_outside_memory_or_oversized_chains_fail_the_device_untouched() {
    type Setup = fn(&mut Driver);
    let cases: Vec<(&str, Setup)> = vec![
        ("range across the hole", |d| {
            d.post(REPORTING_QUEUE, &[(HOLE - 0x1000, 0x2000, true)]);
        }),
        ("range past the end", |d| {
            d.post(REPORTING_QUEUE, &[(MEM_END - 0x1000, 0x2000, true)]);
        }),
        ("range of 4 GiB", |d| {
            d.post(REPORTING_QUEUE, &[(0, u32::MAX, true)]);
        }),
        ("chain longer than the queue", |d| {
            use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
            let size = d.rings[REPORTING_QUEUE].size;
            for i in 0..size {
                d.set_desc(
                    REPORTING_QUEUE,
                    i,
                    0x4_0000,
                    0x1000,
                    (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                    (i + 1) % size,
                );
            }
            d.publish(REPORTING_QUEUE, 0);
        }),
    ];
    for (name, setup) in cases {
        let (mut d, handle) = driver(ALL, FEATURES);
        fill_data(&d);
        setup(&mut d);
        let before = snapshot(&d.mem);
        d.notify(REPORTING_QUEUE);
        assert!(d.failed(), "{name}: device must be marked failed");
        assert_eq!(handle.discarded_bytes(), 0, "{name}");
        assert_only_changed(&before, &snapshot(&d.mem), &[]);
    }
}

#[test]
fn discard_checks_its_range() {
    let mem = guest_memory();
    for (addr, len) in [
        (0x1000, 0),
        (0x1001, 0x1000),
        (0x1000, 0x1001),
        (HOLE, 0x1000),
        (HOLE - 0x1000, 0x2000),
        (MEM_END, 0x1000),
        (u64::MAX - 0xfff, 0x1000),
        (0x1000, u64::MAX - 0xfff),
    ] {
        assert!(
            discard(&mem, addr, len).is_err(),
            "{addr:#x}+{len:#x} accepted"
        );
    }
    discard(&mem, 0, 0x8_0000).unwrap();
    discard(&mem, 0xc_0000, 0x8_0000).unwrap();
}

#[test]
fn pfn_runs_coalesce_consecutive_pfns() {
    let runs = pfn_runs([5u64, 6, 7, 9, 8, 8, 0].into_iter());
    assert_eq!(runs, vec![(5, 3), (9, 1), (8, 1), (8, 1), (0, 1)]);
}

#[test]
fn refused_reports_still_complete() {
    let (mut d, handle) = driver(ALL, FEATURES);
    for _ in 0..40 {
        d.post(REPORTING_QUEUE, &[(0x4_0800, 0x1000, true)]);
    }
    d.notify(REPORTING_QUEUE);
    assert_eq!(handle.refused(), 40);
    assert_eq!(d.used_idx(REPORTING_QUEUE), 40);
}
