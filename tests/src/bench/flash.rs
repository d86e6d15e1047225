//! Flash an installed jail app costs (issue 15), taken on this host's agent: the same busybox
//! app packed twice, its root as the tar layer (extracted at install) and as an erofs image
//! (stored and mounted, never extracted), each installed by a fresh `cpevisord` with a jail
//! ExecEnv. `flash.app_bytes_ratio`: the state directory's allocated bytes after the install
//! less before, the app's data directory left out, over the package's size.
//! `flash.install_write_ratio`: the daemon's `write_bytes` less `cancelled_write_bytes`
//! (`/proc/PID/io`) over the install, over the package's size. The erofs package is the
//! figure, the tar package its peer.
//!
//! Packages are packed by the host's `cpevisorctl` (`target/debug`, built here: packing is the
//! operator's, not in the device build); the daemon is the one `agent` measures (`make cross`'s
//! static x86_64 build, or `CPEVISOR_BENCH_AGENT_DIR`).

use super::agent::{median_or, run_bounded, write_file, Binaries, Daemon, TempDir};
use super::stats::round_to;
use super::Figure;
use serde_json::json;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The app's payload: a static busybox (busybox-static, which `make setup` installs).
const BUSYBOX: &str = "/bin/busybox";
/// Its applet links in the app's /bin.
const APPLETS: [&str; 8] = ["sh", "ls", "cat", "echo", "sleep", "grep", "tr", "id"];
/// Installs behind each median.
const RUNS: usize = 3;
/// Longest time a command (`pack`, `install`, `tar`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// `flash.app_bytes_ratio` and `flash.install_write_ratio`, erofs against tar.
pub fn figures(root: &Path, figures: &mut Vec<Figure>) -> Result<(), String> {
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!("{BUSYBOX} missing (busybox-static, `make setup`)"));
    }
    let bins = Binaries::find(root)?;
    let packer = host_ctl(root)?;
    let work = TempDir::new("cpevisor-flash-bench")?;
    let w = &work.0;
    let app = w.join("app");
    make_tree(&app.join("tree"))?;
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(app.join("tree"))
        .arg("-cf")
        .arg(app.join("rootfs.tar"))
        .arg(".");
    run_bounded(tar, w, COMMAND_TIMEOUT)?.success("tar")?;
    let keys = w.join("keys");
    let mut keygen = Command::new(&packer);
    keygen.arg("keygen").arg(&keys);
    run_bounded(keygen, w, COMMAND_TIMEOUT)?.success("cpevisorctl keygen")?;
    let trusted = w.join("trusted");
    fs::create_dir_all(&trusted).map_err(|e| format!("{}: {e}", trusted.display()))?;
    fs::copy(keys.join("cpevisor-signing.pub"), trusted.join("bench.pub"))
        .map_err(|e| format!("trusted key: {e}"))?;
    let www = w.join("www");
    fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
    let mut sizes = Vec::new();
    for layer in ["rootfs", "rootfs_erofs"] {
        let app_json = json!({
            "name": format!("flash-{}", layer.replace('_', "-")), "version": "1.0",
            "vendor": "cpevisor bench", "description": "busybox for the flash figures",
            "arch": "x86_64", "backends": ["jail"], "memory_mib": 8, "vcpus": 1,
            "autostart": false, "command": ["/bin/sh", "-c", "sleep 1000"],
            layer: "rootfs.tar",
        });
        write_file(&app.join("app.json"), app_json.to_string().as_bytes())?;
        let out = www.join(format!("{layer}.cpkg"));
        let mut pack = Command::new(&packer);
        pack.arg("pack")
            .arg(&app)
            .arg("--key")
            .arg(keys.join("cpevisor-signing.key"))
            .arg("--out")
            .arg(&out);
        run_bounded(pack, w, COMMAND_TIMEOUT)?.success("cpevisorctl pack")?;
        sizes.push(fs::metadata(&out).map_err(|e| format!("{e}"))?.len());
    }
    let config = w.join("agent.json");
    let config_json = json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "runner": "jail"}],
        "trusted_keys_dir": trusted,
        "download_cap_bytes": 64 << 20,
    });
    write_file(&config, config_json.to_string().as_bytes())?;
    let server = crate::microvm::HttpServer::serve(&www)?;

    let (mut tar_runs, mut erofs_runs) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        for (layer, runs) in [("rootfs", &mut tar_runs), ("rootfs_erofs", &mut erofs_runs)] {
            let url = format!("http://127.0.0.1:{}/{layer}.cpkg", server.port);
            let size = fs::metadata(www.join(format!("{layer}.cpkg")))
                .map_err(|e| format!("{e}"))?
                .len();
            runs.push(measure(
                &bins,
                w,
                &config,
                &format!("{layer}-{run}"),
                &url,
                size,
            )?);
        }
    }
    drop(server);
    let origin = format!(
        "this host's agent ({}, x86_64, its state on this host's file system), not a board; \
         a busybox jail app ({} byte tar package, {} byte erofs package: busybox {} KiB, {} \
         applet links, the jail's mount points), median of {RUNS} installs each by a fresh \
         cpevisord",
        bins.dir.strip_prefix(root).unwrap_or(&bins.dir).display(),
        sizes[0],
        sizes[1],
        fs::metadata(BUSYBOX).map(|m| m.len() / 1024).unwrap_or(0),
        APPLETS.len(),
    );
    let pick = |runs: &[(f64, Option<f64>)], write: bool| -> Vec<f64> {
        runs.iter()
            .filter_map(|(a, w)| if write { *w } else { Some(*a) })
            .map(|v| round_to(v, 3))
            .collect()
    };
    let (app_erofs, app_tar) = (pick(&erofs_runs, false), pick(&tar_runs, false));
    figures.push(
        Figure::new("flash.app_bytes_ratio", median_or(&app_erofs)?, "ratio")
            .with_peer("tar layer (extracted)", median_or(&app_tar)?)
            .with_note(format!(
                "flash an installed app takes (allocated bytes of the agent's state directory \
                 after the install less before, the app's data directory left out) / its \
                 package's size; the app's root as an erofs image (stored once, mounted \
                 read-only at start) against the same tree as a tar layer (stored and \
                 extracted); target <= 1.1; {origin}"
            ))
            .with_samples(app_erofs, app_tar),
    );
    let (write_erofs, write_tar) = (pick(&erofs_runs, true), pick(&tar_runs, true));
    match (median_or(&write_erofs), median_or(&write_tar)) {
        (Ok(e), Ok(t)) => figures.push(
            Figure::new("flash.install_write_ratio", e, "ratio")
                .with_peer("tar layer (extracted)", t)
                .with_note(format!(
                    "bytes cpevisord wrote towards storage during `cpevisorctl install` \
                     (/proc/PID/io write_bytes less cancelled_write_bytes) / the package's \
                     size: the download (fsynced as it comes, so that a cut one resumes) and \
                     the blobs copied out of it into the store, plus the extracted tree for \
                     the tar; {origin}"
                ))
                .with_samples(write_erofs, write_tar),
        ),
        _ => return Err("this kernel keeps no I/O accounting (/proc/PID/io)".into()),
    }
    Ok(())
}

