//! Board firmware: the Debian kernel of the board's flavour plus an initramfs with busybox, the
//! project's binaries, the kernel modules the board needs and an init, all built reproducibly.
//!
//! Output directory layout:
//! - `kernel`             the kernel image exactly as Debian ships it (`vmlinuz-*` or `vmlinux-*`)
//! - `initramfs.cpio.gz`  the initramfs
//! - `manifest.txt`       what went in, with sha256 digests (`key=value` lines)

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cpevisor_types::Sha256Digest;

use crate::cpio::{CpioError, Initramfs};
use crate::modules::{DependencyIndex, ModuleError, ModulePlan};

/// The init template; `@BOARD@` and `@ARCH@` are substituted at build time.
pub const INIT_TEMPLATE: &str = include_str!("../files/init");
/// Where the init finds its module load order inside the initramfs (`name path` per line).
pub const LOAD_ORDER_PATH: &str = "etc/cpevisor/modules.load";
/// Largest kernel image, busybox or project binary accepted from the cache.
const MAX_INPUT_SIZE: u64 = 256 << 20;
/// Largest board name / arch / release accepted (they become file names and shell words).
const MAX_WORD_LEN: usize = 64;
/// Where the agent looks for trusted signer keys (`*.pub`, see agent/PACKAGE.md).
pub const TRUSTED_KEYS_DIR: &str = "etc/cpevisor/keys";
/// Largest public key file accepted: 64 hex digits and a newline, with room for a CRLF.
const MAX_KEY_FILE_SIZE: u64 = 256;
/// Most trusted keys one firmware carries (the agent itself accepts 64).
const MAX_TRUSTED_KEYS: usize = 16;

/// What to build, independent of where the board description came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareSpec {
    /// Board profile name (`qemu-virt-a53`); also the hostname.
    pub board: String,
    /// Architecture as the board profiles name it: aarch64, armv7, mipsel, mips64el, x86_64.
    pub arch: String,
    /// Debian architecture (selects `$CACHE/busybox/<debian_arch>/busybox`).
    pub debian_arch: String,
    /// Debian kernel flavour (selects `$CACHE/kernel/<flavour>/`).
    pub kernel_flavour: String,
    /// Modules to load at boot; their dependencies are added.
    pub modules: Vec<String>,
    /// The board profile as JSON (`Board::to_json_text`), installed as
    /// `cpevisor_boards::INSTALLED_PROFILE` for the agent (`cpevisord --board`).
    pub board_json: String,
    /// The router's sides from the profile's `[network]`, installed as `/etc/cpevisor/network`
    /// for the init to source (see [`network_file`]); `None`: no such file.
    pub network: Option<String>,
}

/// Where the inputs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareInputs {
    /// The `make setup` cache (`kernel/<flavour>/{release,root/}`, `busybox/<debian_arch>/busybox`).
    pub cache: PathBuf,
    /// Directory of cross-built project binaries for the board's target; ELF files found there
    /// go to `/usr/bin` (symlinks there are skipped), and with the multi-call binary its applet
    /// symlinks. `None` builds a firmware without project binaries.
    pub bins: Option<PathBuf>,
    /// mtime stamped on every initramfs entry (0, or `SOURCE_DATE_EPOCH`).
    pub mtime: u32,
    /// A tree of plain files laid over the root (scripts/debian-tree.sh's `DIR/tree`: the
    /// board's `nft` with its shared libraries), read by [`crate::app_tree::read_tree`].
    pub tree: Option<PathBuf>,
}

/// An app signer's ed25519 public key that the firmware's agent trusts, as
/// `cpevisorctl keygen` writes it (`cpevisor-signing.pub`: 64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The 32-byte public key as 64 lowercase hex digits.
    pub public_hex: String,
}

