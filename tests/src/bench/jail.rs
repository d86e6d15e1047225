//! Jail boards (no KVM: apps run in the agent's jail backend): the pieces the board test
//! (tests/tests/jail_in_board.rs) and `make bench` share, and the bench's jail figures.
//!
//! Packages: `scripts/sample-app.sh jail ARCH` (run by `make firmware` for jail boards) builds
//! `target/packages/{status,memhog}-jail-<arch>-<version>.cpkg`; the status app serves
//! `http://<its address>:8080/status` from inside its jail.
//!
//! Figures, on [`BENCH_BOARD`]:
//! - `jail.agent_idle_rss_kib`: the firmware's cpevisord, idle with nothing installed.
//! - `jail.overhead_kib`: the status app's cgroup `memory.current` minus the app's own
//!   anonymous memory: what its cgroup is charged beyond the app (the jail runner's and the
//!   jail init's anonymous pages, both cpevisord, and the kernel memory of the jail). Not minus
//!   the app's Rss: that is mostly busybox text, whose page cache is charged to the agent that
//!   unpacked the rootfs, so memory.current can be below the app's Rss.
//! - `jail.overhead_pss_kib`: Pss of the runner and the init (their text shared with the agent).
//! - `jail.binary_kib.<rust target>`: what a jail board carries from us on flash (the static
//!   multi-call cpevisor from `make cross`), for the jail boards' targets.

use super::Figure;
use crate::agent::{
    ctl_json, eu_of, install, wait_agent, wait_eu_status, Flash, HttpServer, AGENT_SOCKET,
};
use crate::firmware::{firmware_dir, workspace_root};
use crate::microvm::cache_dir;
use crate::{BoardVm, BootOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The board the jail figures are taken on.
pub const BENCH_BOARD: &str = "qemu-malta-mipsel";
/// Rust targets of the jail boards (armv7 and mipsel: no KVM on either).
pub const JAIL_TARGETS: [&str; 2] = [
    "mipsel-unknown-linux-musl",
    "armv7-unknown-linux-musleabihf",
];
/// The port the status app listens on inside its jail (it has no capability for port 80).
pub const APP_PORT: u16 = 8080;
/// Board port the jail tests publish the app on, forwarded from the host: a relay on the board
/// to the app's veth address stands in for the port forward a router's firewall would do.
pub const PUBLISHED_PORT: u16 = 18080;
/// The init's line once the LAN bridge is up (rootfs/files/init).
pub const JAIL_MARKER: &str = "CPEVISOR-JAIL bridge=br-lan";
/// Where the agent puts each app's cgroup.
pub const CGROUP_PARENT: &str = "/sys/fs/cgroup/cpevisor";

const BOOT: Duration = Duration::from_secs(300);
const AGENT: Duration = Duration::from_secs(120);
const INSTALL: Duration = Duration::from_secs(300);
const ACTIVE: Duration = Duration::from_secs(180);
const ANSWER: Duration = Duration::from_secs(120);

/// `<app>-jail-<arch>-<version>.cpkg`.
pub fn package_file(app: &str, arch: &str, version: &str) -> String {
    format!("{app}-jail-{arch}-{version}.cpkg")
}

/// The jail packages of one board's arch in `target/packages/`, checked against its firmware.
pub struct JailPackages {
    /// The directory holding the `.cpkg` files.
    pub dir: PathBuf,
    /// The board's architecture, as in the package file names.
    pub arch: String,
}

impl JailPackages {
    /// Finds status 1.0/1.1 and memhog 1.0 for `board`'s arch and checks that the board's
    /// firmware trusts the key they are signed with; errors name the build step to run.
    pub fn find(board: &str) -> Result<JailPackages, String> {
        let b = cpevisor_boards::Board::by_name(board).map_err(|e| e.to_string())?;
        let arch = b.cpu.arch.as_str().to_string();
        let dir = workspace_root().join("target/packages");
        for (app, v) in [("status", "1.0"), ("status", "1.1"), ("memhog", "1.0")] {
            let p = dir.join(package_file(app, &arch, v));
            if !p.is_file() {
                return Err(format!(
                    "{} is missing: build the jail packages (`bash scripts/sample-app.sh jail \
                     {arch}`, run by `make firmware BOARDS={board}`)",
                    p.display()
                ));
            }
        }
        let key_file = cache_dir()?.join("keys/cpevisor-signing.pub");
        let key = std::fs::read_to_string(&key_file)
            .map_err(|e| format!("{}: {e}", key_file.display()))?;
        let manifest_path = firmware_dir(board).join("manifest.txt");
        let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| {
            format!(
                "{}: {e} (build the firmware: `make firmware BOARDS={board}`)",
                manifest_path.display()
            )
        })?;
        let wanted = format!("public={}", key.trim());
        if !manifest
            .lines()
            .any(|l| l.starts_with("trusted_key=") && l.ends_with(&wanted))
        {
            return Err(format!(
                "the {board} firmware does not trust {}: rebuild it with `make firmware \
                 BOARDS={board}`",
                key_file.display()
            ));
        }
        Ok(JailPackages { dir, arch })
    }

    /// The package file of `app` at `version`.
    pub fn path(&self, app: &str, version: &str) -> PathBuf {
        self.dir.join(package_file(app, &self.arch, version))
    }

    /// The URL the board fetches `app` `version` from, served by `server` from [`Self::dir`].
    pub fn url(&self, server: &HttpServer, app: &str, version: &str) -> String {
        format!(
            "http://10.0.2.2:{}/{}",
            server.port,
            package_file(app, &self.arch, version)
        )
    }

    /// status 1.0 re-packed and signed with the trusted key after `edit` changed its app
    /// config: a package that is good but for that change. Written to `<dir>/<name>.cpkg`
    /// (served beside the others); returns its file name.
    pub fn variant(&self, name: &str, edit: impl Fn(&mut Value)) -> Result<String, String> {
        crate::packages::repack(
            &self.dir,
            &format!("status-jail-{}-1.0", self.arch),
            name,
            edit,
        )
    }
}

