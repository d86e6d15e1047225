//! The initramfs check of `config::VmConfig::validate`: a file the kernel can unpack whole.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::config::error::{check_readable_file, ConfigError};

/// Rejects an initramfs that cannot be a whole one: unreadable, empty, an unknown format, or an
/// uncompressed newc cpio archive that ends before its `TRAILER!!!` entry (a truncated copy).
pub fn check_initrd(path: &Path) -> Result<(), ConfigError> {
    check_readable_file("initrd", path)?;
    let what = format!("initrd {}", path.display());
    let mut f = File::open(path).map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
    let len = f
        .metadata()
        .map_err(|e| ConfigError::invalid(&what, e.to_string()))?
        .len();
    let mut magic = [0u8; 6];
    let n = f
        .read(&mut magic)
        .map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
    let magic = &magic[..n];
    if magic.starts_with(b"070701") || magic.starts_with(b"070702") {
        f.seek(SeekFrom::Start(0))
            .map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
        return check_cpio(&mut f, len).map_err(|why| ConfigError::invalid(&what, why));
    }
    // Compressed archives: the magic must be right and the file long enough for the format's
    // header plus trailer; a truncated stream is caught by the kernel's decompressor.
    const COMPRESSED: &[(&[u8], u64, &str)] = &[
        (&[0x1f, 0x8b], 18, "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], 12, "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], 32, "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], 8, "lz4"),
        (b"BZh", 14, "bzip2"),
        (&[0x89, b'L', b'Z', b'O'], 16, "lzo"),
        (&[0x5d, 0x00], 14, "lzma"),
    ];
    for (m, min_len, name) in COMPRESSED {
        if magic.starts_with(m) {
            if len < *min_len {
                return Err(ConfigError::invalid(
                    &what,
                    format!("truncated {name} stream ({len} bytes)"),
                ));
            }
            return Ok(());
        }
    }
    Err(ConfigError::invalid(
        &what,
        "not an initramfs: expected a newc cpio archive or a gzip/zstd/xz/lz4/bzip2/lzo/lzma stream",
    ))
}

/// Walks newc cpio headers up to `TRAILER!!!` without reading file bodies.
pub(crate) fn check_cpio<R: Read + Seek>(r: &mut R, len: u64) -> Result<(), String> {
    let mut pos = 0u64;
    // Bounded: each entry advances by at least a 110-byte header.
    loop {
        if pos + 110 > len {
            return Err(format!(
                "truncated cpio archive: header at offset {pos} runs past the end ({len} bytes)"
            ));
        }
        r.seek(SeekFrom::Start(pos)).map_err(|e| e.to_string())?;
        let mut hdr = [0u8; 110];
        r.read_exact(&mut hdr).map_err(|e| e.to_string())?;
        if &hdr[..5] != b"07070" || !(hdr[5] == b'1' || hdr[5] == b'2') {
            return Err(format!(
                "corrupt cpio archive: bad header magic at offset {pos}"
            ));
        }
        let field = |i: usize| -> Result<u64, String> {
            let s = std::str::from_utf8(&hdr[6 + i * 8..14 + i * 8]).map_err(|e| e.to_string())?;
            u64::from_str_radix(s, 16)
                .map_err(|_| format!("corrupt cpio archive: bad header field at offset {pos}"))
        };
        let file_size = field(6)?;
        let name_size = field(11)?;
        if name_size == 0 || name_size > 4096 {
            return Err(format!(
                "corrupt cpio archive: bad name size at offset {pos}"
            ));
        }
        let name_end = pos + 110 + name_size;
        if name_end > len {
            return Err(format!("truncated cpio archive at offset {pos}"));
        }
        let mut name = vec![0u8; name_size as usize];
        r.read_exact(&mut name).map_err(|e| e.to_string())?;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start + file_size;
        if data_end > len {
            return Err(format!(
                "truncated cpio archive: entry at offset {pos} needs {data_end} bytes, file has {len}"
            ));
        }
        if name.strip_suffix(&[0]) == Some(b"TRAILER!!!") {
            return Ok(());
        }
        pos = data_end.next_multiple_of(4);
    }
}
