//! The controller's secrets on disk (the API token file, the PostgreSQL client key): a
//! regular file only its owner can read or write, opened with O_NOFOLLOW (a symlink planted
//! in its place is refused) and O_NONBLOCK (a FIFO cannot hang the start), checked on the
//! descriptor opened, read up to a bound.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The bytes of the private file `path`, at most `max`; errors say what is wrong with it,
/// without the file's name (the caller's words come first).
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                "is a symlink; name the file itself".to_string()
            } else {
                e.to_string()
            }
        })?;
    let m = f.metadata().map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:o} lets group or others at it; chmod 600 it",
            m.mode() & 0o777
        ));
    }
    let mut bytes = Vec::new();
    f.by_ref()
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}
