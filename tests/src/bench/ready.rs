//! `agent.start_to_active_ms`: from an operator's start request to the agent reporting the app
//! Active, for a microVM app on this host's /dev/kvm, beside `vmm.start_to_boot_ready_ms` of the
//! same runs (the VMM's own clock, from its process start to the guest's boot-ready signal).
//! The difference is what the agent adds: the request, the VMM's spawn and the readiness pipe.
//!
//! This host's KVM runs hand-written guests only (shared/PLATFORM.md), so the app's kernel is
//! a tiny bzImage that signals boot-ready at once: the figures time the agent and the VMM, not
//! a Linux boot (the board figures `vmm.start_to_ready_ms` do that). The VMM runs confined, as
//! the agent always runs it, so this needs root.

use super::agent::{median_or, run_bounded, write_file, Binaries, Daemon, TempDir};
use super::stats::round_to;
use super::Figure;
use crate::firmware::timeout_scale;
use crate::microvm::HttpServer;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts behind each median.
const RUNS: usize = 5;
/// Longest time one start may take to reach Active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of one API reply read.
const MAX_REPLY: u64 = 1 << 20;

/// A bzImage shell (boot protocol 2.15, 64-bit entry at file offset 0xc00) around long-mode
/// code that writes the VMM's boot-ready port 0x3f0 and spins. (The agent's tests build the
/// same guest in agent/tests/common/tiny_guest.rs.)
fn ready_guest() -> Vec<u8> {
    let code = [
        0x66, 0xba, 0xf0, 0x03, // mov dx, 0x3f0
        0xb0, 0x01, 0xee, // mov al, 1; out dx, al
        0xeb, 0xfe, // jmp $
    ];
    let mut bz = vec![0u8; 0x2000];
    bz[0x1f1] = 4; // setup sectors
    bz[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    bz[0x211] = 1; // loadflags: LOADED_HIGH
    bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    bz[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    bz[0x258..0x260].copy_from_slice(&0x10_0000u64.to_le_bytes()); // pref_address
    bz[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    bz[0xc00..0xc00 + code.len()].copy_from_slice(&code);
    bz
}

/// One request on the agent's socket; its `result`.
fn api(daemon: &Daemon, request: &Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(&daemon.socket)
        .map_err(|e| format!("connect {}: {e}", daemon.socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("send {request}: {e}"))?;
    // Progress lines (install) come first; the line with `ok` is the answer.
    for line in BufReader::new(s.take(MAX_REPLY)).lines() {
        let line = line.map_err(|e| format!("reply to {request}: {e}"))?;
        let v: Value =
            serde_json::from_str(line.trim()).map_err(|e| format!("reply {line:?}: {e}"))?;
        match v["ok"].as_bool() {
            Some(true) => return Ok(v["result"].clone()),
            Some(false) => return Err(format!("{request}: {}", v["fault"])),
            None => continue,
        }
    }
    Err(format!("{request}: no answer"))
}

/// The last `boot-ready: <ms> ms since VMM start` of the app's console log.
fn boot_ready_ms(log: &str) -> Option<f64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("boot-ready: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
}

/// Measures `agent.start_to_active_ms` (needs root and /dev/kvm) and appends it to `figures`.
pub fn figures(root: &std::path::Path, figures: &mut Vec<Figure>) -> Result<(), String> {
    // /proc/self belongs to the process's effective uid.
    let root_user = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if !root_user || !std::path::Path::new("/dev/kvm").exists() {
        return Err("agent.start_to_active_ms needs root and /dev/kvm".into());
    }
    let bins = Binaries::find(root)?;
    let vmm = bins.dir.join("cpevisor-vmm");
    if !vmm.is_file() {
        return Err(format!("{} missing", vmm.display()));
    }
    let work = TempDir::new("cpevisor-ready-bench")?;
    let w = &work.0;
    let (keys, trusted, app, www) = (
        w.join("keys"),
        w.join("trusted"),
        w.join("app"),
        w.join("www"),
    );
    for d in [&trusted, &app, &www] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let ctl = |args: &[&std::ffi::OsStr]| {
        let mut c = Command::new(&bins.ctl);
        c.args(args);
        run_bounded(c, w, COMMAND_TIMEOUT)
    };
    ctl(&["keygen".as_ref(), keys.as_os_str()])?.success("cpevisorctl keygen")?;
    std::fs::copy(keys.join("cpevisor-signing.pub"), trusted.join("bench.pub"))
        .map_err(|e| format!("copy the public key: {e}"))?;
    write_file(&app.join("Image"), &ready_guest())?;
    let app_json = json!({
        "name": "bench-ready", "version": "1.0", "vendor": "cpevisor bench",
        "description": "signals boot-ready at once", "arch": "x86_64", "backends": ["kvm"],
        "memory_mib": 16, "vcpus": 1, "cmdline": "console=ttyS0", "autostart": false,
        "kernel": "Image"
    });
    write_file(&app.join("app.json"), app_json.to_string().as_bytes())?;
    let package = www.join("ready.cpkg");
    let key = keys.join("cpevisor-signing.key");
    ctl(&[
        "pack".as_ref(),
        app.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--out".as_ref(),
        package.as_os_str(),
    ])?
    .success("cpevisorctl pack")?;
    let config = w.join("agent.json");
    let config_json = json!({
        "exec_envs": [{"name": "kvm0", "type": "kvm", "arch": "x86_64",
                       "memory_budget_mib": 64}],
        "trusted_keys_dir": trusted,
        "vmm_path": vmm,
        "cgroup_root": w.join("no-cgroup"),
        "run_dir": w.join("run"),
    });
    write_file(&config, config_json.to_string().as_bytes())?;

    let server = HttpServer::serve(&www)?;
    let url = format!("http://127.0.0.1:{}/ready.cpkg", server.port);
    let daemon = Daemon::start_in(&bins, w, &config, "ready")?;
    let du = api(&daemon, &json!({"op": "install", "url": url}))?;
    let eu = du["execution_unit_list"][0]
        .as_str()
        .ok_or_else(|| format!("no execution unit in {du}"))?
        .to_string();
    let (mut agent, mut peer, mut request) = (Vec::new(), Vec::new(), Vec::new());
    let timeout = ACTIVE_TIMEOUT.mul_f64(timeout_scale());
    for _ in 0..RUNS {
        let t0 = Instant::now();
        api(&daemon, &json!({"op": "start", "eu": eu}))?;
        request.push(round_to(t0.elapsed().as_secs_f64() * 1000.0, 2));
        loop {
            let v = api(&daemon, &json!({"op": "status", "id": eu}))?;
            let status = &v["execution_unit"]["status"];
            if status == "Active" {
                break;
            }
            if t0.elapsed() > timeout || status == "Idle" {
                return Err(format!(
                    "{eu} not Active after {:?}: {v}; log: {}",
                    t0.elapsed(),
                    daemon.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        agent.push(round_to(t0.elapsed().as_secs_f64() * 1000.0, 2));
        let logs = api(&daemon, &json!({"op": "logs", "eu": eu}))?;
        let log = logs["log"].as_str().unwrap_or_default();
        peer.push(
            boot_ready_ms(log).ok_or_else(|| format!("no boot-ready line in {eu}'s log: {log}"))?,
        );
        api(&daemon, &json!({"op": "stop", "eu": eu}))?;
    }
    figures.push(
        Figure::new(
            "agent.start_to_active_ms",
            round_to(median_or(&agent)?, 1),
            "ms",
        )
        .with_peer("vmm.start_to_boot_ready_ms", round_to(median_or(&peer)?, 1))
        .with_note(format!(
            "a microVM app on this host's /dev/kvm (a tiny guest that signals boot-ready at \
                 once, confined VMM): start request on the agent's socket until its status reads \
                 Active (polled every 1 ms), beside the VMM's own boot-ready time from its process \
                 start in the same runs; median of {RUNS}; binaries from {}",
            bins.dir.display()
        ))
        .with_samples(agent, peer),
    );
    figures.push(
        Figure::new(
            "agent.start_request_ms",
            round_to(median_or(&request)?, 1),
            "ms",
        )
        .with_note(
            "the same runs: until the start request's answer (RequestedState persisted, the run \
             directory and VM description written, the VMM spawned), part of \
             agent.start_to_active_ms",
        )
        .with_samples(request, Vec::new()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_boot_ready_line_counts() {
        let log =
            "boot-ready: 3.500 ms since VMM start\nx\nboot-ready: 12.250 ms since VMM start\n";
        assert_eq!(boot_ready_ms(log), Some(12.25));
        assert_eq!(boot_ready_ms("guest up\n"), None);
        let g = ready_guest();
        assert_eq!(&g[0x202..0x206], b"HdrS");
    }
}
