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
