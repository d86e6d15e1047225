//! App root filesystems for the agent's jail backend: a deterministic tar (the package's
//! `application/vnd.oci.image.layer.v1.tar` layer) holding a static busybox of the board's
//! architecture and one app's scripts. No kernel, no init: the jail runs the package's
//! `command` directly.
//!
//! Apps: `status` (the /status page of the microVM sample app, served by busybox httpd on
//! port 8080; its token ships in the rootfs at /etc/status/token), `memhog` (idles, then
//! allocates until its cgroup's memory.max kills it; the containment test's victim) and
//! `dns-filter` (Debian's dnsmasq as a filtering DNS forwarder, rootfs/files/dns-filter/; the
//! server and its shared libraries come from a prepared tree, `--tree`).
//! Only directories and regular files are written (no symlinks, devices or hard links), so any
//! tar reader can unpack them; the scripts call `/bin/busybox` by path for the same reason.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cpevisor_rootfs::app_tree::{parent_dirs, TreeFile};
use cpevisor_types::Sha256Digest;

/// Largest token file accepted for `status` (`--data`).
pub const MAX_TOKEN_SIZE: u64 = 4096;
/// Largest busybox accepted (Debian's busybox-static is ~2 MiB).
const MAX_BUSYBOX_SIZE: u64 = 16 << 20;
/// ustar's name field holds 100 bytes; every path written here is far shorter.
const MAX_TAR_NAME: usize = 99;

#[derive(Debug)]
pub enum JailAppError {
    Input(String),
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for JailAppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JailAppError::Input(m) => f.write_str(m),
            JailAppError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for JailAppError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JailAppError + '_ {
    move |source| JailAppError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The architectures a jail board can have, with Debian's name (the busybox cache directory)
/// and the ELF identity its binaries carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailArch {
    Aarch64,
    Armv7,
    Mipsel,
    Mips64el,
    X86_64,
}

impl JailArch {
    pub fn parse(s: &str) -> Result<JailArch, JailAppError> {
        Ok(match s {
            "aarch64" => JailArch::Aarch64,
            "armv7" => JailArch::Armv7,
            "mipsel" => JailArch::Mipsel,
            "mips64el" => JailArch::Mips64el,
            "x86_64" => JailArch::X86_64,
            _ => {
                return Err(JailAppError::Input(format!(
                    "--arch {s:?}: expected aarch64, armv7, mipsel, mips64el or x86_64"
                )))
            }
        })
    }

    /// The package config's `arch` value.
    pub fn as_str(self) -> &'static str {
        match self {
            JailArch::Aarch64 => "aarch64",
            JailArch::Armv7 => "armv7",
            JailArch::Mipsel => "mipsel",
            JailArch::Mips64el => "mips64el",
            JailArch::X86_64 => "x86_64",
        }
    }

    pub fn debian_arch(self) -> &'static str {
        match self {
            JailArch::Aarch64 => "arm64",
            JailArch::Armv7 => "armhf",
            JailArch::Mipsel => "mipsel",
            JailArch::Mips64el => "mips64el",
            JailArch::X86_64 => "amd64",
        }
    }

    /// (e_machine, 64-bit); all of them little-endian.
    fn elf_identity(self) -> (u16, bool) {
        match self {
            JailArch::Aarch64 => (183, true),
            JailArch::Armv7 => (40, false),
            JailArch::Mipsel => (8, false),
            JailArch::Mips64el => (8, true),
            JailArch::X86_64 => (62, true),
        }
    }

    /// Checks that `bytes` is a little-endian ELF executable for this architecture.
    pub fn check_elf(self, bytes: &[u8], what: &Path) -> Result<(), JailAppError> {
        let bad = |why: String| JailAppError::Input(format!("{}: {why}", what.display()));
        if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
            return Err(bad("not an ELF file".into()));
        }
        let (machine, is64) = self.elf_identity();
        let class64 = match bytes[4] {
            1 => false,
            2 => true,
            c => return Err(bad(format!("bad ELF class {c}"))),
        };
        if bytes[5] != 1 {
            return Err(bad("not little-endian".into()));
        }
        let got = u16::from_le_bytes([bytes[18], bytes[19]]);
        if got != machine || class64 != is64 {
            return Err(bad(format!(
                "ELF machine {got} ({}-bit) is not {} (machine {machine}, {}-bit)",
                if class64 { 64 } else { 32 },
                self.as_str(),
                if is64 { 64 } else { 32 }
            )));
        }
        Ok(())
    }
}