/// Boots a jail board on `flash`; `data` is what the init must report for it (`formatted` on a
/// blank flash, `mounted` after). Checks the init's LAN bridge line.
pub fn boot_jail_board(board: &str, flash: &Flash, data: &str) -> Result<BoardVm, String> {
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        forward: vec![PUBLISHED_PORT],
        ..Default::default()
    };
    let mut vm = BoardVm::boot(board, &opts)?;
    vm.wait_ready(BOOT)?;
    let text = vm.transcript();
    let marker = format!("CPEVISOR-DATA state={data} dev=");
    if !text.contains(&marker) {
        return Err(format!("{board}: the init did not report {marker:?}"));
    }
    if !text.contains(JAIL_MARKER) {
        return Err(format!(
            "{board}: the init did not report {JAIL_MARKER:?} (jail-board part of rootfs/files/init)"
        ));
    }
    Ok(vm)
}

/// PID (in the board's namespace) of the jailed process of `eu_id` whose command line contains
/// `needle`: a process in the EU's cgroup and in another PID namespace than the board's init.
pub fn jail_pid(vm: &mut BoardVm, eu_id: &str, needle: &str) -> Result<u32, String> {
    let out = vm.run_ok(
        &format!(
            "for d in /proc/[0-9]*; do grep -q '/cpevisor/{eu_id}' $d/cgroup 2>/dev/null || continue; \
             [ \"$(readlink $d/ns/pid)\" != \"$(readlink /proc/1/ns/pid)\" ] || continue; \
             tr '\\0' ' ' <$d/cmdline | grep -q '{needle}' && echo \"JAIL-PID ${{d#/proc/}}\"; \
             done; true"
        ),
        Duration::from_secs(60),
    )?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("JAIL-PID "))
        .filter_map(|p| p.trim().parse::<u32>().ok())
        .min()
        .ok_or_else(|| format!("no jailed process of {eu_id} runs {needle:?}:\n{out}"))
}

