//! virtio-balloon (device id 5) with free page reporting and deflate on OOM: memory a guest
//! frees goes back to the host (`madvise(MADV_DONTNEED)` of its guest RAM), so the VMM's
//! resident memory follows what the guest uses rather than the most it ever touched.
//!
//! Queues, as Linux 6.1 numbers them on virtio-mmio: `virtio_balloon.c` asks `find_vqs` for
//! five (inflate, deflate, stats, free_page, reporting) with a NULL name for each whose feature
//! was not negotiated, and `virtio_mmio.c`'s `vm_find_vqs` skips NULL names without counting
//! them (`queue_idx++` only for real queues). So the transport indices are compacted: with
//! REPORTING and without STATS_VQ / FREE_PAGE_HINT the reporting queue is index 2, not 4, and
//! without REPORTING the driver sets up two queues only. This device offers neither STATS_VQ
//! nor FREE_PAGE_HINT, so the reporting queue, when negotiated, is always index 2.
//!
//! - inflate (0): device-readable 32-bit PFNs (4 KiB units, `VIRTIO_BALLOON_PFN_SHIFT` 12);
//!   each run of consecutive PFNs inside guest RAM is discarded.
//! - deflate (1): nothing to do on the host (pages fault back in on the guest's next touch).
//! - reporting (2): each device-writable buffer is a guest-physical range of free pages
//!   (blocks of the guest's `page_reporting_order`, 32 per chain at most); each is discarded,
//!   and the chain returns with length 0.
//!
//! Everything the guest sends is checked (alignment, inside one guest RAM region, request
//! sizes); what fails is logged (a bounded number of lines) and skipped: the guest only loses
//! the memory saving. Discarding guest RAM is always safe for the VMM: the anonymous RAM reads
//! back as zeros, and a kernel image mapped copy-on-write from its file (vstate/memory.rs
//! `map_file_private`) drops its private copy and reads the file again, which the balloon
//! protocol allows (a reported or inflated page's contents are undefined to the guest).
//! The queues are served on the vCPU thread that takes the notify exit; its seccomp filter
//! allows madvise with MADV_DONTNEED only (seccomp.rs).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
};

use super::chain::{read_bytes, Chain};
use super::{ActiveQueues, DeviceError, VirtioDevice, VirtioInterrupt, FEATURE_VERSION_1};

/// Descriptors per queue; the reporting queue must hold `PAGE_REPORTING_CAPACITY` (32) or
/// Linux refuses the device.
pub const QUEUE_SIZE: u16 = 128;
/// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: the guest takes pages back from the balloon when it
/// would otherwise run out of memory.
pub const FEATURE_DEFLATE_ON_OOM: u64 = 1 << 2;
/// `VIRTIO_BALLOON_F_REPORTING`: the guest reports free pages on a third queue.
pub const FEATURE_FREE_PAGE_REPORTING: u64 = 1 << 5;
/// A balloon PFN's page size, whatever the guest's own.
pub const PFN_SHIFT: u32 = 12;
/// Bound on one inflate request, so a request cannot keep the vCPU in the host for long. Linux
/// sends at most 256 PFNs (`VIRTIO_BALLOON_ARRAY_PFNS_MAX`).
pub const MAX_PFNS_PER_REQUEST: usize = 1024;
/// Indices of the queues (see the module comment for why reporting is 2).
pub const INFLATE_QUEUE: usize = 0;
/// The deflate queue.
pub const DEFLATE_QUEUE: usize = 1;
/// The free page reporting queue, when negotiated.
pub const REPORTING_QUEUE: usize = 2;
/// Error lines logged per device; a guest sending garbage in a loop must not fill the log.
const MAX_LOGGED_ERRORS: u32 = 16;
const PAGE: u64 = 1 << PFN_SHIFT;

