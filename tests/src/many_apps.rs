//! Many apps on one board (issue 11, docs/density.md): the board's agent installs copies of
//! the sample app one after another until its admission refuses one, then every admitted app
//! must answer HTTP at once, and each one's memory is read. As microVMs on qemu-virt-a53
//! ([`run`]), and in jails on qemu-malta-mipsel ([`run_jail`]), the same loop.
//!
//! The microVM copies are the staged sample app (`target/packages/build/status-1.0/`, built by
//! scripts/sample-app.sh) under other names (`dens00`, `dens01`, ...), repacked with the
//! sample app's signing key: the same kernel, initrd and disk blobs, so the agent stores them
//! once, as an operator's fleet of apps built on one base would be. The jail copies
//! (`jdens00`, ...) are the status jail app of the board's arch, repacked the same way with
//! its root as an erofs image: one blob on the flash for all of them, mounted by each (with
//! the tar root each copy's extracted tree took ~2.3 MiB of the board's 64 MiB flash, and the
//! flash, not the memory, ended the installs at 14).

use crate::agent::{
    app_address, eu_of, fetch_status_page, host_cpevisorctl, install, sample_token, wait_agent,
    wait_eu_status, Flash, HttpServer,
};
use crate::bench::jail::{
    boot_jail_board, jail_address, jail_pid, smaps, JailPackages, APP_PORT, BENCH_BOARD,
};
use crate::microvm::cache_dir;
use crate::{workspace_root, BoardVm, BootOptions};
use cpevisor_usp::errors::UspError;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The board the microVM figures are taken on.
pub const BOARD: &str = "qemu-virt-a53";
/// The board the jail figures are taken on (no KVM).
pub const JAIL_BOARD: &str = BENCH_BOARD;
/// What each jail copy declares in the bench, MiB: the status jail app's cgroup is charged
/// about 1.5 MiB (`jail.overhead_kib` plus the app's own pages, tests/src/bench/jail.rs), so
/// 4 MiB leaves it the ~2x headroom the microVM sample app's declaration leaves its guest; the
/// package's own 16 MiB would measure the declaration, not the backend. The agent adds its
/// fixed jail overhead (runner and init) to this at admission.
pub const JAIL_DECLARED_MIB: u32 = 4;
/// Installs are tried up to this many apps, refused or not (the board's budget ends it sooner).
pub const MAX_APPS: usize = 40;

/// One admitted app: its EU, address, and what it costs the board.
#[derive(Debug, Clone)]
pub struct AppCost {
    /// The EU's id.
    pub eu_id: String,
    /// Where it answers HTTP: its address on its tap link (microVM) or its veth address and
    /// port (jail).
    pub addr: String,
    /// The process whose PSS is read: the VMM, or the jailed httpd.
    pub pid: u32,
    /// The app's cgroup `memory.current` in KiB (what the agent reports as `MemoryInUse`).
    pub memory_in_use_kib: u64,
    /// PSS in KiB of its VMM process (its own pages plus the guest RAM resident), or of the
    /// jailed app process.
    pub pss_kib: u64,
    /// From the install command to Active.
    pub install_to_active: Duration,
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct ManyApps {
    /// The board it ran on.
    pub board: &'static str,
    /// Jail apps (else microVMs).
    pub jail: bool,
    /// Memory each copy declared, MiB.
    pub declared_mib: u32,
    /// The apps admitted, in install order.
    pub apps: Vec<AppCost>,
    /// The fault that ended the installs (7227 when the ExecEnv's memory ran out), if one did.
    pub refusal: Option<UspError>,
    /// How many of the admitted apps answered `/status` when asked one after another at the end.
    pub answered: usize,
    /// The board's `/proc/meminfo` (KiB) before the first install and after the last app answered.
    pub board_before: Vec<(String, u64)>,
    /// See `board_before`.
    pub board_after: Vec<(String, u64)>,
}

/// Builds `n` packages from the staged sample app, named `dens00..`, each declaring
/// `memory_mib` (None: what the sample app declares), into `out/`. Returns them and the memory
/// they declare.
pub fn variant_packages(
    n: usize,
    memory_mib: Option<u32>,
    out: &Path,
) -> Result<(Vec<PathBuf>, u32), String> {
    let stage = workspace_root().join("target/packages/build/status-1.0");
    let app_json = stage.join("app.json");
    let base = app_config(&app_json)?;
    let declared = match memory_mib {
        Some(m) => m,
        None => declared_memory(&base, &app_json)?,
    };
    let key = cache_dir()?.join("keys/cpevisor-signing.key");
    let ctl = host_cpevisorctl()?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut packages = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("dens{i:02}");
        let dir = out.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The blobs are the sample app's own files: linked, not copied.
        for f in ["data.txt", "guest"] {
            std::os::unix::fs::symlink(stage.join(f), dir.join(f))
                .map_err(|e| format!("{}: {e}", dir.join(f).display()))?;
        }
        let mut app = base.clone();
        app["name"] = Value::from(name.clone());
        app["memory_mib"] = Value::from(declared);
        std::fs::write(dir.join("app.json"), app.to_string())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let pkg = out.join(format!("{name}.cpkg"));
        let res = Command::new(&ctl)
            .arg("pack")
            .arg(&dir)
            .arg("--key")
            .arg(&key)
            .arg("--out")
            .arg(&pkg)
            .output()
            .map_err(|e| format!("{}: {e}", ctl.display()))?;
        if !res.status.success() {
            return Err(format!(
                "cpevisorctl pack {}: {}",
                dir.display(),
                String::from_utf8_lossy(&res.stderr)
            ));
        }
        packages.push(pkg);
    }
    Ok((packages, declared))
}

