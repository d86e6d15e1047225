//! virtio-blk on a raw image file, read-only or read-write.
//!
//! Requests: IN (read), OUT (write), FLUSH, GET_ID; anything else is UNSUPP. Data moves
//! directly between the image file and guest memory (no bounce buffer). Every request is
//! checked before any I/O: sectors inside the image (else IOERR), length a whole number of
//! sectors and at most `MAX_REQUEST_BYTES`, header readable, status byte writable, buffers in
//! the direction the request type needs. A request whose status byte cannot be located is
//! returned with nothing written.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::chain::{complete, pop_chain, ranges, read_bytes, Chain};
use super::{ActiveQueues, DeviceError, SetupError, VirtioDevice, FEATURE_VERSION_1};

pub const QUEUE_SIZE: u16 = 128;
pub const SECTOR_SIZE: u64 = 512;
/// Largest data transfer one request may ask for.
pub const MAX_REQUEST_BYTES: u64 = 32 << 20;
/// Data segments per request we advertise (queue size minus header and status).
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
const HEADER_LEN: u64 = 16;
const ID_LEN: usize = VIRTIO_BLK_ID_BYTES as usize;

/// Request outcome, as written to the status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok = VIRTIO_BLK_S_OK as isize,
    IoErr = VIRTIO_BLK_S_IOERR as isize,
    Unsupported = VIRTIO_BLK_S_UNSUPP as isize,
}

pub struct Block {
    file: File,
    read_only: bool,
    sectors: u64,
    id: [u8; ID_LEN],
    active: Option<ActiveQueues>,
}

impl Block {
    /// Opens the raw image at `path` and locks it (shared when read-only, exclusive when
    /// read-write), so two VMMs cannot write one image.
    pub fn new(path: &Path, read_only: bool) -> Result<Self, SetupError> {
        let err = |what: &str, source| SetupError {
            what: format!("disk image {}: {what}", path.display()),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| err("cannot open", e))?;
        let locked = if read_only {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        locked.map_err(|e| {
            err(
                "in use by another process",
                std::io::Error::new(std::io::ErrorKind::WouldBlock, e.to_string()),
            )
        })?;
        let meta = file.metadata().map_err(|e| err("cannot stat", e))?;
        if !meta.is_file() {
            return Err(err(
                "not a regular file",
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        let sectors = meta.len() / SECTOR_SIZE;
        if sectors == 0 {
            return Err(err(
                "smaller than one 512-byte sector",
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        // A stable serial for the guest's /dev/disk/by-id: host device and inode.
        let mut id = [0u8; ID_LEN];
        let text = format!("cpev{:x}-{:x}", meta.dev(), meta.ino());
        let n = text.len().min(ID_LEN);
        id[..n].copy_from_slice(&text.as_bytes()[..n]);
        Ok(Block {
            file,
            read_only,
            sectors,
            id,
            active: None,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    fn config_bytes(&self) -> [u8; 16] {
        // struct virtio_blk_config: capacity (le64), size_max (le32, unused), seg_max (le32).
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&self.sectors.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config
    }
}

/// Runs one request; returns its status and the data bytes written to the guest.
fn execute(
    file: &mut File,
    read_only: bool,
    sectors: u64,
    id: &[u8; ID_LEN],
    mem: &GuestMemoryMmap,
    chain: &Chain,
) -> (Status, u32) {
    let mut header = [0u8; HEADER_LEN as usize];
    if !read_bytes(mem, &chain.readable, 0, &mut header) {
        return (Status::IoErr, 0);
    }
    let request_type = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    // The status byte is the last device-writable byte; data comes before it.
    let writable_data = chain.writable_len() - 1;
    let readable_data = chain.readable_len() - HEADER_LEN;

    let check_range = |len: u64| -> bool {
        len.is_multiple_of(SECTOR_SIZE)
            && len <= MAX_REQUEST_BYTES
            && sector
                .checked_add(len / SECTOR_SIZE)
                .is_some_and(|end| end <= sectors)
    };

    match request_type {
        VIRTIO_BLK_T_IN => {
            if readable_data != 0 || !check_range(writable_data) {
                return (Status::IoErr, 0);
            }
            if file.seek(SeekFrom::Start(sector * SECTOR_SIZE)).is_err() {
                return (Status::IoErr, 0);
            }
            for (addr, len) in ranges(&chain.writable, 0, writable_data) {
                if mem.read_exact_volatile_from(addr, file, len).is_err() {
                    return (Status::IoErr, 0);
                }
            }
            (Status::Ok, writable_data as u32)
        }
        VIRTIO_BLK_T_OUT => {
            if read_only || writable_data != 0 || !check_range(readable_data) {
                return (Status::IoErr, 0);
            }
            if file.seek(SeekFrom::Start(sector * SECTOR_SIZE)).is_err() {
                return (Status::IoErr, 0);
            }
            for (addr, len) in ranges(&chain.readable, HEADER_LEN, readable_data) {
                if mem.write_all_volatile_to(addr, file, len).is_err() {
                    return (Status::IoErr, 0);
                }
            }
            (Status::Ok, 0)
        }
        VIRTIO_BLK_T_FLUSH => {
            if read_only || file.sync_data().is_ok() {
                (Status::Ok, 0)
            } else {
                (Status::IoErr, 0)
            }
        }
        VIRTIO_BLK_T_GET_ID => {
            if readable_data != 0 {
                return (Status::IoErr, 0);
            }
            let n = writable_data.min(ID_LEN as u64) as usize;
            let mut done = 0;
            for (addr, len) in ranges(&chain.writable, 0, n as u64) {
                if mem.write_slice(&id[done..done + len], addr).is_err() {
                    return (Status::IoErr, 0);
                }
                done += len;
            }
            (Status::Ok, n as u32)
        }
        _ => (Status::Unsupported, 0),
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut features = FEATURE_VERSION_1 | 1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX;
        if self.read_only {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let config = self.config_bytes();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start < config.len() {
            let n = data.len().min(config.len() - start);
            data[..n].copy_from_slice(&config[start..start + n]);
        }
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), DeviceError> {
        self.active = Some(active);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActive)?;
        let queue = active.queues.get_mut(index).ok_or(DeviceError::NotActive)?;
        let mut used_any = false;
        while let Some(chain) = pop_chain(queue, &active.mem)? {
            let shaped = chain.well_formed()
                && chain.readable_len() >= HEADER_LEN
                && chain.writable_len() >= 1;
            let written = if shaped {
                let (status, data_len) = execute(
                    &mut self.file,
                    self.read_only,
                    self.sectors,
                    &self.id,
                    &active.mem,
                    &chain,
                );
                let status_at = chain.writable_len() - 1;
                let status_written = ranges(&chain.writable, status_at, 1)
                    .first()
                    .is_some_and(|&(addr, _)| active.mem.write_obj(status as u8, addr).is_ok());
                if status_written {
                    data_len + 1
                } else {
                    0
                }
            } else {
                // No trustworthy header or status byte: the request fails with nothing written.
                0
            };
            complete(queue, &active.mem, chain.head, written)?;
            used_any = true;
        }
        if used_any {
            active.interrupt.signal_used_ring();
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
