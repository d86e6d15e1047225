//! Supervision through the real daemon: TR-181 AutoRestart back-off on a crashing app, ResetPeriod,
//! reboot (SIGKILL of the agent) with AutoStart, clean SIGTERM, and misbehaving API clients.

#[path = "common/agentd.rs"]
mod agentd;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use agentd::{eu_of, App, World};
use serde_json::json;

#[test]
fn crash_loop_backs_off_then_fails_while_active() {
    let mut w = World::new("loop");
    let mut app = App::new("crashy", "1.0");
    app.command = vec!["/bin/sh".into(), "-c".into(), "echo boom; exit 3".into()];
    app.restart = json!({"enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 2,
        "retry_interval_multiplier": 2000, "max_retry_count": 2, "reset_period_s": 600});
    let url = w.publish(&app, "crashy.cpkg");
    let mut calm = App::new("calm", "1.0");
    calm.restart["enable"] = json!(false);
    calm.command = vec!["/bin/sh".into(), "-c".into(), "sleep 0.3; exit 7".into()];
    let calm_url = w.publish(&calm, "calm.cpkg");
    w.start_daemon(None);

    let t0 = Instant::now();
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    // Restarting with a scheduled NextRestart is visible between attempts.
    let mut saw_next_restart = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = w.eu(&eu);
        if v["status"] == "Restarting" && v["auto_restart"]["next_restart"].as_u64().unwrap() > 0 {
            saw_next_restart = true;
        }
        if v["execution_fault_code"] == "FailureWhileActive" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}\n{}", w.daemon_log());
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = t0.elapsed();
    assert!(saw_next_restart);
    assert_eq!(v["status"], "Idle");
    assert_eq!(v["auto_restart"]["retry_count"], 2);
    let msg = v["execution_fault_message"].as_str().unwrap();
    assert!(
        msg.contains("exited with status 3") && msg.contains("2 restarts"),
        "{msg}"
    );
    // Back-off 1 s then 2 s (min * 2^retry, capped at max) before giving up.
    assert!(elapsed >= Duration::from_millis(2900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let log = w.ctl_json(&["logs", &eu]).unwrap()["log"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(log.matches("boom").count(), 3, "{log}");

    // The EU status changes were published as value-change events, in order.
    let statuses: Vec<String> = w
        .events()
        .iter()
        .filter(|e| e["kind"] == "ValueChange" && e["eu_id"] == eu.as_str())
        .map(|e| e["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses.first().map(String::as_str), Some("Starting"));
    assert_eq!(
        statuses.iter().filter(|s| *s == "Restarting").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(statuses.last().map(String::as_str), Some("Idle"));

    // AutoRestart disabled: the first exit ends it.
    let calm_eu = eu_of(&w.ctl_json(&["install", &calm_url]).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = w.eu(&calm_eu);
        if v["execution_fault_code"] == "FailureWhileActive" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(v["execution_fault_message"]
        .as_str()
        .unwrap()
        .contains("status 7"));
    assert!(v["execution_fault_message"]
        .as_str()
        .unwrap()
        .contains("AutoRestart disabled"));
}

#[test]
fn reset_period_resets_the_retry_count() {
    let mut w = World::new("reset");
    let mut app = App::new("flaky", "1.0");
    // Up 1.5 s, then crash; ResetPeriod 1 s: each crash counts as the first.
    app.command = vec!["/bin/sh".into(), "-c".into(), "sleep 1.5; exit 1".into()];
    app.restart = json!({"enable": true, "retry_min_wait_s": 0, "retry_max_wait_s": 1,
        "retry_interval_multiplier": 1000, "max_retry_count": 1, "reset_period_s": 1});
    let url = w.publish(&app, "flaky.cpkg");
    w.start_daemon(None);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    std::thread::sleep(Duration::from_millis(4500));
    let v = w.eu(&eu);
    assert_eq!(
        v["execution_fault_code"], "NoFault",
        "gave up despite ResetPeriod: {v}"
    );
    assert!(v["status"] == "Active" || v["status"] == "Starting", "{v}");
    assert_eq!(v["auto_restart"]["retry_count"], 1);
    let stopped = w.ctl_json(&["stop", &eu]).unwrap();
    assert_eq!(stopped["status"], "Idle");
    assert_eq!(stopped["execution_fault_code"], "NoFault");
}

#[test]
fn reboot_restarts_autostart_apps_and_sigterm_stops_cleanly() {
    let mut w = World::new("reboot");
    let url_a = w.publish(&App::new("alpha", "1.0"), "alpha.cpkg");
    let url_b = w.publish(&App::new("beta", "1.0"), "beta.cpkg");
    w.start_daemon(None);
    let eu_a = eu_of(&w.ctl_json(&["install", &url_a]).unwrap());
    let eu_b = eu_of(&w.ctl_json(&["install", &url_b]).unwrap());
    w.wait_eu_status(&eu_a, "Active", 10);
    w.ctl_json(&["stop", &eu_b]).unwrap();

    // Power cut: the agent and its apps die at once.
    w.kill_daemon();
    agentd::kill_apps_of(&w.root);
    w.start_daemon(None);
    w.wait_eu_status(&eu_a, "Active", 10);
    let b = w.eu(&eu_b);
    assert_eq!(
        b["status"], "Idle",
        "an app stopped by the operator stays stopped: {b}"
    );
    assert_eq!(w.du_events().len(), 0, "no operation was in flight");

    // SIGTERM: apps stopped, exit 0, socket removed.
    let pid_alive = |w: &World| {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|b| {
                    let t = String::from_utf8_lossy(&b).to_string();
                    t.contains("CPEVISOR_DATA_DIR=") && t.contains(w.root.to_str().unwrap())
                })
                .unwrap_or(false)
        })
    };
    assert!(pid_alive(&w));
    assert_eq!(w.stop_daemon(), Some(0));
    assert!(!pid_alive(&w), "apps survived SIGTERM of the agent");
    assert!(!w.socket.exists());
}

#[test]
fn bad_clients_get_faults_and_cannot_hang_others() {
    let mut w = World::new("clients");
    w.start_daemon(None);
    // A client that connects and never sends.
    let _silent = UnixStream::connect(&w.socket).unwrap();
    // An oversized request line.
    let mut big = UnixStream::connect(&w.socket).unwrap();
    let line = vec![b'x'; 70 * 1024];
    let _ = big.write_all(&line);
    let mut reply = String::new();
    big.read_to_string(&mut reply).unwrap();
    assert!(
        reply.contains("7004") && reply.contains("longer than"),
        "{reply}"
    );
    // Malformed and unknown requests.
    for req in ["{nope\n", "{\"op\":\"format\"}\n"] {
        let mut s = UnixStream::connect(&w.socket).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.contains("\"code\":7004"), "{req}: {reply}");
    }
    // A client that sends no newline gets a fault once the request time is up.
    let mut partial = UnixStream::connect(&w.socket).unwrap();
    partial.write_all(b"{\"op\":").unwrap();
    let mut reply = String::new();
    partial.read_to_string(&mut reply).unwrap();
    assert!(
        reply.contains("7004") && reply.contains("no complete request"),
        "{reply}"
    );
    // Others are still served while the silent client holds its connection.
    let t = Instant::now();
    assert!(w.list()["exec_envs"].is_array());
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn kvm_exec_env_runs_one_vmm_per_app_with_its_config() {
    let mut w = World::new("kvm");
    // Stand-in for cpevisor-vmm (this host cannot boot Linux guests): prints its arguments and
    // the VM config it was given, says its guest is ready on the readiness pipe (descriptor 3,
    // as the config's ready_fd says), then runs until stopped.
    w.use_vmm_script(
        "#!/bin/sh\necho \"vmm args: $*\"\ncat \"$2\"\nprintf R >&3\nexec sleep 1000 3>&-\n",
        json!({}),
    );
    let mut app = App::new("vmapp", "1.0");
    app.kvm = true;
    let url = w.publish(&app, "vmapp.cpkg");
    // A jail-only package does not fit a kvm ExecEnv.
    let jail_url = w.publish(&App::new("jailapp", "1.0"), "jailapp.cpkg");
    w.start_daemon(None);
    assert_eq!(w.ctl_json(&["install", &jail_url]).unwrap_err().0, 7225);
    let du = w.ctl_json(&["install", &url]).unwrap();
    let eu = eu_of(&du);
    w.wait_eu_status(&eu, "Active", 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = w.ctl_json(&["logs", &eu]).unwrap()["log"]
            .as_str()
            .unwrap()
            .to_string();
        if log.contains("control_socket") {
            break log;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains("vmm args: --config "), "{log}");
    let json_start = log.find('{').unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&log[json_start..]).unwrap();
    assert_eq!(cfg["memory_mib"], 16);
    assert_eq!(cfg["max_memory_mib"], 16);
    assert_eq!(cfg["vcpus"], 1);
    assert_eq!(cfg["cmdline"], "console=ttyS0 quiet");
    assert_eq!(cfg["console"], "stdout");
    assert_eq!(cfg["ready_fd"], 3);
    let kernel = cfg["kernel"].as_str().unwrap();
    assert!(kernel.contains("/blobs/sha256/"), "{kernel}");
    assert_eq!(std::fs::read(kernel).unwrap(), b"not really a kernel");
    let stopped = w.ctl_json(&["stop", &eu]).unwrap();
    assert_eq!(stopped["status"], "Idle");
}

#[test]
fn kvm_apps_get_a_tap_with_a_link_of_their_own() {
    let mut w = World::new("tap");
    // Its own network namespace: the taps never touch the host's.
    w.wrap = [
        "unshare",
        "--net",
        "sh",
        "-c",
        "ip link set lo up && exec \"$@\"",
        "sh",
    ]
    .map(String::from)
    .to_vec();
    w.use_vmm_script(
        "#!/bin/sh\ncat \"$2\"\necho\nip -o -4 addr show dev cpv-eu-1\nprintf R >&3\nexec sleep 1000\n",
        json!({"app_network": "10.100.0.0/16"}),
    );
    let mut app = App::new("netapp", "1.0");
    app.kvm = true;
    w.publish(&app, "netapp.cpkg");
    w.start_daemon(None);
    // The package server must live in that namespace too.
    let pid = w.daemon.as_ref().unwrap().id().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut server = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "python3", "-m", "http.server", &port])
        .args(["--bind", "127.0.0.1", "--directory"])
        .arg(&w.www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/netapp.cpkg");
    let mut tries = 0;
    let du = loop {
        match w.ctl_json(&["install", &url]) {
            Err((7033, _)) if tries < 100 => tries += 1,
            other => break other.unwrap(),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server.kill();
    let _ = server.wait();
    let eu = eu_of(&du);
    assert_eq!(eu, "eu-1");
    w.wait_eu_status(&eu, "Active", 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = w.ctl_json(&["logs", &eu]).unwrap()["log"]
            .as_str()
            .unwrap()
            .to_string();
        if log.contains("inet ") {
            break log;
        }
        assert!(Instant::now() < deadline, "{log}\n{}", w.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains("inet 10.100.0.5/30"), "{log}");
    let end = log.rfind('}').unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&log[log.find('{').unwrap()..=end]).unwrap();
    assert_eq!(cfg["nets"][0]["tap"], "cpv-eu-1");
    let cmdline = cfg["cmdline"].as_str().unwrap();
    assert!(
        cmdline
            .starts_with("console=ttyS0 quiet ip=10.100.0.6::10.100.0.5:255.255.255.252::eth0:off"),
        "{cmdline}"
    );
    assert!(cmdline.contains("cpevisor.ip=10.100.0.6/30 cpevisor.gw=10.100.0.5"));
    // Stopped: the tap is gone from the agent's namespace.
    w.ctl_json(&["stop", &eu]).unwrap();
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "ip", "link", "show", "cpv-eu-1"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "tap left: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "ip", "link", "show", "lo"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nsenter works");
}

#[test]
fn stop_sends_sigterm_first() {
    let mut w = World::new("sigterm");
    let mut app = App::new("polite", "1.0");
    app.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done".into(),
    ];
    let url = w.publish(&app, "polite.cpkg");
    w.start_daemon(None);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    w.wait_eu_status(&eu, "Active", 10);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w.ctl_json(&["logs", &eu]).unwrap()["log"]
        .as_str()
        .unwrap()
        .contains("ready")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    w.ctl_json(&["stop", &eu]).unwrap();
    // Well before the 2 s stop timeout that would escalate to SIGKILL.
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let log = w.ctl_json(&["logs", &eu]).unwrap()["log"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(log.contains("got TERM"), "{log}");
}

#[test]
fn apps_start_with_no_blocked_signals() {
    // The daemon blocks SIGTERM/SIGINT in its threads; its apps must not inherit that mask
    // (no shell in between, which could reset it).
    let mut w = World::new("sigmask");
    let mut app = App::new("mask", "1.0");
    app.command = ["/bin/busybox", "grep", "SigBlk", "/proc/self/status"]
        .map(String::from)
        .to_vec();
    app.restart = json!({"enable": false, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
        "retry_interval_multiplier": 1000, "max_retry_count": 0, "reset_period_s": 1});
    let url = w.publish(&app, "mask.cpkg");
    w.start_daemon(None);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = w.ctl_json(&["logs", &eu]).unwrap()["log"]
            .as_str()
            .unwrap()
            .to_string();
        if log.contains("SigBlk") {
            break log;
        }
        assert!(Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(log.contains("SigBlk:\t0000000000000000"), "{log}");
}
