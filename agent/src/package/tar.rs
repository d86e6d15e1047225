//! Just enough ustar for packages: a deterministic writer (regular files and directories,
//! mtime 0, uid/gid 0) and a strict indexer that refuses anything else.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::fault::{Fault, FaultCode};

/// Size of a tar block (headers and data padding), bytes.
pub const BLOCK: u64 = 512;
const NAME_LEN: usize = 100;
const PREFIX_LEN: usize = 155;

/// Where a regular file's data lies inside the tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarEntry {
    /// Byte offset of the file's data from the start of the tar.
    pub offset: u64,
    /// Size of the data, bytes.
    pub size: u64,
}

fn corrupt(msg: impl Into<String>) -> Fault {
    Fault::new(FaultCode::CorruptData, msg.into())
}

fn write_octal(field: &mut [u8], value: u64) {
    // NUL-terminated, zero-padded octal, as GNU and BSD tar write it.
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn header(name: &str, size: u64, dir: bool) -> io::Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let (prefix, base) = if name.len() <= NAME_LEN {
        ("", name)
    } else {
        // Split at a '/' so that the prefix and the name each fit their fields.
        let split = name
            .char_indices()
            .filter(|&(i, c)| c == '/' && i <= PREFIX_LEN && name.len() - i - 1 <= NAME_LEN)
            .map(|(i, _)| i)
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("tar name too long: {name}"),
                )
            })?;
        (&name[..split], &name[split + 1..])
    };
    // 8 GiB - 1 is the largest size 11 octal digits hold.
    if size >= 1 << 33 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: over 8 GiB"),
        ));
    }
    h[..base.len()].copy_from_slice(base.as_bytes());
    write_octal(&mut h[100..108], if dir { 0o755 } else { 0o644 });
    write_octal(&mut h[108..116], 0);
    write_octal(&mut h[116..124], 0);
    write_octal(&mut h[124..136], size);
    write_octal(&mut h[136..148], 0);
    h[156] = if dir { b'5' } else { b'0' };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    write_octal(&mut h[148..155], sum as u64);
    h[155] = b' ';
    Ok(h)
}

/// Appends entries to a tar stream; the caller supplies them in the (sorted) order wanted.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out`; nothing is written until the first entry.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Appends a directory entry `name` (a trailing `/` is added).
    pub fn add_dir(&mut self, name: &str) -> io::Result<()> {
        let name = format!("{}/", name.trim_end_matches('/'));
        self.out.write_all(&header(&name, 0, true)?)
    }

    /// Copies exactly `size` bytes from `data`; a source of another length is an error.
    pub fn add_file(&mut self, name: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        self.out.write_all(&header(name, size, false)?)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: source changed size while packing ({copied} of {size} bytes)"),
            ));
        }
        let pad = (BLOCK - size % BLOCK) % BLOCK;
        self.out.write_all(&[0u8; 512][..pad as usize])
    }

    /// Writes the two zero blocks that end the archive and gives the stream back.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        Ok(self.out)
    }
}

pub(crate) fn parse_octal(field: &[u8], what: &str, name: &str) -> Result<u64, Fault> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for &c in &text {
        if !(b'0'..=b'7').contains(&c) || v >> 60 != 0 {
            return Err(corrupt(format!("tar entry {name:?}: bad {what} field")));
        }
        v = (v << 3) | u64::from(c - b'0');
    }
    Ok(v)
}

pub(crate) fn field_str<'a>(field: &'a [u8], name_so_far: &str) -> Result<&'a str, Fault> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).map_err(|_| {
        corrupt(format!(
            "tar entry after {name_so_far:?}: name is not UTF-8"
        ))
    })
}

