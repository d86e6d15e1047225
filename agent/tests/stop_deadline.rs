//! Stopping apps at their deadline, through the real daemon. An app that ignores SIGTERM is
//! killed at its package's `stop_timeout_ms` and the stop is reported as forced (FailureOnStop,
//! with the reason); one that ends on SIGTERM stops with NoFault. The daemon's shutdown stops
//! its apps at once, not one after the other, and records a clean stop: the next start reports
//! no crash and brings the AutoStart apps back, while a start after a SIGKILLed daemon (a power
//! cut) reports the apps that were running as FailureWhileActive. The same stop on the jail
//! backend (root, busybox-static) and, on x86_64 hosts with /dev/kvm, a real microVM whose
//! guest ignores the power button: the VMM stops it at the deadline and the agent says so.

#[path = "common/agentd.rs"]
mod agentd;

use std::fs;
use std::path::Path;

use agentd::{busybox_rootfs, eu_of, kill_apps_of, tar_dir, World, BUSYBOX};
use serde_json::{json, Value};

const UNCLEAN: &str = "the agent ended without stopping the app";

fn no_restart() -> Value {
    json!({"enable": false, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
           "retry_interval_multiplier": 1000, "max_retry_count": 0, "reset_period_s": 60})
}

/// Packs an AutoStart app running `command` with the package's stop deadline; `busybox`: a
/// busybox rootfs (the jail runner needs one), else a one-file rootfs (the process runner).
fn publish(w: &World, name: &str, command: &[&str], stop_timeout_ms: u32, busybox: bool) -> String {
    let dir = w.root.join(format!("src-{name}"));
    let _ = fs::remove_dir_all(&dir);
    if busybox {
        busybox_rootfs(&dir.join("rootfs"));
    } else {
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        fs::write(dir.join("rootfs/hello"), "hello\n").unwrap();
    }
    tar_dir(&dir.join("rootfs"), &dir.join("rootfs.tar"));
    let app = json!({
        "name": name, "version": "1.0", "vendor": "acme", "description": "stop test app",
        "arch": "x86_64", "backends": ["jail"], "memory_mib": 16, "vcpus": 1,
        "command": command, "restart": no_restart(), "autostart": true, "run_level": 1,
        "rootfs": "rootfs.tar", "stop_timeout_ms": stop_timeout_ms,
    });
    w.pack_app(&dir, &app, &format!("{name}.cpkg"), &w.key)
}

fn eu_events(w: &World, eu: &str) -> Vec<Value> {
    w.events()
        .into_iter()
        .filter(|e| e["eu_id"] == eu)
        .collect()
}

/// An app that handles SIGTERM without ending (it marks that it got it, then waits for the
/// other app's mark and marks that too), so only the SIGKILL at its deadline ends it.
fn stubborn(marks: &Path, me: &str, other: &str) -> String {
    let m = marks.display();
    format!(
        "trap 'touch {m}/{me}.term; while [ ! -e {m}/{other}.term ]; do sleep 0.05; done; \
         touch {m}/{me}.saw-{other}' TERM; echo {me} up; while true; do sleep 1; done"
    )
}