/// The app's IPv4 address on its veth (eth0 in its network namespace).
pub fn jail_address(vm: &mut BoardVm, pid: u32) -> Result<String, String> {
    let out = vm.run_ok(
        &format!("nsenter -t {pid} -n ip -4 -o addr show dev eth0"),
        Duration::from_secs(30),
    )?;
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
        .map(|a| a.to_string())
        .ok_or_else(|| format!("no IPv4 address on eth0 in the jail of pid {pid}:\n{out}"))
}

/// What smaps_rollup says of one process, KiB. It walks the page tables, so it is right for
/// threaded processes too (VmRSS under-counts them on 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Smaps {
    /// Resident set in KiB.
    pub rss: u64,
    /// Proportional set in KiB.
    pub pss: u64,
    /// Anonymous pages: what the process's own cgroup is charged for it. File pages (the
    /// binaries' text) are charged to whichever cgroup read them first: for a jailed app, the
    /// agent that unpacked the rootfs; for cpevisord's text, the agent itself.
    pub anon: u64,
}

/// [`Smaps`] of `pid`.
pub fn smaps(vm: &mut BoardVm, pid: u32) -> Result<Smaps, String> {
    let out = vm.run_ok(
        &format!(
            "awk '/^Rss:/ {{r=$2}} /^Pss:/ {{p=$2}} /^Anonymous:/ {{a=$2}} \
             END {{print \"SMAPS\", r, p, a}}' /proc/{pid}/smaps_rollup"
        ),
        Duration::from_secs(30),
    )?;
    match tagged_numbers(&out, "SMAPS")[..] {
        [rss, pss, anon] if rss > 0 && pss <= rss && anon <= rss => Ok(Smaps { rss, pss, anon }),
        _ => Err(format!("cannot read smaps_rollup of pid {pid}:\n{out}")),
    }
}

/// The numbers after `TAG ` on the console lines that carry it (kernel messages interleave).
pub fn tagged_numbers(out: &str, tag: &str) -> Vec<u64> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix(tag))
        .flat_map(|rest| rest.split_whitespace().map(str::parse::<u64>))
        .filter_map(Result::ok)
        .collect()
}

/// `jail.binary_kib.<target>`: what each jail target carries from us, as `make cross` built it
/// (the multi-call `cpevisor`; its applet names are symlinks and weigh nothing). The same sum
/// as `flash.device_binaries_kib.<target>` (sizes.rs), kept under this name for the jail group.
pub fn binary_figures(root: &Path) -> Vec<Figure> {
    let mut figures = Vec::new();
    let cross = root.join("target/cross");
    for t in JAIL_TARGETS {
        let Some(all) = super::sizes::device_binaries_figure(&cross, t) else {
            eprintln!(
                "bench: {} has no binaries (make cross)",
                cross.join(t).display()
            );
            continue;
        };
        figures.push(
            Figure::new(format!("jail.binary_kib.{t}"), all.value, "KiB").with_note(format!(
                "what a jail board carries from us: the static stripped multi-call cpevisor \
                 (agent, cpevisorctl, jail runner and jail init; cpevisord and cpevisorctl \
                 are symlinks to it), {} KiB",
                all.value
            )),
        );
    }
    figures
}

/// What was read in the board for the jail figures, KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailMemory {
    /// cpevisord idle with nothing installed.
    pub agent_idle: Smaps,
    /// `memory.current` of the app's cgroup.
    pub cgroup_current: u64,
    /// The app's main process.
    pub app: Smaps,
    /// The jail's other processes in the cgroup: the runner and the jail's init.
    pub others: Vec<Smaps>,
}

impl JailMemory {
    /// What the cgroup carries beyond the app's own (anonymous) memory: the runner's and the
    /// init's anonymous pages and the kernel memory of the namespaces, mounts and veth.
    pub fn overhead_kib(&self) -> i64 {
        self.cgroup_current as i64 - self.app.anon as i64
    }

    /// The same overhead seen per process: the proportional share of the runner and the init
    /// (their text is cpevisord's, shared with the agent).
    pub fn others_pss_kib(&self) -> u64 {
        self.others.iter().map(|s| s.pss).sum()
    }