/// Boots [`BOARD`], installs microVM copies declaring `memory_mib` (None: the sample app's
/// declaration) until one is refused (or [`MAX_APPS`]), then asks every admitted app for its
/// page and reads each one's memory. `progress` is told each step (for a person watching a long
/// run).
pub fn run(memory_mib: Option<u32>, progress: &dyn Fn(&str)) -> Result<ManyApps, String> {
    let out = workspace_root().join(format!("target/many-apps/{}", std::process::id()));
    let (packages, declared_mib) = variant_packages(MAX_APPS, memory_mib, &out)?;
    let server = HttpServer::serve(&out)?;
    let flash = Flash::blank("many-apps", 512)?;
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts)?;
    vm.wait_ready(Duration::from_secs(240))?;
    let names = stems(&packages);
    let where_it_answers = |vm: &mut BoardVm, eu_id: &str| -> Result<(String, u32), String> {
        let addr = app_address(vm, eu_id)?;
        Ok((addr, vmm_pid(vm, eu_id)?))
    };
    let mut run = install_until_refused(&mut vm, &server, &names, &where_it_answers, progress)?;
    run.declared_mib = declared_mib;
    run.board = BOARD;
    Ok(run)
}

/// [`run`] with jail apps on [`JAIL_BOARD`]: copies of its arch's status jail app declaring
/// `memory_mib` (None: the package's declaration).
pub fn run_jail(memory_mib: Option<u32>, progress: &dyn Fn(&str)) -> Result<ManyApps, String> {
    let packages = JailPackages::find(JAIL_BOARD)?;
    let app_json = packages
        .dir
        .join(format!("build/status-jail-{}-1.0/app.json", packages.arch));
    let declared_mib = match memory_mib {
        Some(m) => m,
        None => declared_memory(&app_config(&app_json)?, &app_json)?,
    };
    let mut copies = crate::packages::Variants::new(&packages.dir);
    let mut names = Vec::new();
    for i in 0..MAX_APPS {
        let name = format!("jdens{i:02}");
        let file = packages.variant(&name, |c| {
            c["name"] = Value::from(name.clone());
            c["memory_mib"] = Value::from(declared_mib);
            crate::packages::erofs_root(c);
        })?;
        copies.keep(file);
        names.push(name);
    }
    let server = HttpServer::serve(&packages.dir)?;
    let flash = Flash::blank("many-jail-apps", 512)?;
    let mut vm = boot_jail_board(JAIL_BOARD, &flash, "formatted")?;
    let where_it_answers = |vm: &mut BoardVm, eu_id: &str| -> Result<(String, u32), String> {
        let pid = jail_pid(vm, eu_id, "httpd")?;
        Ok((format!("{}:{APP_PORT}", jail_address(vm, pid)?), pid))
    };
    let mut run = install_until_refused(&mut vm, &server, &names, &where_it_answers, progress)?;
    run.declared_mib = declared_mib;
    run.board = JAIL_BOARD;
    run.jail = true;
    Ok(run)
}

fn stems(packages: &[PathBuf]) -> Vec<String> {
    packages
        .iter()
        .filter_map(|p| p.file_stem()?.to_str().map(str::to_string))
        .collect()
}

