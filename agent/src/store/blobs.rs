//! Content-addressed blobs and per-app directories under the state directory.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
// AtomicU32: 32-bit MIPS routers have no 64-bit atomics.
use std::sync::atomic::{AtomicU32, Ordering};

use super::atomic::{fsync_dir, io_fault};
use super::crash::persist_point;
use super::digest::{Digest, Sha256Writer};
use crate::fault::{Fault, FaultCode};

/// Blobs, named by the hex of their sha256, relative to the store root.
pub const BLOBS_DIR: &str = "blobs/sha256";
/// One directory per installed version (and per app data), relative to the store root.
pub const APPS_DIR: &str = "apps";
/// Package downloads (and their `.part` files), relative to the store root.
pub const DOWNLOADS_DIR: &str = "downloads";
/// Writes not yet renamed into place, relative to the store root; emptied at open.
pub const TMP_DIR: &str = "tmp";

/// Longest app id accepted as a directory name (a TR-181 UUID is 36 characters).
const MAX_APP_ID_LEN: usize = 64;
/// Blobs are immutable: shared by every app whose package holds the same bytes, they must keep
/// matching their name. Nothing opens them for writing; what an app may write (its data disk)
/// is a private copy ([`Store::copy_blob_to`]).
const BLOB_MODE: u32 = 0o444;
/// A private copy: the app's own file, read and written by its backend.
const PRIVATE_MODE: u32 = 0o600;