impl TrustedKey {
    /// Parses a key file's text; `what` names the file in errors.
    pub fn parse(text: &str, what: &str) -> Result<TrustedKey, FirmwareError> {
        let hex = text.trim_end_matches(['\n', '\r']);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FirmwareError::Input(format!(
                "trusted key {what}: expected one line of 64 hex digits (an ed25519 public key \
                 from `cpevisorctl keygen`), found {} bytes",
                text.len()
            )));
        }
        Ok(TrustedKey {
            public_hex: hex.to_ascii_lowercase(),
        })
    }

    /// Reads and parses a key file.
    pub fn load(path: &Path) -> Result<TrustedKey, FirmwareError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if !meta.is_file() || meta.len() > MAX_KEY_FILE_SIZE {
            return Err(FirmwareError::Input(format!(
                "trusted key {}: must be a regular file of at most {MAX_KEY_FILE_SIZE} bytes",
                path.display()
            )));
        }
        let bytes = fs::read(path).map_err(io_err(path))?;
        let text = String::from_utf8(bytes).map_err(|_| {
            FirmwareError::Input(format!("trusted key {}: not UTF-8", path.display()))
        })?;
        TrustedKey::parse(&text, &path.display().to_string())
    }

    /// The agent's key id (first 16 hex digits of sha256 of the 32 key bytes), used as the file
    /// name so that several keys never collide and the name says which signer it is.
    pub fn id(&self) -> String {
        // `parse` took exactly 64 hex digits, so these are 32 bytes.
        let bytes = cpevisor_types::from_hex(&self.public_hex).unwrap_or_default();
        cpevisor_types::digest::signing_key_id(&bytes.try_into().unwrap_or([0; 32]))
    }

    /// Path inside the initramfs.
    pub fn install_path(&self) -> String {
        format!("{TRUSTED_KEYS_DIR}/{}.pub", self.id())
    }
}

/// Why a firmware could not be built; the message names the file, field or module concerned.
#[derive(Debug)]
pub enum FirmwareError {
    /// A wrong input: a board, a kernel package, a binary or a key that cannot be used.
    Input(String),
    /// Reading an input or writing an output failed.
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The initramfs archive could not be built.
    Cpio(CpioError),
    /// A kernel module or its dependencies could not be resolved.
    Modules(ModuleError),
}

impl fmt::Display for FirmwareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirmwareError::Input(msg) => f.write_str(msg),
            FirmwareError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            FirmwareError::Cpio(e) => write!(f, "initramfs: {e}"),
            FirmwareError::Modules(e) => write!(f, "kernel modules: {e}"),
        }
    }
}

impl std::error::Error for FirmwareError {}

impl From<CpioError> for FirmwareError {
    fn from(e: CpioError) -> Self {
        FirmwareError::Cpio(e)
    }
}

impl From<ModuleError> for FirmwareError {
    fn from(e: ModuleError) -> Self {
        FirmwareError::Modules(e)
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FirmwareError + '_ {
    move |source| FirmwareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `SOURCE_DATE_EPOCH` (reproducible-builds.org) if set, else 0.
pub fn source_date_epoch() -> Result<u32, FirmwareError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(std::env::VarError::NotPresent) => Ok(0),
        Ok(v) => v.trim().parse::<u32>().map_err(|_| {
            FirmwareError::Input(format!(
                "SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970 that fit in 32 bits"
            ))
        }),
        Err(e) => Err(FirmwareError::Input(format!("SOURCE_DATE_EPOCH: {e}"))),
    }
}

/// ELF identity expected of binaries for an architecture: (e_machine, is 64-bit). All supported
/// architectures are little-endian.
fn elf_identity(arch: &str) -> Option<(u16, bool)> {
    match arch {
        "aarch64" => Some((183, true)),
        "armv7" => Some((40, false)),
        "mipsel" => Some((8, false)),
        "mips64el" => Some((8, true)),
        "x86_64" => Some((62, true)),
        _ => None,
    }
}