/// The apps this builder knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JailApp {
    Status,
    Memhog,
    DnsFilter,
}

impl JailApp {
    pub fn parse(s: &str) -> Result<JailApp, JailAppError> {
        match s {
            "status" => Ok(JailApp::Status),
            "memhog" => Ok(JailApp::Memhog),
            "dns-filter" => Ok(JailApp::DnsFilter),
            _ => Err(JailAppError::Input(format!(
                "--app {s:?}: expected status, memhog or dns-filter"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            JailApp::Status => "status",
            JailApp::Memhog => "memhog",
            JailApp::DnsFilter => "dns-filter",
        }
    }

    /// The file a prepared tree (`--tree`) must hold: the app's server, an ELF of the arch.
    /// None: the app takes no tree.
    pub fn tree_binary(self) -> Option<&'static str> {
        match self {
            JailApp::DnsFilter => Some("usr/sbin/dnsmasq"),
            JailApp::Status | JailApp::Memhog => None,
        }
    }

    /// Directories (mode 0755 unless noted) every mount point and app path needs. The jail
    /// mounts /proc, /dev, /tmp and /data over the empty ones.
    fn dirs(self) -> &'static [(&'static str, u32)] {
        const COMMON: &[(&str, u32)] = &[
            ("bin", 0o755),
            ("data", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("proc", 0o755),
            ("tmp", 0o1777),
        ];
        const STATUS: &[(&str, u32)] = &[
            ("bin", 0o755),
            ("data", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("etc/status", 0o755),
            ("proc", 0o755),
            ("tmp", 0o1777),
            ("www", 0o755),
            ("www/cgi-bin", 0o755),
            // busybox httpd runs /cgi-bin/index.cgi for a directory without index.html.
            ("www/status", 0o755),
        ];
        const DNS_FILTER: &[(&str, u32)] = &[
            ("bin", 0o755),
            ("data", 0o755),
            ("dev", 0o755),
            ("etc", 0o755),
            ("etc/dns-filter", 0o755),
            ("proc", 0o755),
            ("tmp", 0o1777),
        ];
        match self {
            JailApp::Status => STATUS,
            JailApp::Memhog => COMMON,
            JailApp::DnsFilter => DNS_FILTER,
        }
    }

    /// The app's own files: (path, contents, mode).
    fn files(self, token: &[u8]) -> Vec<(&'static str, Vec<u8>, u32)> {
        match self {
            JailApp::Status => vec![
                (
                    "bin/status",
                    include_bytes!("../files/jail/status/status").to_vec(),
                    0o755,
                ),
                ("etc/status/token", token.to_vec(), 0o644),
                (
                    "www/cgi-bin/index.cgi",
                    include_bytes!("../files/jail/status/status.cgi").to_vec(),
                    0o755,
                ),
                (
                    "www/cgi-bin/write",
                    include_bytes!("../files/jail/status/write.cgi").to_vec(),
                    0o755,
                ),
            ],
            JailApp::Memhog => vec![(
                "bin/memhog",
                include_bytes!("../files/jail/memhog/memhog").to_vec(),
                0o755,
            )],
            JailApp::DnsFilter => vec![
                (
                    "bin/dns-filter",
                    include_bytes!("../files/dns-filter/dns-filter").to_vec(),
                    0o755,
                ),
                (
                    "etc/dns-filter/blocklist",
                    include_bytes!("../files/dns-filter/blocklist").to_vec(),
                    0o644,
                ),
            ],
        }
    }

    /// The argv the package's config should name.
    pub fn command(self) -> &'static [&'static str] {
        match self {
            JailApp::Status => &["/bin/status", "8080"],
            JailApp::Memhog => &["/bin/memhog", "3"],
            // Port 1053: the jail has no capability to bind 53; the router's rules bring the
            // LAN's port 53 there. The upstream is the jail's default gateway (the router).
            JailApp::DnsFilter => &["/bin/dns-filter", "--port", "1053"],
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct JailAppSpec {
    pub arch: JailArch,
    pub app: JailApp,
    /// `status`'s token (/etc/status/token); None = the sample file.
    pub token: Option<Vec<u8>>,
    /// The prepared tree (`--tree`, [`cpevisor_rootfs::app_tree::read_tree`]) an app with a
    /// [`JailApp::tree_binary`] needs; empty for the others.
    pub tree: Vec<TreeFile>,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct JailAppManifest {
    pub arch: JailArch,
    pub app: JailApp,
    pub rootfs_sha256: String,
    pub rootfs_bytes: u64,
    pub busybox_sha256: String,
    /// Files taken from the prepared tree, and their bytes.
    pub tree_files: usize,
    pub tree_bytes: u64,
}

impl JailAppManifest {
    pub fn to_text(&self) -> String {
        format!(
            "# cpevisor jail app rootfs\napp={}\narch={}\ncommand={}\nrootfs=rootfs.tar \
             bytes={} sha256={}\nbusybox_sha256={}\ntree_files={} tree_bytes={}\n",
            self.app.name(),
            self.arch.as_str(),
            self.app.command().join(" "),
            self.rootfs_bytes,
            self.rootfs_sha256,
            self.busybox_sha256,
            self.tree_files,
            self.tree_bytes
        )
    }
}

impl fmt::Display for JailAppManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "jail app {} for {} (command {})",
            self.app.name(),
            self.arch.as_str(),
            self.app.command().join(" ")
        )
    }
}

/// The rootfs tar of `spec` with `busybox` (already read) as /bin/busybox; `mtime` for every
/// entry. Same inputs, same bytes.
pub fn rootfs_tar(spec: &JailAppSpec, busybox: &[u8], mtime: u32) -> Result<Vec<u8>, JailAppError> {
    let token: &[u8] = match &spec.token {
        Some(t) if t.len() as u64 > MAX_TOKEN_SIZE => {
            return Err(JailAppError::Input(format!(
                "token of {} bytes: at most {MAX_TOKEN_SIZE}",
                t.len()
            )))
        }
        Some(t) => t,
        None => include_bytes!("../files/jail/status/token"),
    };
    check_tree(spec)?;
    let mut tar = TarWriter::new(mtime);
    let mut entries: Vec<(String, Option<Vec<u8>>, u32)> = spec
        .app
        .dirs()
        .iter()
        .map(|(d, mode)| (d.to_string(), None, *mode))
        .collect();
    // The tree's directories, where the app's own list has not made them already.
    for dir in parent_dirs(&spec.tree) {
        if !entries.iter().any(|(p, _, _)| *p == dir) {
            entries.push((dir, None, 0o755));
        }
    }
    entries.push(("bin/busybox".into(), Some(busybox.to_vec()), 0o755));
    entries.push((
        "etc/passwd".into(),
        Some(b"root:x:0:0:root:/:/bin/busybox\n".to_vec()),
        0o644,
    ));
    entries.push(("etc/group".into(), Some(b"root:x:0:\n".to_vec()), 0o644));
    for (path, data, mode) in spec.app.files(token) {
        entries.push((path.into(), Some(data), mode));
    }
    for f in &spec.tree {
        if entries.iter().any(|(p, _, _)| *p == f.path) {
            return Err(JailAppError::Input(format!(
                "tree file {} would replace the app's own",
                f.path
            )));
        }
        entries.push((f.path.clone(), Some(f.data.clone()), f.mode));
    }
    // Sorted so a parent always precedes its children and the order never depends on the code
    // that listed them.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, data, mode) in entries {
        match data {
            None => tar.dir(&path, mode)?,
            Some(bytes) => tar.file(&path, &bytes, mode)?,
        }
    }
    Ok(tar.finish())
}

/// An app with a server from a prepared tree gets one holding that server, built for the arch;
/// an app without gets none.
fn check_tree(spec: &JailAppSpec) -> Result<(), JailAppError> {
    match spec.app.tree_binary() {
        None if spec.tree.is_empty() => Ok(()),
        None => Err(JailAppError::Input(format!(
            "app {} takes no --tree",
            spec.app.name()
        ))),
        Some(bin) => {
            let server = spec.tree.iter().find(|f| f.path == bin).ok_or_else(|| {
                JailAppError::Input(format!(
                    "app {} needs --tree DIR holding {bin} (scripts/dns-filter-tree.sh {})",
                    spec.app.name(),
                    spec.arch.as_str()
                ))
            })?;
            spec.arch.check_elf(&server.data, Path::new(bin))
        }
    }
}

/// Inputs from outside the repository.
#[derive(Debug, Clone)]
pub struct JailAppInputs {
    /// `$CPEVISOR_CACHE`: busybox under `busybox/<debian arch>/busybox`.
    pub cache: PathBuf,
    pub mtime: u32,
}

/// Builds `out/rootfs.tar` and `out/manifest.txt`.
pub fn build_jail_app(
    spec: &JailAppSpec,
    inputs: &JailAppInputs,
    out: &Path,
) -> Result<JailAppManifest, JailAppError> {
    let busybox_path = inputs
        .cache
        .join("busybox")
        .join(spec.arch.debian_arch())
        .join("busybox");
    let meta = fs::metadata(&busybox_path).map_err(|e| {
        JailAppError::Input(format!(
            "{}: {e} (run `make setup` to fetch busybox-static for {})",
            busybox_path.display(),
            spec.arch.debian_arch()
        ))
    })?;
    if !meta.is_file() || meta.len() > MAX_BUSYBOX_SIZE {
        return Err(JailAppError::Input(format!(
            "{}: must be a regular file of at most {MAX_BUSYBOX_SIZE} bytes",
            busybox_path.display()
        )));
    }
    let busybox = fs::read(&busybox_path).map_err(io_err(&busybox_path))?;
    spec.arch.check_elf(&busybox, &busybox_path)?;
    let tar = rootfs_tar(spec, &busybox, inputs.mtime)?;
    let manifest = JailAppManifest {
        arch: spec.arch,
        app: spec.app,
        rootfs_sha256: Sha256Digest::of(&tar).hex(),
        rootfs_bytes: tar.len() as u64,
        busybox_sha256: Sha256Digest::of(&busybox).hex(),
        tree_files: spec.tree.len(),
        tree_bytes: spec.tree.iter().map(|f| f.data.len() as u64).sum(),
    };
    fs::create_dir_all(out).map_err(io_err(out))?;
    write_atomically(out, "rootfs.tar", &tar)?;
    write_atomically(out, "manifest.txt", manifest.to_text().as_bytes())?;
    Ok(manifest)
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), JailAppError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &dest).map_err(io_err(&dest))
}