/// Which optional features the device offers (the VM description's balloon section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalloonOptions {
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`.
    pub deflate_on_oom: bool,
    /// Offer `VIRTIO_BALLOON_F_REPORTING`.
    pub free_page_reporting: bool,
    /// Initial target: pages the guest should give up, in MiB (0: none).
    pub target_mib: u64,
}

/// State the device shares with the control socket.
struct Shared {
    /// `num_pages`: the balloon target, set by the host.
    num_pages: AtomicU32,
    /// `actual`: pages in the balloon, written by the driver.
    actual: AtomicU32,
    /// Set while the device is active, to raise configuration-change interrupts.
    interrupt: Mutex<Option<VirtioInterrupt>>,
    /// Bytes of guest RAM given back to the host so far.
    discarded: AtomicU64,
    /// Requests or ranges refused (bad PFNs, ranges outside memory, malformed chains).
    refused: AtomicU64,
}

/// The host's side of a balloon: set its target, read what the guest did.
#[derive(Clone)]
pub struct BalloonHandle(Arc<Shared>);

impl BalloonHandle {
    /// Asks the guest to hold `mib` MiB in its balloon (0 deflates it fully) and tells the
    /// driver with a configuration-change interrupt if it is running. Saturates at the
    /// largest page count the config field holds.
    pub fn set_target_mib(&self, mib: u64) {
        let pages = mib
            .saturating_mul(1 << (20 - PFN_SHIFT))
            .min(u64::from(u32::MAX));
        self.0.num_pages.store(pages as u32, Ordering::SeqCst);
        if let Some(interrupt) = self.0.interrupt.lock().unwrap().as_ref() {
            interrupt.signal_config();
        }
    }

    /// The target in MiB.
    pub fn target_mib(&self) -> u64 {
        u64::from(self.0.num_pages.load(Ordering::SeqCst)) >> (20 - PFN_SHIFT)
    }

    /// What the driver says the balloon holds, in MiB.
    pub fn actual_mib(&self) -> u64 {
        u64::from(self.0.actual.load(Ordering::SeqCst)) >> (20 - PFN_SHIFT)
    }

    /// Bytes of guest RAM given back to the host since the VM started.
    pub fn discarded_bytes(&self) -> u64 {
        self.0.discarded.load(Ordering::SeqCst)
    }

    /// Requests and ranges refused since the VM started.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::SeqCst)
    }
}

/// virtio-balloon.
pub struct Balloon {
    offered: u64,
    acked: u64,
    shared: Arc<Shared>,
    active: Option<ActiveQueues>,
    logged_errors: u32,
}

impl Balloon {
    /// A balloon offering `options`' features.
    pub fn new(options: BalloonOptions) -> Self {
        let mut offered = FEATURE_VERSION_1;
        if options.deflate_on_oom {
            offered |= FEATURE_DEFLATE_ON_OOM;
        }
        if options.free_page_reporting {
            offered |= FEATURE_FREE_PAGE_REPORTING;
        }
        let balloon = Balloon {
            offered,
            acked: 0,
            shared: Arc::new(Shared {
                num_pages: AtomicU32::new(0),
                actual: AtomicU32::new(0),
                interrupt: Mutex::new(None),
                discarded: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
            active: None,
            logged_errors: 0,
        };
        balloon.handle().set_target_mib(options.target_mib);
        balloon
    }

    /// The handle for the control socket.
    pub fn handle(&self) -> BalloonHandle {
        BalloonHandle(self.shared.clone())
    }

    fn config_bytes(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..4].copy_from_slice(&self.shared.num_pages.load(Ordering::SeqCst).to_le_bytes());
        c[4..8].copy_from_slice(&self.shared.actual.load(Ordering::SeqCst).to_le_bytes());
        // free_page_hint_cmd_id and poison_val: their features are not offered.
        c
    }

    fn refuse(&mut self, why: &str) {
        self.shared.refused.fetch_add(1, Ordering::SeqCst);
        self.logged_errors += 1;
        if self.logged_errors <= MAX_LOGGED_ERRORS {
            crate::log(&format!("virtio-balloon: skipped: {why}"));
            if self.logged_errors == MAX_LOGGED_ERRORS {
                crate::log("virtio-balloon: further errors are not logged");
            }
        }
    }

    /// Discards `[addr, addr + len)`, or refuses it with the reason.
    fn discard_logged(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u64) {
        match discard(mem, addr, len) {
            Ok(()) => {
                self.shared.discarded.fetch_add(len, Ordering::SeqCst);
            }
            Err(e) => self.refuse(&e),
        }
    }

    /// An inflate request: device-readable PFNs only.
    fn inflate(&mut self, mem: &GuestMemoryMmap, chain: &Chain) {
        let bytes = chain.readable_len();
        if !chain.writable.is_empty() || !chain.well_formed() || !bytes.is_multiple_of(4) {
            return self.refuse(&format!(
                "inflate chain {}: not a whole number of device-readable PFNs",
                chain.head
            ));
        }
        if bytes > (MAX_PFNS_PER_REQUEST * 4) as u64 {
            return self.refuse(&format!(
                "inflate chain {}: {} PFNs, more than {MAX_PFNS_PER_REQUEST}",
                chain.head,
                bytes / 4
            ));
        }
        let mut raw = vec![0u8; bytes as usize];
        if !read_bytes(mem, &chain.readable, 0, &mut raw) {
            return self.refuse(&format!("inflate chain {}: unreadable", chain.head));
        }
        let pfns = raw
            .chunks_exact(4)
            .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        for (first, count) in pfn_runs(pfns) {
            self.discard_logged(mem, first << PFN_SHIFT, count << PFN_SHIFT);
        }
    }

    /// A free page report: device-writable ranges only.
    fn report(&mut self, mem: &GuestMemoryMmap, chain: &Chain) {
        if !chain.readable.is_empty() || !chain.well_formed() {
            return self.refuse(&format!(
                "report chain {}: not device-writable page ranges",
                chain.head
            ));
        }
        for seg in &chain.writable {
            self.discard_logged(mem, seg.addr.0, u64::from(seg.len));
        }
    }
}

/// Runs of consecutive PFNs, in order: (first, count). One madvise per run rather than per
/// page (Linux on 64 KiB pages sends 16 consecutive PFNs per page).
fn pfn_runs(pfns: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for pfn in pfns {
        match runs.last_mut() {
            Some((first, count)) if *first + *count == pfn => *count += 1,
            _ => runs.push((pfn, 1)),
        }
    }
    runs
}

/// Gives guest RAM `[addr, addr + len)` back to the host with `madvise(MADV_DONTNEED)`: the
/// range must be page aligned, not empty, and inside one guest RAM region.
pub fn discard(mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<(), String> {
    let what = || format!("range {addr:#x}+{len:#x}");
    if len == 0 || !addr.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
        return Err(format!("{}: not whole 4 KiB pages", what()));
    }
    let (region, offset) = mem
        .to_region_addr(GuestAddress(addr))
        .ok_or_else(|| format!("{}: not guest RAM", what()))?;
    let inside = offset
        .0
        .checked_add(len)
        .is_some_and(|end| end <= region.len());
    if !inside {
        return Err(format!("{}: runs past the end of guest RAM", what()));
    }
    let host = region
        .get_host_address(MemoryRegionAddress(offset.0))
        .map_err(|e| format!("{}: {e}", what()))?;
    // SAFETY: [host, host + len) lies inside the region's own mapping (checked just above), so
    // madvise touches no memory of the VMM's but guest RAM. MADV_DONTNEED only replaces pages:
    // anonymous RAM reads back as zeros, a privately mapped file's pages as the file's. No
    // Rust reference into guest RAM exists (it is only accessed through vm-memory's volatile
    // slices), so no reference sees its memory change under it; the guest gave these pages up.
    let rc = unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_DONTNEED) };
    if rc != 0 {
        return Err(format!(
            "{}: madvise: {}",
            what(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        if self.offered & FEATURE_FREE_PAGE_REPORTING != 0 {
            &[QUEUE_SIZE; 3]
        } else {
            &[QUEUE_SIZE; 2]
        }
    }

    fn queues_in_use(&self) -> usize {
        if self.acked & FEATURE_FREE_PAGE_REPORTING != 0 {
            3
        } else {
            2
        }
    }

    fn features(&self) -> u64 {
        self.offered
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| config.get(o as usize))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Only `actual` (bytes 4..8) is the driver's to write.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut actual = self.shared.actual.load(Ordering::SeqCst).to_le_bytes();
        let mut changed = false;
        for (i, &b) in data.iter().enumerate() {
            if let Some(at) = offset.checked_add(i as u64).filter(|o| (4..8).contains(o)) {
                actual[at as usize - 4] = b;
                changed = true;
            }
        }
        if changed {
            self.shared
                .actual
                .store(u32::from_le_bytes(actual), Ordering::SeqCst);
        }
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), DeviceError> {
        *self.shared.interrupt.lock().unwrap() = Some(active.interrupt.clone());
        self.active = Some(active);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), DeviceError> {
        let mut active = self.active.take().ok_or(DeviceError::NotActive)?;
        let result = match index {
            INFLATE_QUEUE => active.serve_queue(index, |mem, chain| {
                self.inflate(mem, chain);
                0
            }),
            DEFLATE_QUEUE => active.serve_queue(index, |_, _| 0),
            REPORTING_QUEUE if self.acked & FEATURE_FREE_PAGE_REPORTING != 0 => {
                active.serve_queue(index, |mem, chain| {
                    self.report(mem, chain);
                    0
                })
            }
            _ => Err(DeviceError::NotActive),
        };
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        *self.shared.interrupt.lock().unwrap() = None;
        self.shared.actual.store(0, Ordering::SeqCst);
        self.active = None;
        self.acked = 0;
    }
}

#[cfg(test)]
#[path = "balloon_tests.rs"]
mod tests;
