//! `cpevisorctl pack`'s jail root image (`rootfs_erofs` in app.json) made from a directory or
//! a tar layer, with the image builder's erofs writer (`cpevisor_rootfs::erofs`), so that an
//! operator need not run `mkfs.erofs` by hand. Operator-only (`operator-tools`).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::layer::{extract_layer, LayerCaps, JAIL_MOUNT_POINTS};
use super::oci::{EROFS_MAGIC, EROFS_MAGIC_OFFSET};
use crate::fault::{Fault, FaultCode};

/// The images' inode times: packs of the same tree are byte-identical.
const MTIME: u32 = 0;

fn invalid(msg: impl Into<String>) -> Fault {
    Fault::new(FaultCode::InvalidArguments, msg.into())
}

/// Whether `path` is an erofs image already (packed as it is); a directory or a tar is not.
pub fn is_image(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(EROFS_MAGIC_OFFSET))?;
            f.read_exact(&mut magic)
        })
        .is_ok_and(|()| magic == EROFS_MAGIC)
}

/// Builds the erofs image of `src` (a directory holding the jail's mount points, or a tar
/// layer, extracted first with the agent's own checks and given them) beside `out_path`;
/// returns the image's path.
pub fn build(src: &Path, out_path: &Path) -> Result<PathBuf, Fault> {
    let name = out_path
        .file_name()
        .ok_or_else(|| invalid(format!("{}: not a file path", out_path.display())))?
        .to_string_lossy();
    let image = out_path.with_file_name(format!(".{name}.rootfs.erofs"));
    let fail =
        |e: cpevisor_rootfs::FirmwareError| invalid(format!("rootfs_erofs {}: {e}", src.display()));
    if src.is_dir() {
        let missing: Vec<&str> = JAIL_MOUNT_POINTS
            .into_iter()
            .filter(|p| !fs::symlink_metadata(src.join(p)).is_ok_and(|m| m.is_dir()))
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "rootfs_erofs {}: has no {} (the jail mounts onto them; a read-only root \
                 cannot get them later)",
                src.display(),
                missing.join(", ")
            )));
        }
        cpevisor_rootfs::erofs::erofs_from_dir(src, MTIME, &image).map_err(fail)?;
        return Ok(image);
    }
    let staging = out_path.with_file_name(format!(".{name}.rootfs"));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| invalid(format!("{}: {e}", staging.display())))?;
    }
    let result = extract_layer(src, &staging, &LayerCaps::default())
        .map_err(|f| invalid(format!("rootfs_erofs {}: {}", src.display(), f.message)))
        .and_then(|_| {
            for p in JAIL_MOUNT_POINTS {
                let dir = staging.join(p);
                if fs::symlink_metadata(&dir).is_err() {
                    fs::create_dir(&dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
                }
            }
            cpevisor_rootfs::erofs::erofs_from_dir(&staging, MTIME, &image).map_err(fail)
        });
    let _ = fs::remove_dir_all(&staging);
    result.map(|()| image)
}
