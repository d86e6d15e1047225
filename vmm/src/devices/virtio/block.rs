//! virtio-blk on a raw image (a file or a host block device), read-only or read-write.
//!
//! Requests: IN (read), OUT (write), FLUSH, GET_ID; anything else is UNSUPP. Data moves
//! directly between the image file and guest memory (no bounce buffer). Every request is
//! checked before any I/O: sectors inside the image (else IOERR), length a whole number of
//! sectors and at most `MAX_REQUEST_BYTES`, header readable, status byte writable, buffers in
//! the direction the request type needs. A request whose status byte cannot be located is
//! returned with nothing written.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::chain::{ranges, read_bytes, Chain};
use super::{ActiveQueues, DeviceError, SetupError, VirtioDevice, FEATURE_VERSION_1};

/// Descriptors per virtqueue.
pub const QUEUE_SIZE: u16 = 128;
/// virtio-blk's fixed sector size.
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

/// virtio-blk on a file or block device.
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
        // A regular file, or a host block device (a flash partition on a router), whose size
        // stat does not report.
        let bytes = if meta.is_file() {
            meta.len()
        } else if meta.file_type().is_block_device() {
            let mut f = &file;
            f.seek(SeekFrom::End(0))
                .map_err(|e| err("cannot size the block device", e))?
        } else {
            return Err(err(
                "neither a regular file nor a block device",
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        };
        let sectors = bytes / SECTOR_SIZE;
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
        active.serve_queue(index, |mem, chain| {
            let shaped = chain.well_formed()
                && chain.readable_len() >= HEADER_LEN
                && chain.writable_len() >= 1;
            if !shaped {
                // No trustworthy header or status byte: the request fails with nothing written.
                return 0;
            }
            let (status, data_len) = execute(
                &mut self.file,
                self.read_only,
                self.sectors,
                &self.id,
                mem,
                chain,
            );
            let status_at = chain.writable_len() - 1;
            let status_written = ranges(&chain.writable, status_at, 1)
                .first()
                .is_some_and(|&(addr, _)| mem.write_obj(status as u8, addr).is_ok());
            if status_written {
                data_len + 1
            } else {
                0
            }
        })
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use crate::devices::BusDevice;
    use std::io::Read;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
    use vm_memory::GuestAddress;

    /// A temporary raw image; removed on drop.
    struct Image(PathBuf);

    impl Image {
        fn new(sectors: u64) -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "cpevisor-blk-{}-{}.img",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            ));
            // Sector n is filled with byte n+1, so every sector is recognisable.
            let data: Vec<u8> = (0..sectors * SECTOR_SIZE)
                .map(|i| (i / SECTOR_SIZE + 1) as u8)
                .collect();
            std::fs::write(&path, data).unwrap();
            Image(path)
        }

        fn contents(&self) -> Vec<u8> {
            let mut buf = Vec::new();
            File::open(&self.0).unwrap().read_to_end(&mut buf).unwrap();
            buf
        }
    }

    impl Drop for Image {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const HDR: u64 = 0x3_0000;
    const DATA: u64 = 0x4_0000;
    const STATUS: u64 = 0x3_1000;

    fn driver(image: &Image, read_only: bool) -> Driver {
        let mut d = Driver::new(Box::new(Block::new(&image.0, read_only).unwrap()));
        d.init();
        d
    }

    fn header(d: &Driver, request_type: u32, sector: u64) {
        d.mem.write_obj(request_type, GuestAddress(HDR)).unwrap();
        d.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        d.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        d.fill(STATUS, 1, 0xee);
    }

    fn status(d: &Driver) -> u8 {
        d.bytes(STATUS, 1)[0]
    }

    /// Posts header / data / status and runs it; returns (status byte, used length).
    fn request(d: &mut Driver, request_type: u32, sector: u64, data: &[Buf]) -> (u8, u32) {
        header(d, request_type, sector);
        let mut bufs = vec![(HDR, 16, false)];
        bufs.extend_from_slice(data);
        bufs.push((STATUS, 1, true));
        d.post(0, &bufs);
        let n = d.used_idx(0);
        d.notify(0);
        assert_eq!(d.used_idx(0), n.wrapping_add(1), "request completed");
        (status(d), d.used_elem(0, n).1)
    }

    const OK: u8 = VIRTIO_BLK_S_OK as u8;
    const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

    #[test]
    fn config_space_reports_capacity() {
        let image = Image::new(8);
        let d = driver(&image, false);
        let mut cap = [0u8; 8];
        d.transport.lock().unwrap().read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8);
        d.write32(
            virtio_bindings::virtio_mmio::VIRTIO_MMIO_DEVICE_FEATURES_SEL,
            0,
        );
        let f = d.read32(virtio_bindings::virtio_mmio::VIRTIO_MMIO_DEVICE_FEATURES);
        assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
        let ro = driver(&Image::new(1), true);
        let f = ro.read32(virtio_bindings::virtio_mmio::VIRTIO_MMIO_DEVICE_FEATURES);
        assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
    }

    #[test]
    fn reads_and_writes_sectors() {
        let image = Image::new(16);
        let mut d = driver(&image, false);
        // Read sectors 3 and 4 into two buffers.
        let (st, len) = request(
            &mut d,
            VIRTIO_BLK_T_IN,
            3,
            &[(DATA, 512, true), (DATA + 0x1000, 512, true)],
        );
        assert_eq!((st, len), (OK, 1025));
        assert_eq!(d.bytes(DATA, 512), vec![4u8; 512]);
        assert_eq!(d.bytes(DATA + 0x1000, 512), vec![5u8; 512]);

        // Write sector 15 (the last).
        d.fill(DATA, 512, 0xab);
        let (st, len) = request(&mut d, VIRTIO_BLK_T_OUT, 15, &[(DATA, 512, false)]);
        assert_eq!((st, len), (OK, 1));
        let (st, _) = request(&mut d, VIRTIO_BLK_T_FLUSH, 0, &[]);
        assert_eq!(st, OK);
        let contents = image.contents();
        assert_eq!(&contents[15 * 512..], &[0xab; 512][..]);
        assert_eq!(&contents[14 * 512..15 * 512], &[15u8; 512][..]);

        let (st, len) = request(&mut d, VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 20, true)]);
        assert_eq!((st, len), (OK, 21));
        assert!(d.bytes(DATA, 4).starts_with(b"cpev"));
        let (st, _) = request(&mut d, 99, 0, &[]);
        assert_eq!(st, VIRTIO_BLK_S_UNSUPP as u8);
    }

    #[test]
    fn out_of_range_and_malformed_sizes_are_ioerr() {
        let image = Image::new(4);
        let mut d = driver(&image, false);
        let before = image.contents();
        let cases: Vec<(&str, u32, u64, Vec<Buf>)> = vec![
            (
                "read past the end",
                VIRTIO_BLK_T_IN,
                3,
                vec![(DATA, 1024, true)],
            ),
            (
                "read at a huge sector",
                VIRTIO_BLK_T_IN,
                u64::MAX,
                vec![(DATA, 512, true)],
            ),
            (
                "write past the end",
                VIRTIO_BLK_T_OUT,
                4,
                vec![(DATA, 512, false)],
            ),
            (
                "partial sector",
                VIRTIO_BLK_T_IN,
                0,
                vec![(DATA, 100, true)],
            ),
            (
                "write with a writable data buffer",
                VIRTIO_BLK_T_OUT,
                0,
                vec![(DATA, 512, true)],
            ),
            (
                "read with a readable data buffer",
                VIRTIO_BLK_T_IN,
                0,
                vec![(DATA, 512, false)],
            ),
            // 65 buffers all aliasing the 512 KiB second region: 32.5 MiB, above the bound.
            (
                "oversized request",
                VIRTIO_BLK_T_IN,
                0,
                vec![(HOLE + 0x4_0000, 512 * 1024, true); 65],
            ),
        ];
        for (name, t, sector, bufs) in cases {
            d.fill(DATA, 1024, 0x5a);
            let mem_before = snapshot(&d.mem);
            let (st, len) = request(&mut d, t, sector, &bufs);
            assert_eq!((st, len), (IOERR, 1), "{name}");
            assert_eq!(
                d.bytes(DATA, 1024),
                vec![0x5a; 1024],
                "{name}: no data moved"
            );
            let ring = d.rings[0];
            let [desc, avail] = ring.driver_ranges();
            assert_only_changed(
                &mem_before,
                &snapshot(&d.mem),
                &[ring.used_range(), desc, avail, (HDR, 16), (STATUS, 1)],
            );
        }
        assert!(!d.failed());
        assert_eq!(image.contents(), before, "image untouched");
    }

    #[test]
    fn read_only_images_refuse_writes() {
        let image = Image::new(2);
        let mut d = driver(&image, true);
        let (st, _) = request(&mut d, VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)]);
        assert_eq!(st, IOERR);
        let (st, _) = request(&mut d, VIRTIO_BLK_T_FLUSH, 0, &[]);
        assert_eq!(st, OK);
        assert_eq!(image.contents()[..512], [1u8; 512]);
    }

    #[test]
    fn requests_without_header_or_status_write_nothing() {
        let image = Image::new(2);
        let mut d = driver(&image, false);
        header(&d, VIRTIO_BLK_T_IN, 0);
        let cases: Vec<(&str, Vec<Buf>)> = vec![
            (
                "short header",
                vec![(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)],
            ),
            ("no status byte", vec![(HDR, 16, false), (DATA, 512, false)]),
            (
                "header device-writable",
                vec![(HDR, 16, true), (DATA, 512, true), (STATUS, 1, true)],
            ),
            (
                "zero-length data buffer",
                vec![(HDR, 16, false), (DATA, 0, true), (STATUS, 1, true)],
            ),
            (
                "readable after writable",
                vec![(HDR, 16, false), (STATUS, 1, true), (DATA, 512, false)],
            ),
        ];
        for (name, bufs) in cases {
            let before = snapshot(&d.mem);
            d.post(0, &bufs);
            let n = d.used_idx(0);
            d.notify(0);
            assert!(!d.failed(), "{name}");
            assert_eq!(d.used_elem(0, n).1, 0, "{name}: used length");
            let ring = d.rings[0];
            let [desc, avail] = ring.driver_ranges();
            assert_only_changed(
                &before,
                &snapshot(&d.mem),
                &[ring.used_range(), desc, avail],
            );
        }
    }

    #[test]
    fn hostile_chains_fail_the_device() {
        let image = Image::new(2);
        let before_image = image.contents();
        type Setup = fn(&mut Driver);
        let cases: Vec<(&str, Setup)> = vec![
            ("data buffer beyond memory", |d| {
                d.post(
                    0,
                    &[
                        (HDR, 16, false),
                        (MEM_END - 256, 512, true),
                        (STATUS, 1, true),
                    ],
                );
            }),
            ("status byte in the hole", |d| {
                d.post(
                    0,
                    &[(HDR, 16, false), (DATA, 512, true), (HOLE + 8, 1, true)],
                );
            }),
            ("descriptor loop", |d| {
                d.set_desc(0, 0, HDR, 16, VRING_DESC_F_NEXT as u16, 1);
                d.set_desc(0, 1, DATA, 512, (VRING_DESC_F_NEXT | 2) as u16, 0);
                d.publish(0, 0);
            }),
            ("available index jump", |d| {
                d.set_avail_idx(0, 0x8000);
            }),
        ];
        for (name, setup) in cases {
            let mut d = driver(&image, false);
            header(&d, VIRTIO_BLK_T_IN, 0);
            setup(&mut d);
            let before = snapshot(&d.mem);
            d.notify(0);
            assert!(d.failed(), "{name}");
            assert_only_changed(&before, &snapshot(&d.mem), &[]);
        }
        assert_eq!(image.contents(), before_image);
    }

    #[test]
    fn setup_errors_name_the_image() {
        let missing = std::env::temp_dir().join("cpevisor-blk-does-not-exist.img");
        let err = Block::new(&missing, true).err().unwrap();
        assert!(
            err.to_string().contains("cpevisor-blk-does-not-exist.img"),
            "{err}"
        );

        let empty = Image::new(0);
        let err = Block::new(&empty.0, true).err().unwrap();
        assert!(err.to_string().contains("smaller than one"), "{err}");

        let err = Block::new(&std::env::temp_dir(), true).err().unwrap();
        assert!(err.to_string().contains("neither a regular file"), "{err}");

        let image = Image::new(1);
        let _first = Block::new(&image.0, false).unwrap();
        let err = Block::new(&image.0, false).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
        let err = Block::new(&image.0, true).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    /// A host block device as the image (opt-in: `CPEVISOR_TEST_BLOCK_DEVICE=/dev/loopN`,
    /// a scratch device, e.g. `losetup -f --show scratch.img`; its first sector is rewritten).
    #[test]
    fn host_block_device_as_image() {
        let Ok(dev) = std::env::var("CPEVISOR_TEST_BLOCK_DEVICE") else {
            eprintln!("CPEVISOR_TEST_BLOCK_DEVICE unset: skipping");
            return;
        };
        let dev = PathBuf::from(dev);
        let block = Block::new(&dev, false).unwrap();
        let expected = std::fs::metadata("/sys/class/block")
            .ok()
            .and_then(|_| {
                let name = dev.file_name()?.to_str()?.to_string();
                std::fs::read_to_string(format!("/sys/class/block/{name}/size")).ok()
            })
            .and_then(|s| s.trim().parse::<u64>().ok());
        if let Some(sectors) = expected {
            assert_eq!(block.sectors(), sectors);
        }
        let mut d = Driver::new(Box::new(block));
        d.init();
        d.fill(DATA, 512, 0x3c);
        let (st, _) = request(&mut d, VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)]);
        assert_eq!(st, OK);
        d.fill(DATA, 512, 0);
        let (st, _) = request(&mut d, VIRTIO_BLK_T_IN, 0, &[(DATA, 512, true)]);
        assert_eq!(st, OK);
        assert_eq!(d.bytes(DATA, 512), vec![0x3c; 512]);
    }

    /// Cost of one 4 KiB read through the whole transport path (notify, chain checks, file
    /// read into guest memory, used ring, interrupt). A measurement, not a check: run with
    /// `cargo test --release -p cpevisor-vmm measure_ -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_read_request_cost() {
        let image = Image::new(2048);
        let mut d = driver(&image, true);
        let n = 20_000u32;
        let start = std::time::Instant::now();
        for i in 0..n {
            header(&d, VIRTIO_BLK_T_IN, u64::from(i % 2040));
            d.post(
                0,
                &[(HDR, 16, false), (DATA, 4096, true), (STATUS, 1, true)],
            );
            d.notify(0);
        }
        let per = start.elapsed() / n;
        assert_eq!(status(&d), OK);
        eprintln!("virtio-blk 4 KiB read: {per:?} per request (page-cached image)");
    }
}