/// Checks that `bytes` is a little-endian ELF executable for `arch`; `what` names it in errors.
fn check_elf(bytes: &[u8], arch: &str, what: &Path) -> Result<(), FirmwareError> {
    let (machine, is64) = elf_identity(arch)
        .ok_or_else(|| FirmwareError::Input(format!("unsupported architecture {arch:?}")))?;
    let bad = |why: String| FirmwareError::Input(format!("{}: {why}", what.display()));
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(bad("not an ELF binary".into()));
    }
    if bytes[5] != 1 {
        return Err(bad("big-endian ELF; expected little-endian".into()));
    }
    let found64 = bytes[4] == 2;
    let found_machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if found_machine != machine || found64 != is64 {
        return Err(bad(format!(
            "ELF for machine {found_machine} ({}-bit), but board arch {arch} needs machine {machine} ({}-bit)",
            if found64 { 64 } else { 32 },
            if is64 { 64 } else { 32 }
        )));
    }
    Ok(())
}

fn is_elf(path: &Path) -> Result<bool, FirmwareError> {
    use io::Read;
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"\x7fELF"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, FirmwareError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(FirmwareError::Input(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX_INPUT_SIZE {
        return Err(FirmwareError::Input(format!(
            "{}: {} bytes, larger than the {MAX_INPUT_SIZE}-byte limit",
            path.display(),
            meta.len()
        )));
    }
    fs::read(path).map_err(io_err(path))
}

/// A word that is safe as a file name, hostname and single-quoted shell word.
fn check_word(what: &str, value: &str) -> Result<(), FirmwareError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_WORD_LEN
        && !value.starts_with(['-', '.'])
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(FirmwareError::Input(format!(
            "{what} {value:?}: expected 1-{MAX_WORD_LEN} characters of [A-Za-z0-9._+-], not starting with '-' or '.'"
        )))
    }
}

/// Fills the init template; fails if a placeholder is left over (a template/builder mismatch).
pub fn render_init(template: &str, board: &str, arch: &str) -> Result<String, FirmwareError> {
    let text = template.replace("@BOARD@", board).replace("@ARCH@", arch);
    let mut rest = text.as_str();
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        let word_len = after
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || *b == b'_')
            .count();
        if word_len > 0 && after.as_bytes().get(word_len) == Some(&b'@') {
            return Err(FirmwareError::Input(format!(
                "init template: unknown placeholder @{}@",
                &after[..word_len]
            )));
        }
        rest = after;
    }
    Ok(text)
}

/// What a firmware build produced, as written to `manifest.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The board profile's name.
    pub board: String,
    /// The board's architecture (`aarch64`).
    pub arch: String,
    /// Debian kernel flavour (`arm64`).
    pub kernel_flavour: String,
    /// The kernel's release string (`6.1.0-50-arm64`), also the modules directory name.
    pub kernel_release: String,
    /// SHA-256 of the kernel image, hex.
    pub kernel_sha256: String,
    /// SHA-256 of the initramfs, hex.
    pub initramfs_sha256: String,
    /// SHA-256 of the busybox binary, hex.
    pub busybox_sha256: String,
    /// Installed modules, in load order.
    pub modules: Vec<InstalledModule>,
    /// Requested modules the kernel has built in.
    pub builtin: Vec<String>,
    /// (path inside the initramfs, sha256), sorted by path.
    pub binaries: Vec<(String, String)>,
    /// (path inside the initramfs, link target) of each applet symlink to the multi-call
    /// binary, sorted by path.
    pub links: Vec<(String, String)>,
    /// (path inside the initramfs, public key hex) of each trusted signer key.
    pub trusted_keys: Vec<(String, String)>,
}

