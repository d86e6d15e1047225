//! Guest images for `cpevisor-vmm` microVMs: a kernel, a root file system running a sample app,
//! and a small app disk, built reproducibly from the `make setup` cache.
//!
//! Output directory layout (`cpevisor-rootfs guest --out DIR`):
//! - `Image`              the guest kernel as the VMM loads it: aarch64 a raw arm64 `Image`
//!   (gunzipped when the source is gzip); x86_64 a bzImage
//! - the root file system, one of ([`GuestRoot`]):
//!   - `root.erofs`       (minimal kernel, the default there) an uncompressed erofs image for a
//!     read-only disk, the guest's first (`root=/dev/vda ro rootfstype=erofs`): busybox with its
//!     applet links, the app's init (`/init`, also `/sbin/init`) and files, empty mount points
//!   - `initramfs.cpio.gz` (stock kernels, or `--root initramfs`) the same tree as an initramfs,
//!     and for stock kernels the virtio and ext4 modules from the same kernel package with their
//!     load order
//! - `disk.img`           the app disk: ext2 made by `mke2fs -d` holding `data.txt` (the guest's
//!   second disk after an erofs root, its first with an initramfs)
//! - `manifest.txt`       what went in, with sha256 digests
//!
//! The disk is ext2 rather than a raw byte layout so the app reads its data through a real file
//! system, as apps will: the minimal guest kernel has ext2 built in, and stock kernels get it from
//! the ext4 module (which mounts ext2).

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::app_tree::TreeFile;
use crate::cpio::Initramfs;
use crate::firmware::{install_modules, FirmwareError, KernelPackage};
use cpevisor_types::Sha256Digest;

/// Largest kernel image, busybox or data file accepted.
const MAX_INPUT_SIZE: u64 = 256 << 20;
/// Largest data file put on the app disk (the disk is sized for it).
pub const MAX_DATA_SIZE: u64 = 1 << 20;
/// Largest kernel after decompression.
const MAX_IMAGE_SIZE: u64 = 256 << 20;
/// Fixed file-system UUID and directory hash seed, so two builds give the same disk bytes.
const DISK_UUID: &str = "c9e71505-0000-4000-8000-000000000001";

/// Guest architectures the VMM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    /// 64-bit ARM guests (arm64 `Image`).
    Aarch64,
    /// 64-bit x86 guests (bzImage).
    X86_64,
}

impl GuestArch {
    /// Parses the name used on the command line and in paths (`aarch64`, `x86_64`).
    pub fn parse(s: &str) -> Result<Self, FirmwareError> {
        match s {
            "aarch64" => Ok(GuestArch::Aarch64),
            "x86_64" => Ok(GuestArch::X86_64),
            other => Err(input(format!(
                "guest arch {other:?}: expected aarch64 or x86_64"
            ))),
        }
    }

    /// The name used on the command line and in paths.
    pub fn name(self) -> &'static str {
        match self {
            GuestArch::Aarch64 => "aarch64",
            GuestArch::X86_64 => "x86_64",
        }
    }

    /// Debian architecture: selects `$CACHE/busybox/<debian_arch>/busybox`.
    fn debian_arch(self) -> &'static str {
        match self {
            GuestArch::Aarch64 => "arm64",
            GuestArch::X86_64 => "amd64",
        }
    }

    /// Debian kernel flavour of the stock guest kernel.
    fn stock_flavour(self) -> &'static str {
        self.debian_arch()
    }

    /// ELF e_machine of binaries for this arch (both are 64-bit little-endian).
    fn elf_machine(self) -> u16 {
        match self {
            GuestArch::Aarch64 => 183,
            GuestArch::X86_64 => 62,
        }
    }

    /// The minimal kernel's file in `$CACHE/guest-kernel/<arch>/`.
    fn minimal_kernel_file(self) -> &'static str {
        match self {
            GuestArch::Aarch64 => "Image",
            GuestArch::X86_64 => "bzImage",
        }
    }
}

/// Which kernel the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestKernel {
    /// Debian's kernel package for the arch (virtio as modules, loaded by the init).
    Stock,
    /// The minimal kernel built from Debian's source into `$CACHE/guest-kernel/<arch>/`
    /// (virtio and ext2 built in, no modules).
    Minimal,
}

