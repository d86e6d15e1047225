//! A jail app's capped data volume: a fixed-size ext4 image (made at install,
//! `lifecycle::disk::make_volume`) that the runner loop-mounts on the app's data directory, so
//! a write past its size fails in the app with ENOSPC and touches nothing else on the flash.
//!
//! Why an image: router flash is ubifs, jffs2, or an overlayfs over one of them. None has
//! quotas (ext4/xfs project quotas need the data partition to be one of those), and a tmpfs
//! with `size=` would lose the data at every reboot. A file of fixed size works on all of them
//! and is the same thing a microVM's data disk already is. Sparse where the file system allows
//! (ubifs does, jffs2 compresses the zeros), so it takes flash as the app writes, and the
//! budget counts it at its full size all along (`lifecycle::disk`).
//!
//! Mounted in the runner's own mount namespace, made before the jail is cloned from it: the
//! host never sees the mount, and when the runner and its jail end (a stop, a crash, the agent
//! killed) the namespace goes, the mount with it, and the loop device with that
//! (`LO_FLAGS_AUTOCLEAR`): nothing is left to clean up after a power cut.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;

// <linux/loop.h>: stable kernel ABI (the libc crate does not carry it).
const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_CLR_FD: u32 = 0x4C01;
const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_CTL_GET_FREE: u32 = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// Gives the runner a mount namespace of its own (see the module doc), before the root image
/// and the data volume are mounted in it.
pub fn own_mount_namespace() -> Result<(), String> {
    let fail = |what: &str, e: nix::errno::Errno| format!("jail: {what}: {e}");
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| fail("mount namespace", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("make / private", e))
}

/// Mounts the volume `image` on `at` in the runner's own mount namespace
/// ([`own_mount_namespace`] first); the jail cloned after this binds `at` as its `/data`.
pub fn mount_volume(image: &Path, at: &Path) -> Result<(), String> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_image("data volume", image, at, "ext4", flags)
}

/// Loop-mounts `image` (a file system of type `fstype`) on `at`; with `MS_RDONLY` in `flags`
/// the image is opened and the loop device bound read-only, so not even the kernel's own
/// journal replay or superblock update can write it.
pub fn mount_image(
    what: &str,
    image: &Path,
    at: &Path,
    fstype: &str,
    flags: MsFlags,
) -> Result<(), String> {
    let fail = |step: &str, e: &dyn std::fmt::Display| {
        format!("jail: {what} {}: {step}: {e}", image.display())
    };
    let read_only = flags.contains(MsFlags::MS_RDONLY);
    let (dev_path, dev) = attach(image, read_only).map_err(|e| fail("loop device", &e))?;
    mount(
        Some(dev_path.as_str()),
        at,
        Some(fstype),
        flags,
        None::<&str>,
    )
    .map_err(|e| fail(&format!("mount {dev_path} on {}", at.display()), &e))?;
    // The mount holds the device now; autoclear detaches it when the mount goes.
    drop(dev);
    Ok(())
}

/// Binds `image` to a free loop device with autoclear; its path and an open handle (closing
/// the last handle of an unmounted autoclear device detaches it). `read_only`: the image and
/// the device are opened read-only, which makes the kernel bind a read-only loop device.
fn attach(image: &Path, read_only: bool) -> std::io::Result<(String, File)> {
    let rw = |p: &Path| OpenOptions::new().read(true).write(!read_only).open(p);
    let img = rw(image)?;
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // Another process may take the free device between the two calls: try the next one.
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = format!("/dev/loop{n}");
        let dev = rw(Path::new(&path))?;
        // SAFETY: LOOP_SET_FD takes the backing file's descriptor by value.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, img.as_raw_fd()) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                continue;
            }
            return Err(e);
        }
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_AUTOCLEAR,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_SET_STATUS64 reads one `struct loop_info64`, which `info` is (repr(C)).
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &info) } < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: LOOP_CLR_FD takes no argument; it unbinds what was bound above.
            unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
            return Err(e);
        }
        return Ok((path, dev));
    }
    Err(std::io::Error::other("no free loop device"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_info64_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
    }
}
