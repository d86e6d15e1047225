//! The jail's filesystem, built by the jail's PID 1 in its new mount namespace: the app's
//! rootfs bind-mounted read-only as `/`, its data volume read-write at `/data`, a fresh `/proc`
//! masked and read-only where runc's defaults have it, a tmpfs `/dev` holding only harmless
//! device nodes, a tmpfs `/tmp`; then pivot_root into it and the host's tree detached. No
//! `/sys` is mounted (runc's masks under /sys have nothing to cover).

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::JailError;
use super::spec::JailSpec;

/// Directories the rootfs must have for the mounts above (the backend creates them in an
/// extracted tree; an erofs root image must have them).
pub use crate::package::JAIL_MOUNT_POINTS as MOUNT_POINTS;
/// Device nodes bound from the host's /dev: none of them reaches hardware or the host.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// /proc entries hidden as runc does (its maskedPaths): kernel memory, keys, timers and
/// scheduler internals, hardware lists. Files get /dev/null over them, directories an empty
/// read-only tmpfs; what this kernel lacks is skipped.
const PROC_MASKED: [&str; 9] = [
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
];
/// /proc entries made read-only as runc does (its readonlyPaths): without a user namespace
/// the app is uid 0, and some of these are writable by uid 0 without any capability
/// (/proc/irq/*/smp_affinity, /proc/sysrq-trigger).
const PROC_READ_ONLY: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

fn fail(what: &str, path: &Path, e: nix::errno::Errno) -> JailError {
    JailError::errno(format!("{what} {}", path.display()), e)
}

/// The flags `path`'s mount has now. In a user namespace the host's flags of a bound mount
/// are locked (a remount must repeat them), so every remount here adds to them.
fn current_flags(path: &Path) -> Result<MsFlags, JailError> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    // Linux's ST_RELATIME, which nix and libc name on glibc only; musl's statvfs passes the
    // kernel's flags through, so the bit is there on musl too.
    const ST_RELATIME: FsFlags = FsFlags::from_bits_retain(4096);
    let have = statvfs(path).map_err(|e| fail("statvfs", path, e))?.flags();
    let pairs = [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (ST_RELATIME, MsFlags::MS_RELATIME),
    ];
    Ok(pairs
        .into_iter()
        .filter(|(st, _)| have.contains(*st))
        .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms))
}

/// Remounts the bind mount at `dst` with `extra` on top of the flags it has.
fn remount_bind(dst: &Path, extra: MsFlags) -> Result<(), JailError> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | current_flags(dst)? | extra;
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>).map_err(|e| fail("remount", dst, e))
}

fn bind(src: &Path, dst: &Path, extra: MsFlags) -> Result<(), JailError> {
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| fail(&format!("bind {} onto", src.display()), dst, e))?;
    if !extra.is_empty() {
        // Flags of a bind mount change only with a remount.
        remount_bind(dst, extra)?;
    }
    Ok(())
}

fn tmpfs(dst: &Path, flags: MsFlags, options: &str) -> Result<(), JailError> {
    mount(Some("tmpfs"), dst, Some("tmpfs"), flags, Some(options))
        .map_err(|e| fail("mount tmpfs on", dst, e))
}

fn populate_dev(dev: &Path) -> Result<(), JailError> {
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue; // a board without /dev/tty still gets the others
        }
        let node = dev.join(name);
        std::fs::File::create(&node)
            .map_err(|e| JailError::io(format!("create {}", node.display()), e))?;
        bind(&host, &node, MsFlags::empty())?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        std::os::unix::fs::symlink(target, &path)
            .map_err(|e| JailError::io(format!("symlink {}", path.display()), e))?;
    }
    Ok(())
}

/// Masks and write-protects the fresh /proc (`PROC_MASKED`, `PROC_READ_ONLY`); `at` makes the
/// paths relative to the rootfs. The host's /dev/null is still reachable here.
fn mask_proc(at: &dyn Fn(&str) -> PathBuf) -> Result<(), JailError> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for p in PROC_MASKED {
        let path = at(p);
        match std::fs::symlink_metadata(&path) {
            Err(_) => continue, // not in this kernel
            Ok(md) if md.is_dir() => tmpfs(
                &path,
                nosuid_nodev_noexec | MsFlags::MS_RDONLY,
                "size=4k,mode=555",
            )?,
            Ok(_) => bind(Path::new("/dev/null"), &path, MsFlags::empty())?,
        }
    }
    for p in PROC_READ_ONLY {
        let path = at(p);
        if !path.exists() {
            continue; // e.g. a kernel without magic SysRq has no trigger file
        }
        bind(&path, &path, nosuid_nodev_noexec | MsFlags::MS_RDONLY)?;
    }
    Ok(())
}

/// Builds the jail's tree under `spec.rootfs` and makes it `/`. Runs in the jail's PID 1,
/// inside its own mount and PID namespaces, before any privilege is dropped. `switch_ids`
/// runs once the host's paths (rootfs, data volume) are bound and the rootfs is the working
/// directory: the jail's user-namespace ids reach no further into the host, and filesystems
/// mounted in the user namespace only take files from a mapped owner.
pub fn enter_rootfs(
    spec: &JailSpec,
    switch_ids: impl FnOnce() -> Result<(), JailError>,
) -> Result<(), JailError> {
    let root = &spec.rootfs;
    for p in MOUNT_POINTS {
        if !root.join(p).is_dir() {
            return Err(JailError::refused(format!(
                "mount point {} is missing",
                root.join(p).display()
            )));
        }
    }
    // Nothing mounted here propagates back to the host, and nothing from the host comes in.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| fail("make private", Path::new("/"), e))?;
    // pivot_root needs the new root to be a mount point of its own.
    mount(
        Some(root.as_path()),
        root.as_path(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| fail("bind rootfs", root, e))?;
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    bind(&spec.data_dir, &root.join("data"), nosuid_nodev)?;
    // From here on paths are relative to the rootfs (now on its own mount).
    nix::unistd::chdir(root.as_path()).map_err(|e| fail("chdir", root, e))?;
    switch_ids()?;
    let at = |p: &str| -> PathBuf { PathBuf::from(p) };
    mount(
        Some("proc"),
        &at("proc"),
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| fail("mount proc on", &at("proc"), e))?;
    mask_proc(&at)?;
    let dev_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    let dev_options = "mode=755,size=64k,nr_inodes=64";
    tmpfs(&at("dev"), dev_flags, dev_options)?;
    populate_dev(&at("dev"))?;
    // Nothing new in /dev once populated; the bound nodes keep their own (writable) mounts.
    mount(
        None::<&str>,
        &at("dev"),
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | dev_flags,
        Some(dev_options),
    )
    .map_err(|e| fail("remount read-only", &at("dev"), e))?;
    tmpfs(
        &at("tmp"),
        nosuid_nodev,
        &format!("mode=1777,size={}m", spec.tmp_size_mib),
    )?;
    // Read-only last: the mounts above only needed their mount points to exist.
    remount_bind(Path::new("."), MsFlags::MS_RDONLY | nosuid_nodev)?;
    // pivot_root(".", "."): the old root ends up stacked under the new one, then detached,
    // so no directory in the rootfs is needed for it.
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root into", root, e))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| fail("detach the host's root under", root, e))?;
    nix::unistd::chdir("/data").map_err(|e| fail("chdir", Path::new("/data"), e))?;
    Ok(())
}