impl GuestKernel {
    /// Parses `stock` or `minimal`.
    pub fn parse(s: &str) -> Result<Self, FirmwareError> {
        match s {
            "stock" => Ok(GuestKernel::Stock),
            "minimal" => Ok(GuestKernel::Minimal),
            other => Err(input(format!(
                "guest kernel {other:?}: expected stock or minimal"
            ))),
        }
    }

    /// The name used on the command line and in paths (`stock`, `minimal`).
    pub fn name(&self) -> &'static str {
        match self {
            GuestKernel::Stock => "stock",
            GuestKernel::Minimal => "minimal",
        }
    }
}

/// Where the guest's root file system lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRoot {
    /// `initramfs.cpio.gz`: unpacked by the kernel into guest RAM (tmpfs), in every guest.
    Initramfs,
    /// `root.erofs`: an uncompressed erofs image on a read-only disk, its pages from the host's
    /// page cache, shared by every guest using it. Needs erofs built into the kernel (the
    /// minimal one; Debian's has it as a module, which only an initramfs could load).
    Erofs,
}

impl GuestRoot {
    /// Parses `initramfs` or `erofs`.
    pub fn parse(s: &str) -> Result<Self, FirmwareError> {
        match s {
            "initramfs" => Ok(GuestRoot::Initramfs),
            "erofs" => Ok(GuestRoot::Erofs),
            other => Err(input(format!(
                "guest root {other:?}: expected erofs or initramfs"
            ))),
        }
    }

    /// The name used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            GuestRoot::Initramfs => "initramfs",
            GuestRoot::Erofs => "erofs",
        }
    }

    /// The root for `kernel` when none is asked for: erofs where the kernel has it built in.
    pub fn default_for(kernel: &GuestKernel) -> Self {
        match kernel {
            GuestKernel::Minimal => GuestRoot::Erofs,
            GuestKernel::Stock => GuestRoot::Initramfs,
        }
    }

    /// The root file system's file in the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            GuestRoot::Initramfs => "initramfs.cpio.gz",
            GuestRoot::Erofs => "root.erofs",
        }
    }
}

/// A sample app: its init and files, compiled into the builder.
struct App {
    name: &'static str,
    init: &'static str,
    /// (path in the initramfs, contents, mode)
    files: &'static [(&'static str, &'static str, u32)],
    /// Empty directories the app needs.
    dirs: &'static [&'static str],
    /// Default data file for the disk.
    data: &'static str,
    /// The data file's name on the disk (the app reads it as `/data/<name>`).
    data_name: &'static str,
    /// The file a prepared tree (`--tree`, [`crate::app_tree`]) must hold: the app's server, an
    /// ELF of the guest's arch. None: the app takes no tree.
    tree_binary: Option<&'static str>,
    /// Modules a stock kernel must load (dependencies are added).
    modules: &'static [&'static str],
}

/// Modules a stock kernel loads for every sample app (dependencies are added).
const STOCK_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
    "ext4",
    // ext4 asks the crypto API for crc32c at mount time, even for ext2.
    "crc32c_generic",
];

