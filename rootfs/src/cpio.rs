//! A deterministic initramfs builder: an in-memory tree written as a gzipped "newc" cpio archive.
//!
//! Determinism is the point: entries are written sorted by path, owned by root, with one fixed
//! mtime and inode numbers assigned in write order, and the gzip header carries no time or name.
//! Two builds from the same inputs are therefore byte-identical.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

/// newc stores sizes in 32-bit fields; refuse anything larger rather than write a corrupt archive.
const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// Longest path accepted inside the archive (the kernel's own limit is PATH_MAX = 4096).
const MAX_PATH_LEN: usize = 4095;
/// Fixed gzip level: part of the output's identity, so it never depends on a default.
const GZIP_LEVEL: u32 = 9;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Errors from building or writing an archive; each names the path it concerns.
#[derive(Debug)]
pub enum CpioError {
    /// A path that cannot be stored (absolute parent escape, empty component, NUL, too long).
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Two different kinds of entry (or two files) were added at the same path.
    Conflict {
        /// The path added twice.
        path: String,
        /// The kind of the entry already there (`file`, `directory`, `symlink`, `character device`).
        existing: &'static str,
    },
    /// A file's contents exceed what the newc format can describe.
    TooLarge {
        /// The file's path in the archive.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// Reading a host file or writing the archive failed.
    Io {
        /// The host file or archive concerned.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpioError::BadPath { path, why } => write!(f, "bad archive path {path:?}: {why}"),
            CpioError::Conflict { path, existing } => {
                write!(f, "archive path {path:?} was already added as a {existing}")
            }
            CpioError::TooLarge { path, size } => write!(
                f,
                "archive file {path:?} is {size} bytes; cpio newc allows at most {MAX_FILE_SIZE}"
            ),
            CpioError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CpioError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CpioError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where a regular file's bytes come from. Host files are read only when the archive is written,
/// so large images do not sit in memory twice.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileData {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(FileData),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

impl Node {
    fn kind_name(&self) -> &'static str {
        match self {
            Node::Dir => "directory",
            Node::File(_) => "file",
            Node::Symlink(_) => "symlink",
            Node::CharDev { .. } => "character device",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    node: Node,
    /// Permission bits only (07777); the file type is implied by `node`.
    perm: u32,
}

/// An initramfs tree to be written as `newc` cpio (optionally gzipped).
///
/// Paths are given relative to the archive root, with or without a leading `/`. Missing parent
/// directories are created with mode 0755, so callers only name what they care about.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
    mtime: u32,
}

impl Initramfs {
    /// An empty tree whose entries will carry mtime 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stamp every entry with `mtime` (seconds since the epoch) instead of 0.
    pub fn with_mtime(mut self, mtime: u32) -> Self {
        self.mtime = mtime;
        self
    }

    /// Number of entries, implicit parent directories included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `path` names an entry of any kind.
    pub fn contains(&self, path: &str) -> bool {
        normalize(path).is_ok_and(|p| self.entries.contains_key(&p))
    }

    /// Adds a directory; adding an existing directory again just updates its mode.
    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.insert(path, Node::Dir, perm)
    }

    /// Adds a regular file holding `data`.
    pub fn add_file(&mut self, path: &str, data: Vec<u8>, perm: u32) -> Result<(), CpioError> {
        let size = data.len() as u64;
        if size > MAX_FILE_SIZE {
            return Err(CpioError::TooLarge {
                path: path.to_string(),
                size,
            });
        }
        self.insert(path, Node::File(FileData::Bytes(data)), perm)
    }

    /// Adds a regular file whose contents are read from `host` when the archive is written.
    /// The host file must exist now and fit the format, so mistakes surface at once.
    pub fn add_host_file(&mut self, path: &str, host: &Path, perm: u32) -> Result<(), CpioError> {
        let meta = fs::metadata(host).map_err(|source| CpioError::Io {
            path: host.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(CpioError::Io {
                path: host.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(CpioError::TooLarge {
                path: path.to_string(),
                size: meta.len(),
            });
        }
        self.insert(path, Node::File(FileData::Host(host.to_path_buf())), perm)
    }

    /// Adds a symbolic link at `path` pointing to `target` (stored verbatim).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') || target.len() > MAX_PATH_LEN {
            return Err(CpioError::BadPath {
                path: path.to_string(),
                why: "symlink target is empty, too long or contains NUL",
            });
        }
        self.insert(path, Node::Symlink(target.to_string()), 0o777)
    }

    /// Adds a character device node (e.g. `/dev/console`, 5:1).
    pub fn add_char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.insert(path, Node::CharDev { major, minor }, perm)
    }

    fn insert(&mut self, path: &str, node: Node, perm: u32) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.ensure_parents(&path)?;
        match self.entries.get_mut(&path) {
            Some(existing) if existing.node == Node::Dir && node == Node::Dir => {
                existing.perm = perm & 0o7777;
                Ok(())
            }
            Some(existing) => Err(CpioError::Conflict {
                path,
                existing: existing.node.kind_name(),
            }),
            None => {
                self.entries.insert(
                    path,
                    Entry {
                        node,
                        perm: perm & 0o7777,
                    },
                );
                Ok(())
            }
        }
    }

    fn ensure_parents(&mut self, path: &str) -> Result<(), CpioError> {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            match self.entries.get(parent) {
                Some(e) if e.node == Node::Dir => {}
                Some(e) => {
                    return Err(CpioError::Conflict {
                        path: parent.to_string(),
                        existing: e.node.kind_name(),
                    })
                }
                None => {
                    self.entries.insert(
                        parent.to_string(),
                        Entry {
                            node: Node::Dir,
                            perm: 0o755,
                        },
                    );
                }
            }
            end += pos + 1;
        }
        Ok(())
    }

