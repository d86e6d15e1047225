//! Guest memory: anonymous private mappings reserved lazily (`MAP_NORESERVE`), so a guest's RAM
//! costs host memory only once the guest touches it. Files are read straight into these mappings
//! (kernel, initrd), never through an intermediate copy.

use std::fmt;

use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

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

const PAGE_SIZE: u64 = 4096;

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
        let region = GuestRegionMmap::new(region, addr)
            .ok_or_else(|| MemoryError::BadLayout(format!("region at {:#x} overflows", addr.0)))?;
        mapped.push(region);
    }
    GuestMemoryMmap::from_regions(mapped).map_err(MemoryError::Collection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

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

    #[test]
    fn rejects_bad_layout() {
        assert!(create_guest_memory(&[(GuestAddress(0), 0)]).is_err());
        assert!(create_guest_memory(&[(GuestAddress(1), 4096)]).is_err());
        assert!(
            create_guest_memory(&[(GuestAddress(0), 8192), (GuestAddress(4096), 4096)]).is_err()
        );
    }
}