/// A staged package's `app.json`.
fn app_config(app_json: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(app_json).map_err(|e| {
        format!(
            "{}: {e} (build the sample packages: `bash scripts/sample-app.sh`)",
            app_json.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", app_json.display()))
}

/// The memory an app config declares, MiB.
fn declared_memory(app: &Value, app_json: &Path) -> Result<u32, String> {
    app["memory_mib"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| format!("{}: no memory_mib", app_json.display()))
}

/// Where an Active app answers HTTP and which process to weigh: (address, PID) for an EU.
type WhereItAnswers = dyn Fn(&mut BoardVm, &str) -> Result<(String, u32), String>;

/// The loop both backends share, on a booted board: installs `names` (served by `server` as
/// `<name>.cpkg`) one after another until one is refused, each to Active and answering (where
/// it answers and the process to weigh from `where_it_answers`), then asks them all again and
/// reads each one's memory. What the run was (board, backend, declaration) is left for the
/// caller to fill in.
fn install_until_refused(
    vm: &mut BoardVm,
    server: &HttpServer,
    names: &[String],
    where_it_answers: &WhereItAnswers,
    progress: &dyn Fn(&str),
) -> Result<ManyApps, String> {
    wait_agent(vm, Duration::from_secs(120))?;
    let board_before = meminfo(vm)?;
    let mut apps = Vec::new();
    let mut refusal = None;
    for name in names {
        let url = format!("http://10.0.2.2:{}/{name}.cpkg", server.port);
        let started = Instant::now();
        let done = install(vm, &url, Duration::from_secs(400))?;
        if let Err(fault) = done.outcome {
            progress(&format!(
                "{name}: refused ({} {})",
                fault.code, fault.message
            ));
            refusal = Some(fault);
            break;
        }
        let list = wait_agent(vm, Duration::from_secs(60))?;
        let eu = eu_of(&list, name).ok_or_else(|| format!("no EU {name} in {list}"))?;
        let eu_id = eu["eu_id"].as_str().unwrap_or_default().to_string();
        wait_eu_status(vm, &eu_id, "Active", Duration::from_secs(300))?;
        let (addr, pid) = where_it_answers(vm, &eu_id)?;
        fetch_status_page(vm, &addr, Duration::from_secs(300))?;
        let install_to_active = started.elapsed();
        progress(&format!(
            "{name}: {eu_id} Active and answering at {addr} after {install_to_active:.1?}"
        ));
        apps.push(AppCost {
            eu_id,
            addr,
            pid,
            memory_in_use_kib: 0,
            pss_kib: 0,
            install_to_active,
        });
    }
    // All at once: every admitted app answers while all of them run.
    let mut answered = 0;
    for app in &apps {
        match fetch_status_page(vm, &app.addr, Duration::from_secs(60)) {
            Ok(page) if page.contains(&sample_token("1.0")) => answered += 1,
            Ok(page) => progress(&format!("{}: unexpected page: {page}", app.eu_id)),
            Err(e) => progress(&format!("{}: {e}", app.eu_id)),
        }
    }
    for app in &mut apps {
        app.memory_in_use_kib = memory_current_kib(vm, &app.eu_id)?;
        app.pss_kib = smaps(vm, app.pid)?.pss;
    }
    let board_after = meminfo(vm)?;
    Ok(ManyApps {
        board: "",
        jail: false,
        declared_mib: 0,
        apps,
        refusal,
        answered,
        board_before,
        board_after,
    })
}

/// The board's /proc/meminfo in KiB.
fn meminfo(vm: &mut BoardVm) -> Result<Vec<(String, u64)>, String> {
    let out = vm.run_ok("cat /proc/meminfo", Duration::from_secs(30))?;
    Ok(parse_meminfo(&out))
}

/// `Key: N kB` lines; other console noise is skipped.
pub fn parse_meminfo(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            let v = v.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// The app's cgroup `memory.current` in KiB.
fn memory_current_kib(vm: &mut BoardVm, eu_id: &str) -> Result<u64, String> {
    let out = vm.run_ok(
        &format!("echo CUR $(cat /sys/fs/cgroup/cpevisor/{eu_id}/memory.current)"),
        Duration::from_secs(30),
    )?;
    tagged(&out, "CUR ")
        .map(|b| b / 1024)
        .ok_or_else(|| format!("{eu_id}: no memory.current in {out:?}"))
}

/// The PID of a microVM app's VMM: the first process in its cgroup.
fn vmm_pid(vm: &mut BoardVm, eu_id: &str) -> Result<u32, String> {
    let out = vm.run_ok(
        &format!("echo PID $(head -n1 /sys/fs/cgroup/cpevisor/{eu_id}/cgroup.procs)"),
        Duration::from_secs(30),
    )?;
    tagged(&out, "PID ")
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| format!("{eu_id}: no VMM process in {out:?}"))
}

/// The number after `tag` on the output's line that starts with it (console noise skipped).
fn tagged(out: &str, tag: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(tag)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_are_parsed_and_noise_skipped() {
        let m = parse_meminfo(
            "MemTotal:  500000 kB\r\n[ 1.2] eth0 up\nMemFree: 1 kB\nHugePages_Total: 0\n",
        );
        assert_eq!(
            m,
            vec![
                ("MemTotal".to_string(), 500_000),
                ("MemFree".to_string(), 1)
            ]
        );
    }
}