impl Manifest {
    /// The manifest as `key=value` lines, the format `manifest.txt` is written in.
    pub fn to_text(&self) -> String {
        let mut s = String::from("# cpevisor firmware manifest\n");
        s += &format!("board={}\narch={}\n", self.board, self.arch);
        s += &format!(
            "kernel_flavour={}\nkernel_release={}\nkernel_sha256={}\n",
            self.kernel_flavour, self.kernel_release, self.kernel_sha256
        );
        s += &format!("initramfs_sha256={}\n", self.initramfs_sha256);
        s += &format!("busybox_sha256={}\n", self.busybox_sha256);
        for m in &self.modules {
            s += &format!("module={} path=/{} sha256={}\n", m.name, m.path, m.sha256);
        }
        for name in &self.builtin {
            s += &format!("builtin_module={name}\n");
        }
        for (path, sha) in &self.binaries {
            s += &format!("binary=/{path} sha256={sha}\n");
        }
        for (path, target) in &self.links {
            s += &format!("link=/{path} target={target}\n");
        }
        for (path, key) in &self.trusted_keys {
            s += &format!("trusted_key=/{path} public={key}\n");
        }
        s
    }
}

/// One Debian kernel package unpacked in the cache: `$CACHE/kernel/<flavour>/{release,root/}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPackage {
    /// `uname -r` of the kernel (`6.1.0-56-arm64`).
    pub release: String,
    /// The `dpkg-deb -x` tree (`boot/`, `lib/modules/<release>/`).
    pub root: PathBuf,
    /// The kernel image as Debian ships it: `boot/vmlinuz-<rel>` (arm, x86) or
    /// `boot/vmlinux-<rel>` (malta, an ELF).
    pub image: PathBuf,
}

impl KernelPackage {
    /// Finds the kernel of `flavour` in `cache`, with errors that say how to get it.
    pub fn from_cache(cache: &Path, flavour: &str) -> Result<Self, FirmwareError> {
        check_word("kernel flavour", flavour)?;
        let dir = cache.join("kernel").join(flavour);
        let release_path = dir.join("release");
        if !release_path.exists() {
            return Err(FirmwareError::Input(format!(
                "{} is missing: run `make setup` to fetch the {flavour} kernel",
                release_path.display()
            )));
        }
        let text = String::from_utf8(read_input(&release_path)?)
            .map_err(|_| FirmwareError::Input(format!("{}: not UTF-8", release_path.display())))?;
        let release = text.trim().to_string();
        check_word(
            &format!("{}: kernel release", release_path.display()),
            &release,
        )?;
        let root = dir.join("root");
        let boot = root.join("boot");
        let image = [format!("vmlinuz-{release}"), format!("vmlinux-{release}")]
            .into_iter()
            .map(|name| boot.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                FirmwareError::Input(format!(
                    "no kernel image vmlinuz-{release} or vmlinux-{release} in {}",
                    boot.display()
                ))
            })?;
        Ok(KernelPackage {
            release,
            root,
            image,
        })
    }

    /// `lib/modules/<release>` inside the unpacked package.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The device's multi-call binary (agent crate, agent/src/applet): installed once, with its
/// applets' names as symlinks to it, so code they share is on flash once.
pub const MULTICALL_BINARY: &str = "cpevisor";
/// The names the multi-call binary always answers to (`argv[0]`), each a symlink to it in
/// `/usr/bin`. Other applets (`cpevisor-vmm` on the KVM targets) are linked where the binaries
/// directory links them to it: `make cross` decides which a target's binary holds.
pub const MULTICALL_APPLETS: [&str; 2] = ["cpevisord", "cpevisorctl"];

/// The applet symlinks for the binaries found: (name, target) for each applet when the
/// multi-call binary is among them, sorted by name; an applet shipped as a binary of its own
/// beside it is a stale build directory (two copies of the same command), refused.
fn applet_links(
    binaries: &[(String, PathBuf)],
    dir: &Path,
) -> Result<Vec<(String, String)>, FirmwareError> {
    if !binaries.iter().any(|(n, _)| n == MULTICALL_BINARY) {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = MULTICALL_APPLETS.iter().map(|a| a.to_string()).collect();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let points_here = fs::read_link(entry.path())
            .map(|t| t.as_os_str() == MULTICALL_BINARY)
            .unwrap_or(false);
        if let (true, Some(name)) = (points_here, entry.file_name().to_str()) {
            check_word(&format!("applet link in {}", dir.display()), name)?;
            names.push(name.to_string());
        }
    }
    names.sort();
    names.dedup();
    let mut links = Vec::new();
    for applet in names {
        if binaries.iter().any(|(n, _)| *n == applet) {
            return Err(FirmwareError::Input(format!(
                "{} has both {MULTICALL_BINARY} and a separate {applet}: {applet} is an applet \
                 of {MULTICALL_BINARY} (stale build? rerun `make cross`)",
                dir.display()
            )));
        }
        links.push((applet, MULTICALL_BINARY.to_string()));
    }
    Ok(links)
}