    /// Writes the uncompressed newc archive to `out`.
    pub fn write_cpio<W: Write>(&self, out: &mut W) -> Result<(), CpioError> {
        let archive_err = |source| CpioError::Io {
            path: PathBuf::from("<archive>"),
            source,
        };
        // Inode numbers follow write order, starting at 1 (0 is the trailer's).
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, nlink, data, rdev) = match &entry.node {
                Node::Dir => (S_IFDIR | entry.perm, 2, Cow::Borrowed(&[][..]), (0, 0)),
                Node::File(FileData::Bytes(b)) => {
                    (S_IFREG | entry.perm, 1, Cow::Borrowed(&b[..]), (0, 0))
                }
                Node::File(FileData::Host(host)) => {
                    let b = fs::read(host).map_err(|source| CpioError::Io {
                        path: host.clone(),
                        source,
                    })?;
                    // The file may have grown since it was added.
                    if b.len() as u64 > MAX_FILE_SIZE {
                        return Err(CpioError::TooLarge {
                            path: path.clone(),
                            size: b.len() as u64,
                        });
                    }
                    (S_IFREG | entry.perm, 1, Cow::Owned(b), (0, 0))
                }
                Node::Symlink(t) => (S_IFLNK | entry.perm, 1, Cow::Borrowed(t.as_bytes()), (0, 0)),
                Node::CharDev { major, minor } => (
                    S_IFCHR | entry.perm,
                    1,
                    Cow::Borrowed(&[][..]),
                    (*major, *minor),
                ),
            };
            let header = Header {
                ino,
                mode,
                nlink,
                mtime: self.mtime,
                filesize: data.len() as u32,
                rdev,
                name: path,
            };
            header.write(out).map_err(archive_err)?;
            out.write_all(&data).map_err(archive_err)?;
            out.write_all(padding(data.len())).map_err(archive_err)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdev: (0, 0),
            name: "TRAILER!!!",
        };
        trailer.write(out).map_err(archive_err)?;
        Ok(())
    }

    /// Writes the tree as plain files under `root` (which must not exist yet), for a file-system
    /// image builder such as `mkfs.erofs` to read. Owners and times are not written (the image
    /// builder fixes them); directory modes are set last so a read-only directory still gets its
    /// contents. Device nodes are refused: an image of this tree gets them from devtmpfs.
    pub fn write_dir(&self, root: &Path) -> Result<(), CpioError> {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let at = |p: &Path| {
            let p = p.to_path_buf();
            move |source| CpioError::Io { path: p, source }
        };
        fs::create_dir(root).map_err(at(root))?;
        // BTreeMap order puts every directory before what it holds.
        for (path, entry) in &self.entries {
            let dest = root.join(path);
            match &entry.node {
                Node::Dir => fs::create_dir(&dest).map_err(at(&dest))?,
                Node::File(data) => {
                    match data {
                        FileData::Bytes(b) => fs::write(&dest, b).map_err(at(&dest))?,
                        FileData::Host(host) => {
                            fs::copy(host, &dest).map_err(at(&dest))?;
                        }
                    }
                    fs::set_permissions(&dest, fs::Permissions::from_mode(entry.perm))
                        .map_err(at(&dest))?;
                }
                Node::Symlink(target) => symlink(target, &dest).map_err(at(&dest))?,
                Node::CharDev { .. } => {
                    return Err(CpioError::BadPath {
                        path: path.clone(),
                        why: "a device node cannot be written to a directory tree",
                    })
                }
            }
        }
        for (path, entry) in self.entries.iter().rev() {
            if entry.node == Node::Dir {
                let dest = root.join(path);
                fs::set_permissions(&dest, fs::Permissions::from_mode(entry.perm))
                    .map_err(at(&dest))?;
            }
        }
        Ok(())
    }

    /// Writes the archive gzipped (fixed level, no name, header mtime 0) to `path`.
    pub fn write_gz(&self, path: &Path) -> Result<(), CpioError> {
        let io_err = |source| CpioError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = fs::File::create(path).map_err(io_err)?;
        let mut gz: GzEncoder<io::BufWriter<fs::File>> = GzBuilder::new()
            .mtime(0)
            .write(io::BufWriter::new(file), Compression::new(GZIP_LEVEL));
        self.write_cpio(&mut gz)?;
        let mut buffered = gz.finish().map_err(io_err)?;
        buffered.flush().map_err(io_err)?;
        buffered
            .into_inner()
            .map_err(|e| io_err(e.into_error()))?
            .sync_all()
            .map_err(io_err)
    }
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev: (u32, u32),
    name: &'a str,
}

