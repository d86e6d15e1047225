//! USP over MQTT end to end: a real mosquitto with TLS and client certificates made by the
//! test, a real `cpevisord --usp` with the `process` runner, packages served over HTTP on
//! loopback, and the operator's `cpevisor-controller` as a separate process: DeviceInfo, install
//! with `DUStateChange!` + OperationComplete, stop/start with ValueChange, uninstall; a
//! read-only controller refused with 7006 and nothing changed; a client without a certificate
//! refused by the broker; malformed and oversized records dropped with the agent answering.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/usp.rs"]
mod usp_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agentd::{App, World};
use cpevisor_usp::broker::TestBroker;
use cpevisor_usp::mqtt::{Event, MqttClient, USP_CONTENT_TYPE};
use cpevisor_usp::proto::{Msg, Record};
use cpevisor_usp::record::{encode_record, Limits};
use serde_json::{json, Value};
use usp_common::{events, only, row, usp};

const AGENT: &str = "os::cpe-0001";
const CTL_ID: &str = "self::ctl";
const RO_ID: &str = "self::ro";

/// A controller config's extra fields: announcements made while no CLI runs wait at the
/// broker for the next one.
fn persistent() -> Value {
    json!({ "session_expiry_s": 600 })
}

fn ctl_config(broker: &TestBroker, dir: &Path, id: &str, cert: bool, extra: Value) -> PathBuf {
    usp_common::ctl_config(broker, dir, id, cert, extra)
}

/// `get` until the agent answers (it connects in the background after start).
fn wait_answering(cfg: &Path, world: &World) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v, err) = usp(
            cfg,
            &[
                "--agent",
                AGENT,
                "--timeout",
                "2",
                "get",
                "Device.DeviceInfo.",
            ],
        );
        if code == 0 {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "agent never answered: {v} {err}\nlog:\n{}",
            world.daemon_log()
        );
    }
}

