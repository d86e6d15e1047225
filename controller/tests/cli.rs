//! The `cpevisor-controller` binary as an operator meets it before any broker: its help says
//! what it is and lists the commands `cpevisorctl usp` had, and a wrong command line exits 2
//! with the problem on stderr. (Runs against agents are the agent crate's USP tests.)

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cpevisor-controller"))
        .args(args)
        .env_remove("CPEVISOR_USP_CONFIG")
        .output()
        .expect("cpevisor-controller")
}

#[test]
fn help_says_what_it_is() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.starts_with("usage: cpevisor-controller [OPTIONS] COMMAND"),
        "{help}"
    );
    assert!(help.contains("operator's side"), "{help}");
    for cmd in [
        "agents",
        "get PATH",
        "set PATH=VALUE",
        "instances",
        "supported",
        "operate",
        "install URL",
        "update UUID",
        "uninstall UUID",
        "start EUID",
        "--ws-listen",
        "--json",
        "--roster",
        "label --db PATH ENDPOINT",
        "label.NAME=VALUE",
        "percent=N",
        "board=B",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn bad_command_lines_exit_2() {
    for (args, says) in [
        (&[][..], "no command given"),
        (&["--broker", "h", "--id", "c", "frob"], "unknown command"),
        (
            &["--broker", "h", "--id", "c", "get", "Device."],
            "name the agents",
        ),
        (
            &["--id", "c", "--agent", "a", "get", "Device."],
            "no broker",
        ),
        (
            &[
                "--broker", "h", "--id", "c", "--cert", "x", "--agent", "a", "get", "Device.",
            ],
            "go together",
        ),
        (
            &["--config", "/nonexistent/ctl.json", "agents"],
            "/nonexistent/ctl.json",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("cpevisor-controller: "), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn an_unreachable_broker_exits_2() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let out = run(&[
        "--broker",
        "127.0.0.1:1",
        "--id",
        "self::c",
        "--agent",
        "os::a",
        "--timeout",
        "1",
        "get",
        "Device.",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));
}

/// `deploy --network`: a bad override is refused, naming what was wrong, and nothing is
/// stored; a good one is stored and shown by `deployments`, in the table and in JSON.
#[test]
fn deploy_takes_a_network_override_and_refuses_a_bad_one() {
    let dir = std::env::temp_dir().join(format!("cpv-cli-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("fleet.db");
    let db = db.to_str().unwrap();
    let deploy = |net: &str| {
        run(&[
            "deploy",
            "--db",
            db,
            "web",
            "http://h/w.cpkg",
            "--version",
            "1",
            "--network",
            net,
        ])
    };
    let listed = || {
        let out = run(&["deployments", "--db", db, "--json"]);
        assert_eq!(out.status.code(), Some(0));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["deployments"].clone()
    };
    for (net, says) in [
        (r#"{"mode": "#, "--network: not JSON"),
        ("[1]", "--network file [1]"),
        (r#"{"mode": "none"} x"#, "--network: not JSON"),
        (
            "/nonexistent/net.json",
            "--network file /nonexistent/net.json",
        ),
    ] {
        let out = deploy(net);
        assert_eq!(out.status.code(), Some(2), "{net}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{net}: {err}");
    }
    let file = dir.join("three.json");
    std::fs::write(&file, "3").unwrap();
    let out = deploy(file.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a JSON object"));
    assert_eq!(listed(), serde_json::json!([]), "nothing stored");

    let out = deploy(r#"{"mode": "none"}"#);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listed()[0]["network"], serde_json::json!({"mode": "none"}));
    let out = run(&["deployments", "--db", db]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().unwrap().ends_with("NETWORK"),
        "{table}"
    );
    assert!(table.contains(r#"{"mode":"none"}"#), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `label`: an agent's labels set and removed, shown by `label` and `agents` (table and JSON);
/// an unknown agent or a bad label exits 2 naming it, and nothing is stored; a deployment's
/// list selector reads back in the `deployments` table.
#[test]
fn label_sets_and_removes_an_agents_labels() {
    use cpevisor_controller::store::{Inventory, Location, Store};
    let dir = std::env::temp_dir().join(format!("cpv-cli-label-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fleet.db");
    Store::open(&Location::Sqlite(path.clone()))
        .unwrap()
        .save_inventory("os::a", &Inventory::default(), 1)
        .unwrap();
    let db = path.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = ok(&["label", "--db", db, "os::a", "site=paris", "tier=beta"]);
    assert_eq!(out, "os::a: site=paris,tier=beta\n");
    let out = ok(&["label", "--db", db, "os::a", "--remove", "tier", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"endpoint_id": "os::a", "labels": {"site": "paris"}})
    );
    for (args, says) in [
        (
            &["label", "--db", db, "os::x", "site=y"][..],
            "no agent \"os::x\"",
        ),
        (&["label", "--db", db, "os::a", "si te=y"][..], "label name"),
        (
            &["label", "--db", db, "os::a", "a=1", "b=x/y"][..],
            "label value",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(ok(&["label", "--db", db, "os::a"]), "os::a: site=paris\n");
    let table = ok(&["agents", "--db", db]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().contains("LABELS"), "{table}");
    assert!(lines.next().unwrap().contains("site=paris"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["agents", "--db", db, "--json"])).unwrap();
    assert_eq!(
        v["agents"][0]["labels"],
        serde_json::json!({"site": "paris"})
    );
    ok(&[
        "deploy",
        "--db",
        db,
        "app",
        "http://h/a.cpkg",
        "--version",
        "1",
        "--selector",
        "label.site=paris,lyon",
        "--selector",
        "percent=50",
    ]);
    let table = ok(&["deployments", "--db", db]);
    assert!(
        table.contains("label.site=paris,lyon percent=50"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
