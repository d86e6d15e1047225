//! Bounded in-RAM console log of one app: the newest `capacity` bytes are kept, older output is
//! dropped (flash is never written for logs).

use std::collections::VecDeque;

/// Bytes kept per app (64 KiB).
pub const DEFAULT_LOG_CAPACITY: usize = 64 * 1024;

/// One app's console output, newest bytes kept, counting what was dropped.
#[derive(Debug)]
pub struct LogRing {
    buf: VecDeque<u8>,
    capacity: usize,
    dropped: u64,
}

impl LogRing {
    /// A ring holding at most `capacity` bytes (at least 1).
    pub fn new(capacity: usize) -> Self {
        LogRing {
            buf: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Appends output, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.capacity {
            self.dropped += (data.len() - self.capacity) as u64;
            &data[data.len() - self.capacity..]
        } else {
            data
        };
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            self.buf.drain(..overflow);
            self.dropped += overflow as u64;
        }
        self.buf.extend(data);
    }

    /// The retained text (invalid UTF-8 replaced), prefixed by a note when output was dropped.
    pub fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(self.buf.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        let body = String::from_utf8_lossy(&bytes);
        if self.dropped > 0 {
            format!("[{} earlier bytes dropped]\n{body}", self.dropped)
        } else {
            body.into_owned()
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::LogRing;

    #[test]
    fn keeps_newest_bytes_within_capacity() {
        let mut r = LogRing::new(8);
        r.push(b"hello ");
        r.push(b"world");
        assert_eq!(r.len(), 8);
        assert_eq!(r.text(), "[3 earlier bytes dropped]\nlo world");
        r.push(b"0123456789abc");
        assert_eq!(r.len(), 8);
        assert!(r.text().ends_with("6789abc") && r.text().contains("56789abc"));
    }

    #[test]
    fn small_output_is_kept_whole() {
        let mut r = LogRing::new(64);
        r.push(b"a\nb\n");
        assert_eq!(r.text(), "a\nb\n");
    }
}
