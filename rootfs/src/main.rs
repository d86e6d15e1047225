//! `cpevisor-rootfs`: builds board firmware images reproducibly.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

mod jail_app;

use cpevisor_rootfs::board_spec::spec_for_board;
use cpevisor_rootfs::firmware::{
    build_firmware_with_keys, source_date_epoch, FirmwareInputs, TrustedKey,
};
use cpevisor_rootfs::guest::{
    build_guest_with_tree, GuestArch, GuestInputs, GuestKernel, GuestRoot, GuestSpec, MAX_DATA_SIZE,
};

const USAGE: &str = "\
usage: cpevisor-rootfs firmware --board NAME --out DIR [--bins DIR] [--cache DIR]
                                [--trusted-key FILE] [--tree DIR]
       cpevisor-rootfs guest --arch aarch64|x86_64 --app NAME --out DIR
                             [--kernel stock|minimal] [--root erofs|initramfs]
                             [--data FILE] [--tree DIR] [--cache DIR]
       cpevisor-rootfs jail-app --arch ARCH --app status|memhog|dns-filter --out DIR
                                [--data FILE] [--tree DIR] [--cache DIR]

Builds OUT/kernel, OUT/initramfs.cpio.gz and OUT/manifest.txt for board NAME (boards/NAME.toml).
  --bins DIR   cross-built project binaries for the board (target/cross/<rust_target>); every
               ELF file there goes to /usr/bin, the multi-call cpevisor with its applet
               symlinks (cpevisord, cpevisorctl). Without it the firmware has no project binaries.
  --cache DIR  kernels and busybox fetched by `make setup`
               (default: $CPEVISOR_CACHE, else ~/.cache/cpevisor)
  --trusted-key FILE  an app signer's public key (`cpevisorctl keygen`'s cpevisor-signing.pub)
               for the agent to trust, as /etc/cpevisor/keys/<key id>.pub. Without it the
               agent refuses every package (7036).
  --tree DIR   plain files laid over the root: the board's `nft` with its shared libraries
               (DIR/tree of scripts/debian-tree.sh nft nftables usr/sbin/nft ARCH)

guest: microVM images for cpevisor-vmm into OUT: Image (arm64 raw Image / x86_64 bzImage),
the root file system (busybox + the app), disk.img (ext2 holding data.txt) and manifest.txt.
Apps: status, dns-filter.
  --kernel     stock: Debian's kernel package (default); minimal: $CACHE/guest-kernel/<arch>/
  --root       erofs (default with the minimal kernel): root.erofs, an uncompressed erofs image
               for the guest's first disk, read-only (root=/dev/vda ro rootfstype=erofs), the
               app disk second; initramfs (default with, and the only one for, the stock
               kernel): initramfs.cpio.gz, with the stock kernel's virtio and ext4 modules
  --data FILE  contents of the disk's data file (default: the app's sample file): status's
               data.txt, dns-filter's blocklist
  --tree DIR   dns-filter (required): Debian's dnsmasq and its shared libraries, the tree of
               scripts/dns-filter-tree.sh ARCH (DIR/tree), put into the root file system
Two runs with the same inputs give byte-identical files; SOURCE_DATE_EPOCH sets the file times.

jail-app: an app root filesystem for the agent's jail backend into OUT: rootfs.tar (static
busybox of ARCH from $CACHE/busybox/<debian arch>/, the app's scripts; no kernel) and
manifest.txt (with the package's command). ARCH: aarch64 armv7 mipsel mips64el x86_64.
  --data FILE  status: its token, /etc/status/token (at most 4096 bytes)
  --tree DIR   dns-filter (required): as for guest";

struct FirmwareArgs {
    board: String,
    out: PathBuf,
    bins: Option<PathBuf>,
    cache: PathBuf,
    trusted_key: Option<PathBuf>,
    tree: Option<PathBuf>,
}

fn default_cache() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CPEVISOR_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or("neither --cache, CPEVISOR_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/cpevisor"))
}

/// Parses `--flag VALUE` pairs into the slots named by `flags`; every flag takes one value.
fn parse_flags<const N: usize>(
    args: &[String],
    flags: [&str; N],
) -> Result<[Option<String>; N], String> {
    let mut slots: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let i = flags
            .iter()
            .position(|f| f == flag)
            .ok_or_else(|| format!("unknown argument {flag:?}"))?;
        let value = it
            .next()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        if slots[i].replace(value.clone()).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    Ok(slots)
}

