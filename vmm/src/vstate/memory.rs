//! Guest memory: anonymous private mappings reserved lazily (`MAP_NORESERVE`), so a guest's RAM
//! costs host memory only once the guest touches it. Files are read straight into these mappings
//! (initrd), never through an intermediate copy, or mapped copy-on-write over a part of them
//! ([`map_file_private`], the kernel image): every guest booting the same file then reads the
//! same host page-cache pages, and a page costs the guest memory only once the guest writes it.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::{
    Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, MmapRegion,
};

/// Why guest memory could not be created.
#[derive(Debug)]
pub enum MemoryError {
    /// A region had size zero or was not page aligned.
    BadLayout(String),
    /// mmap of a region failed.
    Mmap(vm_memory::mmap::MmapRegionError),
    /// The regions overlap or are otherwise invalid.
    Collection(vm_memory::GuestRegionCollectionError),
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::BadLayout(s) => write!(f, "bad guest memory layout: {s}"),
            MemoryError::Mmap(e) => write!(f, "cannot map guest memory: {e}"),
            MemoryError::Collection(e) => write!(f, "bad guest memory regions: {e}"),
        }
    }
}

impl std::error::Error for MemoryError {}

/// The host and guest page size this VMM supports (4 KiB; arm64 hosts with 16 or 64 KiB pages
/// are not supported).
pub const PAGE_SIZE: u64 = 4096;

/// Maps one anonymous region per `(guest address, size)` pair.
pub fn create_guest_memory(
    regions: &[(GuestAddress, usize)],
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut mapped = Vec::with_capacity(regions.len());
    for &(addr, size) in regions {
        if size == 0
            || !(size as u64).is_multiple_of(PAGE_SIZE)
            || !addr.0.is_multiple_of(PAGE_SIZE)
        {
            return Err(MemoryError::BadLayout(format!(
                "region at {:#x} of {size:#x} bytes",
                addr.0
            )));
        }
        let region = MmapRegion::build(
            None,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(MemoryError::Mmap)?;
        no_huge_pages(region.as_ptr(), size);
        let region = GuestRegionMmap::new(region, addr)
            .ok_or_else(|| MemoryError::BadLayout(format!("region at {:#x} overflows", addr.0)))?;
        mapped.push(region);
    }
    GuestMemoryMmap::from_regions(mapped).map_err(MemoryError::Collection)
}

/// Asks the host kernel not to back guest RAM with transparent huge pages. Where THP is
/// `always` (Debian's kernels), one guest write makes a whole 2 MiB resident, and khugepaged
/// collapses sparse ranges, pages the balloon's free page reporting gave back included, into
/// huge pages again: an app would cost its board far more than the guest uses. Advisory: a
/// kernel without THP refuses it (EINVAL), which changes nothing.
fn no_huge_pages(at: *mut u8, len: usize) {
    // SAFETY: `at..at + len` is a mapping this process just made and owns; MADV_NOHUGEPAGE
    // only sets a flag on it and neither frees nor moves memory.
    unsafe {
        libc::madvise(at.cast(), len, libc::MADV_NOHUGEPAGE);
    }
}

/// Why a file could not be mapped into guest memory.
#[derive(Debug)]
pub enum MapFileError {
    /// The range is empty, not page aligned, outside guest memory, across the end of a memory
    /// region, or past the end of the file: nothing was changed.
    BadRange(String),
    /// mmap(2) refused (a file system that cannot map files, a file not open for reading): the
    /// range is anonymous RAM again (reading zero); the caller may copy the bytes instead.
    Mmap(io::Error),
    /// mmap(2) failed and the anonymous RAM could not be put back: the range is unusable.
    Restore(io::Error),
}

impl fmt::Display for MapFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapFileError::BadRange(s) => write!(f, "cannot map the file there: {s}"),
            MapFileError::Mmap(e) => write!(f, "mmap of the file failed: {e}"),
            MapFileError::Restore(e) => {
                write!(
                    f,
                    "mmap of the file failed and guest RAM could not be restored: {e}"
                )
            }
        }
    }
}

impl std::error::Error for MapFileError {}