const APPS: &[App] = &[
    App {
        name: "status",
        init: include_str!("../files/guest/status/init"),
        files: &[
            // busybox httpd runs /cgi-bin/index.cgi for a directory without index.html: that
            // makes `/status` (redirected to `/status/`) a live page.
            (
                "www/cgi-bin/index.cgi",
                include_str!("../files/guest/status/status.cgi"),
                0o755,
            ),
            (
                "www/cgi-bin/poweroff",
                include_str!("../files/guest/status/poweroff.cgi"),
                0o755,
            ),
            (
                "www/cgi-bin/write",
                include_str!("../files/guest/status/write.cgi"),
                0o755,
            ),
            // Where the guest's memory goes (the density figures, docs/density.md).
            (
                "www/cgi-bin/meminfo",
                include_str!("../files/guest/status/meminfo.cgi"),
                0o755,
            ),
            // Memory taken and given back on request (the balloon's end-to-end test).
            (
                "www/cgi-bin/alloc",
                include_str!("../files/guest/status/alloc.cgi"),
                0o755,
            ),
            // The clean power-off: the power button's watcher and the poweroff CGI run it.
            (
                "sbin/app-shutdown",
                include_str!("../files/guest/status/shutdown"),
                0o755,
            ),
        ],
        // Mount points: an erofs root cannot make them at boot.
        dirs: &["www/status", "data", "tmp", "run"],
        data: include_str!("../files/guest/status/data.txt"),
        data_name: "data.txt",
        tree_binary: None,
        modules: STOCK_MODULES,
    },
    App {
        // Debian's dnsmasq as a filtering DNS forwarder on port 53 (rootfs/files/dns-filter/): the
        // server and its libraries come from the tree of scripts/dns-filter-tree.sh.
        name: "dns-filter",
        init: include_str!("../files/guest/dns-filter/init"),
        files: &[
            (
                "bin/dns-filter",
                include_str!("../files/dns-filter/dns-filter"),
                0o755,
            ),
            (
                "etc/dns-filter/blocklist",
                include_str!("../files/dns-filter/blocklist"),
                0o644,
            ),
            (
                "sbin/app-shutdown",
                include_str!("../files/guest/status/shutdown"),
                0o755,
            ),
        ],
        dirs: &["data", "tmp", "run"],
        // The app disk carries the block list, which the operator then edits on the volume.
        data: include_str!("../files/dns-filter/blocklist"),
        data_name: "blocklist",
        tree_binary: Some("usr/sbin/dnsmasq"),
        modules: STOCK_MODULES,
    },
];

/// Stock-kernel modules for the VMM's power button, which every guest should watch (the VMM's
/// stop request, rootfs/files/guest/README.md): Debian builds the input event interface and the
/// button drivers as modules. aarch64: gpio-keys on the PL061 (built in); x86_64: the ACPI
/// button driver (the GED that notifies it is built in).
pub fn power_button_modules(arch: GuestArch) -> &'static [&'static str] {
    match arch {
        GuestArch::Aarch64 => &["evdev", "gpio_keys"],
        GuestArch::X86_64 => &["evdev", "button"],
    }
}

/// Names of the apps `guest --app` accepts.
pub fn app_names() -> Vec<&'static str> {
    APPS.iter().map(|a| a.name).collect()
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// The guest's architecture.
    pub arch: GuestArch,
    /// Which sample app's init and files go in (one of `app_names()`).
    pub app: String,
    /// Debian's kernel or the project's minimal one.
    pub kernel: GuestKernel,
    /// How the root file system is shipped ([`GuestRoot::default_for`] the kernel, usually).
    pub root: GuestRoot,
    /// Contents of the disk's data file (`data.txt`, the dns-filter's `blocklist`); `None`
    /// takes the app's default.
    pub data: Option<Vec<u8>>,
}

/// Where inputs come from and how outputs are stamped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestInputs {
    /// The `make setup` cache.
    pub cache: PathBuf,
    /// mtime of every initramfs entry and disk inode (0, or `SOURCE_DATE_EPOCH`).
    pub mtime: u32,
}

/// What a guest build produced, as written to `manifest.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestManifest {
    /// The guest's architecture (`aarch64`).
    pub arch: String,
    /// The sample app built in.
    pub app: String,
    /// `stock` or `minimal`.
    pub kernel: String,
    /// Kernel release for stock kernels; the cache path for the minimal one.
    pub kernel_source: String,
    /// SHA-256 of the kernel image, hex.
    pub image_sha256: String,
    /// How the root file system is shipped; its file is `root.file_name()`.
    pub root: GuestRoot,
    /// SHA-256 of the root file system's file (initramfs or erofs image), hex.
    pub root_sha256: String,
    /// SHA-256 of the ext2 data disk, hex.
    pub disk_sha256: String,
    /// Modules in load order (empty for the minimal kernel).
    pub modules: Vec<String>,
}