/// Indexes the regular files of a tar of `total_len` bytes: name -> data location. Refuses
/// links, devices, extended headers, duplicate or unsafe names, more than `max_entries`
/// entries, and data running past the end (truncation).
pub fn index<R: Read + Seek>(
    r: &mut R,
    total_len: u64,
    max_entries: usize,
) -> Result<BTreeMap<String, TarEntry>, Fault> {
    let mut files = BTreeMap::new();
    let mut pos = 0u64;
    let mut entries = 0usize;
    let mut last = String::new();
    loop {
        if pos + BLOCK > total_len {
            return Err(corrupt(format!(
                "package truncated: tar ends at byte {total_len} without its end marker"
            )));
        }
        let mut h = [0u8; 512];
        r.seek(SeekFrom::Start(pos))
            .and_then(|_| r.read_exact(&mut h))
            .map_err(|e| corrupt(format!("package unreadable at byte {pos}: {e}")))?;
        if h.iter().all(|&b| b == 0) {
            return Ok(files);
        }
        entries += 1;
        if entries > max_entries {
            return Err(corrupt(format!(
                "package has more than {max_entries} tar entries"
            )));
        }
        let base = field_str(&h[..100], &last)?;
        let prefix = field_str(&h[345..500], &last)?;
        let name = if prefix.is_empty() {
            base.to_string()
        } else {
            format!("{prefix}/{base}")
        };
        let stored_sum = parse_octal(&h[148..156], "checksum", &name)?;
        let mut sum_block = h;
        sum_block[148..156].fill(b' ');
        let sum: u64 = sum_block.iter().map(|&b| b as u64).sum();
        if sum != stored_sum {
            return Err(corrupt(format!(
                "tar entry {name:?}: header checksum mismatch"
            )));
        }
        let size = parse_octal(&h[124..136], "size", &name)?;
        let data = pos + BLOCK;
        let padded = size
            .checked_add(BLOCK - 1)
            .map(|s| s / BLOCK * BLOCK)
            .ok_or_else(|| corrupt(format!("tar entry {name:?}: size overflows")))?;
        if data.saturating_add(padded) > total_len {
            return Err(corrupt(format!(
                "package truncated: entry {name:?} needs {size} bytes past byte {data} of {total_len}"
            )));
        }
        let clean = name.trim_start_matches("./").to_string();
        if clean.starts_with('/') || clean.split('/').any(|c| c == "..") {
            return Err(corrupt(format!("tar entry {name:?}: unsafe path")));
        }
        match h[156] {
            b'0' | 0 => {
                if files.insert(clean.clone(), TarEntry { offset: data, size }).is_some() {
                    return Err(corrupt(format!("tar entry {clean:?} appears twice")));
                }
            }
            b'5' if size == 0 => {}
            t => {
                return Err(corrupt(format!(
                    "tar entry {name:?}: type {:?} not allowed in a package (regular files and directories only)",
                    t as char
                )))
            }
        }
        last = clean;
        pos = data + padded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample() -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        w.add_dir("blobs").unwrap();
        w.add_file("blobs/a", 3, &mut &b"abc"[..]).unwrap();
        w.add_file("oci-layout", 0, &mut &b""[..]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn writes_and_indexes() {
        let tar = sample();
        assert_eq!(tar.len(), 512 + (512 + 512) + 512 + 1024);
        let idx = index(&mut Cursor::new(&tar), tar.len() as u64, 10).unwrap();
        let a = idx["blobs/a"];
        assert_eq!(&tar[a.offset as usize..a.offset as usize + 3], b"abc");
        assert_eq!(idx["oci-layout"].size, 0);
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn rejects_truncation_bad_checksum_and_entry_flood() {
        let tar = sample();
        let cut = &tar[..1024 + 100];
        let err = index(&mut Cursor::new(cut), cut.len() as u64, 10).unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        let mut bad = tar.clone();
        bad[512] ^= 1;
        let err = index(&mut Cursor::new(&bad), bad.len() as u64, 10).unwrap_err();
        assert!(err.message.contains("checksum"), "{}", err.message);
        let err = index(&mut Cursor::new(&tar), tar.len() as u64, 2).unwrap_err();
        assert!(err.message.contains("more than 2"), "{}", err.message);
    }

    #[test]
    fn compatible_with_system_tar() {
        let dir = std::env::temp_dir().join(format!("cpevisor-tar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.tar");
        std::fs::write(&path, sample()).unwrap();
        let out = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output();
        if let Ok(out) = out {
            let list = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(list.contains("blobs/a"), "{list}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
