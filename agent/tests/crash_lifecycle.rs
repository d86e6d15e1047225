//! Crash injection: for install, update and uninstall the agent SIGKILLs itself at EVERY
//! persistence step (CPEVISOR_CRASH_AT, steps recorded first with CPEVISOR_CRASH_TRACE), is
//! restarted, and then: the store is consistent, nothing installed is lost, a failed update left
//! the previous version running, and the operation's DUStateChange! was emitted exactly once.

#[path = "common/agentd.rs"]
mod agentd;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use agentd::{kill_apps_of, App, World};
use serde_json::Value;

/// The journal never reached flash at this step: the operation did not start.
const BEFORE_JOURNAL: &str = "atomic_write:journal.json:synced#1";
/// The event was published by the process that then died after removing the journal.
const AFTER_EVENT: &str = "lifecycle:journal:cleared#1";

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Runs `op` once with tracing on and returns every persistence step it passed.
fn trace_steps(w: &mut World, op: &dyn Fn(&World)) -> Vec<String> {
    let trace = w.root.join("trace.txt");
    let _ = fs::remove_file(&trace);
    w.start_daemon_env(None, &[("CPEVISOR_CRASH_TRACE", trace.to_str().unwrap())]);
    op(w);
    assert_eq!(w.stop_daemon(), Some(0));
    kill_apps_of(&w.root);
    // The shutdown's own step (the clean-stop record) comes after the operation: not one of its.
    let steps: Vec<String> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|s| !s.contains("clean-stop.json"))
        .map(str::to_string)
        .collect();
    assert!(steps.contains(&BEFORE_JOURNAL.to_string()), "{steps:?}");
    assert!(steps.contains(&AFTER_EVENT.to_string()), "{steps:?}");
    steps
}

