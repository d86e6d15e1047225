//! Lifecycle against the real daemon, CLI and an HTTP server on loopback: install, run, update,
//! uninstall, and every refused input with its fault code and nothing changed.

#[path = "common/agentd.rs"]
mod agentd;

use agentd::{App, World};
use serde_json::Value;

fn only_du(w: &World) -> Value {
    let l = w.list();
    let dus = l["deployment_units"].as_array().unwrap();
    assert_eq!(dus.len(), 1, "{l}");
    dus[0].clone()
}

#[test]
fn install_runs_updates_and_uninstalls() {
    let mut w = World::new("life");
    let url1 = w.publish(&App::new("dnsfilter", "1.0"), "dnsfilter-1.0.cpkg");
    w.start_daemon(None);

    let du = w.ctl_json(&["install", &url1]).expect("install");
    assert_eq!(du["status"], "Installed");
    assert_eq!(du["resolved"], true);
    let uuid = du["uuid"].as_str().unwrap().to_string();
    assert_eq!(&uuid[14..15], "5", "UUID v5: {uuid}");
    let eu_id = du["execution_unit_list"][0].as_str().unwrap().to_string();
    let eu = w.wait_eu_status(&eu_id, "Active", 10);
    assert_eq!(eu["requested_state"], "Active");
    assert_eq!(eu["memory_mib"], 16);
    let l = w.list();
    assert_eq!(l["exec_envs"][0]["available_memory_mib"], 48, "{l}");

    // The app really runs: its console reached the log ring.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = w.ctl_json(&["logs", &eu_id]).unwrap()["log"]
            .as_str()
            .unwrap()
            .to_string();
        if log.contains("dnsfilter 1.0 up") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "log: {log:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let eu = w.eu(&eu_id);
    assert!(
        eu["memory_in_use"].as_u64().unwrap() > 0,
        "MemoryInUse: {eu}"
    );

    // Exactly one DUStateChange! for the install, without a fault.
    let evs = w.du_events();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["operation_performed"], "Install");
    assert_eq!(evs[0]["current_state"], "Installed");
    assert_eq!(evs[0]["uuid"], uuid.as_str());
    assert!(evs[0]["fault"].is_null());

    // Stop and start (SetRequestedState).
    let eu = w.ctl_json(&["stop", &eu_id]).unwrap();
    assert_eq!(eu["status"], "Idle");
    assert_eq!(eu["requested_state"], "Idle");
    assert_eq!(w.list()["exec_envs"][0]["available_memory_mib"], 64);
    let statuses: Vec<String> = w
        .events()
        .iter()
        .filter(|e| e["kind"] == "ValueChange" && e["eu_id"] == eu_id.as_str())
        .map(|e| e["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["Starting", "Active", "Stopping", "Idle"]);
    w.ctl_json(&["start", &eu_id]).unwrap();
    w.wait_eu_status(&eu_id, "Active", 10);

    // Update to 2.0: same UUID, the new version runs, the old files are gone.
    let url2 = w.publish(&App::new("dnsfilter", "2.0"), "dnsfilter-2.0.cpkg");
    let du2 = w.ctl_json(&["update", &uuid, &url2]).expect("update");
    assert_eq!(du2["version"], "2.0");
    assert_eq!(du2["uuid"], uuid.as_str());
    w.wait_eu_status(&eu_id, "Active", 10);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !w.ctl_json(&["logs", &eu_id]).unwrap()["log"]
        .as_str()
        .unwrap()
        .contains("dnsfilter 2.0 up")
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let apps: Vec<String> = w
        .state_files()
        .into_iter()
        .filter(|f| f.starts_with("apps/") && f.matches('/').count() == 2 && f.ends_with('/'))
        .collect();
    let data = format!("apps/{uuid}_data/");
    assert_eq!(apps.iter().filter(|a| **a != data).count(), 1, "{apps:?}");
    // Restart: a new process, the same EU.
    let before = w.ctl_json(&["logs", &eu_id]).unwrap()["log"]
        .as_str()
        .unwrap()
        .matches("dnsfilter 2.0 up")
        .count();
    assert_eq!(
        w.ctl_json(&["restart", &eu_id]).unwrap()["status"],
        "Active"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while w.ctl_json(&["logs", &eu_id]).unwrap()["log"]
        .as_str()
        .unwrap()
        .matches("dnsfilter 2.0 up")
        .count()
        <= before
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Updating to the same version again is a duplicate.
    assert_eq!(w.ctl_json(&["update", &uuid, &url2]).unwrap_err().0, 7226);

    // Uninstall keeping data, then nothing but the data dir is left.
    w.ctl_json(&["uninstall", &uuid, "--keep-data"])
        .expect("uninstall");
    assert!(w.list()["deployment_units"].as_array().unwrap().is_empty());
    let files = w.state_files();
    assert!(files.contains(&data), "{files:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("blobs/sha256/") && f.len() > 13),
        "{files:?}"
    );
    let evs = w.du_events();
    let ops: Vec<_> = evs
        .iter()
        .map(|e| e["operation_performed"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["Install", "Update", "Update", "Uninstall"], "{evs:?}");
    assert_eq!(evs[2]["fault"]["code"], 7226);
    assert_eq!(w.stop_daemon(), Some(0));
}

#[test]
fn refused_inputs_have_their_fault_and_change_nothing() {
    let mut w = World::new("bad");
    let good = App::new("probe", "1.0");
    let good_url = w.publish(&good, "probe.cpkg");
    // Corrupted blob: flip one byte of the rootfs inside the tar (the tail is the tar's zero
    // padding, so flip in the middle of the file's data).
    let bytes = std::fs::read(w.www.join("probe.cpkg")).unwrap();
    let needle = b"probe 1.0\n";
    let pos = bytes
        .windows(needle.len())
        .position(|x| x == needle)
        .unwrap();
    let mut corrupt = bytes.clone();
    corrupt[pos] ^= 0x20;
    std::fs::write(w.www.join("corrupt.cpkg"), &corrupt).unwrap();
    std::fs::write(w.www.join("truncated.cpkg"), &bytes[..bytes.len() / 2]).unwrap();
    let other = w.root.join("otherkey");
    std::fs::create_dir_all(&other).unwrap();
    let other_key = cpevisor_agent::package::keygen(&other).unwrap().secret;
    w.publish_with_key(&good, "untrusted.cpkg", &other_key);
    let mut arm = App::new("armapp", "1.0");
    arm.arch = "aarch64".into();
    w.publish(&arm, "arm.cpkg");
    let mut big = App::new("bigapp", "1.0");
    big.memory_mib = 65;
    w.publish(&big, "big.cpkg");
    w.start_daemon(None);

    let before_files = w.state_files();
    let before_list = w.list();
    let zero = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(Vec<String>, u64)> = vec![
        (
            vec![
                "install".into(),
                w.url("probe.cpkg").replace("http://", "http://user:pw@"),
            ],
            7004,
        ),
        (vec!["install".into(), "ftp://127.0.0.1/x".into()], 7004),
        // URLs the download refuses are refused up front, before the ExecEnv is looked at
        // (the lifecycle once had a looser rule of its own: these got 7223 here, and with a
        // good ExecEnv failed only at download).
        (
            vec![
                "install".into(),
                "http://127.0.0.1:99999/x.cpkg".into(),
                "--env".into(),
                "kvm9".into(),
            ],
            7004,
        ),
        (
            vec![
                "install".into(),
                "HTTP://127.0.0.1/x.cpkg".into(),
                "--env".into(),
                "kvm9".into(),
            ],
            7004,
        ),
        (
            vec![
                "install".into(),
                good_url.clone(),
                "--digest".into(),
                "sha256:1234".into(),
            ],
            7004,
        ),
        (
            vec![
                "install".into(),
                good_url.clone(),
                "--env".into(),
                "kvm9".into(),
            ],
            7223,
        ),
        (
            vec!["install".into(), good_url.clone(), "--digest".into(), zero],
            7035,
        ),
        (vec!["install".into(), w.url("corrupt.cpkg")], 7035),
        (vec!["install".into(), w.url("truncated.cpkg")], 7035),
        (vec!["install".into(), w.url("untrusted.cpkg")], 7036),
        (vec!["install".into(), w.url("arm.cpkg")], 7225),
        (vec!["install".into(), w.url("big.cpkg")], 7227),
        (vec!["install".into(), w.url("missing.cpkg")], 7033),
        (
            vec!["install".into(), "http://127.0.0.1:1/x.cpkg".into()],
            7033,
        ),
        (
            vec![
                "uninstall".into(),
                "0b0e5b4e-0000-5000-8000-000000000000".into(),
            ],
            7229,
        ),
        (vec!["update".into(), "not-a-uuid".into()], 7229),
        (vec!["start".into(), "eu-99".into()], 7229),
    ];
    for (args, code) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = w.ctl_json(&a).expect_err(&format!("{a:?} should fail"));
        assert_eq!(err.0, *code, "{a:?}: {}", err.1);
        assert!(!err.1.is_empty());
        assert_eq!(w.state_files(), before_files, "{a:?} changed the store");
        let mut l = w.list();
        l["exec_envs"] = before_list["exec_envs"].clone();
        assert_eq!(l, before_list, "{a:?} changed the model");
    }

    // Package larger than the download cap.
    w.stop_daemon();
    w.write_config(64, 1024);
    w.start_daemon(None);
    let err = w.ctl_json(&["install", &good_url]).unwrap_err();
    assert!(err.0 == 7035 || err.0 == 7005, "{err:?}");
    assert!(
        err.1.contains("1024"),
        "the message names the cap: {}",
        err.1
    );
    // No trusted keys at all: every package is refused, naming the directory.
    w.stop_daemon();
    let empty = w.root.join("no-keys");
    std::fs::create_dir_all(&empty).unwrap();
    w.write_config_patched(serde_json::json!({ "trusted_keys_dir": empty }));
    w.start_daemon(None);
    let err = w.ctl_json(&["install", &good_url]).unwrap_err();
    assert_eq!(err.0, 7036, "{}", err.1);
    assert!(err.1.contains("no trusted signer keys"), "{}", err.1);
    w.stop_daemon();
    w.write_config(64, 1 << 20);
    w.start_daemon(None);

    // Duplicate install, and install while the budget is full.
    let du = w.ctl_json(&["install", &good_url]).unwrap();
    let files = w.state_files();
    let err = w.ctl_json(&["install", &good_url]).unwrap_err();
    assert_eq!(err.0, 7226, "{}", err.1);
    assert_eq!(w.state_files(), files);
    let mut fill = App::new("filler", "1.0");
    fill.memory_mib = 48;
    let fill_url = w.publish(&fill, "filler.cpkg");
    w.ctl_json(&["install", &fill_url]).unwrap();
    assert_eq!(w.list()["exec_envs"][0]["available_memory_mib"], 0);
    let files = w.state_files();
    let other_url = w.publish(&App::new("third", "1.0"), "third.cpkg");
    let err = w.ctl_json(&["install", &other_url]).unwrap_err();
    assert_eq!(err.0, 7227, "{}", err.1);
    assert!(err.1.contains("no memory left"), "{}", err.1);
    assert_eq!(w.state_files(), files);
    // Starting the stopped first app again would exceed the budget once the filler runs.
    let eu = du["execution_unit_list"][0].as_str().unwrap().to_string();
    w.ctl_json(&["stop", &eu]).unwrap();
    w.ctl_json(&["install", &other_url]).unwrap();
    let err = w.ctl_json(&["start", &eu]).unwrap_err();
    assert_eq!(err.0, 7227, "{}", err.1);
    // ExecEnv.Reset() uninstalls everything in it, one event each.
    let before = w.du_events().len();
    let reset = w.ctl_json(&["reset", "jail0"]).unwrap();
    assert_eq!(reset["uninstalled"].as_array().unwrap().len(), 3, "{reset}");
    assert!(w.list()["deployment_units"].as_array().unwrap().is_empty());
    let evs = w.du_events();
    assert_eq!(evs.len(), before + 3);
    assert!(evs[before..]
        .iter()
        .all(|e| e["operation_performed"] == "Uninstall" && e["fault"].is_null()));
    assert!(!w
        .state_files()
        .iter()
        .any(|f| f.starts_with("blobs/sha256/") && f.len() > 13));
    assert_eq!(w.ctl_json(&["reset", "nope"]).unwrap_err().0, 7223);
    // Refusals before the operation started emit no event; the failed install attempts do.
    for e in w.du_events() {
        assert!(e["uuid"].is_string());
    }
    let _ = only_du;
}
