//! Many microVM apps on one board (issue 11, docs/density.md): the agent in qemu-virt-a53
//! installs copies of the sample app one after another until its admission refuses one, then
//! every admitted app must answer HTTP at once, and each one's memory is read.
//!
//! The copies are the staged sample app (`target/packages/build/status-1.0/`, built by
//! scripts/sample-app.sh) under other names (`dens00`, `dens01`, ...), repacked with the
//! sample app's signing key: the same kernel, initrd and disk blobs, so the agent stores them
//! once, as an operator's fleet of apps built on one base would be.

use crate::agent::{
    app_address, eu_of, fetch_status_page, host_cpevisorctl, install, sample_token, wait_agent,
    wait_eu_status, Flash, HttpServer,
};
use crate::microvm::cache_dir;
use crate::{workspace_root, BoardVm, BootOptions};
use cpevisor_usp::errors::UspError;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The board the figures are taken on.
pub const BOARD: &str = "qemu-virt-a53";
/// Installs are tried up to this many apps, refused or not (the board's budget ends it sooner).
pub const MAX_APPS: usize = 40;

/// One admitted app: its EU, address, and what it costs the board.
#[derive(Debug, Clone)]
pub struct AppCost {
    /// The EU's id.
    pub eu_id: String,
    /// Its address on its tap link.
    pub addr: String,
    /// The app's cgroup `memory.current` in KiB (what the agent reports as `MemoryInUse`).
    pub memory_in_use_kib: u64,
    /// PSS of its VMM process in KiB (its own pages plus the guest RAM resident).
    pub vmm_pss_kib: u64,
    /// From the install command to Active.
    pub install_to_active: Duration,
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct ManyApps {
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
    let text = std::fs::read_to_string(&app_json).map_err(|e| {
        format!(
            "{}: {e} (build the sample app: `bash scripts/sample-app.sh`)",
            app_json.display()
        )
    })?;
    let base: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", app_json.display()))?;
    let declared = match memory_mib {
        Some(m) => m,
        None => base["memory_mib"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| format!("{}: no memory_mib", app_json.display()))?,
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

/// Boots the board, installs copies declaring `memory_mib` until one is refused (or
/// [`MAX_APPS`]), then asks every admitted app for its page and reads each one's memory.
/// `progress` is told each step (for a person watching a long run).
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
    wait_agent(&mut vm, Duration::from_secs(60))?;
    let board_before = meminfo(&mut vm)?;
    let mut apps = Vec::new();
    let mut refusal = None;
    for pkg in &packages {
        let name = pkg.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let url = format!("http://10.0.2.2:{}/{name}.cpkg", server.port);
        let started = Instant::now();
        let done = install(&mut vm, &url, Duration::from_secs(400))?;
        if let Err(fault) = done.outcome {
            progress(&format!(
                "{name}: refused ({} {})",
                fault.code, fault.message
            ));
            refusal = Some(fault);
            break;
        }
        let list = wait_agent(&mut vm, Duration::from_secs(60))?;
        let eu = eu_of(&list, name).ok_or_else(|| format!("no EU {name} in {list}"))?;
        let eu_id = eu["eu_id"].as_str().unwrap_or_default().to_string();
        wait_eu_status(&mut vm, &eu_id, "Active", Duration::from_secs(300))?;
        let addr = app_address(&mut vm, &eu_id)?;
        fetch_status_page(&mut vm, &addr, Duration::from_secs(300))?;
        let install_to_active = started.elapsed();
        progress(&format!(
            "{name}: {eu_id} Active and answering at {addr} after {install_to_active:.1?}"
        ));
        apps.push(AppCost {
            eu_id,
            addr,
            memory_in_use_kib: 0,
            vmm_pss_kib: 0,
            install_to_active,
        });
    }
    // All at once: every admitted app answers while all of them run.
    let mut answered = 0;
    for app in &apps {
        match fetch_status_page(&mut vm, &app.addr, Duration::from_secs(60)) {
            Ok(page) if page.contains(&sample_token("1.0")) => answered += 1,
            Ok(page) => progress(&format!("{}: unexpected page: {page}", app.eu_id)),
            Err(e) => progress(&format!("{}: {e}", app.eu_id)),
        }
    }
    for app in &mut apps {
        let (cur, pss) = app_memory(&mut vm, &app.eu_id)?;
        app.memory_in_use_kib = cur;
        app.vmm_pss_kib = pss;
    }
    let board_after = meminfo(&mut vm)?;
    Ok(ManyApps {
        declared_mib,
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

/// (cgroup memory.current in KiB, VMM PSS in KiB) of one app.
fn app_memory(vm: &mut BoardVm, eu_id: &str) -> Result<(u64, u64), String> {
    let cg = format!("/sys/fs/cgroup/cpevisor/{eu_id}");
    let out = vm.run_ok(
        &format!(
            "echo CUR $(cat {cg}/memory.current); p=$(head -n1 {cg}/cgroup.procs); \
             sed -n 's/^Pss: *\\([0-9]*\\) kB$/PSS \\1/p' /proc/$p/smaps_rollup"
        ),
        Duration::from_secs(30),
    )?;
    let field = |tag: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(tag)?.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("{eu_id}: no {tag} in {out:?}"))
    };
    Ok((field("CUR ")? / 1024, field("PSS ")?))
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