/// A minimal POSIX ustar writer: directories and regular files, owner root, one mtime.
struct TarWriter {
    out: Vec<u8>,
    mtime: u32,
}

impl TarWriter {
    fn new(mtime: u32) -> TarWriter {
        TarWriter {
            out: Vec::new(),
            mtime,
        }
    }

    fn dir(&mut self, path: &str, mode: u32) -> Result<(), JailAppError> {
        self.header(&format!("{path}/"), mode, 0, b'5')
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), JailAppError> {
        self.header(path, mode, data.len() as u64, b'0')?;
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.resize(self.out.len() + pad, 0);
        Ok(())
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, kind: u8) -> Result<(), JailAppError> {
        if name.is_empty() || name.len() > MAX_TAR_NAME || name.starts_with('/') {
            return Err(JailAppError::Input(format!(
                "tar entry {name:?}: must be a relative path of 1-{MAX_TAR_NAME} bytes"
            )));
        }
        // 11 octal digits: the size field's limit (8 GiB), far above any rootfs built here.
        if size >= 1 << 33 {
            return Err(JailAppError::Input(format!(
                "tar entry {name}: {size} bytes is over ustar's 8 GiB"
            )));
        }
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], 0); // uid
        octal(&mut h[116..124], 0); // gid
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], u64::from(self.mtime));
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        // The checksum is computed with its own field as spaces.
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        self.out.extend_from_slice(&h);
        Ok(())
    }

    /// The archive with its end marker (two zero blocks).
    fn finish(mut self) -> Vec<u8> {
        self.out.resize(self.out.len() + 1024, 0);
        self.out
    }
}

/// Zero-padded octal filling `field` but its last byte, which stays NUL.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
#[path = "jail_app_tests.rs"]
mod tests;
