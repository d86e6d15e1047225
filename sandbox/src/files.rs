//! Reading a file that a privileged process was handed by path (the jail runner's spec, the
//! VMM's config): only a regular file, never through a symlink, never blocking on a FIFO, and
//! only one that another unprivileged user did not make and cannot write.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Reads `path` whole if it is a regular file of at most `max_bytes`, owned by root or by us
/// and not writable by others. The last component is not followed (`O_NOFOLLOW`) and
/// the open does not wait for a FIFO's writer (`O_NONBLOCK`); the checks run on the opened
/// descriptor, so the file cannot be swapped between check and read. Errors name the path.
pub fn read_regular(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let named = |kind: io::ErrorKind, why: String| {
        io::Error::new(kind, format!("{}: {why}", path.display()))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        // std adds O_CLOEXEC.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => named(
                io::ErrorKind::InvalidInput,
                "is a symbolic link (refused)".into(),
            ),
            _ => named(e.kind(), e.to_string()),
        })?;
    check_regular(&file).map_err(|why| named(io::ErrorKind::InvalidInput, why))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| named(e.kind(), e.to_string()))?;
    if bytes.len() as u64 > max_bytes {
        return Err(named(
            io::ErrorKind::InvalidData,
            format!("larger than {max_bytes} bytes"),
        ));
    }
    Ok(bytes)
}

fn check_regular(file: &File) -> Result<(), String> {
    let md = file.metadata().map_err(|e| format!("fstat: {e}"))?;
    if !md.file_type().is_file() {
        return Err(format!(
            "not a regular file (mode {:o}, refused)",
            md.mode() & libc::S_IFMT
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.uid() != 0 && md.uid() != me {
        return Err(format!(
            "owned by uid {}, not by root or us (refused)",
            md.uid()
        ));
    }
    if md.mode() & 0o002 != 0 {
        return Err(format!(
            "writable by others (mode {:o}, refused)",
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cpv-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_a_regular_file_and_bounds_it() {
        let dir = scratch("reg");
        let p = dir.join("f");
        std::fs::write(&p, b"hello").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_regular(&p, 5).unwrap(), b"hello");
        let e = read_regular(&p, 4).unwrap_err().to_string();
        assert!(e.contains("larger than 4 bytes") && e.contains("/f"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = read_regular(&p, 5).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_symlinks_fifos_and_directories_without_blocking() {
        let dir = scratch("odd");
        let target = dir.join("target");
        std::fs::write(&target, b"{}").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = read_regular(&link, 64).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer ever opens the FIFO: a blocking open would hang this test.
        let e = read_regular(&fifo, 64).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_regular(&dir, 64).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