#[test]
fn a_stop_past_the_deadline_is_forced_and_a_clean_shutdown_is_no_crash() {
    let mut w = World::new("stopdl");
    let marks = w.root.join("marks");
    fs::create_dir_all(&marks).unwrap();
    let a = stubborn(&marks, "a", "b");
    let b = stubborn(&marks, "b", "a");
    // The deadline leaves each app time to see the other's mark when both get SIGTERM at once.
    let url_a = publish(&w, "a", &["/bin/sh", "-c", &a], 3000, false);
    let url_b = publish(&w, "b", &["/bin/sh", "-c", &b], 3000, false);
    let url_g = publish(
        &w,
        "gentle",
        &["/bin/sh", "-c", "echo gentle up; exec sleep 1000"],
        3000,
        false,
    );
    w.start_daemon(None);
    let eu_a = eu_of(&w.ctl_json(&["install", &url_a]).unwrap());
    let eu_b = eu_of(&w.ctl_json(&["install", &url_b]).unwrap());
    let eu_g = eu_of(&w.ctl_json(&["install", &url_g]).unwrap());
    for (eu, tag) in [(&eu_a, "a up"), (&eu_b, "b up"), (&eu_g, "gentle up")] {
        w.wait_eu_status(eu, "Active", 10);
        w.wait_log(eu, tag, 10);
    }

    // The daemon's shutdown: both stubborn apps got SIGTERM while the other was still running
    // (each saw the other's mark), then both were killed at their deadline.
    assert_eq!(w.stop_daemon(), Some(0));
    for (me, other) in [("a", "b"), ("b", "a")] {
        assert!(
            marks.join(format!("{me}.saw-{other}")).exists(),
            "{me} got SIGTERM but {other} did not while {me} ran: a sequential shutdown\n{}",
            w.daemon_log()
        );
    }
    let log = w.daemon_log();
    for eu in [&eu_a, &eu_b] {
        assert!(
            log.contains(&format!("{eu}: stop forced: did not stop within 3000 ms")),
            "{log}"
        );
    }
    assert!(!log.contains(&format!("{eu_g}: stop forced")), "{log}");
    let record: Value =
        serde_json::from_slice(&fs::read(w.state.join("clean-stop.json")).unwrap()).unwrap();
    assert_eq!(record["stopped"], json!([eu_a, eu_b, eu_g]), "{record}");

    // After the clean stop: everything comes back (AutoStart), nothing reported as a crash.
    for m in ["a.term", "b.term", "a.saw-b", "b.saw-a"] {
        fs::remove_file(marks.join(m)).unwrap();
    }
    w.start_daemon(None);
    for eu in [&eu_a, &eu_b, &eu_g] {
        w.wait_eu_status(eu, "Active", 10);
        let faults: Vec<Value> = eu_events(&w, eu)
            .into_iter()
            .filter(|e| e["execution_fault_code"] != "NoFault")
            .collect();
        assert!(faults.is_empty(), "{eu} after a clean stop: {faults:?}");
    }
    assert!(
        !w.state.join("clean-stop.json").exists(),
        "the record is taken"
    );

    // One app stopped by the operator: a gentle one ends on SIGTERM, NoFault...
    assert!(w.ctl(&["stop", &eu_g]).status.success());
    let v = w.wait_eu_status(&eu_g, "Idle", 10);
    assert_eq!(v["execution_fault_code"], "NoFault", "{v}");
    // ...a stubborn one is killed at its deadline: FailureOnStop, with the reason.
    assert!(w.ctl(&["stop", &eu_a]).status.success());
    let v = w.wait_eu_status(&eu_a, "Idle", 20);
    assert_eq!(v["execution_fault_code"], "FailureOnStop", "{v}");
    let msg = v["execution_fault_message"].as_str().unwrap();
    assert!(msg.contains("did not stop within 3000 ms"), "{msg}");
    assert!(w.logs(&eu_a).contains("[cpevisord] stop forced"));

    // A power cut (SIGKILL, the apps die with the board): the next start says so for the app
    // that was running, and brings it back.
    w.kill_daemon();
    kill_apps_of(&w.root);
    w.start_daemon(None);
    w.wait_eu_status(&eu_b, "Active", 10);
    let unclean: Vec<Value> = eu_events(&w, &eu_b)
        .into_iter()
        .filter(|e| e["execution_fault_code"] == "FailureWhileActive")
        .collect();
    assert_eq!(unclean.len(), 1, "{:?}", eu_events(&w, &eu_b));
    assert!(
        unclean[0]["execution_fault_message"]
            .as_str()
            .unwrap()
            .contains(UNCLEAN),
        "{unclean:?}"
    );
    // The operator's stop of `a` stands (requested Idle): not reported, not started.
    assert!(
        eu_events(&w, &eu_a).is_empty(),
        "{:?}",
        eu_events(&w, &eu_a)
    );
    assert_eq!(w.eu(&eu_a)["status"], "Idle");
    w.stop_daemon();
}

#[test]
fn a_jail_app_that_ignores_sigterm_is_killed_at_its_deadline() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: needs root and {BUSYBOX} (busybox-static)");
        return;
    }
    let mut w = World::new("stopjail");
    // No app network: loopback only, so this test shares no bridge or veth with others.
    w.write_config_patched(json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "runner": "jail"}],
        "download_cap_bytes": 16 << 20,
    }));
    let stubborn = publish(
        &w,
        "stubborn",
        &[
            "/bin/sh",
            "-c",
            "trap 'echo got TERM, staying' TERM; echo stubborn up; while true; do sleep 1; done",
        ],
        1500,
        true,
    );
    let gentle = publish(
        &w,
        "gentle",
        &[
            "/bin/sh",
            "-c",
            "echo gentle up; exec httpd -f -p 8080 -h /data",
        ],
        1500,
        true,
    );
    w.start_daemon(None);
    let eu_s = eu_of(&w.ctl_json(&["install", &stubborn]).unwrap());
    let eu_g = eu_of(&w.ctl_json(&["install", &gentle]).unwrap());
    w.wait_log(&eu_s, "stubborn up", 20);
    w.wait_log(&eu_g, "gentle up", 20);

    // The jail's runner and init pass SIGTERM on to the app, which ignores it.
    assert!(w.ctl(&["stop", &eu_s]).status.success());
    let v = w.wait_eu_status(&eu_s, "Idle", 20);
    assert!(
        w.logs(&eu_s).contains("got TERM, staying"),
        "{}",
        w.logs(&eu_s)
    );
    assert_eq!(v["execution_fault_code"], "FailureOnStop", "{v}");
    assert!(
        v["execution_fault_message"]
            .as_str()
            .unwrap()
            .contains("did not stop within 1500 ms"),
        "{v}"
    );
    assert!(w.ctl(&["stop", &eu_g]).status.success());
    let v = w.wait_eu_status(&eu_g, "Idle", 20);
    assert_eq!(v["execution_fault_code"], "NoFault", "{v}");
    w.stop_daemon();
}
