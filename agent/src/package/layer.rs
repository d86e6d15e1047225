//! Extracting the rootfs layer (an OCI layer tar, uncompressed) into a directory for the jail
//! backend. The tar comes from a verified package, but its paths are still treated as hostile:
//! nothing is written outside the target, no write goes through a symlink, setuid/setgid bits
//! are dropped, device nodes are skipped, counts and sizes are capped.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::tar::{field_str, parse_octal, BLOCK};
use crate::fault::{Fault, FaultCode};
use crate::store::{fsync_dir, io_fault, persist_point};

/// Bounds on one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerCaps {
    /// Most entries (files, directories, links) in one layer.
    pub max_entries: u64,
    /// Sum of the regular files' sizes.
    pub max_bytes: u64,
    /// Most path components in one entry's path (a rootfs nests a dozen deep, not hundreds).
    pub max_depth: usize,
}

impl Default for LayerCaps {
    fn default() -> Self {
        LayerCaps {
            max_entries: 50_000,
            max_bytes: 1 << 30,
            max_depth: 64,
        }
    }
}

/// What an extraction wrote, counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links.
    pub hardlinks: u64,
    /// Device nodes, FIFOs and whiteouts, which a single-layer jail rootfs has no use for.
    pub skipped: u64,
    /// Bytes of regular file data.
    pub bytes: u64,
    /// stat/mkdir calls made on ancestor directories: each directory is checked once, so this
    /// is bounded by the number of directories, not by entries x depth.
    pub dir_checks: u64,
}

const MAX_PATH: usize = 4096;
const MAX_PAX: u64 = 64 << 10;

fn corrupt(msg: impl Into<String>) -> Fault {
    Fault::new(
        FaultCode::CorruptData,
        format!("rootfs layer: {}", msg.into()),
    )
}

/// Directories a jail app's root must have: the jail mounts `/proc`, `/dev`, `/tmp` and
/// `/data` onto them (`supervise::jail::mounts`).
pub const JAIL_MOUNT_POINTS: [&str; 4] = ["proc", "dev", "tmp", "data"];

/// Extracts `layer` into `dest`, which must not exist yet. Built in `<dest>.tmp`, synced, then
/// renamed, so after a power loss `dest` is either complete or absent.
/// Crash point: `package.layer:renamed`.
pub fn extract_layer(layer: &Path, dest: &Path, caps: &LayerCaps) -> Result<LayerStats, Fault> {
    if dest.exists() {
        return Err(Fault::new(
            FaultCode::InvalidArguments,
            format!("{} exists already", dest.display()),
        ));
    }
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_fault("remove stale", &tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io_fault("create", &tmp, e))?;
    let result = File::open(layer)
        .map_err(|e| corrupt(format!("{}: {e}", layer.display())))
        .and_then(|f| Extractor::new(&tmp, *caps).run(&mut BufReader::with_capacity(64 * 1024, f)));
    let stats = match result {
        Ok(stats) => stats,
        Err(f) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(f);
        }
    };
    sync_filesystem(&tmp)?;
    fs::rename(&tmp, dest).map_err(|e| io_fault("rename into", dest, e))?;
    persist_point("package.layer:renamed");
    if let Some(parent) = dest.parent() {
        fsync_dir(parent)?;
    }
    Ok(stats)
}

/// One syncfs(2) instead of an fsync per file: a rootfs is many small files on slow flash.
fn sync_filesystem(dir: &Path) -> Result<(), Fault> {
    use std::os::fd::AsRawFd;
    let d = File::open(dir).map_err(|e| io_fault("open", dir, e))?;
    // SAFETY: syncfs only reads the descriptor number, which `d` keeps open for the call.
    let rc = unsafe { libc::syncfs(d.as_raw_fd()) };
    if rc != 0 {
        return Err(io_fault("syncfs", dir, io::Error::last_os_error()));
    }
    Ok(())
}

struct Extractor<'a> {
    root: &'a Path,
    caps: LayerCaps,
    stats: LayerStats,
    entries: u64,
    /// From a pax `x` or GNU `L`/`K` header, for the next entry only.
    next_path: Option<String>,
    next_link: Option<String>,
    next_size: Option<u64>,
    /// Directories (relative paths) known to be real directories we created or checked: none
    /// is ever removed or replaced during an extraction (`clear` refuses directories), so one
    /// check per directory suffices.
    known_dirs: HashSet<String>,
}

fn read_exact_or_truncated(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Fault> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt("truncated"),
        _ => corrupt(e.to_string()),
    })
}