/// Maps `len` bytes of `file` from `offset` privately (copy-on-write) over the guest RAM at
/// `addr`, replacing what the RAM held there. `addr` and `offset` must be page aligned and the
/// mapped pages (`len` rounded up to a page) must lie wholly inside one memory region; `len`
/// must not run past the end of the file. Bytes past the end of the file in the last page read
/// zero (mmap semantics); the RAM beyond the last page stays anonymous (the kernel's BSS).
///
/// Guest reads then come from the host page cache, shared by every VM that maps the same file;
/// a write (by the guest, or by the VMM through `mem`) copies just that page into private
/// memory of this process, and the file never changes. The caller closes `file` when it likes:
/// the mapping holds its own reference to it.
///
/// Call it while the VM is being built, before any vCPU or device uses the range: its
/// contents are replaced.
///
/// A page not yet copied shows later writes to the file (MAP_PRIVATE): the files mapped here are
/// the agent's content-addressed blobs, which are written once into a temporary file and
/// renamed into place read-only (0444), never opened for writing afterwards, and unlinked (not
/// truncated) when collected (agent/src/store/blobs.rs); an unlinked file stays mapped intact.
pub fn map_file_private(
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    file: &File,
    offset: u64,
    len: u64,
) -> Result<(), MapFileError> {
    let bad = |why: String| {
        MapFileError::BadRange(format!(
            "{len} bytes from file offset {offset:#x} at guest {:#x}: {why}",
            addr.0
        ))
    };
    if len == 0 {
        return Err(bad("empty".into()));
    }
    if !addr.0.is_multiple_of(PAGE_SIZE) || !offset.is_multiple_of(PAGE_SIZE) {
        return Err(bad("not page aligned".into()));
    }
    let file_len = file.metadata().map_err(MapFileError::Mmap)?.len();
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(bad(format!("past the end of the {file_len}-byte file")));
    }
    let map_len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let region = mem
        .find_region(addr)
        .ok_or_else(|| bad("not in guest memory".into()))?;
    let in_region = addr.0 - region.start_addr().raw_value();
    if in_region
        .checked_add(map_len)
        .is_none_or(|end| end > region.len())
    {
        return Err(bad("crosses the end of its memory region".into()));
    }
    let host = region
        .get_host_address(MemoryRegionAddress(in_region))
        .map_err(|e| bad(e.to_string()))?;
    let file_offset =
        libc::off_t::try_from(offset).map_err(|_| bad("offset out of range".into()))?;
    // Why MAP_FIXED over our own mapping is sound: [host, host + map_len) lies wholly inside
    // the anonymous mapping that `region`'s MmapRegion created and owns (checked above).
    // vm-memory knows that mapping only by its base pointer and size, both unchanged; the
    // replaced pages stay mapped, readable and writable, so every pointer vm-memory derives
    // stays valid; guest memory is only ever accessed through volatile slices, so no Rust
    // reference into the range is invalidated; MAP_FIXED replaces the old pages atomically
    // (under the mm's lock, no window where the range is unmapped); when the MmapRegion drops,
    // its munmap of the whole range unmaps this mapping too. KVM: the memslot (registered before
    // the kernel is loaded, vstate/vm.rs) names this same virtual range; KVM resolves host
    // pages lazily by virtual address at fault time, and the mm's MMU notifier drops any
    // stage-2 entry of a replaced page (there are none yet: no vCPU has run).
    // SAFETY: see above; the fd is valid for the call, the result is checked.
    let p = unsafe {
        libc::mmap(
            host.cast(),
            map_len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            file_offset,
        )
    };
    if p == libc::MAP_FAILED {
        let err = io::Error::last_os_error();
        // Most refusals come before the old pages are touched, but a failure after them leaves
        // a hole on older kernels: put anonymous RAM back either way.
        // SAFETY: the same range, inside the region's own mapping (as above), anonymous.
        let back = unsafe {
            libc::mmap(
                host.cast(),
                map_len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if back == libc::MAP_FAILED {
            return Err(MapFileError::Restore(io::Error::last_os_error()));
        }
        no_huge_pages(host, map_len as usize);
        return Err(MapFileError::Mmap(err));
    }
    if p != host.cast() {
        // MAP_FIXED never places the mapping elsewhere; this only guards the assumption.
        return Err(MapFileError::Restore(io::Error::other(
            "mmap placed the file at another address",
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn maps_lazily_and_is_usable() {
        // 1 GiB would be a lot of RSS if it were not reserved lazily.
        let mem =
            create_guest_memory(&[(GuestAddress(0), 1 << 30), (GuestAddress(1 << 32), 1 << 20)])
                .unwrap();
        mem.write_obj(0xdead_beefu32, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert!(mem.write_obj(1u8, GuestAddress(1 << 31)).is_err());
        assert_eq!(mem.num_regions(), 2);
    }

    /// Guest RAM is marked no-huge-pages where the host has THP (VmFlags `nh`), so a guest
    /// page costs the host 4 KiB, not 2 MiB.
    #[test]
    fn guest_ram_asks_for_no_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
            eprintln!("skipped: this host's kernel has no transparent huge pages");
            return;
        }
        let mem = create_guest_memory(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let host = mem.get_host_address(GuestAddress(0)).unwrap();
        let v = vma(host, 8 << 20);
        assert!(v.flags.iter().any(|f| f == "nh"), "VmFlags {:?}", v.flags);
        mem.write_obj(1u8, GuestAddress(0x1000)).unwrap();
        let v = vma(host, 8 << 20);
        assert_eq!(v.kib["AnonHugePages"], 0);
        assert!(
            v.kib["Rss"] <= 64,
            "one written page made {} KiB resident",
            v.kib["Rss"]
        );
    }

    #[test]
    fn rejects_bad_layout() {
        assert!(create_guest_memory(&[(GuestAddress(0), 0)]).is_err());
        assert!(create_guest_memory(&[(GuestAddress(1), 4096)]).is_err());
        assert!(
            create_guest_memory(&[(GuestAddress(0), 8192), (GuestAddress(4096), 4096)]).is_err()
        );
    }

    /// One mapping's entry in /proc/self/smaps.
    pub(crate) struct Vma {
        pub inode: u64,
        /// Fields in kB (Rss, Pss, Private_Dirty, ...).
        pub kib: std::collections::HashMap<String, u64>,
        /// Its VmFlags (`rd`, `wr`, `nh`: no huge pages, ...).
        pub flags: Vec<String>,
    }

    /// The smaps entry of the mapping that holds host address `at`, exactly `[at, at + len)`.
    pub(crate) fn vma(at: *const u8, len: u64) -> Vma {
        let (start, end) = (at as u64, at as u64 + len);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut found: Option<Vma> = None;
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    if found.is_some() {
                        break;
                    }
                    if a == start {
                        assert_eq!(b, end, "mapping at {a:#x} is not exactly the range: {line}");
                        let inode = words.nth(3).unwrap().parse().unwrap();
                        found = Some(Vma {
                            inode,
                            kib: Default::default(),
                            flags: Vec::new(),
                        });
                    }
                    continue;
                }
            }
            if let (Some(v), Some(name)) = (found.as_mut(), first.strip_suffix(':')) {
                if name == "VmFlags" {
                    v.flags = words.map(str::to_string).collect();
                } else if let Some(Ok(n)) = words.next().map(str::parse) {
                    v.kib.insert(name.to_string(), n);
                }
            }
        }
        found.unwrap_or_else(|| panic!("no mapping starts at {start:#x}"))
    }

    fn scratch_file(tag: &str, bytes: &[u8]) -> (std::path::PathBuf, File) {
        let p = std::env::temp_dir().join(format!("cpv-mapfile-{tag}-{}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        (p, f)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8 | 1).collect()
    }

    fn read(mem: &GuestMemoryMmap, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    #[test]
    fn mapped_file_reads_back_and_guest_writes_stay_private() {
        let bytes = pattern(3 * 4096 + 100);
        let (path, file) = scratch_file("rw", &bytes);
        let mem = create_guest_memory(&[(GuestAddress(0), 1 << 20)]).unwrap();
        // RAM written before: inside the range it is replaced, past the last page it stays.
        mem.write_obj(0x55u8, GuestAddress(0x4000 + 10)).unwrap();
        mem.write_obj(0xaau8, GuestAddress(0x4000 + 0x4000))
            .unwrap();
        map_file_private(&mem, GuestAddress(0x4000), &file, 0, bytes.len() as u64).unwrap();
        drop(file);
        assert_eq!(read(&mem, 0x4000, bytes.len()), bytes);
        // Past the end of the file in the last page: zero; the next page is RAM as it was.
        assert_eq!(
            read(&mem, 0x4000 + bytes.len() as u64, 4096 - 100),
            vec![0; 3996]
        );
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x8000)).unwrap(), 0xaa);
        let host = mem.get_host_address(GuestAddress(0x4000)).unwrap();
        let v = vma(host, 0x4000);
        assert_ne!(v.inode, 0, "file backed");
        // A write copies the page: the guest sees it, the file does not.
        mem.write_obj(0x1234_5678u32, GuestAddress(0x4000 + 4096 + 8))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(0x4000 + 4096 + 8))
                .unwrap(),
            0x1234_5678
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // A later page of the file at a page-aligned offset.
        let file = File::open(&path).unwrap();
        map_file_private(&mem, GuestAddress(0x2_0000), &file, 0x2000, 0x1000).unwrap();
        assert_eq!(read(&mem, 0x2_0000, 0x1000), bytes[0x2000..0x3000]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn two_mappings_share_the_host_pages_until_written() {
        let bytes = pattern(8 * 4096);
        let (path, file) = scratch_file("share", &bytes);
        let a = create_guest_memory(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let b = create_guest_memory(&[(GuestAddress(0), 1 << 20)]).unwrap();
        for mem in [&a, &b] {
            map_file_private(mem, GuestAddress(0x1_0000), &file, 0, bytes.len() as u64).unwrap();
            assert_eq!(read(mem, 0x1_0000, bytes.len()), bytes);
        }
        drop(file);
        let host = |mem: &GuestMemoryMmap| mem.get_host_address(GuestAddress(0x1_0000)).unwrap();
        for mem in [&a, &b] {
            let v = vma(host(mem), 0x8000);
            assert_ne!(v.inode, 0, "file backed");
            assert_eq!(v.kib["Rss"], 32, "every page read");
            assert_eq!(v.kib["Private_Dirty"], 0, "nothing copied");
            assert_eq!(v.kib["Anonymous"], 0, "nothing copied");
            // Both mappings map the same page-cache pages (clean or dirty as the page cache
            // has them: the file was just written).
            let shared = v.kib["Shared_Clean"] + v.kib["Shared_Dirty"];
            assert_eq!(shared, 32, "{:?}", v.kib);
            assert!(v.kib["Pss"] <= 16, "{:?}", v.kib);
        }
        a.write_obj(7u8, GuestAddress(0x1_0000 + 3 * 4096)).unwrap();
        let (va, vb) = (vma(host(&a), 0x8000), vma(host(&b), 0x8000));
        assert_eq!((va.kib["Private_Dirty"], va.kib["Anonymous"]), (4, 4));
        // B's pages are still the page cache's (now mapped once, so smaps calls them private:
        // Anonymous is what tells a copy).
        assert_eq!(vb.kib["Anonymous"], 0);
        assert_eq!(read(&b, 0x1_0000, bytes.len()), bytes);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn map_file_checks_the_range() {
        let (path, file) = scratch_file("bad", &pattern(2 * 4096));
        let mem = create_guest_memory(&[
            (GuestAddress(0), 64 << 10),
            (GuestAddress(1 << 20), 64 << 10),
        ])
        .unwrap();
        let bad = |addr: u64, offset: u64, len: u64| match map_file_private(
            &mem,
            GuestAddress(addr),
            &file,
            offset,
            len,
        ) {
            Err(MapFileError::BadRange(s)) => s,
            other => panic!("{addr:#x}+{offset:#x}/{len}: {other:?}"),
        };
        assert!(bad(0x1000, 0, 0).contains("empty"));
        assert!(bad(0x1001, 0, 10).contains("not page aligned"));
        assert!(bad(0x1000, 0x10, 10).contains("not page aligned"));
        assert!(bad(0x1000, 0, 2 * 4096 + 1).contains("past the end"));
        assert!(bad(0x1000, 0x1000, 4097).contains("past the end"));
        assert!(bad(0x2_0000, 0, 10).contains("not in guest memory"));
        assert!(bad(0xf000, 0, 4097).contains("crosses the end"));
        // A region's last page is fine.
        map_file_private(&mem, GuestAddress(0xf000), &file, 0, 4096).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_refused_mmap_leaves_anonymous_ram() {
        let p = std::env::temp_dir().join(format!("cpv-mapfile-wo-{}", std::process::id()));
        std::fs::write(&p, pattern(4096)).unwrap();
        // Open for writing only: mmap needs read access and says EACCES.
        let file = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        let mem = create_guest_memory(&[(GuestAddress(0), 64 << 10)]).unwrap();
        mem.write_obj(0x55u8, GuestAddress(0x2000)).unwrap();
        match map_file_private(&mem, GuestAddress(0x2000), &file, 0, 4096) {
            Err(MapFileError::Mmap(e)) => assert_eq!(e.raw_os_error(), Some(libc::EACCES)),
            other => panic!("{other:?}"),
        }
        // Still RAM, readable and writable.
        assert_eq!(read(&mem, 0x2000, 4096), vec![0; 4096]);
        mem.write_obj(0x66u8, GuestAddress(0x2000)).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x2000)).unwrap(), 0x66);
        std::fs::remove_file(&p).unwrap();
    }
}
