//! ELF `vmlinux` loading: what linux-loader's `Elf::load` does (the same header checks, each
//! `PT_LOAD` segment's file bytes at its physical address, the entry point and the end of the
//! highest segment), except that a segment whose file offset and physical address agree modulo
//! the page size (as a linker lays out a vmlinux) is mapped copy-on-write from the file
//! ([`place_file_range`]) instead of copied: every guest booting the same vmlinux then shares its
//! text and read-only data in the host page cache. PVH notes are not read (this VMM enters the
//! 64-bit entry point).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use vm_memory::GuestMemoryMmap;

use crate::arch::types::{place_file_range, ArchError};

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const PT_LOAD: u32 = 1;
/// A vmlinux has a handful; this bounds what a hostile header can make us read.
const MAX_PHDRS: usize = 64;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Where the kernel landed: its entry point and the end of its highest segment in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedElf {
    /// `e_entry`.
    pub entry: u64,
    /// The highest `p_paddr + p_memsz` of the loaded segments.
    pub end: u64,
    /// Bytes mapped copy-on-write rather than copied.
    pub mapped: u64,
}

/// Loads the ELF `file` into `mem`; the entry point must be at or above `himem`. `what` names
/// the file in errors.
pub fn load(
    mem: &GuestMemoryMmap,
    file: &mut File,
    himem: u64,
    what: &str,
) -> Result<LoadedElf, ArchError> {
    let err = |why: &str| ArchError(format!("{what}: {why}"));
    let io = |e: std::io::Error| ArchError::new(what, e);
    let mut ehdr = [0u8; EHDR_LEN];
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.read_exact(&mut ehdr)
        .map_err(|_| err("cannot read the ELF header"))?;
    if &ehdr[..4] != b"\x7fELF" {
        return Err(err("not an ELF file"));
    }
    if ehdr[5] != 1 {
        return Err(err("big-endian ELF"));
    }
    let entry = u64_at(&ehdr, 24);
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u16_at(&ehdr, 54) as usize;
    let phnum = u16_at(&ehdr, 56) as usize;
    if phentsize != PHDR_LEN {
        return Err(err(&format!(
            "program header size {phentsize}, expected {PHDR_LEN}"
        )));
    }
    if phoff < EHDR_LEN as u64 {
        return Err(err(&format!(
            "program headers at offset {phoff}, inside the ELF header"
        )));
    }
    if phnum > MAX_PHDRS {
        return Err(err(&format!(
            "{phnum} program headers, at most {MAX_PHDRS}"
        )));
    }
    if entry < himem {
        return Err(err(&format!(
            "entry point {entry:#x} below the kernel's lowest address {himem:#x}"
        )));
    }
    let mut phdrs = vec![0u8; phnum * PHDR_LEN];
    file.seek(SeekFrom::Start(phoff)).map_err(io)?;
    file.read_exact(&mut phdrs)
        .map_err(|_| err("cannot read the program headers"))?;
    let mut loaded = LoadedElf {
        entry,
        end: 0,
        mapped: 0,
    };
    for ph in phdrs.chunks_exact(PHDR_LEN) {
        let (kind, offset, paddr) = (u32_at(ph, 0), u64_at(ph, 8), u64_at(ph, 24));
        let (filesz, memsz) = (u64_at(ph, 32), u64_at(ph, 40));
        if kind != PT_LOAD || filesz == 0 {
            continue;
        }
        loaded.mapped += place_file_range(mem, paddr, file, offset, filesz, what)?;
        let end = paddr.checked_add(memsz).ok_or_else(|| {
            err(&format!(
                "segment at {paddr:#x} of {memsz:#x} bytes overflows"
            ))
        })?;
        loaded.end = loaded.end.max(end);
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{create_guest_memory, tests::vma};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    /// An ELF64 with `segs` as (file offset, paddr, file bytes, memsz) PT_LOAD entries, the
    /// file filled with a pattern so that bytes beyond a segment are not zero.
    fn elf(entry: u64, segs: &[(u64, u64, u64, u64)], file_len: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (0..file_len).map(|i| (i % 251) as u8 | 0x80).collect();
        f[..EHDR_LEN].fill(0);
        f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_LEN as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, &(off, paddr, filesz, memsz)) in segs.iter().enumerate() {
            let p = &mut f[64 + i * PHDR_LEN..64 + (i + 1) * PHDR_LEN];
            p.fill(0);
            p[..4].copy_from_slice(&PT_LOAD.to_le_bytes());
            for (at, v) in [
                (8, off),
                (16, paddr),
                (24, paddr),
                (32, filesz),
                (40, memsz),
            ] {
                p[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        f
    }

    fn write_tmp(tag: &str, bytes: &[u8]) -> (std::path::PathBuf, File) {
        let p = std::env::temp_dir().join(format!("cpv-elf-{tag}-{}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        (p, f)
    }

    fn guest(mem: &GuestMemoryMmap, at: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    #[test]
    fn congruent_segments_are_mapped_and_read_as_copied() {
        const M: u64 = 1 << 20;
        let segs = [
            // Text: 3.5 pages from a page-aligned offset: three pages mapped, the half copied
            // (the file goes on after it).
            (0x1000, M, 0x3800, 0x3800),
            // Data starting mid-page, congruent: its first part copied, the next page mapped,
            // the rest copied; BSS after it.
            (0x4800, M + 0x10_0800, 0x1900, 0x5000),
            // Not congruent: copied.
            (0x6100, M + 0x20_0000, 0x1000, 0x1000),
            // The end of the file, congruent: mapped whole, its last page past EOF reads zero.
            (0x8000, M + 0x30_0000, 0x1234, 0x2000),
        ];
        let bytes = elf(M, &segs, 0x9234);
        let (path, mut file) = write_tmp("cow", &bytes);
        let mem = create_guest_memory(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let l = load(&mem, &mut file, M, "kernel").unwrap();
        assert_eq!(l.entry, M);
        assert_eq!(l.end, M + 0x30_2000);
        assert_eq!(l.mapped, 0x3000 + 0x1000 + 0x1234);
        for &(off, paddr, filesz, memsz) in &segs {
            let got = guest(&mem, paddr, memsz);
            let (file_part, bss) = got.split_at(filesz as usize);
            assert_eq!(file_part, &bytes[off as usize..(off + filesz) as usize]);
            assert!(bss.iter().all(|&b| b == 0), "BSS of {paddr:#x} not zero");
            // And nothing of the file before or after the segment in its pages.
            assert_eq!(guest(&mem, paddr - 8, 8), [0; 8], "before {paddr:#x}");
        }
        let host = |a: u64| mem.get_host_address(GuestAddress(a)).unwrap();
        assert_ne!(vma(host(M), 0x3000).inode, 0, "text mapped from the file");
        assert_ne!(vma(host(M + 0x10_1000), 0x1000).inode, 0);
        assert_ne!(vma(host(M + 0x30_0000), 0x2000).inode, 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bad_headers_are_refused() {
        let mem = create_guest_memory(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let try_load = |bytes: &[u8]| {
            let (path, mut f) = write_tmp("bad", bytes);
            let r = load(&mem, &mut f, 1 << 20, "kernel");
            std::fs::remove_file(&path).unwrap();
            r.unwrap_err().0
        };
        let good = elf(1 << 20, &[(0x1000, 1 << 20, 0x100, 0x100)], 0x2000);
        let mut b = good.clone();
        b[5] = 2;
        assert!(try_load(&b).contains("big-endian"));
        let mut b = good.clone();
        b[54] = 32;
        assert!(try_load(&b).contains("program header size 32"));
        let mut b = good.clone();
        b[32] = 8;
        assert!(try_load(&b).contains("inside the ELF header"));
        assert!(try_load(&elf(0x1000, &[], 0x2000)).contains("entry point 0x1000 below"));
        // A segment outside guest memory or past the end of the file.
        let b = elf(1 << 20, &[(0x1000, 16 << 20, 0x100, 0x100)], 0x2000);
        assert!(try_load(&b).contains("does not fit"));
        let b = elf(1 << 20, &[(0x1000, 1 << 20, 0x2000, 0x2000)], 0x2000);
        assert!(try_load(&b).contains("past the end of the file"));
    }
}