impl GuestManifest {
    /// The manifest as `key=value` lines, the format `manifest.txt` is written in.
    pub fn to_text(&self) -> String {
        let mut s = String::from("# cpevisor guest image manifest\n");
        s += &format!(
            "arch={}\napp={}\nkernel={}\nkernel_source={}\n",
            self.arch, self.app, self.kernel, self.kernel_source
        );
        s += &format!(
            "image_sha256={}\nroot={}\nroot_file={}\nroot_sha256={}\ndisk_sha256={}\n",
            self.image_sha256,
            self.root.name(),
            self.root.file_name(),
            self.root_sha256,
            self.disk_sha256
        );
        for m in &self.modules {
            s += &format!("module={m}\n");
        }
        s
    }
}

/// An error about the inputs (message as given).
fn input(msg: String) -> FirmwareError {
    FirmwareError::Input(msg)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> FirmwareError + '_ {
    move |source| FirmwareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a regular file of at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, FirmwareError> {
    let meta = fs::metadata(path).map_err(io_at(path))?;
    if !meta.is_file() {
        return Err(input(format!("{}: not a regular file", path.display())));
    }
    if meta.len() > limit {
        return Err(input(format!(
            "{}: {} bytes, larger than the {limit}-byte limit",
            path.display(),
            meta.len()
        )));
    }
    fs::read(path).map_err(io_at(path))
}

/// Checks that busybox is a little-endian 64-bit ELF for `arch`.
fn check_busybox(bytes: &[u8], arch: GuestArch, path: &Path) -> Result<(), FirmwareError> {
    let bad = |why: String| input(format!("{}: {why}", path.display()));
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(bad("not an ELF binary".into()));
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if bytes[4] != 2 || bytes[5] != 1 || machine != arch.elf_machine() {
        return Err(bad(format!(
            "ELF class {} data {} machine {machine}, but a {} guest needs 64-bit little-endian machine {}",
            bytes[4],
            bytes[5],
            arch.name(),
            arch.elf_machine()
        )));
    }
    Ok(())
}

/// Turns the kernel file into what the VMM loads: a raw arm64 `Image` (gunzipped if needed) or
/// an x86 bzImage, each checked by its boot-protocol magic so a wrong file fails here.
pub fn guest_kernel_image(
    bytes: Vec<u8>,
    arch: GuestArch,
    what: &Path,
) -> Result<Vec<u8>, FirmwareError> {
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_IMAGE_SIZE + 1)
            .read_to_end(&mut out)
            .map_err(|e| input(format!("{}: bad gzip data: {e}", what.display())))?;
        if out.len() as u64 > MAX_IMAGE_SIZE {
            return Err(input(format!(
                "{}: decompresses to more than {MAX_IMAGE_SIZE} bytes",
                what.display()
            )));
        }
        out
    } else {
        bytes
    };
    let ok = match arch {
        // arm64 Image header: magic "ARM\x64" at offset 0x38.
        GuestArch::Aarch64 => bytes.get(0x38..0x3c) == Some(b"ARM\x64"),
        // x86 boot protocol setup header: "HdrS" at 0x202.
        GuestArch::X86_64 => bytes.get(0x202..0x206) == Some(b"HdrS"),
    };
    if !ok {
        return Err(input(format!(
            "{}: not an {} kernel ({})",
            what.display(),
            arch.name(),
            match arch {
                GuestArch::Aarch64 => "no arm64 Image magic at 0x38",
                GuestArch::X86_64 => "no bzImage HdrS magic at 0x202",
            }
        )));
    }
    Ok(bytes)
}

/// Writes `bytes` to `dir/name` through a temporary file, so a crash never leaves half a file
/// under the final name.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FirmwareError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    fs::write(&tmp, bytes).map_err(io_at(&tmp))?;
    fs::rename(&tmp, &dest).map_err(io_at(&dest))
}

/// Builds the app disk: an ext2 image holding `data.txt`, made by `mke2fs -d` with a fixed UUID,
/// hash seed and time so it is reproducible.
pub fn build_disk(data: &[u8], mtime: u32, out: &Path) -> Result<(), FirmwareError> {
    build_disk_file("data.txt", data, mtime, out)
}