#[test]
fn controller_manages_an_agent_over_mosquitto() {
    let mut world = World::new("usp-mqtt");
    let broker = TestBroker::start(&world.root.join("broker")).expect("mosquitto");
    let agent_id = broker.identity(AGENT).unwrap();
    let ctl = ctl_config(&broker, &world.root, CTL_ID, true, persistent());
    // The read-only controller publishes under its identity: on the bare topic it could pass
    // for the full-access one, and the agent refuses such a config (usp_spoofing.rs).
    let mut ro_extra = persistent();
    ro_extra["identity"] = json!(RO_ID);
    let ro = ctl_config(&broker, &world.root, RO_ID, true, ro_extra);
    let usp_file = world.root.join("usp.json");
    fs::write(
        &usp_file,
        serde_json::to_vec_pretty(&json!({
            "broker_host": broker.host(), "broker_port": broker.port(),
            "ca_file": broker.ca(), "cert_file": agent_id.cert, "key_file": agent_id.key,
            "endpoint_id": AGENT,
            "controllers": [
                {"endpoint_id": CTL_ID, "role": "FullAccess"},
                {"endpoint_id": RO_ID, "role": "ReadOnly", "identity": RO_ID},
            ],
            "device_info": {"manufacturer": "Example Networks", "manufacturer_oui": "012345",
                            "model_name": "test-board", "product_class": "HomeGateway",
                            "serial_number": "0001"},
        }))
        .unwrap(),
    )
    .unwrap();

    // The controller's persistent session exists before the agent first connects, so the
    // agent's OnBoardRequest waits at the broker for `agents`.
    let (code, _, err) = usp(&ctl, &["--listen", "0.2", "agents"]);
    assert_eq!(code, 0, "{err}");

    // World starts the daemon with fixed arguments; a shell appends `--usp FILE` and execs.
    world.wrap = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("exec \"$0\" \"$@\" --usp {}", usp_file.display()),
    ];
    world.start_daemon(None);

    // `agents`: the OnBoardRequest kept by the broker, recorded in the roster.
    let roster = world.root.join("roster.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v, err) = usp(
            &ctl,
            &[
                "--listen",
                "2",
                "--roster",
                roster.to_str().unwrap(),
                "agents",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let seen = v["seen"].as_array().unwrap();
        if seen
            .iter()
            .any(|s| s["endpoint_id"] == AGENT && s["how"] == "OnBoardRequest")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no OnBoardRequest: {v}\nlog:\n{}",
            world.daemon_log()
        );
    }

    let info = wait_answering(&ctl, &world);
    let r = only(&info);
    assert_eq!(row(r, "Manufacturer"), Some("Example Networks"), "{r}");
    assert_eq!(row(r, "ModelName"), Some("test-board"));
    assert!(row(r, "SoftwareVersion").is_some_and(|v| !v.is_empty()));
    assert!(row(r, "UpTime").is_some());
    assert!(row(r, "MemoryStatus.Total").is_some(), "{r}");
    // The table people read: a header, one line per parameter, a summary.
    let out = Command::new(usp_common::controller())
        .arg("--config")
        .arg(&ctl)
        .args(["--agent", AGENT, "get", "Device.DeviceInfo.ModelName"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("AGENT") && lines[0].contains("VALUE"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(AGENT) && lines[1].ends_with("test-board"),
        "{table}"
    );
    assert!(lines[2].starts_with("1 ok, 0 failed"), "{table}");

    let (code, v, err) = usp(
        &ctl,
        &[
            "--all",
            "--roster",
            roster.to_str().unwrap(),
            "get",
            "Device.LocalAgent.EndpointID",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(only(&v), "EndpointID"), Some(AGENT));

    // Unknown paths and wrong types come back as USP errors, exit code 1.
    let (code, v, _) = usp(&ctl, &["--agent", AGENT, "get", "Device.NoSuchThing."]);
    assert_eq!(code, 1);
    assert_eq!(only(&v)["fault"]["code"], 7026, "{v}");
    let (code, v, _) = usp(
        &ctl,
        &[
            "--agent",
            AGENT,
            "set",
            "Device.SoftwareModules.ExecEnv.1.Enable=maybe",
        ],
    );
    assert_eq!(code, 1);
    let fault = only(&v)["fault"]["code"].as_u64().unwrap();
    assert!(fault == 7012 || fault == 7011, "{v}");

    // Install: OperateResp names the Request, then DUStateChange! and OperationComplete.
    let url = world.publish(&App::new("hello", "1.0"), "hello-1.0.cpkg");
    let (code, v, err) = usp(
        &ctl,
        &["--agent", AGENT, "--timeout", "60", "install", &url],
    );
    assert_eq!(code, 0, "{v} {err}\n{}", world.daemon_log());
    let r = only(&v);
    let uuid = row(r, "UUID").expect("UUID output").to_string();
    assert!(row(r, "DeploymentUnitRef").is_some(), "{r}");
    let du = events(r, "DUStateChange!");
    assert!(
        du.iter().any(|e| e["params"]["CurrentState"] == "Installed"
            && e["params"]["UUID"] == uuid.as_str()
            && e["params"]["Fault.FaultCode"] == "0"),
        "{r}"
    );
    assert_eq!(events(r, "OperationComplete").len(), 1, "{r}");

    // Its ExecutionUnit, by EUID, stopped and started with ValueChange on Status.
    let (code, v, _) = usp(
        &ctl,
        &[
            "--agent",
            AGENT,
            "get",
            "Device.SoftwareModules.ExecutionUnit.*.EUID",
        ],
    );
    assert_eq!(code, 0, "{v}");
    let eu = row(only(&v), "EUID").expect("one EU").to_string();
    world.wait_eu_status(&eu, "Active", 20);
    let (code, v, err) = usp(&ctl, &["--agent", AGENT, "stop", &eu]);
    assert_eq!(code, 0, "{v} {err}");
    let r = only(&v);
    assert!(
        events(r, "ValueChange")
            .iter()
            .any(|e| e["params"]["value"] == "Idle"),
        "{r}"
    );
    assert_eq!(world.eu(&eu)["status"], "Idle");
    let (code, v, err) = usp(&ctl, &["--agent", AGENT, "start", &eu]);
    assert_eq!(code, 0, "{v} {err}");
    assert!(
        events(only(&v), "ValueChange")
            .iter()
            .any(|e| e["params"]["value"] == "Active"),
        "{v}"
    );
    world.wait_eu_status(&eu, "Active", 20);

    // The supported model names the commands with their arguments.
    let (code, v, _) = usp(
        &ctl,
        &["--agent", AGENT, "supported", "Device.SoftwareModules."],
    );
    assert_eq!(code, 0, "{v}");
    let install_du = row(only(&v), "InstallDU()").expect("InstallDU() listed");
    assert!(
        install_du.starts_with("command(") && install_du.contains("URL"),
        "{install_du}"
    );
    // A synchronous command through `operate`, on the EU's path.
    let (_, v, _) = usp(
        &ctl,
        &[
            "--agent",
            AGENT,
            "get",
            "Device.SoftwareModules.ExecutionUnit.*.EUID",
        ],
    );
    let eu_path = only(&v)["rows"][0][0]
        .as_str()
        .unwrap()
        .trim_end_matches("EUID")
        .to_string();
    let restart = format!("{eu_path}Restart()");
    let (code, v, err) = usp(&ctl, &["--agent", AGENT, "operate", &restart]);
    assert_eq!(code, 0, "{v} {err}");
    world.wait_eu_status(&eu, "Active", 20);
    // Set on a writable parameter: our own subscription's Enable.
    let (code, v, _) = usp(
        &ctl,
        &[
            "--agent",
            AGENT,
            "instances",
            "Device.LocalAgent.Subscription.",
        ],
    );
    assert_eq!(code, 0, "{v}");
    let sub = only(&v)["rows"][0][0]
        .as_str()
        .expect("our subscriptions")
        .to_string();
    let (code, v, err) = usp(
        &ctl,
        &["--agent", AGENT, "set", &format!("{sub}Enable=true")],
    );
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(row(only(&v), "Enable"), Some("true"), "{v}");

    // A read-only controller reads, but its commands get 7006 and change nothing.
    let before = world.state_files();
    let state_before = world.state_json();
    let (code, v, _) = usp(
        &ro,
        &[
            "--agent",
            AGENT,
            "get",
            "Device.SoftwareModules.DeploymentUnit.*.UUID",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(row(only(&v), "UUID"), Some(uuid.as_str()));
    for cmd in [
        vec!["uninstall", uuid.as_str()],
        vec!["stop", eu.as_str()],
        vec!["operate", "Device.SoftwareModules.ExecEnv.1.Reset()"],
    ] {
        let mut args = vec!["--agent", AGENT, "--timeout", "10"];
        args.extend(cmd.iter().copied());
        let (code, v, _) = usp(&ro, &args);
        assert_eq!(code, 1, "{cmd:?}: {v}");
        assert_eq!(only(&v)["fault"]["code"], 7006, "{cmd:?}: {v}");
    }
    assert_eq!(world.eu(&eu)["status"], "Active");
    assert_eq!(world.state_files(), before);
    assert_eq!(world.state_json(), state_before);

    // A client without a certificate never gets in; one with a foreign CA's neither.
    let nocert = ctl_config(&broker, &world.root, "self::nocert", false, persistent());
    let (code, _, err) = usp(&nocert, &["--agent", AGENT, "get", "Device.DeviceInfo."]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    let mut foreign = broker
        .mqtt_config("self::foreign", "self::foreign")
        .unwrap();
    let fid = broker.pki().foreign_identity("self::foreign").unwrap();
    foreign.tls = Some((
        cpevisor_usp::tls::client_config(&broker.ca(), Some((&fid.cert, &fid.key))).unwrap(),
        broker.host().into(),
    ));
    let (client, ev) = MqttClient::start(foreign).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match ev.recv_timeout(left) {
            Ok(Event::Connected { .. }) => panic!("a foreign certificate was accepted"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    client.shutdown();

    // Garbage, a Record for another endpoint and an oversized Record: dropped, agent answers.
    let raw_cfg = broker.mqtt_config(CTL_ID, "self::raw").unwrap();
    let (raw, raw_ev) = MqttClient::start(raw_cfg).unwrap();
    loop {
        match raw_ev
            .recv_timeout(Duration::from_secs(10))
            .expect("raw client connects")
        {
            Event::Connected { .. } => break,
            _ => continue,
        }
    }
    let topic = format!("usp/agent/{AGENT}");
    let get = Msg::get("raw-1", ["Device.DeviceInfo."], 0);
    let big = Limits {
        max_record_bytes: 1 << 20,
        ..Limits::default()
    };
    let foreign_rec = encode_record(
        &Record::no_session_msg("os::someone-else", CTL_ID, &get),
        &big,
    )
    .unwrap();
    let mut huge = Record::no_session_msg(AGENT, CTL_ID, &get);
    if let Some(cpevisor_usp::proto::record::RecordType::NoSessionContext(n)) =
        huge.record_type.as_mut()
    {
        n.payload.extend(std::iter::repeat_n(0u8, 256 * 1024));
    }
    let huge = encode_record(&huge, &big).unwrap();
    let reply_to = Some("usp/controller/self::raw");
    for payload in [vec![0xff, 0xff, 0xff, 0x0f, 0x08], foreign_rec, huge] {
        raw.publish(&topic, &payload, reply_to, Some(USP_CONTENT_TYPE))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    raw.shutdown();
    let v = wait_answering(&ctl, &world);
    assert_eq!(row(only(&v), "ModelName"), Some("test-board"));
    let daemon = world.daemon.as_mut().unwrap();
    assert!(daemon.try_wait().unwrap().is_none(), "cpevisord died");

    // Update to 1.1 by UUID: the new version in the OperationComplete and the DUStateChange!.
    let url2 = world.publish(&App::new("hello", "1.1"), "hello-1.1.cpkg");
    let (code, v, err) = usp(&ctl, &["--agent", AGENT, "update", &uuid, &url2]);
    assert_eq!(code, 0, "{v} {err}\n{}", world.daemon_log());
    let r = only(&v);
    assert_eq!(row(r, "Version"), Some("1.1"), "{r}");
    assert!(
        events(r, "DUStateChange!")
            .iter()
            .any(|e| e["params"]["Version"] == "1.1" && e["params"]["Fault.FaultCode"] == "0"),
        "{r}"
    );

    // Uninstall: DUStateChange! Uninstalled, OperationComplete, nothing left.
    let (code, v, err) = usp(&ctl, &["--agent", AGENT, "uninstall", &uuid]);
    assert_eq!(code, 0, "{v} {err}");
    let r = only(&v);
    assert!(
        events(r, "DUStateChange!")
            .iter()
            .any(|e| e["params"]["CurrentState"] == "Uninstalled"),
        "{r}"
    );
    let (code, v, _) = usp(
        &ctl,
        &[
            "--agent",
            AGENT,
            "instances",
            "Device.SoftwareModules.DeploymentUnit.",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert!(only(&v)["rows"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(world.stop_daemon(), Some(0));
    drop(broker);
}

/// A cpevisord whose broker is down keeps serving its local socket and connects once the
/// broker is there; a bad --usp file is refused at start with a clear message.
#[test]
fn agent_waits_for_the_broker_and_refuses_bad_usp_files() {
    let mut world = World::new("usp-mqtt-wait");
    let bad = world.root.join("bad-usp.json");
    fs::write(&bad, r#"{"broker_host": "127.0.0.1", "endpoint_id": "os::x", "controllers": [], "topic": "a/#"}"#).unwrap();
    let out = Command::new(agentd::DAEMON)
        .arg("--state-dir")
        .arg(world.root.join("state-bad"))
        .arg("--config")
        .arg(&world.config)
        .arg("--socket")
        .arg(world.root.join("bad.sock"))
        .arg("--usp")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid MQTT topic"), "{err}");

    let broker_dir = world.root.join("broker");
    let mut broker = TestBroker::start(&broker_dir).expect("mosquitto");
    let port = broker.port();
    broker.stop();
    let agent_id = broker.identity(AGENT).unwrap();
    let usp_file = world.root.join("usp.json");
    fs::write(
        &usp_file,
        serde_json::to_vec(&json!({
            "broker_host": "127.0.0.1", "broker_port": port, "ca_file": broker.ca(),
            "cert_file": agent_id.cert, "key_file": agent_id.key, "endpoint_id": AGENT,
            "controllers": [{"endpoint_id": CTL_ID, "role": "FullAccess"}],
        }))
        .unwrap(),
    )
    .unwrap();
    world.wrap = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("exec \"$0\" \"$@\" --usp {}", usp_file.display()),
    ];
    world.start_daemon(None);
    // Local management works while the broker is away.
    assert!(world.list()["exec_envs"].is_array());
    broker.restart().expect("mosquitto again");
    let ctl = ctl_config(&broker, &world.root, CTL_ID, true, persistent());
    let v = wait_answering(&ctl, &world);
    assert_eq!(row(only(&v), "Manufacturer"), Some(""));
    assert_eq!(world.stop_daemon(), Some(0));
}