    /// The `jail.*` figures, each beside its peer where it has one.
    pub fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::new("jail.agent_idle_rss_kib", self.agent_idle.rss as f64, "KiB").with_note(
                format!(
                    "Rss from /proc/PID/smaps_rollup of the static mipsel cpevisord started by the \
                     firmware in the {BENCH_BOARD} board, idle with nothing installed (Pss {} KiB)",
                    self.agent_idle.pss
                ),
            ),
            Figure::new("jail.overhead_kib", self.overhead_kib() as f64, "KiB").with_note(format!(
                "the jailed status app (busybox httpd, after one request) in {BENCH_BOARD}: its \
                 cgroup's memory.current {} KiB minus the app's own anonymous memory {} KiB (its \
                 Rss {} KiB is mostly busybox text, charged to the agent that unpacked it); the \
                 rest is the runner's and the jail init's anonymous pages and kernel memory",
                self.cgroup_current, self.app.anon, self.app.rss
            )),
            Figure::new("jail.overhead_pss_kib", self.others_pss_kib() as f64, "KiB").with_note(
                format!(
                    "Pss of the jail's processes beside the app (runner and init, both the agent's binary; \
                     Rss {:?} KiB, mostly cpevisord text shared with the agent)",
                    self.others.iter().map(|s| s.rss).collect::<Vec<_>>()
                ),
            ),
        ]
    }
}

/// Boots [`BENCH_BOARD`], reads the idle agent, installs the status jail app and weighs it.
pub fn measure() -> Result<JailMemory, String> {
    let packages = JailPackages::find(BENCH_BOARD)?;
    let server = HttpServer::serve(&packages.dir)?;
    let flash = Flash::blank("bench-jail", 64)?;
    let mut vm = boot_jail_board(BENCH_BOARD, &flash, "formatted")?;
    wait_agent(&mut vm, AGENT)?;
    let out = vm.run_ok(
        &format!("sleep 2; [ -S {AGENT_SOCKET} ] && echo \"AGENT-PIDS $(pidof cpevisord)\""),
        Duration::from_secs(60),
    )?;
    let pids = tagged_numbers(&out, "AGENT-PIDS");
    let [agent] = pids[..] else {
        return Err(format!(
            "expected one idle cpevisord, found {pids:?}:\n{out}"
        ));
    };
    let agent_idle = smaps(&mut vm, agent as u32)?;

    let done = install(&mut vm, &packages.url(&server, "status", "1.0"), INSTALL)?;
    done.outcome
        .map_err(|f| format!("install failed: {} {}", f.code, f.message))?;
    let list = wait_agent(&mut vm, AGENT)?;
    let eu = eu_of(&list, "status").ok_or_else(|| format!("no status EU: {list}"))?;
    let eu_id = eu["eu_id"].as_str().unwrap_or_default().to_string();
    wait_eu_status(&mut vm, &eu_id, "Active", ACTIVE)?;
    let app = jail_pid(&mut vm, &eu_id, "httpd")?;
    let addr = jail_address(&mut vm, app)?;
    let get = format!(
        "i=0; until timeout 10 wget -q -O /dev/null http://{addr}:{APP_PORT}/status; do \
         i=$((i+1)); [ $i -ge {} ] && exit 1; sleep 1; done",
        ANSWER.as_secs()
    );
    vm.run_ok(&get, ANSWER * 2)?;
    let out = vm.run_ok(
        &format!(
            "sleep 2; c=$(sed -n 's/^0:://p' /proc/{app}/cgroup); \
             echo \"CG-CURRENT $(cat /sys/fs/cgroup$c/memory.current)\"; \
             for p in $(cat /sys/fs/cgroup$c/cgroup.procs); do [ $p = {app} ] || \
             echo \"OTHER-PID $p\"; done"
        ),
        Duration::from_secs(60),
    )?;
    let current = tagged_numbers(&out, "CG-CURRENT");
    let cgroup_current = current
        .first()
        .map(|b| b / 1024)
        .ok_or_else(|| format!("no memory.current for the app's cgroup:\n{out}"))?;
    let app_smaps = smaps(&mut vm, app)?;
    let mut others = Vec::new();
    for pid in tagged_numbers(&out, "OTHER-PID") {
        others.push(smaps(&mut vm, pid as u32)?);
    }
    // Still the agent's view: the EU is Active and within its limit.
    ctl_json(&mut vm, &format!("status {eu_id}"), Duration::from_secs(60))?;
    Ok(JailMemory {
        agent_idle,
        cgroup_current,
        app: app_smaps,
        others,
    })
}