/// Starts the agent set to die at `step`, runs `op`, and waits for the SIGKILL.
fn crash_at(w: &mut World, step: &str, op: &dyn Fn(&World)) {
    w.start_daemon(Some(step));
    op(w);
    let mut child = w.daemon.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(st.signal(), Some(libc::SIGKILL), "{step}: {st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: the agent never reached it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A power loss takes the apps down too.
    kill_apps_of(&w.root);
}

/// After recovery: journal gone, downloads/tmp empty, every referenced blob present, no
/// unreferenced blob or app directory. Returns state.json.
fn assert_consistent(w: &World, step: &str) -> Value {
    let st = &w.state;
    assert!(!st.join("journal.json").exists(), "{step}: journal left");
    for d in ["downloads", "tmp"] {
        let n = fs::read_dir(st.join(d)).map(|r| r.count()).unwrap_or(0);
        assert_eq!(n, 0, "{step}: {d}/ not empty: {:?}", w.state_files());
    }
    let state = w.state_json().unwrap_or(Value::Null);
    let mut blobs = HashSet::new();
    let mut app_ids = HashSet::new();
    for r in state["dus"].as_array().cloned().unwrap_or_default() {
        for b in r["files"]["blobs"].as_array().unwrap() {
            let hex = b
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string();
            assert!(
                st.join("blobs/sha256").join(&hex).is_file(),
                "{step}: blob {hex} missing"
            );
            blobs.insert(hex);
        }
        let id = r["files"]["app_id"].as_str().unwrap().to_string();
        assert!(
            st.join("apps").join(&id).is_dir(),
            "{step}: app dir {id} missing"
        );
        app_ids.insert(id);
    }
    for e in fs::read_dir(st.join("blobs/sha256")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        assert!(blobs.contains(&n), "{step}: unreferenced blob {n}");
    }
    for e in fs::read_dir(st.join("apps")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        assert!(
            app_ids.contains(&n) || n.ends_with("_data"),
            "{step}: stray app dir {n}"
        );
    }
    state
}

fn wait_log(w: &World, eu: &str, text: &str, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = w.ctl_json(&["logs", eu]).unwrap()["log"]
            .as_str()
            .unwrap()
            .to_string();
        if log.contains(text) {
            return;
        }
        assert!(Instant::now() < deadline, "{step}: {text:?} not in {log:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn install_survives_a_crash_at_every_step() {
    let mut w = World::new("crash-inst");
    let url = w.publish(&App::new("voip", "1.0"), "voip.cpkg");
    let install = |w: &World| {
        let _ = w.ctl(&["install", &url]);
    };
    let steps = trace_steps(&mut w, &install);
    eprintln!("install steps: {steps:?}");
    let _ = fs::remove_dir_all(&w.state);
    for step in &steps {
        let _ = fs::remove_dir_all(&w.state);
        crash_at(&mut w, step, &install);
        w.start_daemon(None);
        let state = assert_consistent(&w, step);
        let dus = w.list()["deployment_units"].as_array().cloned().unwrap();
        let evs = w.du_events();
        if step == BEFORE_JOURNAL {
            assert!(dus.is_empty() && evs.is_empty(), "{step}: {dus:?} {evs:?}");
        } else if step == AFTER_EVENT {
            assert_eq!(dus.len(), 1, "{step}");
            assert!(evs.is_empty(), "{step}: event emitted twice: {evs:?}");
        } else {
            assert_eq!(evs.len(), 1, "{step}: {evs:?}");
            assert_eq!(evs[0]["operation_performed"], "Install");
            if dus.is_empty() {
                assert_eq!(evs[0]["current_state"], "Failed", "{step}");
                assert_eq!(evs[0]["fault"]["code"], 7003, "{step}");
                assert!(state["dus"].as_array().is_none_or(|a| a.is_empty()));
            } else {
                assert_eq!(evs[0]["current_state"], "Installed", "{step}");
                assert!(evs[0]["fault"].is_null(), "{step}");
            }
        }
        if let Some(du) = dus.first() {
            assert_eq!(du["status"], "Installed");
            let eu = du["execution_unit_list"][0].as_str().unwrap();
            w.wait_eu_status(eu, "Active", 10);
            wait_log(&w, eu, "voip 1.0 up", step);
        }
        // The agent works normally afterwards: installing again succeeds or is a duplicate.
        let again = w.ctl_json(&["install", &url]);
        match (&again, dus.is_empty()) {
            (Ok(_), true) => {}
            (Err((7226, _)), false) => {}
            other => panic!("{step}: install after recovery: {other:?}"),
        }
        assert_eq!(w.stop_daemon(), Some(0));
        kill_apps_of(&w.root);
    }
}

/// A world with voip 1.0 installed and running, saved as a snapshot; returns (uuid, eu).
fn installed_world(tag: &str) -> (World, String, String, std::path::PathBuf) {
    let mut w = World::new(tag);
    let url = w.publish(&App::new("voip", "1.0"), "voip-1.cpkg");
    w.publish(&App::new("voip", "2.0"), "voip-2.cpkg");
    w.start_daemon(None);
    let du = w.ctl_json(&["install", &url]).unwrap();
    assert_eq!(w.stop_daemon(), Some(0));
    kill_apps_of(&w.root);
    let snap = w.root.join("snapshot");
    copy_dir(&w.state, &snap);
    let uuid = du["uuid"].as_str().unwrap().to_string();
    let eu = du["execution_unit_list"][0].as_str().unwrap().to_string();
    (w, uuid, eu, snap)
}

#[test]
fn update_survives_a_crash_at_every_step() {
    let (mut w, uuid, eu, snap) = installed_world("crash-upd");
    let url2 = w.url("voip-2.cpkg");
    let update = |w: &World| {
        let _ = w.ctl(&["update", &uuid, &url2]);
    };
    let steps = trace_steps(&mut w, &update);
    eprintln!("update steps: {steps:?}");
    for step in &steps {
        copy_dir(&snap, &w.state);
        crash_at(&mut w, step, &update);
        w.start_daemon(None);
        assert_consistent(&w, step);
        let dus = w.list()["deployment_units"].as_array().cloned().unwrap();
        assert_eq!(dus.len(), 1, "{step}: the installed app was lost");
        let version = dus[0]["version"].as_str().unwrap().to_string();
        let evs = w.du_events();
        if step == BEFORE_JOURNAL {
            assert_eq!(version, "1.0", "{step}");
            assert!(evs.is_empty(), "{step}: {evs:?}");
        } else if step == AFTER_EVENT {
            assert_eq!(version, "2.0", "{step}");
            assert!(evs.is_empty(), "{step}: event emitted twice: {evs:?}");
        } else {
            assert_eq!(evs.len(), 1, "{step}: {evs:?}");
            assert_eq!(evs[0]["operation_performed"], "Update");
            assert_eq!(evs[0]["current_state"], "Installed");
            assert_eq!(evs[0]["version"], version.as_str(), "{step}");
            assert_eq!(
                evs[0]["fault"].is_null(),
                version == "2.0",
                "{step}: {evs:?}"
            );
        }
        // Whichever version is installed is the one running.
        w.wait_eu_status(&eu, "Active", 10);
        wait_log(&w, &eu, &format!("voip {version} up"), step);
        assert_eq!(w.stop_daemon(), Some(0));
        kill_apps_of(&w.root);
    }
}

#[test]
fn uninstall_survives_a_crash_at_every_step() {
    let (mut w, uuid, eu, snap) = installed_world("crash-uni");
    let uninstall = |w: &World| {
        let _ = w.ctl(&["uninstall", &uuid]);
    };
    let steps = trace_steps(&mut w, &uninstall);
    eprintln!("uninstall steps: {steps:?}");
    for step in &steps {
        copy_dir(&snap, &w.state);
        crash_at(&mut w, step, &uninstall);
        w.start_daemon(None);
        assert_consistent(&w, step);
        let dus = w.list()["deployment_units"].as_array().cloned().unwrap();
        let evs = w.du_events();
        if step == BEFORE_JOURNAL {
            assert_eq!(dus.len(), 1, "{step}");
            assert!(evs.is_empty(), "{step}: {evs:?}");
            w.wait_eu_status(&eu, "Active", 10);
        } else {
            // An uninstall that started always completes.
            assert!(dus.is_empty(), "{step}: {dus:?}");
            assert!(
                !w.state.join(format!("apps/{uuid}_data")).exists(),
                "{step}"
            );
            if step == AFTER_EVENT {
                assert!(evs.is_empty(), "{step}: event emitted twice");
            } else {
                assert_eq!(evs.len(), 1, "{step}: {evs:?}");
                assert_eq!(evs[0]["operation_performed"], "Uninstall");
                assert_eq!(evs[0]["current_state"], "Uninstalled");
            }
        }
        assert_eq!(w.stop_daemon(), Some(0));
        kill_apps_of(&w.root);
    }
}

#[test]
fn update_whose_new_version_cannot_start_keeps_the_previous_running() {
    let (mut w, uuid, eu, _snap) = installed_world("upd-bad");
    let mut broken = App::new("voip", "3.0");
    broken.command = vec!["/nonexistent/voipd".into()];
    let url3 = w.publish(&broken, "voip-3.cpkg");
    w.start_daemon(None);
    w.wait_eu_status(&eu, "Active", 10);
    let err = w.ctl_json(&["update", &uuid, &url3]).unwrap_err();
    assert_eq!(err.0, 7003, "{}", err.1);
    assert!(err.1.contains("1.0 restored"), "{}", err.1);
    let du = &w.list()["deployment_units"][0];
    assert_eq!(du["version"], "1.0");
    w.wait_eu_status(&eu, "Active", 10);
    wait_log(&w, &eu, "voip 1.0 up", "revert");
    let evs = w.du_events();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["version"], "1.0");
    assert_eq!(evs[0]["fault"]["code"], 7003);
    assert_consistent(&w, "revert");
    // And after a reboot it is still 1.0.
    w.kill_daemon();
    kill_apps_of(&w.root);
    w.start_daemon(None);
    assert_eq!(w.list()["deployment_units"][0]["version"], "1.0");
    w.wait_eu_status(&eu, "Active", 10);
}

#[test]
fn a_damaged_journal_is_set_aside_and_the_agent_starts() {
    let (mut w, _uuid, eu, _snap) = installed_world("bad-journal");
    fs::write(w.state.join("journal.json"), b"{\"operation\": \"Inst").unwrap();
    // What the cut operation had unpacked is swept as nothing refers to it; data dirs stay.
    let stray = w
        .state
        .join("apps/0badc0de-0000-5000-8000-000000000000_0123456789ab");
    let data = w
        .state
        .join("apps/0badc0de-0000-5000-8000-000000000000_data");
    fs::create_dir_all(&stray).unwrap();
    fs::create_dir_all(&data).unwrap();
    w.start_daemon(None);
    assert!(w.state.join("journal.json.bad").exists());
    assert!(!w.state.join("journal.json").exists());
    w.wait_eu_status(&eu, "Active", 10);
    assert!(w.daemon_log().contains("set aside"), "{}", w.daemon_log());
    assert!(!stray.exists() && data.exists());
    assert_consistent(&w, "swept");
    // A damaged state file, on the other hand, stops the agent with a clear error.
    w.stop_daemon();
    fs::write(w.state.join("state.json"), b"[garbage").unwrap();
    let out = Command::new(agentd::DAEMON)
        .arg("--state-dir")
        .arg(&w.state)
        .arg("--config")
        .arg(&w.config)
        .arg("--socket")
        .arg(&w.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.json") && err.contains("malformed JSON"),
        "{err}"
    );
    assert!(!w.socket.exists(), "socket left behind");
}
