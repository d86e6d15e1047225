//! Power-loss-safe small files: the lifecycle's state file and journal go through here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::crash::persist_point;
use crate::fault::{Fault, FaultCode};

/// Maps an I/O error on flash to a fault naming what was being done. A full flash is the
/// expected case (7005); other errors are reported the same way with the OS's reason.
pub fn io_fault(what: &str, path: &Path, err: io::Error) -> Fault {
    let reason = if err.raw_os_error() == Some(libc::ENOSPC) {
        "flash is full".to_string()
    } else {
        err.to_string()
    };
    Fault::new(
        FaultCode::ResourcesExceeded,
        format!("{what} {}: {reason}", path.display()),
    )
}

/// Makes a rename or unlink in `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<(), Fault> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_fault("fsync directory", dir, e))
}

fn file_name(path: &Path) -> Result<&str, Fault> {
    path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Fault::new(
            FaultCode::InvalidArguments,
            format!("{}: not a file path with a UTF-8 name", path.display()),
        )
    })
}

/// Replaces `path` with `bytes` so that after a power loss at any instant the file holds either
/// the old or the new content, never a mix: write `.<name>.tmp`, fsync, rename, fsync the dir.
/// Crash points: `atomic_write:<name>:synced` (temp complete, old file in place) and
/// `atomic_write:<name>:renamed` (new file in place).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), Fault> {
    let name = file_name(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_fault("write", &tmp, e));
    }
    persist_point(&format!("atomic_write:{name}:synced"));
    fs::rename(&tmp, path).map_err(|e| io_fault("rename into", path, e))?;
    persist_point(&format!("atomic_write:{name}:renamed"));
    fsync_dir(dir)
}

/// Serializes `value` as pretty JSON and writes it with [`atomic_write`].
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), Fault> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| {
        Fault::new(
            FaultCode::InvalidArguments,
            format!("serialize {}: {e}", path.display()),
        )
    })?;
    bytes.push(b'\n');
    atomic_write(path, &bytes)
}

/// Reads a JSON file of at most `max_bytes`. `Ok(None)` when it does not exist (first boot);
/// a larger or unparsable file is 7035 naming the file, since only we write these files and
/// damage means the flash or a writer went wrong.
pub fn read_json<T: DeserializeOwned>(path: &Path, max_bytes: u64) -> Result<Option<T>, Fault> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_fault("open", path, e)),
    };
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_fault("read", path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Fault::new(
            FaultCode::CorruptData,
            format!("{}: larger than the {max_bytes} byte limit", path.display()),
        ));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Fault::new(
            FaultCode::CorruptData,
            format!("{}: malformed JSON: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cpevisor-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = scratch("replace");
        let path = dir.join("state.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_json_handles_missing_oversized_and_malformed() {
        let dir = scratch("read");
        let path = dir.join("s.json");
        assert_eq!(read_json::<Vec<u32>>(&path, 100).unwrap(), None);
        write_json(&path, &vec![1u32, 2, 3]).unwrap();
        assert_eq!(
            read_json::<Vec<u32>>(&path, 100).unwrap(),
            Some(vec![1, 2, 3])
        );
        let err = read_json::<Vec<u32>>(&path, 4).unwrap_err();
        assert_eq!(err.code, FaultCode::CorruptData);
        assert!(err.message.contains("4 byte limit"), "{}", err.message);
        fs::write(&path, b"[1,").unwrap();
        let err = read_json::<Vec<u32>>(&path, 100).unwrap_err();
        assert!(err.message.contains("malformed JSON"), "{}", err.message);
        fs::remove_dir_all(&dir).unwrap();
    }
}