fn parse_firmware_args(args: &[String]) -> Result<FirmwareArgs, String> {
    let [board, out, bins, cache, trusted_key, tree] = parse_flags(
        args,
        [
            "--board",
            "--out",
            "--bins",
            "--cache",
            "--trusted-key",
            "--tree",
        ],
    )?;
    Ok(FirmwareArgs {
        board: board.ok_or("--board NAME is required")?,
        out: PathBuf::from(out.ok_or("--out DIR is required")?),
        bins: bins.map(PathBuf::from),
        cache: match cache {
            Some(c) => PathBuf::from(c),
            None => default_cache()?,
        },
        trusted_key: trusted_key.map(PathBuf::from),
        tree: tree.map(PathBuf::from),
    })
}

/// A failure, and whether the usage text helps with it.
enum Failure {
    Usage(String),
    Build(String),
}

fn run(args: &[String]) -> Result<(), Failure> {
    match args.first().map(String::as_str) {
        Some("firmware") => {}
        Some("guest") => return run_guest(&args[1..]),
        Some("jail-app") => return run_jail_app(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(other) => return Err(Failure::Usage(format!("unknown command {other:?}"))),
        None => return Err(Failure::Usage("no command given".into())),
    }
    let a = parse_firmware_args(&args[1..]).map_err(Failure::Usage)?;
    let build = |e: cpevisor_rootfs::FirmwareError| Failure::Build(e.to_string());
    let spec = spec_for_board(&a.board).map_err(build)?;
    let inputs = FirmwareInputs {
        cache: a.cache,
        bins: a.bins,
        mtime: source_date_epoch().map_err(build)?,
        tree: a.tree,
    };
    if inputs.bins.is_none() {
        eprintln!("cpevisor-rootfs: no --bins: the firmware will hold no project binaries");
    }
    let keys = match &a.trusted_key {
        Some(path) => vec![TrustedKey::load(path).map_err(build)?],
        None => {
            eprintln!("cpevisor-rootfs: no --trusted-key: the agent will refuse every package");
            Vec::new()
        }
    };
    let m = build_firmware_with_keys(&spec, &inputs, &keys, &a.out).map_err(build)?;
    let size = |f: &str| std::fs::metadata(a.out.join(f)).map_or(0, |m| m.len());
    println!(
        "firmware for {} ({}), kernel {} in {}",
        m.board,
        m.arch,
        m.kernel_release,
        a.out.display()
    );
    println!("  kernel             {:>10} bytes", size("kernel"));
    println!(
        "  initramfs.cpio.gz  {:>10} bytes  sha256 {}",
        size("initramfs.cpio.gz"),
        m.initramfs_sha256
    );
    let names: Vec<&str> = m.modules.iter().map(|m| m.name.as_str()).collect();
    println!("  modules ({}): {}", names.len(), names.join(" "));
    if !m.builtin.is_empty() {
        println!("  built into the kernel: {}", m.builtin.join(" "));
    }
    for (path, _) in &m.binaries {
        println!("  /{path}");
    }
    for (path, _) in &m.trusted_keys {
        println!("  /{path} (trusted signer key)");
    }
    Ok(())
}

/// `guest`: microVM images for one app.
fn run_guest(args: &[String]) -> Result<(), Failure> {
    let [arch, app, out, kernel, root, data, tree, cache] = parse_flags(
        args,
        [
            "--arch", "--app", "--out", "--kernel", "--root", "--data", "--tree", "--cache",
        ],
    )
    .map_err(Failure::Usage)?;
    let usage = |e: cpevisor_rootfs::FirmwareError| Failure::Usage(e.to_string());
    let build = |e: cpevisor_rootfs::FirmwareError| Failure::Build(e.to_string());
    let arch = GuestArch::parse(&arch.ok_or(Failure::Usage("--arch is required".into()))?)
        .map_err(usage)?;
    let app = app.ok_or(Failure::Usage("--app NAME is required".into()))?;
    let out = PathBuf::from(out.ok_or(Failure::Usage("--out DIR is required".into()))?);
    let kernel = GuestKernel::parse(kernel.as_deref().unwrap_or("stock")).map_err(usage)?;
    let root = match root {
        Some(r) => GuestRoot::parse(&r).map_err(usage)?,
        None => GuestRoot::default_for(&kernel),
    };
    let data = data_file(data, MAX_DATA_SIZE)?;
    let tree = tree_files(tree)?;
    let cache = cache_dir(cache)?;
    let spec = GuestSpec {
        arch,
        app,
        kernel,
        root,
        data,
    };
    let inputs = GuestInputs {
        cache,
        mtime: source_date_epoch().map_err(build)?,
    };
    let m = build_guest_with_tree(&spec, &tree, &inputs, &out).map_err(build)?;
    let size = |f: &str| std::fs::metadata(out.join(f)).map_or(0, |m| m.len());
    println!("{m} in {}", out.display());
    for f in ["Image", m.root.file_name(), "disk.img"] {
        println!("  {f:<18} {:>10} bytes", size(f));
    }
    if !m.modules.is_empty() {
        println!("  modules ({}): {}", m.modules.len(), m.modules.join(" "));
    }
    Ok(())
}

/// The contents of the `--data FILE` given, checked to be a regular file of at most `max` bytes.
fn data_file(data: Option<String>, max: u64) -> Result<Option<Vec<u8>>, Failure> {
    let Some(path) = data.map(PathBuf::from) else {
        return Ok(None);
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| Failure::Build(format!("--data {}: {e}", path.display())))?;
    if !meta.is_file() || meta.len() > max {
        return Err(Failure::Build(format!(
            "--data {}: must be a regular file of at most {max} bytes",
            path.display()
        )));
    }
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| Failure::Build(format!("--data {}: {e}", path.display())))
}