/// [`build_disk`] with the file named `name` (a plain file name) instead of `data.txt`.
fn build_disk_file(name: &str, data: &[u8], mtime: u32, out: &Path) -> Result<(), FirmwareError> {
    if data.len() as u64 > MAX_DATA_SIZE {
        return Err(input(format!(
            "app data file: {} bytes, larger than the {MAX_DATA_SIZE}-byte limit",
            data.len()
        )));
    }
    // mke2fs and debugfs take E2FSPROGS_FAKE_TIME=0 as unset (and then stamp the real time), so
    // the epoch itself is moved to 1 s.
    let mtime = mtime.max(1);
    let parent = out
        .parent()
        .ok_or_else(|| input(format!("{}: no parent directory", out.display())))?;
    let staging = parent.join(".disk-staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    fs::create_dir_all(&staging).map_err(io_at(&staging))?;
    let data_path = staging.join(name);
    fs::write(&data_path, data).map_err(io_at(&data_path))?;
    // mke2fs -d copies the source's times: pin them.
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.into());
    for p in [&data_path, &staging] {
        let f = fs::File::open(p).map_err(io_at(p))?;
        f.set_times(fs::FileTimes::new().set_accessed(when).set_modified(when))
            .map_err(io_at(p))?;
    }
    // 1 KiB blocks, room for the data plus file-system overhead.
    let blocks = 256 + (data.len() as u64).div_ceil(1024) * 2;
    let tmp = parent.join(".disk.img.tmp");
    let _ = fs::remove_file(&tmp);
    let result = Command::new("mke2fs")
        .args([
            "-q", "-F", "-t", "ext2", "-b", "1024", "-N", "16", "-m", "0",
        ])
        .args(["-L", "cpevisor-app", "-U", DISK_UUID])
        .arg("-E")
        .arg(format!("hash_seed={DISK_UUID},root_owner=0:0"))
        .arg("-d")
        .arg(&staging)
        .arg(&tmp)
        .arg(blocks.to_string())
        .env("E2FSPROGS_FAKE_TIME", mtime.to_string())
        .env("MKE2FS_CONFIG", "/dev/null")
        .output();
    let output = result.map_err(|e| {
        input(format!(
            "cannot run mke2fs (install e2fsprogs) to build the app disk: {e}"
        ))
    });
    let output = match output {
        Ok(o) if o.status.success() => Ok(o),
        Ok(o) => Err(input(format!(
            "mke2fs failed ({}) building {}: {}",
            o.status,
            out.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Err(e) => Err(e),
    };
    // mke2fs -d copies each source inode's ctime and atime (which reading it just updated):
    // pin them with debugfs so the image bytes depend on the inputs only.
    let pinned = output.and_then(|_| pin_inode_times(&staging, &tmp, name, mtime));
    let _ = fs::remove_dir_all(&staging);
    pinned?;
    fs::rename(&tmp, out).map_err(io_at(out))
}

/// Sets atime and ctime of the disk's inodes to `mtime` with `debugfs -w`.
fn pin_inode_times(
    staging: &Path,
    image: &Path,
    name: &str,
    mtime: u32,
) -> Result<(), FirmwareError> {
    let script = staging.join("pin-times.debugfs");
    let mut text = String::new();
    for inode in ["/".to_string(), format!("/{name}")] {
        for field in ["atime", "ctime"] {
            text += &format!("set_inode_field {inode} {field} @{mtime}\n");
        }
    }
    fs::write(&script, text).map_err(io_at(&script))?;
    let output = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(image)
        .env("E2FSPROGS_FAKE_TIME", mtime.to_string())
        .output()
        .map_err(|e| input(format!("cannot run debugfs (install e2fsprogs): {e}")))?;
    // debugfs reports failed requests on stderr but still exits 0; its banner goes there too.
    let errors: Vec<&str> = std::str::from_utf8(&output.stderr)
        .unwrap_or("")
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !output.status.success() || !errors.is_empty() {
        return Err(input(format!(
            "debugfs failed ({}) pinning times in {}: {}",
            output.status,
            image.display(),
            errors.join("; ")
        )));
    }
    Ok(())
}

/// An app with a server from a prepared tree gets one holding that server, built for the arch;
/// an app without gets none.
fn check_tree(app: &App, spec: &GuestSpec, tree: &[TreeFile]) -> Result<(), FirmwareError> {
    match app.tree_binary {
        None if tree.is_empty() => Ok(()),
        None => Err(input(format!("app {} takes no --tree", app.name))),
        Some(bin) => {
            let server = tree.iter().find(|f| f.path == bin).ok_or_else(|| {
                input(format!(
                    "app {} needs --tree DIR holding {bin} (scripts/dns-filter-tree.sh {})",
                    app.name,
                    spec.arch.name()
                ))
            })?;
            check_busybox(&server.data, spec.arch, Path::new(bin))
        }
    }
}

fn add_base_files(fs: &mut Initramfs, app: &App, root: GuestRoot) -> Result<(), FirmwareError> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc",
    ] {
        fs.add_dir(dir, 0o755)?;
    }
    for dir in app.dirs {
        fs.add_dir(dir, if *dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    match root {
        // The kernel opens /dev/console before init runs, so it must exist before devtmpfs.
        GuestRoot::Initramfs => {
            fs.add_char_dev("dev/console", 0o600, 5, 1)?;
            fs.add_char_dev("dev/null", 0o666, 1, 3)?;
        }
        // The kernel opens the console on its built-in rootfs before it mounts this root, and
        // mounts devtmpfs on /dev itself (CONFIG_DEVTMPFS_MOUNT). It runs /sbin/init by
        // default: no `init=` on the command line.
        GuestRoot::Erofs => fs.add_symlink("sbin/init", "/init")?,
    }
    fs.add_file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n".to_vec(), 0o644)?;
    fs.add_file("etc/group", b"root:x:0:\n".to_vec(), 0o644)?;
    fs.add_file(
        "etc/hostname",
        format!("{}-app\n", app.name).into_bytes(),
        0o644,
    )?;
    fs.add_file("init", app.init.as_bytes().to_vec(), 0o755)?;
    // What every app's init sources before it starts its service.
    fs.add_file(
        "lib/cpevisor/boot",
        include_bytes!("../files/guest/common/boot").to_vec(),
        0o644,
    )?;
    for (path, text, mode) in app.files {
        fs.add_file(path, text.as_bytes().to_vec(), *mode)?;
    }
    Ok(())
}

/// Builds the guest images for `spec` into `out` and returns the manifest.
pub fn build_guest(
    spec: &GuestSpec,
    inputs: &GuestInputs,
    out: &Path,
) -> Result<GuestManifest, FirmwareError> {
    build_guest_with_tree(spec, &[], inputs, out)
}

/// [`build_guest`] with the files of a prepared tree (`--tree`,
/// [`crate::app_tree::read_tree`]) in the root file system: the server an app like
/// `dns-filter` runs and its shared libraries. An app that needs one refuses to build without.
pub fn build_guest_with_tree(
    spec: &GuestSpec,
    tree: &[TreeFile],
    inputs: &GuestInputs,
    out: &Path,
) -> Result<GuestManifest, FirmwareError> {
    let app = APPS.iter().find(|a| a.name == spec.app).ok_or_else(|| {
        input(format!(
            "unknown app {:?}: expected one of {}",
            spec.app,
            app_names().join(", ")
        ))
    })?;
    let arch = spec.arch;
    if spec.root == GuestRoot::Erofs && spec.kernel == GuestKernel::Stock {
        return Err(input(
            "an erofs root needs erofs built into the kernel: Debian's stock kernel has it as a \
             module, which only an initramfs could load (use --root initramfs)"
                .into(),
        ));
    }

    let busybox_path = inputs
        .cache
        .join("busybox")
        .join(arch.debian_arch())
        .join("busybox");
    if !busybox_path.exists() {
        return Err(input(format!(
            "{} is missing: run `make setup` to fetch busybox for {}",
            busybox_path.display(),
            arch.debian_arch()
        )));
    }
    let busybox = read_bounded(&busybox_path, MAX_INPUT_SIZE)?;
    check_busybox(&busybox, arch, &busybox_path)?;
    // A read-only root cannot take `busybox --install` at boot: the links are made here.
    let applets = match spec.root {
        GuestRoot::Erofs => crate::erofs::busybox_applets(&busybox)?,
        GuestRoot::Initramfs => Vec::new(),
    };

    check_tree(app, spec, tree)?;
    let mut fs_tree = Initramfs::new().with_mtime(inputs.mtime);
    add_base_files(&mut fs_tree, app, spec.root)?;
    for f in tree {
        if fs_tree.contains(&f.path) {
            return Err(input(format!(
                "tree file {} would replace the app's own",
                f.path
            )));
        }
        fs_tree.add_file(&f.path, f.data.clone(), f.mode)?;
    }
    fs_tree.add_file("bin/busybox", busybox, 0o755)?;
    fs_tree.add_symlink("bin/sh", "busybox")?;
    crate::erofs::add_applet_links(&mut fs_tree, &applets)?;

    let (kernel_path, kernel_source, modules) = match spec.kernel {
        GuestKernel::Stock => {
            let package = KernelPackage::from_cache(&inputs.cache, arch.stock_flavour())?;
            let names: Vec<String> = app
                .modules
                .iter()
                .chain(power_button_modules(arch))
                .map(|m| m.to_string())
                .collect();
            let (_, installed) = install_modules(
                &mut fs_tree,
                &package,
                &names,
                crate::firmware::LOAD_ORDER_PATH,
            )?;
            let modules = installed.into_iter().map(|m| m.name).collect();
            (package.image.clone(), package.release.clone(), modules)
        }
        GuestKernel::Minimal => {
            let path = inputs
                .cache
                .join("guest-kernel")
                .join(arch.name())
                .join(arch.minimal_kernel_file());
            if !path.is_file() {
                return Err(input(format!(
                    "{} is missing: build the minimal guest kernel first (`make guest-kernels`)",
                    path.display()
                )));
            }
            let source = path.display().to_string();
            (path, source, Vec::new())
        }
    };
    let image = guest_kernel_image(
        read_bounded(&kernel_path, MAX_INPUT_SIZE)?,
        arch,
        &kernel_path,
    )?;

    fs::create_dir_all(out).map_err(io_at(out))?;
    // Only this build's root file: a stale one of the other kind would read as part of it.
    for other in [GuestRoot::Initramfs, GuestRoot::Erofs] {
        let stale = out.join(other.file_name());
        if other != spec.root && stale.exists() {
            fs::remove_file(&stale).map_err(io_at(&stale))?;
        }
    }
    let root_path = out.join(spec.root.file_name());
    match spec.root {
        GuestRoot::Initramfs => {
            let tmp = out.join(".initramfs.cpio.gz.tmp");
            fs_tree.write_gz(&tmp)?;
            fs::rename(&tmp, &root_path).map_err(io_at(&root_path))?;
        }
        GuestRoot::Erofs => crate::erofs::build_erofs(&fs_tree, inputs.mtime, &root_path)?,
    }
    let root_bytes = fs::read(&root_path).map_err(io_at(&root_path))?;
    write_atomically(out, "Image", &image)?;

    let data = spec.data.as_deref().unwrap_or(app.data.as_bytes()).to_vec();
    let disk_path = out.join("disk.img");
    build_disk_file(app.data_name, &data, inputs.mtime, &disk_path)?;
    let disk = fs::read(&disk_path).map_err(io_at(&disk_path))?;

    let manifest = GuestManifest {
        arch: arch.name().to_string(),
        app: app.name.to_string(),
        kernel: spec.kernel.name().to_string(),
        kernel_source,
        image_sha256: Sha256Digest::of(&image).hex(),
        root: spec.root,
        root_sha256: Sha256Digest::of(&root_bytes).hex(),
        disk_sha256: Sha256Digest::of(&disk).hex(),
        modules,
    };
    write_atomically(out, "manifest.txt", manifest.to_text().as_bytes())?;
    Ok(manifest)
}

impl fmt::Display for GuestManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} guest, app {}, {} kernel ({}), {} root",
            self.arch,
            self.app,
            self.kernel,
            self.kernel_source,
            self.root.name()
        )
    }
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
