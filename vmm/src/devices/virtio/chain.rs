//! Descriptor-chain intake with our own checks on top of `virtio-queue`.
//!
//! `virtio-queue` parses the rings and bounds its iteration, but it ends a chain silently on
//! a loop, a bad `next` index or an unreadable descriptor. Here a chain is taken whole and
//! checked before any device sees it:
//! - structure (a protocol violation: the device is marked failed): head index inside the
//!   queue, at most queue-size descriptors and a real end (no loop, no dangling `next`), every
//!   buffer entirely inside guest memory, the available index not running ahead of the queue;
//! - shape (the request alone fails, the device decides how): zero-length buffers and
//!   device-readable buffers after device-writable ones are flagged.
//!
//! Data then moves only through `GuestMemoryMmap`, inside the checked buffers.

use std::fmt;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap};

/// One guest buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest address of the buffer.
    pub addr: GuestAddress,
    /// Its length in bytes.
    pub len: u32,
}

/// A validated chain: device-readable buffers first, then device-writable ones.
#[derive(Debug)]
pub struct Chain {
    /// Index of the head descriptor (returned in the used ring).
    pub head: u16,
    /// The buffers the device reads (the request).
    pub readable: Vec<Segment>,
    /// The buffers the device writes (the response).
    pub writable: Vec<Segment>,
    /// A device-readable buffer came after a device-writable one.
    pub misordered: bool,
    /// Some buffer has length zero.
    pub has_empty: bool,
}

impl Chain {
    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Whether the chain has the usual request shape: ordered, no empty buffers.
    pub fn well_formed(&self) -> bool {
        !self.misordered && !self.has_empty
    }
}

/// A structural violation of the virtqueue protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The available index claims more new entries than the queue holds.
    AvailIndex(String),
    /// The head index names no descriptor of the table.
    HeadIndex {
        /// The index the driver gave.
        head: u16,
        /// The queue's size.
        queue_size: u16,
    },
    /// The chain loops, is longer than the queue, or links to a descriptor that cannot be read.
    Unterminated {
        /// The chain's head.
        head: u16,
        /// The most descriptors a chain may have.
        limit: u16,
    },
    /// A buffer lies (partly) outside guest memory.
    OutsideMemory {
        /// The chain's head.
        head: u16,
        /// The buffer's guest address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The used ring could not be written.
    UsedRing(String),
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::AvailIndex(e) => write!(f, "available ring index: {e}"),
            ChainError::HeadIndex { head, queue_size } => {
                write!(f, "chain head {head} outside a queue of {queue_size}")
            }
            ChainError::Unterminated { head, limit } => write!(
                f,
                "chain {head} does not end within {limit} descriptors (loop or bad next index)"
            ),
            ChainError::OutsideMemory { head, addr, len } => write!(
                f,
                "chain {head}: buffer {addr:#x}+{len:#x} lies outside guest memory"
            ),
            ChainError::UsedRing(e) => write!(f, "used ring: {e}"),
        }
    }
}

impl std::error::Error for ChainError {}

/// Takes the next available chain, validated. `Ok(None)`: nothing available.
pub fn pop_chain(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<Option<Chain>, ChainError> {
    let queue_size = queue.size();
    let mut avail = queue
        .iter(mem)
        .map_err(|e| ChainError::AvailIndex(e.to_string()))?;
    let Some(descriptors) = avail.next() else {
        return Ok(None);
    };
    let head = descriptors.head_index();
    if head >= queue_size {
        return Err(ChainError::HeadIndex { head, queue_size });
    }

    let mut chain = Chain {
        head,
        readable: Vec::new(),
        writable: Vec::new(),
        misordered: false,
        has_empty: false,
    };
    let mut count: u32 = 0;
    let mut ended = false;
    for desc in descriptors {
        count += 1;
        // virtio-queue already bounds its walk by the queue size; this keeps our own bound
        // explicit (and covers an indirect table, which it bounds by the table's size).
        if count > u32::from(queue_size) {
            break;
        }
        let segment = Segment {
            addr: desc.addr(),
            len: desc.len(),
        };
        if !mem.check_range(
            segment.addr,
            segment.len as usize,
            vm_memory::Permissions::Read,
        ) {
            return Err(ChainError::OutsideMemory {
                head,
                addr: segment.addr.0,
                len: segment.len,
            });
        }
        chain.has_empty |= segment.len == 0;
        if desc.is_write_only() {
            chain.writable.push(segment);
        } else {
            chain.misordered |= !chain.writable.is_empty();
            chain.readable.push(segment);
        }
        ended = !desc.has_next();
        if ended {
            break;
        }
    }
    if !ended {
        return Err(ChainError::Unterminated {
            head,
            limit: queue_size,
        });
    }
    Ok(Some(chain))
}

/// Gives a chain back to the available ring (it will be popped again), for a device that took
/// a chain it cannot use yet.
pub fn unpop(queue: &mut Queue) {
    queue.set_next_avail(queue.next_avail().wrapping_sub(1));
}

/// Returns a chain to the driver with `len` bytes written.
pub fn complete(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), ChainError> {
    queue
        .add_used(mem, head, len)
        .map_err(|e| ChainError::UsedRing(e.to_string()))
}

/// The guest ranges covering bytes `[start, start + len)` of a run of segments, in order.
/// Stops early if the segments are shorter than asked.
pub fn ranges(segments: &[Segment], start: u64, len: u64) -> Vec<(GuestAddress, usize)> {
    let mut out = Vec::new();
    let mut skip = start;
    let mut left = len;
    for seg in segments {
        if left == 0 {
            break;
        }
        let seg_len = u64::from(seg.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let take = (seg_len - skip).min(left);
        // In range: the segment was checked to lie inside guest memory.
        out.push((GuestAddress(seg.addr.0 + skip), take as usize));
        left -= take;
        skip = 0;
    }
    out
}

/// Copies bytes `[start, start + buf.len())` of `segments` into `buf`. Returns false if the
/// segments are too short or memory could not be read.
pub fn read_bytes(mem: &GuestMemoryMmap, segments: &[Segment], start: u64, buf: &mut [u8]) -> bool {
    use vm_memory::Bytes;
    let mut done = 0;
    for (addr, len) in ranges(segments, start, buf.len() as u64) {
        if mem.read_slice(&mut buf[done..done + len], addr).is_err() {
            return false;
        }
        done += len;
    }
    done == buf.len()
}

/// Copies `data` to bytes `[start, ..)` of `segments`. Returns false if the segments are too
/// short (nothing is written then) or memory could not be written.
pub fn write_bytes(mem: &GuestMemoryMmap, segments: &[Segment], start: u64, data: &[u8]) -> bool {
    use vm_memory::Bytes;
    let parts = ranges(segments, start, data.len() as u64);
    if parts.iter().map(|(_, l)| l).sum::<usize>() != data.len() {
        return false;
    }
    let mut done = 0;
    for (addr, len) in parts {
        if mem.write_slice(&data[done..done + len], addr).is_err() {
            return false;
        }
        done += len;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_across_segments() {
        let segs = [
            Segment {
                addr: GuestAddress(0x1000),
                len: 4,
            },
            Segment {
                addr: GuestAddress(0x2000),
                len: 8,
            },
        ];
        assert_eq!(
            ranges(&segs, 2, 6),
            vec![(GuestAddress(0x1002), 2), (GuestAddress(0x2000), 4)]
        );
        assert_eq!(ranges(&segs, 4, 100), vec![(GuestAddress(0x2000), 8)]);
        assert!(ranges(&segs, 12, 1).is_empty());
    }
}