fn skip(r: &mut impl Read, n: u64) -> Result<(), Fault> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(|e| corrupt(e.to_string()))?;
    if copied != n {
        return Err(corrupt("truncated"));
    }
    Ok(())
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// `size` rounded up to whole blocks; a size so large that this overflows (a pax `size` near
/// u64::MAX) is refused naming the entry.
fn padded(size: u64, entry: &str) -> Result<u64, Fault> {
    size.checked_add(padding(size))
        .ok_or_else(|| corrupt(format!("{entry:?}: size {size} overflows")))
}

/// `a/./b/` -> ["a", "b"]; refuses `..`. Leading `/` and `./` are dropped: layer paths are
/// relative to the rootfs.
fn clean_path(raw: &str) -> Result<Vec<String>, Fault> {
    if raw.len() > MAX_PATH || raw.contains('\0') {
        return Err(corrupt("path too long or holds NUL"));
    }
    let mut out = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(s) => out.push(
                s.to_str()
                    .ok_or_else(|| corrupt("path is not UTF-8"))?
                    .to_string(),
            ),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(corrupt(format!("path {raw:?} leaves the rootfs")))
            }
        }
    }
    Ok(out)
}

fn parse_pax(data: &[u8]) -> Result<Vec<(String, String)>, Fault> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| corrupt("bad pax record"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or_else(|| corrupt("bad pax record length"))?;
        let record = &rest[sp + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| corrupt("bad pax record end"))?;
        let text = std::str::from_utf8(record).map_err(|_| corrupt("pax record is not UTF-8"))?;
        let (k, v) = text
            .split_once('=')
            .ok_or_else(|| corrupt("bad pax record"))?;
        out.push((k.to_string(), v.to_string()));
        rest = &rest[len..];
    }
    Ok(out)
}

impl<'a> Extractor<'a> {
    fn new(root: &'a Path, caps: LayerCaps) -> Self {
        Extractor {
            root,
            caps,
            stats: LayerStats::default(),
            entries: 0,
            next_path: None,
            next_link: None,
            next_size: None,
            known_dirs: HashSet::new(),
        }
    }

