//! A jail app's root: the package's tar layer extracted into `<app_dir>/rootfs` (once), or its
//! erofs image layer loop-mounted read-only on that (empty) directory at every start, in the
//! runner's own mount namespace (like the data volume, `volume`), so that an installed app
//! takes its package's size on flash and nothing more: the blob in the store is the root.
//!
//! The image is hostile input that the kernel parses. What stands between it and the kernel:
//! it is the blob whose sha256 the operator's signature covers (`package::verify`), checked
//! again while it was copied into the store, so only an image the operator signed reaches the
//! mount; its size is bounded by the package cap; the loop device and the mount are read-only
//! (the kernel never writes it, no journal or superblock update), `nodev` and `nosuid` (no
//! device node or set-id file in it means anything), and the app then sees it only through
//! its jail: a read-only bind in its own mount and user namespaces, without capabilities. A
//! malformed image makes the mount fail (EINVAL, EFSCORRUPTED) and the start fails with that.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::mounts::MOUNT_POINTS;

/// The directory that is the jail's root for an app installed in `app_dir`: with `erofs` an
/// empty mount point the runner mounts the image on; else the tar layer `tar`, extracted there
/// on first use (an install extracts it already).
pub fn prepare(app_dir: &Path, tar: Option<&Path>, erofs: Option<&Path>) -> io::Result<PathBuf> {
    let dir = app_dir.join("rootfs");
    if erofs.is_some() {
        // The image's own directories are the mount points: a read-only root cannot take
        // new ones, so the runner's mount refuses an image without them.
        if !dir.is_dir() {
            fs::create_dir(&dir)?;
        }
        return Ok(dir);
    }
    let layer = tar.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the package has no rootfs layer (required by the jail backend)",
        )
    })?;
    if !dir.is_dir() {
        crate::package::extract_layer(layer, &dir, &crate::package::LayerCaps::default())
            .map_err(|f| io::Error::other(format!("rootfs layer: {}", f.message)))?;
    }
    for p in MOUNT_POINTS {
        let m = dir.join(p);
        match fs::symlink_metadata(&m) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("rootfs: /{p} is not a directory (the jail mounts onto it)"),
                ))
            }
            Err(_) => fs::create_dir(&m)?,
        }
    }
    Ok(dir)
}

/// Mounts the erofs `image` read-only on `at`, in the runner's own mount namespace (made
/// before, `volume::own_mount_namespace`), and checks that it has the jail's mount points.
pub fn mount_root_image(image: &Path, at: &Path) -> Result<(), String> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    super::volume::mount_image("root image", image, at, "erofs", flags)?;
    for p in MOUNT_POINTS {
        // Not followed: a link in the image would point into the host's tree here.
        if !fs::symlink_metadata(at.join(p)).is_ok_and(|m| m.is_dir()) {
            return Err(format!(
                "jail: root image {}: has no directory /{p} (the jail mounts onto it)",
                image.display()
            ));
        }
    }
    Ok(())
}
