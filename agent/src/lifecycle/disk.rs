//! Flash as a budget like memory. An ExecEnv's apps may take `disk_budget_mib` of flash (its
//! config; none: only the file system's free space bounds them). What a DU takes is measured
//! from its files with `st_blocks`, never taken from its package: the blobs it uses, its
//! version directory (a jail app's extracted rootfs) and its data directory (a jail app's data
//! volume image, a microVM's data disk). A DU reserves the larger of what it declared
//! (`disk_mib`) and what it takes, so a sparse data volume that has not grown yet still counts
//! at its cap. A file several DUs of the ExecEnv hold (a root image or a layer their packages
//! share is one blob in the store) is charged to the first of them only: it is on the flash
//! once. What is left for a new package is the budget less every DU's charge, and never more
//! than the file system's free space (`statvfs`) less what the DUs may still write.
//!
//! A jail app that declares `disk_mib` gets its data volume as a fixed-size ext4 image, made
//! here at install and loop-mounted by its jail runner (`supervise::jail::volume`, where the
//! choice is argued); a write past it fails in the app with ENOSPC.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::config::ExecEnvConfig;
use super::packages::InstalledFiles;
use super::state::DuRecord;
use super::{data_id, fault, Agent, OpResult};
use crate::fault::FaultCode;
use crate::supervise::lock;

/// Deepest directory nesting measured (an extracted rootfs is far shallower).
const MAX_DEPTH: usize = 64;
/// Smallest data volume worth a file system (ext4 without a journal fits in 1 MiB).
pub const MIN_VOLUME_MIB: u64 = 1;

/// Calls `first` for every inode under `path` (a file, or a tree: symlinks not followed) with
/// its identity and the KiB it takes (`st_blocks`); where `first` says the inode was met before
/// (a hard link, a blob two DUs share), a directory is not entered again.
fn for_each_inode(path: &Path, first: &mut dyn FnMut((u64, u64), u64) -> bool) {
    fn walk(path: &Path, first: &mut dyn FnMut((u64, u64), u64) -> bool, depth: usize) {
        let Ok(md) = std::fs::symlink_metadata(path) else {
            return;
        };
        // st_blocks is in 512-byte units whatever the file system's block size.
        if !first((md.dev(), md.ino()), md.blocks() / 2) {
            return;
        }
        if md.is_dir() && depth < MAX_DEPTH {
            if let Ok(rd) = std::fs::read_dir(path) {
                for e in rd.flatten() {
                    walk(&e.path(), first, depth + 1);
                }
            }
        }
    }
    walk(path, first, 0)
}

/// KiB that `path` (a file, or a tree: symlinks not followed) takes on its file system, from
/// `st_blocks`; an inode met before (in `seen`: a hard link, a blob two DUs share) counts once.
pub fn tree_kib(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let mut kib = 0;
    for_each_inode(path, &mut |inode, k| {
        let first = seen.insert(inode);
        if first {
            kib += k;
        }
        first
    });
    kib
}

/// The inodes a DU's files take, each with its KiB.
type Inodes = HashMap<(u64, u64), u64>;

/// Adds the inodes under `path` to `inodes`.
fn add_inodes(path: &Path, inodes: &mut Inodes) {
    for_each_inode(path, &mut |inode, kib| inodes.insert(inode, kib).is_none());
}

/// Size and free space (for an unprivileged writer) of the file system holding `path`, KiB.
pub fn fs_space_kib(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = st.fragment_size() as u64;
    let total = (st.blocks() as u64).saturating_mul(frag) / 1024;
    let free = (st.blocks_available() as u64).saturating_mul(frag) / 1024;
    Some((total, free))
}

/// One DU's flash: what its files take and what its package declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuDisk {
    /// The DU's UUID.
    pub uuid: String,
    /// Measured, KiB: all its files (its `DiskSpaceInUse`).
    pub used_kib: u64,
    /// `disk_mib` of its package, KiB; None: undeclared.
    pub declared_kib: Option<u64>,
    /// Of `used_kib`, what a DU measured before it in the ExecEnv holds too (a shared blob),
    /// KiB: charged to that one.
    pub shared_kib: u64,
}

impl DuDisk {
    /// What the DU holds of the budget: its declaration, or more when its files take more.
    pub fn reserved_kib(&self) -> u64 {
        self.used_kib.max(self.declared_kib.unwrap_or(0))
    }

    /// What the budget is charged for it: its reservation less the files already charged to
    /// another DU.
    pub fn charged_kib(&self) -> u64 {
        self.reserved_kib().saturating_sub(self.shared_kib)
    }
}

/// The one rule of what is left, KiB: `budget_kib` (None: no budget of its own) less every
/// DU's charge, and at most `fs_free_kib` less what the DUs may still write (reserved but
/// not yet used, e.g. a data volume not filled yet). DU `except` (the one being updated)
/// counts as free.
pub fn available_kib(
    budget_kib: Option<u64>,
    fs_free_kib: u64,
    dus: &[DuDisk],
    except: Option<&str>,
) -> u64 {
    let others = dus.iter().filter(|d| except != Some(d.uuid.as_str()));
    let (charged, unwritten) = others.fold((0u64, 0u64), |(c, u), d| {
        (
            c.saturating_add(d.charged_kib()),
            u.saturating_add(d.reserved_kib() - d.used_kib),
        )
    });
    let by_budget = budget_kib.map_or(u64::MAX, |b| b.saturating_sub(charged));
    by_budget.min(fs_free_kib.saturating_sub(unwritten))
}

