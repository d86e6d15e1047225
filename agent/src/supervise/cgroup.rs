//! cgroup v2 limits around one app's backend process: `/sys/fs/cgroup/cpevisor/<eu>` with
//! `memory.max` (and, where the backend asks and the kernel has the controllers, `pids.max` and
//! `cpu.max`). `memory.events` tells whether the kernel's OOM killer ended the app. Used only
//! where the board mounts cgroup2; otherwise the caller logs why not.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where cgroup v2 is mounted unless the agent config says otherwise.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The parent cgroup all apps live under, when cgroup v2 with the memory controller is usable.
#[derive(Debug, Clone)]
pub struct CgroupParent {
    dir: PathBuf,
    /// Optional controllers enabled for the apps (`pids`, `cpu`), besides `memory`.
    optional: Vec<&'static str>,
}

/// `cpu.max`: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    /// CPU time allowed per period, microseconds.
    pub quota_us: u64,
    /// The period, microseconds.
    pub period_us: u64,
}

/// What one app's cgroup enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppLimits {
    /// `memory.max`, bytes.
    pub memory_max_bytes: u64,
    /// `pids.max`; None: not set.
    pub pids_max: Option<u32>,
    /// `cpu.max`; None: not set.
    pub cpu_max: Option<CpuMax>,
}

impl AppLimits {
    /// Limits that set only `memory.max`.
    pub fn memory_only(memory_max_bytes: u64) -> AppLimits {
        AppLimits {
            memory_max_bytes,
            pids_max: None,
            cpu_max: None,
        }
    }
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
        // pids and cpu where the kernel has them: a board without CONFIG_CGROUP_PIDS still
        // gets its memory limits.
        let mut optional = Vec::new();
        for ctl in ["pids", "cpu"] {
            if !controllers.split_whitespace().any(|c| c == ctl) {
                continue;
            }
            let enabled = [root, dir.as_path()]
                .iter()
                .all(|d| fs::write(d.join("cgroup.subtree_control"), format!("+{ctl}")).is_ok());
            if enabled {
                optional.push(ctl);
            }
        }
        Ok(CgroupParent { dir, optional })
    }

    /// Creates (or reuses) the cgroup of one app with its limits. A pids or cpu limit the
    /// kernel cannot enforce here is skipped (logged); memory.max must be set.
    pub fn create_app(&self, eu_id: &str, limits: &AppLimits) -> io::Result<AppCgroup> {
        let dir = self.dir.join(eu_id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        fs::write(dir.join("memory.max"), limits.memory_max_bytes.to_string())?;
        // No swap escape hatch where the kernel offers swap accounting.
        let _ = fs::write(dir.join("memory.swap.max"), "0");
        if let Some(n) = limits.pids_max {
            self.write_optional("pids", &dir.join("pids.max"), &n.to_string());
        }
        if let Some(cpu) = limits.cpu_max {
            let value = format!("{} {}", cpu.quota_us, cpu.period_us);
            self.write_optional("cpu", &dir.join("cpu.max"), &value);
        }
        Ok(AppCgroup { dir })
    }

    fn write_optional(&self, controller: &str, file: &Path, value: &str) {
        if !self.optional.contains(&controller) {
            crate::log_warn!(
                "{}: not set, the {controller} controller is not available",
                file.display()
            );
        } else if let Err(e) = fs::write(file, value) {
            crate::log_warn!("{}: cannot set {value}: {e}", file.display());
        }
    }
}

/// One app's cgroup directory, made by `CgroupParent` with its limits written.
#[derive(Debug)]
pub struct AppCgroup {
    dir: PathBuf,
}

impl AppCgroup {
    /// Moves process `pid` into the cgroup (`cgroup.procs`).
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

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup (`oom_kill` of
    /// memory.events), 0 when unreadable.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|text| parse_oom_kills(&text))
            .unwrap_or(0)
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

fn parse_oom_kills(memory_events: &str) -> Option<u64> {
    memory_events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_oom_kills_are_written_and_read() {
        // A fake cgroup tree: plain files stand in for the kernel's.
        let root = std::env::temp_dir().join(format!("cpevisor-cgl-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids").unwrap();
        let parent = CgroupParent::prepare(&root).unwrap();
        assert_eq!(parent.optional, vec!["pids", "cpu"]);
        let limits = AppLimits {
            memory_max_bytes: 40 << 20,
            pids_max: Some(128),
            cpu_max: Some(CpuMax {
                quota_us: 100_000,
                period_us: 100_000,
            }),
        };
        let app = parent.create_app("eu-3", &limits).unwrap();
        let read = |f: &str| fs::read_to_string(app.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), (40u64 << 20).to_string());
        assert_eq!(read("pids.max"), "128");
        assert_eq!(read("cpu.max"), "100000 100000");
        assert_eq!(app.oom_kills(), 0);
        fs::write(
            app.path().join("memory.events"),
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(app.oom_kills(), 2);
        assert_eq!(parse_oom_kills("oom_kill x\n"), None);
        fs::remove_dir_all(&root).unwrap();
    }

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