/// The agent's content-addressed store on flash: blobs, app directories, downloads.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating on first boot) the store under `root` and empties `tmp/`, which only ever
    /// holds writes that a power loss interrupted before their rename.
    pub fn open(root: &Path) -> Result<Store, Fault> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for dir in [BLOBS_DIR, APPS_DIR, DOWNLOADS_DIR, TMP_DIR] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|e| io_fault("create", &path, e))?;
        }
        let tmp = store.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(|e| io_fault("list", &tmp, e))? {
            let path = entry.map_err(|e| io_fault("list", &tmp, e))?.path();
            remove_any(&path).map_err(|e| io_fault("remove stale", &path, e))?;
        }
        store.seal_blobs()?;
        Ok(store)
    }

    /// Makes every blob read-only (blobs written by an older agent were 0644).
    fn seal_blobs(&self) -> Result<(), Fault> {
        let dir = self.blobs_dir();
        for entry in fs::read_dir(&dir).map_err(|e| io_fault("list", &dir, e))? {
            let entry = entry.map_err(|e| io_fault("list", &dir, e))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| io_fault("stat", &path, e))?;
            if meta.is_file() && meta.permissions().mode() & 0o7777 != BLOB_MODE {
                fs::set_permissions(&path, fs::Permissions::from_mode(BLOB_MODE))
                    .map_err(|e| io_fault("chmod", &path, e))?;
            }
        }
        Ok(())
    }

    /// The store's root (the state directory).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `tmp/` under the root.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    /// `downloads/` under the root.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join(DOWNLOADS_DIR)
    }

    /// `blobs/sha256/` under the root.
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join(BLOBS_DIR)
    }

    /// Where the blob `digest` is (or would be) stored.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Whether the blob is present AND its content still hashes to its name (it is read
    /// whole: a blob is only trusted after this check, never for its size alone).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.verify_blob(digest).is_ok()
    }

    /// Rehashes the blob `digest`; a fault naming it when it is missing or was modified.
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64, Fault> {
        let path = self.blob_path(digest);
        let file = open_regular_read_only(&path)?;
        let mut hasher = Sha256Writer::new(io::sink());
        let size = io::copy(
            &mut io::BufReader::with_capacity(64 * 1024, file),
            &mut hasher,
        )
        .map_err(|e| io_fault("read", &path, e))?;
        let (_, actual, _) = hasher.finish();
        if actual != *digest {
            return Err(Fault::new(
                FaultCode::CorruptData,
                format!(
                    "blob {}: content hashes to {actual} (modified on flash)",
                    path.display()
                ),
            ));
        }
        Ok(size)
    }

    /// A fresh path in `tmp/` for a write that is renamed into place once complete.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir()
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Streams exactly `size` bytes from `reader` into the blob `expected`, hashing while
    /// writing; the blob appears under its name only once complete, verified and synced.
    /// A present blob is kept (content addressing makes it identical) and the reader not read,
    /// but only once it was rehashed: one modified on flash is replaced. Blobs are 0444.
    /// Crash points: `store.blob:synced`, `store.blob:renamed`.
    pub fn put_blob(
        &self,
        expected: &Digest,
        size: u64,
        reader: &mut dyn Read,
    ) -> Result<PathBuf, Fault> {
        let dest = self.blob_path(expected);
        match self.verify_blob(expected) {
            Ok(n) if n == size => return Ok(dest),
            Ok(_) => {}
            Err(f) if dest.exists() => {
                // Replaced below by the verified bytes at hand: a blob must match its name.
                crate::log_warn!("{}; replacing it", f.message);
            }
            Err(_) => {}
        }
        let tmp = self.temp_path("blob");
        let result = self.write_verified(&tmp, expected, size, reader);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        persist_point("store.blob:synced");
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_fault("rename into", &dest, e)
        })?;
        persist_point("store.blob:renamed");
        fsync_dir(&self.blobs_dir())?;
        Ok(dest)
    }

    /// Stores `bytes` under their digest.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<Digest, Fault> {
        let digest = Digest::of(bytes);
        self.put_blob(&digest, bytes.len() as u64, &mut &bytes[..])?;
        Ok(digest)
    }

    fn write_verified(
        &self,
        tmp: &Path,
        expected: &Digest,
        size: u64,
        reader: &mut dyn Read,
    ) -> Result<(), Fault> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(BLOB_MODE)
            .open(tmp)
            .map_err(|e| io_fault("create", tmp, e))?;
        let mut writer = Sha256Writer::new(io::BufWriter::with_capacity(64 * 1024, file));
        // One byte more than announced tells a longer source from an exact one.
        let copied = io::copy(&mut reader.take(size.saturating_add(1)), &mut writer)
            .map_err(|e| io_fault("write", tmp, e))?;
        if copied != size {
            return Err(Fault::new(
                FaultCode::CorruptData,
                format!("blob {expected}: size {copied} differs from the {size} bytes declared"),
            ));
        }
        let (buffered, actual, _) = writer.finish();
        if actual != *expected {
            return Err(Fault::new(
                FaultCode::CorruptData,
                format!("blob {expected}: content hashes to {actual}"),
            ));
        }
        let file = buffered
            .into_inner()
            .map_err(|e| io_fault("write", tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_fault("fsync", tmp, e))
    }

    /// Makes `dest` a private, writable copy of the blob `digest` (an app's data disk), as one
    /// step for a crash: copied into `tmp/` while hashing (a blob modified on flash is refused,
    /// naming it), fsynced, renamed into place, directory fsynced. `dest`'s directory must
    /// exist and be on the store's filesystem. Crash points: `store.copy:synced`,
    /// `store.copy:renamed`.
    pub fn copy_blob_to(&self, digest: &Digest, dest: &Path) -> Result<(), Fault> {
        self.copy_blob(digest, dest, true)
    }

    /// [`Store::copy_blob_to`] without the content check: for the data disk an older agent
    /// let an app write in place, whose bytes are that app's data, not the blob's.
    pub fn copy_blob_as_is(&self, digest: &Digest, dest: &Path) -> Result<(), Fault> {
        self.copy_blob(digest, dest, false)
    }

    fn copy_blob(&self, digest: &Digest, dest: &Path, verify: bool) -> Result<(), Fault> {
        let src_path = self.blob_path(digest);
        let src = open_regular_read_only(&src_path)?;
        let tmp = self.temp_path("copy");
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(PRIVATE_MODE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .map_err(|e| io_fault("create", &tmp, e))?;
            let mut writer = Sha256Writer::new(io::BufWriter::with_capacity(64 * 1024, file));
            io::copy(
                &mut io::BufReader::with_capacity(64 * 1024, src),
                &mut writer,
            )
            .map_err(|e| io_fault("copy into", &tmp, e))?;
            let (buffered, actual, _) = writer.finish();
            if verify && actual != *digest {
                return Err(Fault::new(
                    FaultCode::CorruptData,
                    format!(
                        "blob {}: content hashes to {actual} (modified on flash); not copied",
                        src_path.display()
                    ),
                ));
            }
            let file = buffered
                .into_inner()
                .map_err(|e| io_fault("write", &tmp, e.into_error()))?;
            file.sync_all().map_err(|e| io_fault("fsync", &tmp, e))
        })();
        if let Err(f) = result {
            let _ = fs::remove_file(&tmp);
            return Err(f);
        }
        persist_point("store.copy:synced");
        fs::rename(&tmp, dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_fault("rename into", dest, e)
        })?;
        persist_point("store.copy:renamed");
        match dest.parent() {
            Some(dir) => fsync_dir(dir),
            None => Ok(()),
        }
    }

    /// Empties `downloads/` (partial downloads included), e.g. when recovery finds no
    /// operation that could resume them.
    pub fn clear_downloads(&self) -> Result<(), Fault> {
        let dir = self.downloads_dir();
        for entry in fs::read_dir(&dir).map_err(|e| io_fault("list", &dir, e))? {
            let path = entry.map_err(|e| io_fault("list", &dir, e))?.path();
            remove_any(&path).map_err(|e| io_fault("remove", &path, e))?;
        }
        fsync_dir(&dir)
    }

    /// Digests of all stored blobs, sorted.
    pub fn list_blobs(&self) -> Result<Vec<Digest>, Fault> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_fault("list", &dir, e))? {
            let entry = entry.map_err(|e| io_fault("list", &dir, e))?;
            if let Some(d) = entry.file_name().to_str().and_then(Digest::parse_hex) {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes every blob not in `referenced` (and any stray file in the blob directory);
    /// returns the removed digests. Crash point: `store.gc:removed` after each removal.
    pub fn gc(&self, referenced: &HashSet<Digest>) -> Result<Vec<Digest>, Fault> {
        let dir = self.blobs_dir();
        let mut removed = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_fault("list", &dir, e))? {
            let entry = entry.map_err(|e| io_fault("list", &dir, e))?;
            let digest = entry.file_name().to_str().and_then(Digest::parse_hex);
            if digest.is_some_and(|d| referenced.contains(&d)) {
                continue;
            }
            let path = entry.path();
            remove_any(&path).map_err(|e| io_fault("remove", &path, e))?;
            persist_point("store.gc:removed");
            removed.extend(digest);
        }
        if !removed.is_empty() {
            fsync_dir(&dir)?;
        }
        removed.sort();
        Ok(removed)
    }

    /// `apps/<id>` for a DeploymentUnit; the id must be a plain UUID-like name.
    pub fn app_dir(&self, app_id: &str) -> Result<PathBuf, Fault> {
        validate_app_id(app_id)?;
        Ok(self.root.join(APPS_DIR).join(app_id))
    }

    /// Creates `apps/<id>` (idempotent) durably. Crash point: `store.app:created`.
    pub fn create_app_dir(&self, app_id: &str) -> Result<PathBuf, Fault> {
        let dir = self.app_dir(app_id)?;
        match fs::create_dir(&dir) {
            Ok(()) => {
                persist_point("store.app:created");
                fsync_dir(&self.root.join(APPS_DIR))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(io_fault("create", &dir, e)),
        }
        Ok(dir)
    }

    /// Removes `apps/<id>` as one step for a crash: it is first renamed into `tmp/` (atomic),
    /// then deleted; a power loss in between leaves it in `tmp/`, emptied on the next open.
    /// Crash point: `store.app:detached`.
    pub fn remove_app_dir(&self, app_id: &str) -> Result<(), Fault> {
        let dir = self.app_dir(app_id)?;
        if !dir.exists() {
            return Ok(());
        }
        let graveyard = self.temp_path("app");
        fs::rename(&dir, &graveyard).map_err(|e| io_fault("detach", &dir, e))?;
        fsync_dir(&self.root.join(APPS_DIR))?;
        persist_point("store.app:detached");
        remove_any(&graveyard).map_err(|e| io_fault("remove", &graveyard, e))
    }

    /// Ids of all app directories, sorted.
    pub fn list_apps(&self) -> Result<Vec<String>, Fault> {
        let dir = self.root.join(APPS_DIR);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_fault("list", &dir, e))? {
            let entry = entry.map_err(|e| io_fault("list", &dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if validate_app_id(name).is_ok() && entry.path().is_dir() {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Number of files under the store (tests use it to show that nothing was left behind).
    pub fn file_count(&self) -> Result<usize, Fault> {
        fn walk(dir: &Path, n: &mut usize) -> io::Result<()> {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    walk(&entry.path(), n)?;
                } else {
                    *n += 1;
                }
            }
            Ok(())
        }
        let mut n = 0;
        walk(&self.root, &mut n).map_err(|e| io_fault("walk", &self.root, e))?;
        Ok(n)
    }
}

fn validate_app_id(app_id: &str) -> Result<(), Fault> {
    let ok = !app_id.is_empty()
        && app_id.len() <= MAX_APP_ID_LEN
        && app_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Fault::new(
            FaultCode::InvalidArguments,
            format!(
                "app id {:?}: expected 1..={MAX_APP_ID_LEN} of [A-Za-z0-9_-]",
                super::digest::clip(app_id)
            ),
        ))
    }
}

/// Opens a blob for reading only, refusing a symlink or anything but a regular file.
fn open_regular_read_only(path: &Path) -> Result<File, Fault> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_fault("open", path, e))?;
    let meta = file.metadata().map_err(|e| io_fault("stat", path, e))?;
    if !meta.is_file() {
        return Err(Fault::new(
            FaultCode::CorruptData,
            format!("blob {}: not a regular file", path.display()),
        ));
    }
    Ok(file)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cpevisor-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn blobs_are_verified_deduplicated_and_collected() {
        let root = scratch("blobs");
        let store = Store::open(&root).unwrap();
        let a = store.put_blob_bytes(b"kernel").unwrap();
        let b = store.put_blob_bytes(b"rootfs").unwrap();
        assert_eq!(store.put_blob_bytes(b"kernel").unwrap(), a);
        assert_eq!(fs::read(store.blob_path(&a)).unwrap(), b"kernel");

        let wrong = Digest::of(b"other");
        let err = store.put_blob(&wrong, 6, &mut &b"kernel"[..]).unwrap_err();
        assert_eq!(err.code, FaultCode::CorruptData);
        let err = store
            .put_blob(&Digest::of(b"kern"), 4, &mut &b"kernel"[..])
            .unwrap_err();
        assert!(err.message.contains("size"), "{}", err.message);
        assert!(!store.has_blob(&wrong));
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);

        let keep: HashSet<_> = [a].into_iter().collect();
        assert_eq!(store.gc(&keep).unwrap(), vec![b]);
        assert_eq!(store.list_blobs().unwrap(), vec![a]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn app_dirs_are_validated_and_removed_whole() {
        let root = scratch("apps");
        let store = Store::open(&root).unwrap();
        assert_eq!(
            store.app_dir("../etc").unwrap_err().code,
            FaultCode::InvalidArguments
        );
        let dir = store
            .create_app_dir("0b7d3a52-6c1e-5f00-8a61-3c2d9a1e7f10")
            .unwrap();
        fs::write(dir.join("data.img"), b"x").unwrap();
        assert_eq!(store.list_apps().unwrap().len(), 1);
        store
            .remove_app_dir("0b7d3a52-6c1e-5f00-8a61-3c2d9a1e7f10")
            .unwrap();
        assert!(store.list_apps().unwrap().is_empty());
        assert_eq!(store.file_count().unwrap(), 0);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn open_empties_tmp() {
        let root = scratch("tmp");
        let store = Store::open(&root).unwrap();
        fs::write(store.temp_path("blob"), b"half").unwrap();
        fs::write(store.downloads_dir().join("x.cpkg.part"), b"half").unwrap();
        let store = Store::open(&root).unwrap();
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        // Partial downloads survive a reopen (they resume) until cleared.
        assert_eq!(store.file_count().unwrap(), 1);
        store.clear_downloads().unwrap();
        assert_eq!(store.file_count().unwrap(), 0);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn blobs_are_read_only_and_rehashed_before_reuse() {
        let root = scratch("immutable");
        let store = Store::open(&root).unwrap();
        let d = store.put_blob_bytes(b"blank disk").unwrap();
        let path = store.blob_path(&d);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o444);
        // Modified on flash, same size: no longer "has" it, and a put replaces it.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"BLANK DISK").unwrap();
        assert!(!store.has_blob(&d));
        let err = store.verify_blob(&d).unwrap_err();
        assert!(err.message.contains("modified on flash"), "{}", err.message);
        store.put_blob_bytes(b"blank disk").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"blank disk");
        assert!(store.has_blob(&d));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o444
        );
        // A reopen seals blobs an older agent left writable.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        Store::open(&root).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o444
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn private_copies_are_independent_and_verified() {
        let root = scratch("copy");
        let store = Store::open(&root).unwrap();
        let d = store.put_blob_bytes(b"blank disk").unwrap();
        let app = store.create_app_dir("a_data").unwrap();
        let copy = app.join("disk.img");
        store.copy_blob_to(&d, &copy).unwrap();
        assert_eq!(
            fs::metadata(&copy).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        fs::write(&copy, b"secret!!!!").unwrap();
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), b"blank disk");
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        // A blob that no longer matches its name is not copied.
        let path = store.blob_path(&d);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"BLANK DISK").unwrap();
        let other = app.join("other.img");
        let err = store.copy_blob_to(&d, &other).unwrap_err();
        assert_eq!(err.code, FaultCode::CorruptData);
        assert!(err.message.contains("modified on flash"), "{}", err.message);
        assert!(!other.exists());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        fs::remove_dir_all(&root).unwrap();
    }
}
