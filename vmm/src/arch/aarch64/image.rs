//! The arm64 `Image` header (Documentation/arch/arm64/booting.rst): 64 bytes at the start of an
//! uncompressed kernel. Parsed here, not through a PE loader, because the boot protocol needs only
//! `text_offset`, `image_size` and the flags, and a bad file must give a precise error.

use std::fmt;

/// Size of the arm64 `Image` header (Documentation/arch/arm64/booting.rst).
pub const HEADER_LEN: usize = 64;
const MAGIC: u32 = 0x644d_5241; // "ARM\x64", little endian
/// Kernels before 3.17 have image_size 0 and expect this text offset.
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// A sane ceiling for a guest kernel's in-memory size (the header is guest-controlled data).
const MAX_IMAGE_SIZE: u64 = 512 << 20;

/// The fields of an `Image` header the loader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where the image goes past a 2 MiB aligned base.
    pub text_offset: u64,
    /// Bytes the kernel occupies once loaded, BSS included (at least the file size).
    pub image_size: u64,
    /// Flags bit 3: the kernel may sit anywhere in RAM (else within 4 GiB... from RAM start).
    pub anywhere: bool,
}

/// Why a file is not a bootable arm64 `Image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than a header (the count).
    TooShort(usize),
    /// The magic at offset 56 is not "ARM\x64" (the value read).
    BadMagic(u32),
    /// The kernel is built big endian.
    BigEndian,
    /// The header's image size is implausibly large (the size).
    TooLarge(u64),
    /// `text_offset` is not 4 KiB aligned (the offset).
    MisalignedTextOffset(u64),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooShort(n) => {
                write!(f, "{n} bytes is too short for an arm64 Image header ({HEADER_LEN})")
            }
            ImageError::BadMagic(m) => write!(
                f,
                "not an arm64 Image: magic {m:#010x} at offset 56, expected {MAGIC:#010x} (a compressed Image.gz must be uncompressed first)"
            ),
            ImageError::BigEndian => write!(f, "big-endian arm64 Image is not supported"),
            ImageError::TooLarge(s) => write!(f, "image_size {s:#x} is implausibly large"),
            ImageError::MisalignedTextOffset(o) => {
                write!(f, "text_offset {o:#x} is not 4 KiB aligned")
            }
        }
    }
}

impl std::error::Error for ImageError {}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Parses the header; `file_len` is the kernel file's size (the loaded footprint is at least it).
pub fn parse(header: &[u8], file_len: u64) -> Result<ImageHeader, ImageError> {
    if header.len() < HEADER_LEN {
        return Err(ImageError::TooShort(header.len()));
    }
    let magic = u32::from_le_bytes([header[56], header[57], header[58], header[59]]);
    if magic != MAGIC {
        return Err(ImageError::BadMagic(magic));
    }
    let mut text_offset = le64(header, 8);
    let mut image_size = le64(header, 16);
    let flags = le64(header, 24);
    if image_size == 0 {
        text_offset = LEGACY_TEXT_OFFSET;
        image_size = file_len;
    }
    if flags & 1 != 0 {
        return Err(ImageError::BigEndian);
    }
    if image_size > MAX_IMAGE_SIZE || file_len > MAX_IMAGE_SIZE {
        return Err(ImageError::TooLarge(image_size.max(file_len)));
    }
    if !text_offset.is_multiple_of(4096) || text_offset >= (2 << 20) {
        return Err(ImageError::MisalignedTextOffset(text_offset));
    }
    Ok(ImageHeader {
        text_offset,
        image_size: image_size.max(file_len),
        anywhere: flags & (1 << 3) != 0,
    })
}

#[cfg(test)]
pub(crate) fn test_header(text_offset: u64, image_size: u64, flags: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[8..16].copy_from_slice(&text_offset.to_le_bytes());
    h[16..24].copy_from_slice(&image_size.to_le_bytes());
    h[24..32].copy_from_slice(&flags.to_le_bytes());
    h[56..60].copy_from_slice(&MAGIC.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modern_and_legacy_headers() {
        let h = parse(&test_header(0, 0x20_0000, 0b1010), 0x10_0000).unwrap();
        assert_eq!(h.text_offset, 0);
        assert_eq!(h.image_size, 0x20_0000);
        assert!(h.anywhere);
        let h = parse(&test_header(0x1234, 0, 0), 0x5000).unwrap();
        assert_eq!(h.text_offset, 0x8_0000);
        assert_eq!(h.image_size, 0x5000);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(parse(&[0u8; 10], 10), Err(ImageError::TooShort(10)));
        assert!(matches!(
            parse(&[0u8; 64], 64),
            Err(ImageError::BadMagic(0))
        ));
        assert_eq!(
            parse(&test_header(0, 0x1000, 1), 64),
            Err(ImageError::BigEndian)
        );
        assert!(matches!(
            parse(&test_header(0, 1 << 40, 0), 64),
            Err(ImageError::TooLarge(_))
        ));
        assert!(matches!(
            parse(&test_header(0x123, 0x1000, 0), 64),
            Err(ImageError::MisalignedTextOffset(_))
        ));
    }
}