/// The files of `--tree DIR` (none without it).
fn tree_files(tree: Option<String>) -> Result<Vec<cpevisor_rootfs::app_tree::TreeFile>, Failure> {
    match tree {
        None => Ok(Vec::new()),
        Some(dir) => cpevisor_rootfs::app_tree::read_tree(std::path::Path::new(&dir))
            .map_err(|e| Failure::Build(format!("--tree {dir}: {e}"))),
    }
}

/// `--cache DIR`, else the default cache.
fn cache_dir(cache: Option<String>) -> Result<PathBuf, Failure> {
    match cache {
        Some(c) => Ok(PathBuf::from(c)),
        None => default_cache().map_err(Failure::Usage),
    }
}

/// `jail-app`: the rootfs layer of a jail package.
fn run_jail_app(args: &[String]) -> Result<(), Failure> {
    use jail_app::{build_jail_app, JailApp, JailAppInputs, JailAppSpec, JailArch, MAX_TOKEN_SIZE};
    let [arch, app, out, data, tree, cache] = parse_flags(
        args,
        ["--arch", "--app", "--out", "--data", "--tree", "--cache"],
    )
    .map_err(Failure::Usage)?;
    let usage = |e: jail_app::JailAppError| Failure::Usage(e.to_string());
    let arch = JailArch::parse(&arch.ok_or(Failure::Usage("--arch is required".into()))?)
        .map_err(usage)?;
    let app = JailApp::parse(&app.ok_or(Failure::Usage("--app NAME is required".into()))?)
        .map_err(usage)?;
    let out = PathBuf::from(out.ok_or(Failure::Usage("--out DIR is required".into()))?);
    let token = data_file(data, MAX_TOKEN_SIZE)?;
    let tree = tree_files(tree)?;
    let cache = cache_dir(cache)?;
    let mtime = source_date_epoch().map_err(|e| Failure::Build(e.to_string()))?;
    let spec = JailAppSpec {
        arch,
        app,
        token,
        tree,
    };
    let m = build_jail_app(&spec, &JailAppInputs { cache, mtime }, &out)
        .map_err(|e| Failure::Build(e.to_string()))?;
    println!("{m} in {}", out.display());
    println!(
        "  rootfs.tar {:>10} bytes  sha256 {}",
        m.rootfs_bytes, m.rootfs_sha256
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("cpevisor-rootfs: {e}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Build(e)) => {
            eprintln!("cpevisor-rootfs: {e}");
            ExitCode::FAILURE
        }
    }
}