impl Header<'_> {
    fn write<W: Write>(&self, out: &mut W) -> io::Result<()> {
        let namesize = self.name.len() + 1;
        // Fields in newc order: ino mode uid gid nlink mtime filesize devmajor devminor
        // rdevmajor rdevminor namesize check.
        let fields = [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            self.mtime,
            self.filesize,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            namesize as u32,
            0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        out.write_all(header.as_bytes())?;
        out.write_all(self.name.as_bytes())?;
        out.write_all(&[0])?;
        // The name is padded so that header + name is a multiple of four.
        out.write_all(padding(110 + namesize))
    }
}

fn padding(len: usize) -> &'static [u8] {
    &[0u8; 3][..(4 - len % 4) % 4]
}

/// Turns a user-supplied path into the archive's form: no leading `/`, no `.`/`..`/empty parts.
fn normalize(path: &str) -> Result<String, CpioError> {
    let bad = |why| CpioError::BadPath {
        path: path.to_string(),
        why,
    };
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty path (the root exists implicitly)"));
    }
    if trimmed.len() > MAX_PATH_LEN {
        return Err(bad("path too long"));
    }
    if trimmed.contains('\0') {
        return Err(bad("path contains NUL"));
    }
    if trimmed == "TRAILER!!!" {
        return Err(bad("reserved name"));
    }
    for part in trimmed.split('/') {
        match part {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("'.' and '..' components are not allowed")),
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// The gzip encoding used by [`Initramfs::write_gz`], for callers that gzip other artefacts the
/// same reproducible way.
pub fn gzip_bytes(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::new(GZIP_LEVEL));
    gz.write_all(data)?;
    gz.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// One parsed newc entry (test-only reader).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Parsed {
        pub ino: u32,
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub nlink: u32,
        pub mtime: u32,
        pub rdev: (u32, u32),
        pub name: String,
        pub data: Vec<u8>,
    }

    /// Parses a newc archive up to TRAILER!!!, checking magic and alignment on the way.
    pub fn parse(mut buf: &[u8]) -> Vec<Parsed> {
        let start_len = buf.len();
        let mut out = Vec::new();
        loop {
            assert_eq!((start_len - buf.len()) % 4, 0, "entry not 4-aligned");
            assert_eq!(&buf[..6], b"070701", "bad magic");
            let field = |i: usize| {
                let s = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let (ino, mode, uid, gid, nlink, mtime, size) = (
                field(0),
                field(1),
                field(2),
                field(3),
                field(4),
                field(5),
                field(6),
            );
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            assert_eq!(field(12), 0, "check field must be 0 in newc");
            let name_end = 110 + namesize;
            assert_eq!(buf[name_end - 1], 0, "name not NUL-terminated");
            let name = std::str::from_utf8(&buf[110..name_end - 1])
                .unwrap()
                .to_string();
            let data_start = name_end + (4 - name_end % 4) % 4;
            let data_end = data_start + size as usize;
            let data = buf[data_start..data_end].to_vec();
            let next = data_end + (4 - data_end % 4) % 4;
            if name == "TRAILER!!!" {
                assert_eq!(data_end, buf.len(), "bytes after trailer");
                return out;
            }
            out.push(Parsed {
                ino,
                mode,
                uid,
                gid,
                nlink,
                mtime,
                rdev,
                name,
                data,
            });
            buf = &buf[next..];
        }
    }

    fn sample() -> Initramfs {
        let mut fs = Initramfs::new();
        fs.add_file("/init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
            .unwrap();
        fs.add_file("etc/hostname", b"router\n".to_vec(), 0o644)
            .unwrap();
        fs.add_symlink("bin/sh", "busybox").unwrap();
        fs.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
        fs.add_char_dev("dev/null", 0o666, 1, 3).unwrap();
        fs.add_dir("proc", 0o555).unwrap();
        fs.add_file("a/b", b"x".to_vec(), 0o600).unwrap();
        fs.add_file("a-b", Vec::new(), 0o644).unwrap();
        fs
    }

    fn bytes(fs: &Initramfs) -> Vec<u8> {
        let mut v = Vec::new();
        fs.write_cpio(&mut v).unwrap();
        v
    }

    #[test]
    fn entries_are_sorted_rooted_and_numbered() {
        let parsed = parse(&bytes(&sample()));
        let names: Vec<&str> = parsed.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "a-b",
                "a/b",
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "dev/null",
                "etc",
                "etc/hostname",
                "init",
                "proc"
            ]
        );
        for (i, p) in parsed.iter().enumerate() {
            assert_eq!(p.ino, i as u32 + 1);
            assert_eq!((p.uid, p.gid, p.mtime), (0, 0, 0));
        }
        let get = |n: &str| parsed.iter().find(|p| p.name == n).unwrap().clone();
        assert_eq!(get("init").mode, 0o100755);
        assert_eq!(get("init").data, b"#!/bin/sh\necho hi\n");
        assert_eq!(get("bin").mode, 0o040755);
        assert_eq!(get("bin").nlink, 2);
        assert_eq!(get("proc").mode, 0o040555);
        assert_eq!(get("bin/sh").mode, 0o120777);
        assert_eq!(get("bin/sh").data, b"busybox");
        assert_eq!(get("dev/console").mode, 0o020600);
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get("dev/null").rdev, (1, 3));
        assert_eq!(get("a-b").data, b"");
    }

    #[test]
    fn mtime_is_applied_to_every_entry() {
        let parsed = parse(&bytes(&sample().with_mtime(1_700_000_000)));
        assert!(parsed.iter().all(|p| p.mtime == 1_700_000_000));
    }

    #[test]
    fn gnu_cpio_lists_the_same_entries() {
        let dir = std::env::temp_dir().join(format!("cpevisor-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("t.cpio");
        fs::write(&archive, bytes(&sample())).unwrap();
        let out = Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .expect("GNU cpio must be installed for this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let ours: Vec<String> = parse(&bytes(&sample()))
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(listed, ours);
        // Extraction must reproduce contents and link targets (no device nodes here, so this
        // works without root).
        let mut plain = sample();
        plain.entries.retain(|p, _| !p.starts_with("dev"));
        let plain_archive = dir.join("plain.cpio");
        fs::write(&plain_archive, bytes(&plain)).unwrap();
        let x = dir.join("x");
        fs::create_dir_all(&x).unwrap();
        let out = Command::new("cpio")
            .args(["-id", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&plain_archive)
            .current_dir(&x)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(x.join("init")).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(fs::read(x.join("a/b")).unwrap(), b"x");
        assert_eq!(
            fs::read_link(x.join("bin/sh")).unwrap(),
            PathBuf::from("busybox")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gzip_output_is_byte_identical_across_runs() {
        let dir = std::env::temp_dir().join(format!("cpevisor-gz-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.gz"), dir.join("b.gz"));
        sample().write_gz(&a).unwrap();
        sample().write_gz(&b).unwrap();
        let (ba, bb) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert_eq!(ba, bb);
        // gzip header: magic, deflate, no flags (no name), mtime 0.
        assert_eq!(&ba[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        let mut raw = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&ba[..]), &mut raw).unwrap();
        assert_eq!(raw, bytes(&sample()));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_files_are_read_at_write_time() {
        let dir = std::env::temp_dir().join(format!("cpevisor-host-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = dir.join("src");
        fs::write(&src, b"first").unwrap();
        let mut fs_tree = Initramfs::new();
        fs_tree.add_host_file("bin/tool", &src, 0o755).unwrap();
        fs::write(&src, b"second").unwrap();
        let parsed = parse(&bytes(&fs_tree));
        assert_eq!(parsed[1].data, b"second");
        assert!(fs_tree
            .add_host_file("bin/missing", &dir.join("nope"), 0o755)
            .is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_paths_and_conflicts_are_rejected() {
        let mut fs = Initramfs::new();
        for bad in ["", "/", "a//b", "a/../b", "./a", "a\0b", "TRAILER!!!"] {
            let err = fs.add_dir(bad, 0o755).unwrap_err();
            assert!(matches!(err, CpioError::BadPath { .. }), "{bad:?}: {err}");
        }
        fs.add_file("x", vec![1], 0o644).unwrap();
        let err = fs.add_file("x/y", vec![], 0o644).unwrap_err();
        assert!(err.to_string().contains("\"x\""), "{err}");
        assert!(fs.add_symlink("x", "y").is_err());
        assert!(fs.add_symlink("l", "").is_err());
        fs.add_dir("d", 0o700).unwrap();
        fs.add_dir("/d", 0o755).unwrap();
        assert_eq!(fs.len(), 2);
    }
}