/// Project binaries in `dir`: the ELF regular files, sorted by name (other files such as cargo's
/// `.d` dependency lists are skipped).
fn project_binaries(dir: &Path) -> Result<Vec<(String, PathBuf)>, FirmwareError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !entry.file_type().map_err(io_err(&path))?.is_file() || !is_elf(&path)? {
            continue;
        }
        check_word(&format!("binary name in {}", dir.display()), &name)?;
        found.push((name, path));
    }
    found.sort();
    Ok(found)
}

fn static_files(fs: &mut Initramfs, spec: &FirmwareSpec) -> Result<(), FirmwareError> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "data", "mnt", "var",
    ] {
        fs.add_dir(dir, 0o755)?;
    }
    fs.add_dir("tmp", 0o1777)?;
    fs.add_dir("root", 0o700)?;
    // The kernel opens /dev/console before init runs, so it must exist before devtmpfs.
    fs.add_char_dev("dev/console", 0o600, 5, 1)?;
    fs.add_char_dev("dev/null", 0o666, 1, 3)?;
    fs.add_file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    )?;
    fs.add_file("etc/group", b"root:x:0:\ntty:x:5:\n".to_vec(), 0o644)?;
    fs.add_file(
        "etc/hostname",
        format!("{}\n", spec.board).into_bytes(),
        0o644,
    )?;
    fs.add_file(
        "etc/profile",
        b"export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport HOME=/root\nPS1='\\h:\\w# '\n".to_vec(),
        0o644,
    )?;
    fs.add_file(
        "etc/cpevisor/board",
        format!("{}\n", spec.board).into_bytes(),
        0o644,
    )?;
    fs.add_file(
        cpevisor_boards::INSTALLED_PROFILE.trim_start_matches('/'),
        spec.board_json.as_bytes().to_vec(),
        0o644,
    )?;
    if let Some(network) = &spec.network {
        fs.add_file("etc/cpevisor/network", network.as_bytes().to_vec(), 0o644)?;
    }
    let init = render_init(INIT_TEMPLATE, &spec.board, &spec.arch)?;
    fs.add_file("init", init.into_bytes(), 0o755)?;
    Ok(())
}

/// One module as installed into an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModule {
    /// Module name as `modprobe` knows it (`virtio_net`).
    pub name: String,
    /// Path inside the initramfs, without the leading `/`.
    pub path: String,
    /// sha256 of the installed (uncompressed) bytes, hex.
    pub sha256: String,
}

/// Installs `names` and their dependencies from `kernel`'s modules tree into `fs`: uncompressed
/// under `lib/modules/<release>/`, with a `modules.dep` covering them, and a load-order file at
/// `load_order_path` (`name /path` lines, dependencies first) for an init to `insmod` in turn.
/// Shared by board firmware and guest images (which load virtio modules from the same package).
pub fn install_modules(
    fs: &mut Initramfs,
    kernel: &KernelPackage,
    names: &[String],
    load_order_path: &str,
) -> Result<(ModulePlan, Vec<InstalledModule>), FirmwareError> {
    let modules_dir = kernel.modules_dir();
    let mut index = DependencyIndex::open(&modules_dir)?;
    let plan = index.plan(names)?;
    let base = format!("lib/modules/{}", kernel.release);
    fs.add_dir(&base, 0o755)?;
    let mut load_order = String::new();
    let mut installed = Vec::new();
    for module in &plan.load_order {
        let bytes = module.read_uncompressed(&modules_dir)?;
        let path = format!("{base}/{}", module.installed_path());
        load_order += &format!("{} /{path}\n", module.name);
        installed.push(InstalledModule {
            name: module.name.clone(),
            path: path.clone(),
            sha256: Sha256Digest::of(&bytes).hex(),
        });
        fs.add_file(&path, bytes, 0o644)?;
    }
    fs.add_file(
        &format!("{base}/modules.dep"),
        plan.modules_dep(&index).into_bytes(),
        0o644,
    )?;
    fs.add_file(load_order_path, load_order.into_bytes(), 0o644)?;
    Ok((plan, installed))
}

