//! Flash wear: what the agent writes. Router flash wears out with writes and the agent runs for
//! years, so an idle agent (an app running and health-checked, nobody asking anything) writes
//! nothing at all. What an install writes is printed beside its package's size: here (the
//! process runner, which extracts nothing) the download and the blobs copied out of it into the
//! store, about twice (measured 2.08 for a 540 KB package). A jail app with a tar root also
//! has it extracted (3.09 measured, agent/tests/jail_erofs.rs); one with an erofs root image
//! writes what this one does (2.06) and then takes only about its package's size on flash
//! (1.007 against 2.005 for the tar). What is left above 1 is the download itself.
//!
//! Writes are read two ways: the state directory's files (every path with its size, mtime and
//! inode, compared before and after: a rewrite, an atomic rename, a new or removed file all
//! change it) and the daemon's own `/proc/PID/io` `write_bytes` (bytes it sent towards storage,
//! wherever it wrote). The figures are printed; the idle one must be zero.

#[path = "common/agentd.rs"]
mod agentd;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use agentd::{eu_of, App, World};
use serde_json::json;

/// Idle window: several health-check intervals, memory samples and supervision ticks.
const IDLE: Duration = Duration::from_secs(8);

/// Every path under `dir` with (size, mtime in ns, inode); directories included.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i128, u64)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, i128, u64)>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            let key = p.strip_prefix(base).unwrap().display().to_string();
            out.insert(key, (m.len(), mtime, m.ino()));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The daemon's `write_bytes` from /proc/PID/io (None where the kernel keeps no I/O accounting).
fn write_bytes(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

fn changed(
    before: &BTreeMap<String, (u64, i128, u64)>,
    after: &BTreeMap<String, (u64, i128, u64)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, a) in after {
        match before.get(p) {
            None => out.push(format!("new {p}")),
            Some(b) if b != a => out.push(format!("changed {p}")),
            _ => {}
        }
    }
    out.extend(
        before
            .keys()
            .filter(|p| !after.contains_key(*p))
            .map(|p| format!("removed {p}")),
    );
    out
}

#[test]
fn an_idle_agent_writes_nothing() {
    let mut w = World::new("flash-writes");
    let mut app = App::new("quiet", "1.0");
    // Health-checked every second, so the idle window holds several probes.
    app.extra = json!({"health": {"kind": "command", "command": ["/bin/true"],
                                  "interval_s": 1, "timeout_s": 1, "failure_threshold": 3}});
    app.pad_bytes = 512 << 10;
    let url = w.publish(&app, "quiet.cpkg");
    let package_bytes = fs::metadata(w.www.join("quiet.cpkg")).unwrap().len();
    w.start_daemon(None);
    let pid = w.daemon.as_ref().unwrap().id();

    let written_before = write_bytes(pid);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    w.wait_eu_status(&eu, "Active", 20);
    // The first health probe's verdict is in the model before the window opens.
    w.poll(20, || match w.eu(&eu)["health"]["state"].as_str() {
        Some("ok") => Ok(()),
        other => Err(format!("health {other:?}")),
    });
    let installed = write_bytes(pid).zip(written_before).map(|(a, b)| a - b);

    let files = snapshot(&w.state);
    let idle_before = write_bytes(pid);
    std::thread::sleep(IDLE);
    let idle_written = write_bytes(pid).zip(idle_before).map(|(a, b)| a - b);
    let diff = changed(&files, &snapshot(&w.state));
    println!(
        "flash writes: install {installed:?} bytes by the agent for a package of {package_bytes} \
         bytes (ratio {:?}); idle {:?} s: {idle_written:?} bytes, state files changed: {diff:?}",
        installed.map(|b| b as f64 / package_bytes as f64),
        IDLE.as_secs()
    );
    assert!(
        diff.is_empty(),
        "the idle agent wrote to its state: {diff:?}"
    );
    if let Some(bytes) = idle_written {
        assert_eq!(bytes, 0, "the idle agent wrote {bytes} bytes");
    }
    // Still running and healthy: the window was idle, not stopped.
    assert_eq!(w.eu(&eu)["status"], "Active");
}