    /// Makes sure every ancestor of `parts` under the root is a real directory (created when
    /// missing), never a symlink: this is what keeps writes inside the root. Each directory is
    /// stat'ed (or created) once per extraction, then remembered in `known_dirs`.
    fn safe_parent(&mut self, parts: &[String]) -> Result<PathBuf, Fault> {
        let ancestors = &parts[..parts.len().saturating_sub(1)];
        let mut dir = self.root.to_path_buf();
        for part in ancestors {
            dir.push(part);
        }
        if ancestors.is_empty() || self.known_dirs.contains(&ancestors.join("/")) {
            // Directories enter the set parent first, so a known parent has known ancestors.
            return Ok(dir);
        }
        let mut rel = String::new();
        let mut path = self.root.to_path_buf();
        for part in ancestors {
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
            path.push(part);
            if self.known_dirs.contains(&rel) {
                continue;
            }
            self.stats.dir_checks += 1;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(corrupt(format!(
                        "{}: a parent is not a directory (symlink?)",
                        parts.join("/")
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.stats.dir_checks += 1;
                    fs::create_dir(&path).map_err(|e| io_fault("create", &path, e))?;
                }
                Err(e) => return Err(io_fault("stat", &path, e)),
            }
            self.known_dirs.insert(rel.clone());
        }
        Ok(dir)
    }

    /// Removes what a later entry of the same name replaces (tar semantics: last one wins),
    /// except a directory, which only another directory may "replace".
    fn clear(path: &Path) -> Result<(), Fault> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Err(corrupt(format!("{} is a directory", path.display()))),
            Ok(_) => fs::remove_file(path).map_err(|e| io_fault("replace", path, e)),
            Err(_) => Ok(()),
        }
    }

    fn run(mut self, r: &mut impl Read) -> Result<LayerStats, Fault> {
        let mut h = [0u8; 512];
        loop {
            read_exact_or_truncated(r, &mut h)?;
            if h.iter().all(|&b| b == 0) {
                return Ok(self.stats);
            }
            self.entries += 1;
            if self.entries > self.caps.max_entries {
                return Err(corrupt(format!(
                    "more than {} entries",
                    self.caps.max_entries
                )));
            }
            let base = field_str(&h[..100], "")?;
            let prefix = field_str(&h[345..500], "")?;
            let header_name = if prefix.is_empty() || &h[257..262] != b"ustar" {
                base.to_string()
            } else {
                format!("{prefix}/{base}")
            };
            let stored = parse_octal(&h[148..156], "checksum", &header_name)?;
            let mut sum_block = h;
            sum_block[148..156].fill(b' ');
            if sum_block.iter().map(|&b| u64::from(b)).sum::<u64>() != stored {
                return Err(corrupt(format!(
                    "{header_name:?}: header checksum mismatch"
                )));
            }
            let size = match self.next_size.take() {
                Some(s) => s,
                None => parse_octal(&h[124..136], "size", &header_name)?,
            };
            let mode = parse_octal(&h[100..108], "mode", &header_name)? as u32;
            let typeflag = h[156];
            match typeflag {
                b'x' | b'L' | b'K' => {
                    if size > MAX_PAX {
                        return Err(corrupt("extended header too large"));
                    }
                    let mut data = vec![0u8; size as usize];
                    read_exact_or_truncated(r, &mut data)?;
                    skip(r, padding(size))?;
                    self.extended(typeflag, &data)?;
                    continue;
                }
                b'g' => {
                    skip(r, padded(size, &header_name)?)?;
                    continue;
                }
                _ => {}
            }
            let name = self.next_path.take().unwrap_or(header_name);
            let link = match self.next_link.take() {
                Some(l) => l,
                None => field_str(&h[157..257], &name)?.to_string(),
            };
            let parts = clean_path(&name)?;
            if parts.len() > self.caps.max_depth {
                return Err(corrupt(format!(
                    "{name:?}: {} levels deep, more than {}",
                    parts.len(),
                    self.caps.max_depth
                )));
            }
            // Checked before anything is written: the skips below and `file` rely on it.
            let skip_len = padded(size, &name)?;
            let whiteout = parts.last().is_some_and(|p| p.starts_with(".wh."));
            match typeflag {
                b'0' | 0 | b'7' if !whiteout => self.file(r, &parts, size, mode)?,
                b'5' => {
                    self.dir(&parts, mode)?;
                    skip(r, skip_len)?;
                }
                b'2' if !whiteout => {
                    self.symlink(&parts, &link)?;
                    skip(r, skip_len)?;
                }
                b'1' if !whiteout => {
                    self.hardlink(&parts, &link)?;
                    skip(r, skip_len)?;
                }
                b'0' | 0 | b'7' | b'1' | b'2' | b'3' | b'4' | b'6' => {
                    self.stats.skipped += 1;
                    skip(r, skip_len)?;
                }
                t => {
                    return Err(corrupt(format!(
                        "{name:?}: unsupported entry type {:?}",
                        t as char
                    )))
                }
            }
        }
    }

    fn extended(&mut self, typeflag: u8, data: &[u8]) -> Result<(), Fault> {
        let text = |d: &[u8]| -> Result<String, Fault> {
            let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
            String::from_utf8(d[..end].to_vec()).map_err(|_| corrupt("long name is not UTF-8"))
        };
        match typeflag {
            b'L' => self.next_path = Some(text(data)?),
            b'K' => self.next_link = Some(text(data)?),
            _ => {
                for (k, v) in parse_pax(data)? {
                    match k.as_str() {
                        "path" => self.next_path = Some(v),
                        "linkpath" => self.next_link = Some(v),
                        "size" => {
                            self.next_size = Some(v.parse().map_err(|_| corrupt("bad pax size"))?)
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        r: &mut impl Read,
        parts: &[String],
        size: u64,
        mode: u32,
    ) -> Result<(), Fault> {
        if parts.is_empty() {
            return Err(corrupt("a file entry names the root"));
        }
        self.stats.bytes = self.stats.bytes.saturating_add(size);
        if self.stats.bytes > self.caps.max_bytes {
            return Err(corrupt(format!(
                "files exceed {} bytes",
                self.caps.max_bytes
            )));
        }
        let path = self
            .safe_parent(parts)?
            .join(parts.last().expect("non-empty"));
        Self::clear(&path)?;
        // Permission bits only: setuid/setgid dropped, the jail's apps need neither.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o1777)
            .open(&path)
            .map_err(|e| io_fault("create", &path, e))?;
        let copied =
            io::copy(&mut r.take(size), &mut f).map_err(|e| io_fault("write", &path, e))?;
        if copied != size {
            return Err(corrupt("truncated"));
        }
        skip(r, padding(size))?;
        self.stats.files += 1;
        Ok(())
    }

    fn dir(&mut self, parts: &[String], mode: u32) -> Result<(), Fault> {
        if parts.is_empty() {
            return Ok(());
        }
        let path = self
            .safe_parent(parts)?
            .join(parts.last().expect("non-empty"));
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&path).map_err(|e| io_fault("replace", &path, e))?;
                fs::create_dir(&path).map_err(|e| io_fault("create", &path, e))?;
            }
            Err(_) => fs::create_dir(&path).map_err(|e| io_fault("create", &path, e))?,
        }
        // Owner keeps rwx so later entries can be written into it.
        fs::set_permissions(&path, fs::Permissions::from_mode((mode & 0o1777) | 0o700))
            .map_err(|e| io_fault("chmod", &path, e))?;
        self.known_dirs.insert(parts.join("/"));
        self.stats.dirs += 1;
        Ok(())
    }

    fn symlink(&mut self, parts: &[String], target: &str) -> Result<(), Fault> {
        if parts.is_empty() || target.is_empty() || target.len() > MAX_PATH {
            return Err(corrupt("bad symlink entry"));
        }
        let path = self
            .safe_parent(parts)?
            .join(parts.last().expect("non-empty"));
        Self::clear(&path)?;
        // The target is stored as written: it is resolved inside the jail, never followed here.
        std::os::unix::fs::symlink(target, &path).map_err(|e| io_fault("symlink", &path, e))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn hardlink(&mut self, parts: &[String], target: &str) -> Result<(), Fault> {
        let target_parts = clean_path(target)?;
        if target_parts.len() > self.caps.max_depth {
            return Err(corrupt(format!(
                "hard link target {target:?}: more than {} levels deep",
                self.caps.max_depth
            )));
        }
        if parts.is_empty() || target_parts.is_empty() {
            return Err(corrupt("bad hard link entry"));
        }
        let existing = self
            .safe_parent(&target_parts)?
            .join(target_parts.last().expect("non-empty"));
        if !fs::symlink_metadata(&existing).is_ok_and(|m| m.is_file()) {
            return Err(corrupt(format!(
                "hard link to {target:?}, which is not a file extracted before"
            )));
        }
        let path = self
            .safe_parent(parts)?
            .join(parts.last().expect("non-empty"));
        Self::clear(&path)?;
        fs::hard_link(&existing, &path).map_err(|e| io_fault("link", &path, e))?;
        self.stats.hardlinks += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cpevisor-layer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A layer made by the system's GNU tar, in pax format, with a long name, links and modes.
    #[test]
    fn extracts_a_real_tar_layer() {
        let dir = scratch("real");
        let src = dir.join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(src.join("bin/hello"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(src.join("etc/conf"), b"x=1\n").unwrap();
        std::os::unix::fs::symlink("/bin/hello", src.join("bin/sh")).unwrap();
        fs::hard_link(src.join("etc/conf"), src.join("etc/conf.bak")).unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(src.join(&long)).unwrap();
        fs::write(src.join(&long).join("f"), b"deep").unwrap();
        let layer = dir.join("layer.tar");
        let status = Command::new("tar")
            .args(["--format=pax", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&layer)
            .arg(".")
            .status();
        let Ok(status) = status else { return };
        assert!(status.success());

        let dest = dir.join("rootfs");
        let stats = extract_layer(&layer, &dest, &LayerCaps::default()).unwrap();
        assert_eq!(
            fs::read(dest.join("bin/hello")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        let mode = fs::metadata(dest.join("bin/hello"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "setuid must be dropped");
        assert_eq!(
            fs::read_link(dest.join("bin/sh")).unwrap(),
            Path::new("/bin/hello")
        );
        assert_eq!(fs::read(dest.join("etc/conf.bak")).unwrap(), b"x=1\n");
        assert_eq!(fs::read(dest.join(&long).join("f")).unwrap(), b"deep");
        assert_eq!((stats.files, stats.symlinks, stats.hardlinks), (3, 1, 1));
        assert!(!dir.join("rootfs.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn raw_entry(name: &str, typeflag: u8, link: &str, data: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64) as usize, 0);
        out
    }

    fn extract_raw(name: &str, entries: &[Vec<u8>]) -> (PathBuf, Result<LayerStats, Fault>) {
        let dir = scratch(name);
        let mut tar: Vec<u8> = entries.concat();
        tar.extend_from_slice(&[0u8; 1024]);
        fs::write(dir.join("l.tar"), &tar).unwrap();
        let r = extract_layer(
            &dir.join("l.tar"),
            &dir.join("rootfs"),
            &LayerCaps::default(),
        );
        (dir, r)
    }

    #[test]
    fn refuses_escapes() {
        for (name, entries) in [
            ("dotdot", vec![raw_entry("../evil", b'0', "", b"x")]),
            (
                "through-symlink",
                vec![
                    raw_entry("up", b'2', "/tmp", b""),
                    raw_entry("up/evil", b'0', "", b"x"),
                ],
            ),
            (
                "hardlink-out",
                vec![raw_entry("h", b'1', "../../etc/passwd", b"")],
            ),
        ] {
            let (dir, r) = extract_raw(name, &entries);
            let err = r.unwrap_err();
            assert_eq!(err.code, FaultCode::CorruptData, "{name}: {}", err.message);
            assert!(!dir.join("rootfs").exists() && !dir.join("rootfs.tmp").exists());
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn refuses_truncation_and_skips_devices() {
        let mut cut = raw_entry("f", b'0', "", &[7u8; 1000]);
        cut.truncate(700);
        let dir = scratch("cut");
        fs::write(dir.join("l.tar"), &cut).unwrap();
        let err = extract_layer(
            &dir.join("l.tar"),
            &dir.join("rootfs"),
            &LayerCaps::default(),
        )
        .unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        fs::remove_dir_all(&dir).unwrap();

        let (dir, r) = extract_raw(
            "dev",
            &[
                raw_entry("dev/null", b'3', "", b""),
                raw_entry("a", b'0', "", b"1"),
            ],
        );
        let stats = r.unwrap();
        assert_eq!((stats.files, stats.skipped), (1, 1));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A pax extended header (`x`) carrying `key=value` for the next entry.
    fn pax_entry(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        // The record's length counts its own digits.
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        raw_entry("pax", b'x', "", format!("{len}{body}").as_bytes())
    }

    #[test]
    fn refuses_a_pax_size_that_overflows() {
        for size in [u64::MAX, u64::MAX - 100, u64::MAX - 510] {
            let (dir, r) = extract_raw(
                "pax-size",
                &[
                    pax_entry("size", &size.to_string()),
                    raw_entry("d/", b'5', "", b""),
                ],
            );
            let err = r.unwrap_err();
            assert_eq!(err.code, FaultCode::CorruptData, "{}", err.message);
            assert!(
                err.message.contains("overflows") && err.message.contains("\"d/\""),
                "{}",
                err.message
            );
            assert!(!dir.join("rootfs").exists() && !dir.join("rootfs.tmp").exists());
            fs::remove_dir_all(&dir).unwrap();
        }
        // A global header (`g`) with such a size is refused the same way.
        let mut g = raw_entry("glob", b'g', "", b"");
        g[124..136].copy_from_slice(b"77777777777\0");
        g[148..156].fill(b' ');
        let sum: u32 = g[..512].iter().map(|&b| u32::from(b)).sum();
        g[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let (dir, r) = extract_raw("pax-g", &[g]);
        // 8 GiB of data is missing, so this one ends as truncated, without a panic.
        assert_eq!(r.unwrap_err().code, FaultCode::CorruptData);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// 3,000 files, 30 levels deep, in 10 chains: each ancestor directory is checked once, so
    /// the stat/mkdir calls are bounded by the directories (300), not entries x depth (90,000).
    #[test]
    fn deep_paths_check_each_directory_once() {
        let mut entries = Vec::new();
        for i in 0..3000 {
            let chain = (1..30)
                .map(|l| format!("l{l}"))
                .collect::<Vec<_>>()
                .join("/");
            let path = format!("c{}/{chain}/f{i}", i % 10);
            entries.push(pax_entry("path", &path));
            entries.push(raw_entry("placeholder", b'0', "", b"x"));
        }
        let (dir, r) = extract_raw("deep", &entries);
        let stats = r.unwrap();
        assert_eq!(stats.files, 3000);
        let dirs = 10 * 30;
        // One stat and one mkdir per directory at most.
        assert!(
            stats.dir_checks <= 2 * dirs,
            "{} ancestor checks for {dirs} directories",
            stats.dir_checks
        );
        let deepest = (1..30).fold(dir.join("rootfs/c3"), |p, l| p.join(format!("l{l}")));
        assert_eq!(fs::read(deepest.join("f2993")).unwrap(), b"x");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_paths_deeper_than_the_cap() {
        let deep = (0..65)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join("/");
        let (dir, r) = extract_raw(
            "too-deep",
            &[pax_entry("path", &deep), raw_entry("p", b'0', "", b"x")],
        );
        let err = r.unwrap_err();
        assert!(err.message.contains("more than 64"), "{}", err.message);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_known_directory_is_not_replaced_by_a_symlink() {
        let (dir, r) = extract_raw(
            "dir-then-link",
            &[
                raw_entry("a/b/f", b'0', "", b"x"),
                raw_entry("a/b", b'2', "/tmp", b""),
                raw_entry("a/b/g", b'0', "", b"y"),
            ],
        );
        let err = r.unwrap_err();
        assert!(err.message.contains("is a directory"), "{}", err.message);
        fs::remove_dir_all(&dir).unwrap();
    }
}