/// Writes `bytes` to `dir/name` through a temporary file, so a crash never leaves half a file
/// under the final name.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FirmwareError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &dest).map_err(io_err(&dest))
}

/// Builds the firmware for `spec` into `out` and returns its manifest. Its agent trusts no
/// signer: every app install fails with 7036 (see [`build_firmware_with_keys`]).
pub fn build_firmware(
    spec: &FirmwareSpec,
    inputs: &FirmwareInputs,
    out: &Path,
) -> Result<Manifest, FirmwareError> {
    build_firmware_with_keys(spec, inputs, &[], out)
}

/// Builds the firmware with `trusted_keys` installed in `/etc/cpevisor/keys/<key id>.pub`,
/// where the agent reads the signer keys it accepts packages from.
pub fn build_firmware_with_keys(
    spec: &FirmwareSpec,
    inputs: &FirmwareInputs,
    trusted_keys: &[TrustedKey],
    out: &Path,
) -> Result<Manifest, FirmwareError> {
    if trusted_keys.len() > MAX_TRUSTED_KEYS {
        return Err(FirmwareError::Input(format!(
            "{} trusted keys: at most {MAX_TRUSTED_KEYS}",
            trusted_keys.len()
        )));
    }
    check_word("board name", &spec.board)?;
    check_word("arch", &spec.arch)?;
    check_word("Debian arch", &spec.debian_arch)?;
    check_word("kernel flavour", &spec.kernel_flavour)?;
    elf_identity(&spec.arch).ok_or_else(|| {
        FirmwareError::Input(format!(
            "board {}: unsupported arch {:?} (expected aarch64, armv7, mipsel, mips64el or x86_64)",
            spec.board, spec.arch
        ))
    })?;

    let package = KernelPackage::from_cache(&inputs.cache, &spec.kernel_flavour)?;
    let kernel = read_input(&package.image)?;

    let busybox_path = inputs
        .cache
        .join("busybox")
        .join(&spec.debian_arch)
        .join("busybox");
    if !busybox_path.exists() {
        return Err(FirmwareError::Input(format!(
            "{} is missing: run `make setup` to fetch busybox for {}",
            busybox_path.display(),
            spec.debian_arch
        )));
    }
    let busybox = read_input(&busybox_path)?;
    check_elf(&busybox, &spec.arch, &busybox_path)?;

    let mut fs = Initramfs::new().with_mtime(inputs.mtime);
    static_files(&mut fs, spec)?;
    let busybox_sha256 = Sha256Digest::of(&busybox).hex();
    fs.add_file("bin/busybox", busybox, 0o755)?;
    fs.add_symlink("bin/sh", "busybox")?;
    let (plan, modules) = install_modules(&mut fs, &package, &spec.modules, LOAD_ORDER_PATH)?;

    let mut binaries = Vec::new();
    let mut links = Vec::new();
    if let Some(dir) = &inputs.bins {
        if !dir.is_dir() {
            return Err(FirmwareError::Input(format!(
                "binaries directory {} does not exist (run `make cross`?)",
                dir.display()
            )));
        }
        let found = project_binaries(dir)?;
        for (name, target) in applet_links(&found, dir)? {
            let dest = format!("usr/bin/{name}");
            fs.add_symlink(&dest, &target)?;
            links.push((dest, target));
        }
        for (name, path) in found {
            let bytes = read_input(&path)?;
            check_elf(&bytes, &spec.arch, &path)?;
            let dest = format!("usr/bin/{name}");
            binaries.push((dest.clone(), Sha256Digest::of(&bytes).hex()));
            fs.add_file(&dest, bytes, 0o755)?;
        }
    }

    if let Some(dir) = &inputs.tree {
        let files = crate::app_tree::read_tree(dir)
            .map_err(|e| FirmwareError::Input(format!("--tree {}: {e}", dir.display())))?;
        for f in files {
            fs.add_file(&f.path, f.data, f.mode)?;
        }
    }

    let mut keys = Vec::new();
    if !trusted_keys.is_empty() {
        fs.add_dir(TRUSTED_KEYS_DIR, 0o755)?;
    }
    for key in trusted_keys {
        let path = key.install_path();
        if keys.iter().any(|(p, _)| *p == path) {
            return Err(FirmwareError::Input(format!(
                "trusted key {} given twice",
                key.public_hex
            )));
        }
        fs.add_file(&path, format!("{}\n", key.public_hex).into_bytes(), 0o644)?;
        keys.push((path, key.public_hex.clone()));
    }
    keys.sort();

    fs::create_dir_all(out).map_err(io_err(out))?;
    let initramfs_tmp = out.join(".initramfs.cpio.gz.tmp");
    fs.write_gz(&initramfs_tmp)?;
    let initramfs_path = out.join("initramfs.cpio.gz");
    fs::rename(&initramfs_tmp, &initramfs_path).map_err(io_err(&initramfs_path))?;
    let initramfs = fs::read(&initramfs_path).map_err(io_err(&initramfs_path))?;
    write_atomically(out, "kernel", &kernel)?;

    let manifest = Manifest {
        board: spec.board.clone(),
        arch: spec.arch.clone(),
        kernel_flavour: spec.kernel_flavour.clone(),
        kernel_release: package.release.clone(),
        kernel_sha256: Sha256Digest::of(&kernel).hex(),
        initramfs_sha256: Sha256Digest::of(&initramfs).hex(),
        busybox_sha256,
        modules,
        builtin: plan.builtin.clone(),
        binaries,
        links,
        trusted_keys: keys,
    };
    write_atomically(out, "manifest.txt", manifest.to_text().as_bytes())?;
    Ok(manifest)
}

