//! cpevisorctl as an operator uses it: keygen, pack, install over HTTP and HTTPS, tables, JSON,
//! faults with their code and exit status, progress lines streamed during a download.

#[path = "common/agentd.rs"]
mod agentd;
mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;

use agentd::{App, World, CTL};
use serde_json::{json, Value};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn keygen_pack_install_and_human_output() {
    let mut w = World::new("cli");
    let keys = w.root.join("cli-keys");
    let out = Command::new(CTL).arg("keygen").arg(&keys).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("key id"));
    let secret = keys.join("cpevisor-signing.key");
    fs::copy(keys.join("cpevisor-signing.pub"), w.trusted.join("cli.pub")).unwrap();

    // An app directory packed by the CLI.
    let src = w.root.join("cli-app");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("rootfs.tar"), vec![0u8; 10240]).unwrap();
    fs::write(
        src.join("app.json"),
        serde_json::to_vec(&json!({
            "name": "speedtest", "version": "0.9", "vendor": "acme", "arch": "x86_64",
            "backends": ["jail"], "memory_mib": 8, "vcpus": 1, "autostart": false,
            "command": ["/bin/sh", "-c", "echo speedtest ready; sleep 30"],
            "rootfs": "rootfs.tar"
        }))
        .unwrap(),
    )
    .unwrap();
    let pkg = w.www.join("speedtest.cpkg");
    let out = Command::new(CTL)
        .args(["pack"])
        .arg(&src)
        .arg("--key")
        .arg(&secret)
        .arg("--out")
        .arg(&pkg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("manifest  sha256:"));

    w.start_daemon(None);
    let out = w.ctl(&["install", &w.url("speedtest.cpkg")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    assert!(o.starts_with("Installed speedtest 0.9 ("), "{o}");
    let uuid = o.split(['(', ')']).nth(1).unwrap().to_string();

    let list = text(&w.ctl(&["list"]).stdout);
    for needle in [
        "EXECENV",
        "jail0",
        "UUID",
        &uuid,
        "speedtest",
        "EUID",
        "Idle",
    ] {
        assert!(list.contains(needle), "{needle} missing from:\n{list}");
    }
    // Not auto-started: start it by hand, then it is Active in the DU status table.
    let eu = w.ctl_json(&["status", &uuid]).unwrap()["execution_units"][0]["eu_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = w.ctl(&["start", &eu]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    w.wait_eu_status(&eu, "Active", 10);
    let st = text(&w.ctl(&["status", &uuid]).stdout);
    assert!(st.contains("Active") && st.contains("0.9"), "{st}");
    let events = text(&w.ctl(&["events"]).stdout);
    assert!(events.contains("DUStateChange! \"Install\""), "{events}");
    assert!(events.contains(&format!("{eu} Status=Active")), "{events}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !text(&w.ctl(&["logs", &eu]).stdout).contains("speedtest ready") {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Faults: code and message on stderr, exit 1; --json carries the fault object.
    let out = w.ctl(&["uninstall", "00000000-0000-5000-8000-000000000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error 7229: "),
        "{}",
        text(&out.stderr)
    );
    let err = w.ctl_json(&["restart", "eu-404"]).unwrap_err();
    assert_eq!(err.0, 7229);
    // Usage errors exit 2 and name the problem.
    let out = w.ctl(&["install"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("install: wrong number of arguments"));
    let out = w.ctl(&["--help"]);
    assert!(out.status.success() && text(&out.stdout).contains("uninstall UUID [--keep-data]"));
    // Stop, uninstall from the CLI.
    assert!(w.ctl(&["stop", &eu]).status.success());
    let out = w.ctl(&["uninstall", &uuid]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("uninstalled {uuid}"));
    // No daemon: exit 2 naming the socket.
    w.stop_daemon();
    let out = w.ctl(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cpevisord.sock"));
}

#[test]
fn install_streams_progress_lines() {
    let mut w = World::new("progress");
    let mut app = App::new("bulky", "1.0");
    app.autostart = false;
    let url = w.publish(&app, "bulky.cpkg");
    // Make the package big enough for several progress reports: repack with a 900 KiB rootfs (under the 1 MiB cap).
    let src = w.root.join("src-bulky.cpkg");
    fs::write(src.join("rootfs.tar"), vec![7u8; 900 << 10]).unwrap();
    let key = cpevisor_agent::package::load_signing_key(&w.key).unwrap();
    cpevisor_agent::package::pack_dir(&src, &key, &w.www.join("bulky.cpkg")).unwrap();
    w.start_daemon(None);
    let mut s = UnixStream::connect(&w.socket).unwrap();
    writeln!(s, "{}", json!({"op": "install", "url": url})).unwrap();
    let lines: Vec<Value> = BufReader::new(s)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let (last, progress) = lines.split_last().unwrap();
    assert_eq!(last["ok"], true, "{last}");
    assert!(progress.len() >= 2, "{lines:?}");
    let size = fs::metadata(w.www.join("bulky.cpkg")).unwrap().len();
    let bytes: Vec<u64> = progress
        .iter()
        .map(|p| p["progress"]["bytes"].as_u64().unwrap())
        .collect();
    assert!(bytes.windows(2).all(|b| b[0] < b[1]), "{bytes:?}");
    assert_eq!(*bytes.last().unwrap(), size);
    assert_eq!(progress[0]["progress"]["total"], size);

    // On a terminal the CLI draws them as a bar (script(1) provides the terminal).
    let uuid = last["result"]["uuid"].as_str().unwrap().to_string();
    assert!(w.ctl(&["uninstall", &uuid]).status.success());
    let cmd = format!("{CTL} --socket {} install {url}", w.socket.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("[##############################] 100.0%"),
        "{tty:?}"
    );
    assert!(tty.contains("Installed bulky 1.0"), "{tty:?}");
}

#[test]
fn https_install_malformed_config_and_disabled_env() {
    let mut w = World::new("https");
    let (ca, cert, key) = common::make_test_pki(&w.root, "agent");
    w.publish(&App::new("secure", "1.0"), "secure.cpkg");
    // A package whose config blob is not valid JSON, correctly signed by a trusted key.
    let signer = common::test_key(42);
    let trusted = cpevisor_agent::package::TrustedKey::from_bytes(signer.public_key()).unwrap();
    fs::write(w.trusted.join("parts.pub"), trusted.to_hex()).unwrap();
    let mut parts = common::Parts::good(&signer);
    parts.config = b"{\"name\": \"broken\", ".to_vec();
    parts.sign_with(&signer);
    parts.write(&w.www.join("malformed.cpkg"));
    // No signature at all, and a signature over another manifest. Built for this host's arch:
    // a package for another arch is refused (7225) from its head, before its signature is read.
    let mut host_config = common::app_config_json();
    host_config["arch"] = "x86_64".into();
    let host_config = serde_json::to_vec(&host_config).unwrap();
    let mut unsigned = common::Parts::good(&signer);
    unsigned.config = host_config.clone();
    unsigned.signature = None;
    unsigned.write(&w.www.join("unsigned.cpkg"));
    let mut badsig = common::Parts::good(&signer);
    badsig.config = host_config;
    badsig.sign_with(&signer);
    badsig.layers[1].1 = vec![1u8; 1024];
    badsig.write(&w.www.join("badsig.cpkg"));

    let server = common::Server::range(
        &w.www,
        &w.root.join("tls.log"),
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    w.write_config_patched(json!({
        "ca_file": ca,
        "exec_envs": [
            {"name": "jail0", "type": "jail", "arch": "x86_64", "memory_budget_mib": 64,
             "runner": "process"},
            {"name": "vm0", "type": "kvm", "arch": "x86_64", "memory_budget_mib": 64,
             "enable": false}
        ]
    }));
    w.start_daemon(None);
    let before = w.state_files();
    for bad in ["unsigned.cpkg", "badsig.cpkg"] {
        let err = w
            .ctl_json(&["install", &server.url("https", "127.0.0.1", bad)])
            .unwrap_err();
        assert_eq!(err.0, 7036, "{bad}: {}", err.1);
        assert_eq!(w.state_files(), before, "{bad}");
    }
    let err = w
        .ctl_json(&[
            "install",
            &server.url("https", "127.0.0.1", "malformed.cpkg"),
        ])
        .unwrap_err();
    assert_eq!(err.0, 7004, "{}", err.1);
    assert!(err.1.contains("config"), "{}", err.1);
    assert_eq!(w.state_files(), before);
    let err = w
        .ctl_json(&[
            "install",
            &server.url("https", "localhost", "secure.cpkg"),
            "--env",
            "vm0",
        ])
        .unwrap_err();
    assert_eq!(err.0, 7230, "{}", err.1);
    assert_eq!(w.state_files(), before);
    let du = w
        .ctl_json(&["install", &server.url("https", "localhost", "secure.cpkg")])
        .expect("install over https");
    let eu = du["execution_unit_list"][0].as_str().unwrap();
    w.wait_eu_status(eu, "Active", 10);
    let l = w.list();
    assert_eq!(l["exec_envs"][1]["status"], "Disabled");
    assert_eq!(l["exec_envs"][0]["available_memory_mib"], 48);

    // ExecEnv.Enable = false stops its apps and refuses starts and installs (7230) until
    // enabled again, which brings the app back; the setting survives a restart of the agent.
    let out = w.ctl(&["env-disable", "jail0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ExecEnv jail0 is Disabled");
    assert_eq!(w.eu(eu)["status"], "Idle");
    assert_eq!(w.ctl_json(&["start", eu]).unwrap_err().0, 7230);
    assert_eq!(w.ctl_json(&["restart", eu]).unwrap_err().0, 7230);
    w.stop_daemon();
    w.start_daemon(None);
    assert_eq!(w.list()["exec_envs"][0]["status"], "Disabled");
    assert_eq!(w.eu(eu)["status"], "Idle");
    assert_eq!(
        w.ctl_json(&["env-enable", "jail0"]).unwrap()["status"],
        "Up"
    );
    w.wait_eu_status(eu, "Active", 10);
    // A disabled-by-config ExecEnv can be enabled by the operator.
    assert_eq!(w.ctl_json(&["env-enable", "vm0"]).unwrap()["enable"], true);
    assert_eq!(w.ctl_json(&["env-disable", "nope"]).unwrap_err().0, 7223);
}

#[test]
fn daemon_takes_its_config_from_a_board_profile() {
    let w = World::new("board");
    let boards = concat!(env!("CARGO_MANIFEST_DIR"), "/../boards");
    let board = cpevisor_boards::Board::by_name_in(std::path::Path::new(boards), "qemu-q35-x86_64")
        .unwrap();
    let mut child = Command::new(agentd::DAEMON)
        .arg("--state-dir")
        .arg(&w.state)
        .arg("--socket")
        .arg(&w.socket)
        .args(["--board", "qemu-q35-x86_64"])
        .env("CPEVISOR_BOARDS_DIR", boards)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let list = loop {
        let out = w.ctl(&["--json", "list"]);
        if out.status.success() {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            text(&out.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let env = &list["exec_envs"][0];
    assert_eq!(env["name"], "kvm0");
    assert_eq!(env["type"], "kvm");
    assert_eq!(env["arch"], "x86_64");
    assert_eq!(env["memory_budget_mib"], board.memory.app_budget_mib);

    // Usage errors exit 2 and say what is wrong.
    for (args, needle) in [
        (vec!["--board", "no-such-board"], "no-such-board"),
        (vec!["--board", "x", "--config", "y"], "exclude each other"),
        (vec![], "--config FILE or --board NAME is required"),
    ] {
        let out = Command::new(agentd::DAEMON)
            .arg("--state-dir")
            .arg(&w.state)
            .arg("--socket")
            .arg(w.root.join("other.sock"))
            .args(&args)
            .env("CPEVISOR_BOARDS_DIR", boards)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// The operator's USP controller left the device tool: `cpevisorctl usp ...` is a usage error
/// (exit 2) that names where it went, and nothing is sent anywhere.
#[test]
fn usp_points_to_the_controller() {
    for args in [
        &["usp", "--help"][..],
        &[
            "usp", "--broker", "h", "--id", "c", "--agent", "a", "get", "Device.",
        ],
        &["--json", "usp", "agents"],
    ] {
        let out = Command::new(CTL).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("`cpevisor-controller`"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