/// Every jail figure that could be taken; Err when the board measurement failed (the binary
/// sizes are added either way).
pub fn figures(root: &Path, figures: &mut Vec<Figure>) -> Result<(), String> {
    figures.extend(binary_figures(root));
    let m = measure()?;
    figures.extend(m.figures());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_numbers_skip_console_noise() {
        let out = "echo x\n[ 3.2] br-lan: port 1 entered forwarding state\nSMAPS 1234 800 96\n\
                   CG-CURRENT 4096000\nOTHER-PID 300\nOTHER-PID 280\n";
        assert_eq!(tagged_numbers(out, "SMAPS"), vec![1234, 800, 96]);
        assert_eq!(tagged_numbers(out, "OTHER-PID"), vec![300, 280]);
        assert!(tagged_numbers(out, "AGENT-PIDS").is_empty());
    }

    #[test]
    fn overhead_is_the_cgroup_beyond_the_app() {
        let smaps = |rss, pss, anon| Smaps { rss, pss, anon };
        let m = JailMemory {
            agent_idle: smaps(2000, 1900, 700),
            cgroup_current: 330,
            app: smaps(1200, 500, 100),
            others: vec![smaps(2400, 300, 90), smaps(1300, 200, 60)],
        };
        assert_eq!(m.overhead_kib(), 230);
        let f = m.figures();
        assert_eq!(f[0].name, "jail.agent_idle_rss_kib");
        assert_eq!(f[0].value, 2000.0);
        assert_eq!(f[1].name, "jail.overhead_kib");
        assert_eq!(f[1].value, 230.0);
        assert_eq!(f[2].name, "jail.overhead_pss_kib");
        assert_eq!(f[2].value, 500.0);
        assert!(f[2].note.as_ref().unwrap().contains("[2400, 1300]"));
    }

    #[test]
    fn package_names_carry_app_arch_and_version() {
        assert_eq!(
            package_file("memhog", "mipsel", "1.0"),
            "memhog-jail-mipsel-1.0.cpkg"
        );
    }

    /// The board part alone (`make bench` runs it with everything else):
    /// `cargo test -p cpevisor-e2e --lib bench::jail -- --ignored --nocapture`.
    #[test]
    #[ignore = "boots qemu-malta-mipsel: needs its firmware and jail packages"]
    fn jail_figures_on_the_board() {
        let m = measure().unwrap();
        println!("{m:?}");
        for f in m.figures() {
            println!("{} = {} {}", f.name, f.value, f.unit);
        }
        assert!(m.cgroup_current > m.app.anon, "{m:?}");
        assert_eq!(m.others.len(), 2, "runner and init: {m:?}");
    }

    #[test]
    fn binary_figures_count_the_multicall_binary_once() {
        let root = std::env::temp_dir().join(format!("jail-bench-{}", std::process::id()));
        let dir = root.join("target/cross/mipsel-unknown-linux-musl");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpevisor"), vec![0u8; 4 * 1024]).unwrap();
        for applet in ["cpevisord", "cpevisorctl"] {
            std::os::unix::fs::symlink("cpevisor", dir.join(applet)).unwrap();
        }
        let f = binary_figures(&root);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(f.len(), 1, "armv7 has no binaries here: {f:?}");
        assert_eq!(f[0].name, "jail.binary_kib.mipsel-unknown-linux-musl");
        assert_eq!(f[0].value, 4.0);
    }
}