/// The host's `cpevisorctl` with `pack` (built with the default features).
fn host_ctl(root: &Path) -> Result<PathBuf, String> {
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(root).args([
        "build",
        "-q",
        "-p",
        "cpevisor-agent",
        "--bin",
        "cpevisorctl",
    ]);
    run_bounded(build, root, Duration::from_secs(600))?.success("cargo build cpevisorctl")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug/cpevisorctl"))
}

/// The app's tree: busybox, its applet links, a message, the jail's mount points.
fn make_tree(dir: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    for d in ["bin", "etc", "proc", "dev", "tmp", "data"] {
        fs::create_dir_all(dir.join(d)).map_err(io)?;
    }
    fs::copy(BUSYBOX, dir.join("bin/busybox")).map_err(io)?;
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(a)).map_err(io)?;
    }
    write_file(&dir.join("etc/msg"), b"flash bench\n")
}

/// One install by a fresh daemon: (flash ratio, write ratio where the kernel counts).
fn measure(
    bins: &Binaries,
    work: &Path,
    config: &Path,
    name: &str,
    url: &str,
    package_bytes: u64,
) -> Result<(f64, Option<f64>), String> {
    let daemon = Daemon::start_in(bins, work, config, name)?;
    let state = work.join(format!("state-{name}"));
    let before = allocated(&state);
    let written_before = written(daemon.pid());
    daemon
        .ctl(&["install", url], COMMAND_TIMEOUT)?
        .success("cpevisorctl install")?;
    let written_after = written(daemon.pid());
    let used = allocated(&state).saturating_sub(before);
    drop(daemon);
    let _ = fs::remove_dir_all(&state);
    let size = package_bytes as f64;
    Ok((
        used as f64 / size,
        written_after
            .zip(written_before)
            .map(|(a, b)| a.saturating_sub(b) as f64 / size),
    ))
}

/// Allocated bytes of everything under `dir` but the apps' data directories (`apps/*_data`).
fn allocated(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut sum = 0;
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("_data"))
        {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        sum += m.blocks() * 512;
        if m.is_dir() {
            sum += allocated(&p);
        }
    }
    sum
}

/// `write_bytes` less `cancelled_write_bytes` of `pid`; None without I/O accounting.
fn written(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("write_bytes: ")?.saturating_sub(field("cancelled_write_bytes: ")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_leaves_the_apps_data_out() {
        let dir = TempDir::new("flash-bench-test").unwrap();
        let apps = dir.0.join("apps");
        fs::create_dir_all(apps.join("a_data")).unwrap();
        fs::create_dir_all(apps.join("a")).unwrap();
        let empty = allocated(&dir.0);
        fs::write(apps.join("a_data/big"), vec![1u8; 1 << 20]).unwrap();
        assert_eq!(
            allocated(&dir.0),
            empty,
            "data is the app's, not the package's"
        );
        fs::write(apps.join("a/big"), vec![1u8; 1 << 20]).unwrap();
        assert!(allocated(&dir.0) >= empty + (1 << 20));
        assert!(written(std::process::id()).is_some() || !Path::new("/proc/self/io").exists());
    }
}