/// An ExecEnv's flash as the data model shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvDisk {
    /// `AllocatedDiskSpace`: the budget, or the file system's size without one (KiB).
    pub allocated_kib: u64,
    /// `AvailableDiskSpace` (KiB, [`available_kib`]).
    pub available_kib: u64,
    /// Each DU of the ExecEnv.
    pub dus: Vec<DuDisk>,
}

impl Agent {
    /// Measures the DUs of ExecEnv `env` (their records copied under the model lock, the files
    /// read without it). A file two of them hold is shared by the later one; DU `except` (the
    /// one being updated, counted as free) shares nothing and charges none of its files to
    /// the others.
    pub(super) fn measure_env(&self, env: &str, except: Option<&str>) -> Vec<DuDisk> {
        let recs: Vec<DuRecord> = lock(&self.shared.model)
            .persisted
            .dus
            .iter()
            .filter(|r| r.du.exec_env == env)
            .cloned()
            .collect();
        let mut charged = HashSet::new();
        recs.iter()
            .map(|r| {
                let inodes = self.du_inodes(r);
                let mut d = DuDisk {
                    uuid: r.du.uuid.clone(),
                    used_kib: inodes.values().sum(),
                    declared_kib: r.spec.disk_mib.map(|m| u64::from(m) * 1024),
                    shared_kib: 0,
                };
                if except != Some(d.uuid.as_str()) {
                    d.shared_kib = inodes
                        .iter()
                        .filter(|(inode, _)| !charged.insert(**inode))
                        .map(|(_, kib)| kib)
                        .sum();
                }
                d
            })
            .collect()
    }

    /// What an installed version's package takes: its blobs and its version directory.
    pub(super) fn package_kib(&self, files: &InstalledFiles) -> u64 {
        let mut inodes = Inodes::new();
        self.add_package_inodes(files, &mut inodes);
        inodes.values().sum()
    }

    fn add_package_inodes(&self, files: &InstalledFiles, inodes: &mut Inodes) {
        for d in &files.blobs {
            if let Ok(d) = crate::store::parse_digest(d, "blob") {
                add_inodes(&self.packages.store.blob_path(&d), inodes);
            }
        }
        add_inodes(&files.app_dir, inodes);
    }

    /// The inodes of DU `rec`'s files: its blobs, its version directory, its data directory.
    fn du_inodes(&self, rec: &DuRecord) -> Inodes {
        let mut inodes = Inodes::new();
        self.add_package_inodes(&rec.files, &mut inodes);
        if let Ok(dir) = self.packages.store.app_dir(&data_id(&rec.du.uuid)) {
            add_inodes(&dir, &mut inodes);
        }
        inodes
    }

    /// ExecEnv `cfg`'s flash: budget, what is left (DU `except` counted as free), its DUs.
    pub(super) fn env_disk(&self, cfg: &ExecEnvConfig, except: Option<&str>) -> EnvDisk {
        let dus = self.measure_env(&cfg.name, except);
        let (fs_total, fs_free) = fs_space_kib(self.packages.store.root()).unwrap_or((0, 0));
        let budget = cfg.disk_budget_mib.map(|m| u64::from(m) * 1024);
        EnvDisk {
            allocated_kib: budget.map_or(fs_total, |b| b.min(fs_total)),
            available_kib: available_kib(budget, fs_free, &dus, except),
            dus,
        }
    }

    /// KiB of flash left in ExecEnv `cfg` for a package, DU `except` counted as free.
    pub(super) fn disk_left_kib(&self, cfg: &ExecEnvConfig, except: Option<&str>) -> u64 {
        self.env_disk(cfg, except).available_kib
    }
}

