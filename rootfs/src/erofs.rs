//! A microVM's root file system as an uncompressed erofs image (`mkfs.erofs` from erofs-utils),
//! for a read-only virtio disk: the guest reads its files through its page cache from the
//! host's page cache, one copy for every guest using the same image, instead of unpacking an
//! initramfs into each guest's RAM (docs/density.md).
//!
//! The image is reproducible: one fixed timestamp and UUID, every file owned by root, no
//! extended attributes (the staging tree's, from the build host, are left out).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::cpio::Initramfs;
use crate::firmware::FirmwareError;

/// Fixed erofs UUID, so two builds give the same image bytes.
const ROOT_UUID: &str = "c9e71505-0000-4000-8000-000000000002";
/// Fewest applet names a real busybox carries (Debian's static arm64 busybox has 269).
const MIN_APPLETS: usize = 16;

fn input(msg: String) -> FirmwareError {
    FirmwareError::Input(msg)
}

/// The applet names compiled into a busybox binary: its `applet_names` table, one
/// NUL-terminated sorted list that starts with `[` and `[[` and ends with an empty name. The
/// image's `/bin/<applet>` links are made from it at build time (a read-only root cannot take
/// `busybox --install` at boot), without running the binary, which is the guest's arch.
pub fn busybox_applets(busybox: &[u8]) -> Result<Vec<String>, FirmwareError> {
    const START: &[u8] = b"[\0[[\0";
    let not_found = |why: &str| input(format!("busybox: cannot read its applet table: {why}"));
    let start = busybox
        .windows(START.len())
        .position(|w| w == START)
        .ok_or_else(|| not_found("no `[`, `[[` list"))?;
    let mut names: Vec<String> = Vec::new();
    for raw in busybox[start..].split(|&b| b == 0) {
        if raw.is_empty() {
            break;
        }
        let ok = raw.len() <= 32
            && raw
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"[_.-".contains(&b));
        if !ok {
            return Err(not_found("a name that is not an applet name"));
        }
        let name = String::from_utf8_lossy(raw).into_owned();
        if names.last().is_some_and(|prev| *prev >= name) {
            return Err(not_found("names out of order"));
        }
        names.push(name);
    }
    if names.len() < MIN_APPLETS || !names.iter().any(|n| n == "sh") {
        return Err(not_found(&format!(
            "{} names, no `sh` among them",
            names.len()
        )));
    }
    Ok(names)
}

/// Adds `/bin/<applet>` -> `busybox` for every applet the tree does not already have a file at.
pub fn add_applet_links(tree: &mut Initramfs, applets: &[String]) -> Result<(), FirmwareError> {
    for name in applets {
        // `[` and `[[` are fine file names; only a path separator would not be.
        let path = format!("bin/{name}");
        if !tree.contains(&path) {
            tree.add_symlink(&path, "busybox")?;
        }
    }
    Ok(())
}

/// Writes `tree` as an erofs image at `out` (through a temporary name), every inode stamped
/// with `mtime`. Uncompressed, and file data never inlined into metadata blocks
/// (`noinline_data`): each file's pages are its own blocks, which is what DAX on virtio-pmem
/// would need later.
pub fn build_erofs(tree: &Initramfs, mtime: u32, out: &Path) -> Result<(), FirmwareError> {
    let parent = out
        .parent()
        .ok_or_else(|| input(format!("{}: no parent directory", out.display())))?;
    let staging = parent.join(".root-staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|source| FirmwareError::Io {
            path: staging.clone(),
            source,
        })?;
    }
    let result = tree
        .write_dir(&staging)
        .map_err(FirmwareError::from)
        .and_then(|()| erofs_from_dir(&staging, mtime, out));
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Writes the directory `dir` as an erofs image at `out` (through a temporary name beside it),
/// the same way as [`build_erofs`]: reproducible, every file root's, no extended attributes.
/// `cpevisorctl pack` makes a jail app's root image with it (agent/PACKAGE.md).
pub fn erofs_from_dir(dir: &Path, mtime: u32, out: &Path) -> Result<(), FirmwareError> {
    let name = out
        .file_name()
        .ok_or_else(|| input(format!("{}: not a file path", out.display())))?;
    let tmp = out.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    if let Err(e) = run_mkfs(dir, mtime, &tmp, out) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out).map_err(|source| FirmwareError::Io {
        path: out.to_path_buf(),
        source,
    })
}

fn run_mkfs(staging: &Path, mtime: u32, tmp: &Path, out: &Path) -> Result<(), FirmwareError> {
    let output = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(format!("-T{mtime}"))
        .arg(format!("-U{ROOT_UUID}"))
        .arg("--all-root")
        .arg("-x-1")
        .arg("-Enoinline_data")
        .arg(tmp)
        .arg(staging)
        .output()
        .map_err(|e| {
            input(format!(
                "cannot run mkfs.erofs (install erofs-utils: `make setup`) to build the root image: {e}"
            ))
        })?;
    if !output.status.success() {
        return Err(input(format!(
            "mkfs.erofs failed ({}) building {}: {}",
            output.status,
            out.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}
