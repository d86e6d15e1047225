//! cgroup v2 memory limit around one app's backend process: `/sys/fs/cgroup/cpevisor/<eu>` with
//! `memory.max`. Used only where the board mounts cgroup2; otherwise the caller logs why not.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The parent cgroup all apps live under, when cgroup v2 with the memory controller is usable.
#[derive(Debug, Clone)]
pub struct CgroupParent {
    dir: PathBuf,
}

impl CgroupParent {
    /// Prepares `<root>/cpevisor` with the memory controller enabled for its children.
    /// Err explains why limits cannot be enforced (not cgroup2, no memory controller, read-only).
    pub fn prepare(root: &Path) -> Result<CgroupParent, String> {
        let controllers = fs::read_to_string(root.join("cgroup.controllers"))
            .map_err(|e| format!("{} is not a cgroup v2 mount: {e}", root.display()))?;
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return Err(format!(
                "{}: the memory controller is not available",
                root.display()
            ));
        }
        let dir = root.join("cpevisor");
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        // Children of `root` and of `cpevisor` need the memory controller delegated.
        for ctl in [root, dir.as_path()] {
            fs::write(ctl.join("cgroup.subtree_control"), "+memory").map_err(|e| {
                format!("cannot enable memory controller in {}: {e}", ctl.display())
            })?;
        }
        Ok(CgroupParent { dir })
    }

    /// Creates (or reuses) the cgroup of one app with `memory.max` = `limit_bytes`.
    pub fn create_app(&self, eu_id: &str, limit_bytes: u64) -> io::Result<AppCgroup> {
        let dir = self.dir.join(eu_id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::write(dir.join("memory.max"), limit_bytes.to_string())?;
        // No swap escape hatch where the kernel offers swap accounting.
        let _ = fs::write(dir.join("memory.swap.max"), "0");
        Ok(AppCgroup { dir })
    }
}

#[derive(Debug)]
pub struct AppCgroup {
    dir: PathBuf,
}

impl AppCgroup {
    pub fn add_pid(&self, pid: u32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// `memory.current` in bytes.
    pub fn memory_current(&self) -> Option<u64> {
        fs::read_to_string(self.dir.join("memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes the (empty) cgroup; fails harmlessly while processes remain.
    pub fn remove(&self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Resident set size of one process in KiB. `Rss:` of smaps_rollup first: it walks the page
/// tables, while `VmRSS` comes from per-thread counters that Linux before 6.2 syncs lazily, so a
/// threaded backend (a VMM with vCPU threads) can read far too low there. `VmRSS` is the fallback.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let kib_of = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    if let Some(kib) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| kib_of(&s, "Rss:"))
    {
        return Some(kib);
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_of(&status, "VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_cgroup_dir_is_refused_with_reason() {
        let dir = std::env::temp_dir().join(format!("cpevisor-cg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let err = CgroupParent::prepare(&dir).unwrap_err();
        assert!(err.contains("not a cgroup v2 mount"), "{err}");
        fs::write(dir.join("cgroup.controllers"), "cpu io").unwrap();
        let err = CgroupParent::prepare(&dir).unwrap_err();
        assert!(err.contains("memory controller"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(process_rss_kib(std::process::id()).unwrap() > 0);
    }
}