#[cfg(test)]
#[path = "firmware_tests.rs"]
mod tests;

#[cfg(test)]
mod trusted_key_tests {
    use super::*;

    // `cpevisorctl keygen` output for a fixed seed: the id is the agent's key id of this key.
    const KEY: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    #[test]
    fn key_files_parse_and_are_named_by_key_id() {
        let k = TrustedKey::parse(&format!("{}\n", KEY.to_uppercase()), "k.pub").unwrap();
        assert_eq!(k.public_hex, KEY);
        // sha256 of the 32 key bytes, first 16 hex digits; agent/src/package/keys.rs pins the
        // same id for the same key.
        assert_eq!(k.id(), "21fe31dfa154a261");
        assert_eq!(
            k.install_path(),
            format!("etc/cpevisor/keys/{}.pub", k.id())
        );
    }

    #[test]
    fn bad_key_files_are_refused_with_the_file_named() {
        for bad in [
            "",
            "abc",
            &KEY[..63],
            &format!("{KEY}00"),
            &KEY.replace('d', "g"),
        ] {
            let e = TrustedKey::parse(bad, "bad.pub").unwrap_err().to_string();
            assert!(
                e.contains("bad.pub") && e.contains("64 hex"),
                "{bad:?}: {e}"
            );
        }
        let dir = std::env::temp_dir().join(format!("cpevisor-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.pub");
        fs::write(&big, vec![b'a'; 4096]).unwrap();
        let e = TrustedKey::load(&big).unwrap_err().to_string();
        assert!(e.contains("big.pub") && e.contains("at most"), "{e}");
        let e = TrustedKey::load(&dir.join("missing.pub"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pub"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