/// The data volume of a jail app: a sparse image of `mib` MiB at `path` with an ext4 file
/// system (no blocks reserved for root: the app is root only in its user namespace), made
/// at `tmp` (the store's `tmp/`, emptied at start-up) and renamed, so a crash leaves no
/// half-made volume. `mke2fs` is e2fsprogs' or, on the boards, busybox's, which knows none of
/// `-q` and `-t` and makes ext2 (no journal; the kernel's ext4 driver mounts it); without
/// either the install is refused (7003) rather than run uncapped.
pub fn make_volume(path: &Path, tmp: &Path, mib: u64) -> OpResult<()> {
    let io = |what: &str, e: std::io::Error| {
        fault(
            FaultCode::Internal,
            format!("data volume {}: {what}: {e}", path.display()),
        )
    };
    let file = std::fs::File::create(tmp).map_err(|e| io("create", e))?;
    file.set_len(mib * 1024 * 1024).map_err(|e| io("size", e))?;
    drop(file);
    let mut last = String::new();
    for tool in ["mke2fs", "/sbin/mke2fs", "/usr/sbin/mke2fs"] {
        match make_fs(&[tool], tmp) {
            Ok(()) => {
                std::fs::rename(tmp, path).map_err(|e| io("rename", e))?;
                return crate::store::fsync_dir(path.parent().unwrap_or(Path::new("/")));
            }
            Err((found, e)) => {
                last = e;
                if found {
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_file(tmp);
    Err(fault(
        FaultCode::Internal,
        format!(
            "data volume {}: cannot make its file system: {last}",
            path.display()
        ),
    ))
}

/// Runs `mke2fs` (argv prefix `tool`) on `image`: ext4 where it is e2fsprogs', else the
/// options busybox's also takes. Err: (whether the tool exists, what it said).
fn make_fs(tool: &[&str], image: &Path) -> Result<(), (bool, String)> {
    let full = ["-q", "-F", "-t", "ext4", "-m", "0", "-L", "data"];
    let portable = ["-F", "-m", "0", "-L", "data"];
    let mut said = String::new();
    for args in [&full[..], &portable[..]] {
        let out = Command::new(tool[0])
            .args(&tool[1..])
            .args(args)
            .arg(image)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                said = format!(
                    "{}: {}",
                    tool.join(" "),
                    err.lines().next().unwrap_or("").trim()
                );
            }
            Err(e) => return Err((false, format!("{}: {e}", tool.join(" ")))),
        }
    }
    Err((true, said))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The boards' mke2fs is busybox's: the volume is made with the options it knows (e2fsprogs'
    /// `-q -t ext4` made every jail install with `disk_mib` fail there, 7003).
    #[test]
    fn a_volume_is_made_by_busybox_mke2fs_too() {
        if !Path::new("/bin/busybox").exists() {
            eprintln!("skipped: needs /bin/busybox");
            return;
        }
        let dir = std::env::temp_dir().join(format!("cpv-mkfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("v.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        let made = make_fs(&["/bin/busybox", "mke2fs"], &image);
        let sb = std::fs::read(&image).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(made, Ok(()));
        // ext2's superblock magic 0xEF53 at 1024 + 56.
        assert_eq!(sb[1080..1082], [0x53, 0xEF]);
        let missing = make_fs(&["/nonexistent/mke2fs"], &image);
        assert!(matches!(missing, Err((false, _))), "{missing:?}");
    }

    fn du(uuid: &str, used: u64, declared: Option<u64>) -> DuDisk {
        DuDisk {
            uuid: uuid.into(),
            used_kib: used,
            declared_kib: declared,
            shared_kib: 0,
        }
    }

    #[test]
    fn available_is_budget_less_reservations_and_never_more_than_the_free_space() {
        // a: declared 4000, wrote 1000; b: undeclared, takes 500; c: took more than declared.
        let dus = [
            du("a", 1000, Some(4000)),
            du("b", 500, None),
            du("c", 3000, Some(2000)),
        ];
        assert_eq!(dus[2].reserved_kib(), 3000);
        // 10000 - (4000 + 500 + 3000) = 2500 by the budget; the file system has room.
        assert_eq!(available_kib(Some(10_000), 1_000_000, &dus, None), 2500);
        // 4000 free on flash, a may still write 3000 of it: 1000.
        assert_eq!(available_kib(Some(10_000), 4000, &dus, None), 1000);
        // No budget: only the file system.
        assert_eq!(available_kib(None, 4000, &dus, None), 1000);
        // An update of a counts a's reservation (and what it may still write) as free.
        assert_eq!(
            available_kib(Some(10_000), 1_000_000, &dus, Some("a")),
            6500
        );
        assert_eq!(available_kib(Some(10_000), 4000, &dus, Some("a")), 4000);
        // Over-committed: nothing left, no underflow.
        assert_eq!(available_kib(Some(1000), 100, &dus, None), 0);
        // b's 500 are a's too (one blob): charged once, and b may still write none of it.
        let mut shared = dus.clone();
        shared[1].shared_kib = 500;
        assert_eq!(shared[1].charged_kib(), 0);
        assert_eq!(available_kib(Some(10_000), 1_000_000, &shared, None), 3000);
        assert_eq!(available_kib(None, 4000, &shared, None), 1000);
    }

    #[test]
    fn tree_kib_counts_blocks_not_lengths_and_hard_links_once() {
        let dir = std::env::temp_dir().join(format!("cpv-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sparse = dir.join("sparse");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let full = dir.join("full");
        std::fs::write(&full, vec![7u8; 256 * 1024]).unwrap();
        std::fs::hard_link(&full, dir.join("link")).unwrap();
        let mut seen = HashSet::new();
        let kib = tree_kib(&dir, &mut seen);
        // 256 KiB of data (once), a few KiB of directory; the 64 MiB hole takes nothing.
        assert!((256..256 + 64).contains(&kib), "{kib} KiB");
        // Met again: nothing more.
        assert_eq!(tree_kib(&full, &mut seen), 0);
        assert_eq!(tree_kib(&dir.join("missing"), &mut HashSet::new()), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fs_space_is_read() {
        let (total, free) = fs_space_kib(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
    }
}
