//! `sha256:<hex>` digests, the content addresses of the store and of OCI descriptors.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

pub use cpevisor_types::clip;
pub use cpevisor_types::digest::{from_hex, to_hex, Sha256Digest as Digest};

use crate::fault::{Fault, FaultCode};

/// Parses `sha256:<64 lowercase hex>`; `what` names the field in the fault.
pub fn parse_digest(text: &str, what: &str) -> Result<Digest, Fault> {
    Digest::parse(text).map_err(|e| Fault::new(FaultCode::CorruptData, format!("{what}: {e}")))
}

/// A writer that hashes and counts everything passing through to `inner`.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Sha256Writer<W> {
    /// A writer that passes everything to `inner`.
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The inner writer, the sha256 and the byte count of everything written.
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_bytes(self.hasher.finalize().into()),
            self.written,
        )
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_text() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_digest(&d.to_string(), "x").unwrap(), d);
        assert!(parse_digest("sha512:00", "x").is_err());
        assert!(parse_digest(&d.to_string().to_uppercase(), "x").is_err());
        let e = parse_digest("sha256:abc", "blob").unwrap_err();
        assert_eq!(e.code, FaultCode::CorruptData);
        assert!(
            e.message.starts_with("blob: expected sha256:"),
            "{}",
            e.message
        );
        assert_eq!(from_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(from_hex("0g"), None);
    }

    #[test]
    fn writer_hashes_what_it_writes() {
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (buf, d, n) = w.finish();
        assert_eq!(buf, b"abc");
        assert_eq!(n, 3);
        assert_eq!(d, Digest::of(b"abc"));
    }
}
