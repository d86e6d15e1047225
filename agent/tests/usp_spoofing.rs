//! Issue 12's spoofing case, with standard TR-369 controllers: they publish to the agent's own
//! topic `usp/agent/<agent>`, and the agent's TLS peer is the broker, so `from_id` is all that
//! names the sender there. The broker's ACL (`broker::usp_acl`) lets only the configured
//! controllers' certificates write to that topic, and the agent grants it only to controllers
//! configured without `identity` (all of one role). Here, on a real mosquitto with TLS:
//!
//! - a second certificate from the same CA (another CN) writes the full-access controller's
//!   EndpointID in `from_id` and publishes a Set and an Operate to the bare topic: the broker
//!   refuses both, no answer arrives, nothing changes;
//! - the read-only controller tries the same on the bare topic (refused by the broker), on its
//!   own identity sub-topic (the agent refuses: the full-access controller does not live there)
//!   and on our full-access controller's sub-topic (refused by the broker);
//! - the real controller, as a standard controller on the bare topic, and our own controller with
//!   `identity`, on its sub-topic, both still manage the agent.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/usp.rs"]
mod usp_common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use agentd::World;
use cpevisor_usp::broker::{AclController, BrokerOptions, ControllerTopic, TestBroker};
use cpevisor_usp::mqtt::{Event, MqttClient, USP_CONTENT_TYPE};
use cpevisor_usp::proto::set::{UpdateObject, UpdateParamSetting};
use cpevisor_usp::proto::{Msg, Record};
use cpevisor_usp::record::{encode_record, Limits};
use serde_json::{json, Value};

const AGENT: &str = "os::cpe-spoof-1";
/// The operator's controller, a standard one: no `identity`, publishes to the bare topic.
const FULL: &str = "self::full";
/// A read-only controller on its identity sub-topic.
const RO: &str = "self::ro";
/// Our own controller with `identity`: full access on its sub-topic.
const OWN: &str = "self::own";
/// Someone else with a certificate from the same CA.
const MALLORY: &str = "self::mallory";
const ENABLE: &str = "Device.SoftwareModules.ExecEnv.1.Enable";

/// `cpevisor-controller` for our one agent.
fn usp(cfg: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--agent", AGENT, "--timeout", "10"];
    all.extend_from_slice(args);
    usp_common::usp(cfg, &all)
}

/// `ExecEnv.1.Enable` as the controller of `cfg` reads it, once the agent answers.
fn enable(cfg: &Path, world: &World) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v, err) = usp(cfg, &["get", ENABLE]);
        if code == 0 {
            return usp_common::row(usp_common::only(&v), "Enable")
                .unwrap_or_else(|| panic!("no Enable in {v}"))
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "agent never answered {}: {v} {err}\n{}",
            cfg.display(),
            world.daemon_log()
        );
    }
}

/// The forged requests, claiming to come from `from`: ExecEnv.1.Enable=false, and
/// Device.Reboot() (whose command would leave a marker file).
fn forged(from: &str, tag: &str) -> Vec<Vec<u8>> {
    let set = Msg::set(
        format!("forged-set-{tag}"),
        false,
        vec![UpdateObject {
            obj_path: "Device.SoftwareModules.ExecEnv.1.".into(),
            param_settings: vec![UpdateParamSetting {
                param: "Enable".into(),
                value: "false".into(),
                required: true,
            }],
        }],
    );
    let reboot = Msg::operate(
        format!("forged-op-{tag}"),
        "Device.Reboot()",
        "forged",
        true,
        BTreeMap::new(),
    );
    [set, reboot]
        .iter()
        .map(|m| {
            encode_record(&Record::no_session_msg(AGENT, from, m), &Limits::default()).unwrap()
        })
        .collect()
}

/// A raw MQTT client with `cn`'s certificate, subscribed to its own controller topic (where a
/// reply to its forged requests would come), once connected.
fn raw_client(broker: &TestBroker, cn: &str) -> (MqttClient, Receiver<Event>) {
    let mut config = broker.mqtt_config(cn, &format!("{cn}-raw")).unwrap();
    config.subscriptions = vec![format!("usp/controller/{cn}")];
    let (client, events) = MqttClient::start(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("{cn} did not connect: {}", broker.log_tail()));
        match events.recv_timeout(left) {
            Ok(Event::Connected { .. }) => return (client, events),
            Ok(_) => {}
            Err(e) => panic!("{cn} did not connect ({e}): {}", broker.log_tail()),
        }
    }
}

/// Publishes each Record to `topic` with `cn`'s reply topic.
fn publish_all(client: &MqttClient, cn: &str, topic: &str, records: &[Vec<u8>]) {
    let reply_to = format!("usp/controller/{cn}");
    for r in records {
        // The broker may refuse it (ACL); the client only queues it.
        client
            .publish(topic, r, Some(&reply_to), Some(USP_CONTENT_TYPE))
            .unwrap();
    }
}

/// Waits until `done` holds; fails if a Record reaches `events` first (the agent answered a
/// forged request) or at the deadline.
fn until_refused(
    what: &str,
    events: &Receiver<Event>,
    world: &World,
    broker: &TestBroker,
    done: impl Fn() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        while let Ok(ev) = events.try_recv() {
            if let Event::Message(m) = ev {
                panic!(
                    "{what}: the agent answered a forged request on {} ({} bytes)\n{}",
                    m.topic,
                    m.payload.len(),
                    world.daemon_log()
                );
            }
        }
        if done() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not refused within 20 s\nbroker:\n{}\nagent:\n{}",
            broker.log_tail(),
            world.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many PUBLISHes from `client_id` the broker refused (mosquitto logs each at debug level).
fn denied(broker: &TestBroker, client_id: &str) -> usize {
    let log = fs::read_to_string(broker.dir().join("mosquitto.log")).unwrap_or_default();
    let needle = format!("Denied PUBLISH from {client_id} ");
    log.lines().filter(|l| l.contains(&needle)).count()
}

fn ctl_config(broker: &TestBroker, dir: &Path, id: &str, identity: bool) -> PathBuf {
    let extra = if identity {
        json!({ "identity": id })
    } else {
        json!({})
    };
    usp_common::ctl_config(broker, dir, id, true, extra)
}

#[test]
fn a_certificate_of_the_same_ca_cannot_act_as_the_controller() {
    let mut world = World::new("usp-spoof");
    let options = BrokerOptions {
        usp_acl: true,
        acl_controllers: vec![
            AclController::new(FULL, ControllerTopic::AgentTopic),
            AclController::new(RO, ControllerTopic::IdentitySubTopic),
            AclController::new(OWN, ControllerTopic::IdentitySubTopic),
        ],
        debug_log: true,
        ..BrokerOptions::default()
    };
    let broker = TestBroker::start_with(&world.root.join("broker"), &options).expect("mosquitto");
    let agent_id = broker.identity(AGENT).unwrap();
    let marker = world.root.join("rebooted");
    let usp_file = world.root.join("usp.json");
    fs::write(
        &usp_file,
        serde_json::to_vec_pretty(&json!({
            "broker_host": broker.host(), "broker_port": broker.port(),
            "ca_file": broker.ca(), "cert_file": agent_id.cert, "key_file": agent_id.key,
            "endpoint_id": AGENT,
            "controllers": [
                {"endpoint_id": FULL, "role": "FullAccess"},
                {"endpoint_id": RO, "role": "ReadOnly", "identity": RO},
                {"endpoint_id": OWN, "role": "FullAccess", "identity": OWN},
            ],
            "reboot_command": ["/bin/sh", "-c", format!("touch {}", marker.display())],
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

    // The real controller, as a standard one (bare topic, no identity), is answered.
    let full = ctl_config(&broker, &world.root, FULL, false);
    assert_eq!(enable(&full, &world), "true");
    let usp_state = world.state.join("usp.json");
    // The agent's USP state, less which controllers answered its OnBoardRequest (the real
    // controller's CLI does, at its own pace).
    let usp_state_now = || {
        let mut v: Value = serde_json::from_slice(&fs::read(&usp_state).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("onboarded");
        v
    };
    let state_before = usp_state_now();

    // Another certificate of the same CA, writing FULL's EndpointID, on the agent's topic.
    let bare = format!("usp/agent/{AGENT}");
    let (mallory, m_events) = raw_client(&broker, MALLORY);
    publish_all(&mallory, MALLORY, &bare, &forged(FULL, "mallory"));
    let m_id = format!("{MALLORY}-raw");
    until_refused("bare topic, other CN", &m_events, &world, &broker, || {
        denied(&broker, &m_id) >= 2
    });

    // The read-only controller as FULL: on the bare topic and on OWN's sub-topic the broker
    // refuses it; on its own sub-topic the agent does (FULL counts only on the bare topic).
    let (ro, ro_events) = raw_client(&broker, RO);
    publish_all(&ro, RO, &bare, &forged(FULL, "ro-bare"));
    publish_all(&ro, RO, &format!("{bare}/{OWN}"), &forged(OWN, "ro-own"));
    let ro_id = format!("{RO}-raw");
    until_refused("read-only, broker", &ro_events, &world, &broker, || {
        denied(&broker, &ro_id) >= 4
    });
    publish_all(&ro, RO, &format!("{bare}/{RO}"), &forged(FULL, "ro-sub"));
    let refused = format!("ignoring records from \"{FULL}\" (identity Some(\"{RO}\"))");
    until_refused("read-only, agent", &ro_events, &world, &broker, || {
        world.daemon_log().contains(&refused)
    });
    mallory.shutdown();
    ro.shutdown();

    // Nothing changed: the parameter, the agent's USP state, no reboot.
    assert_eq!(enable(&full, &world), "true", "a forged Set went through");
    assert_eq!(usp_state_now(), state_before, "usp.json changed");
    assert!(!marker.exists(), "a forged Reboot ran");

    // The real controller still manages the agent from the bare topic...
    let (code, v, err) = usp(&full, &["set", &format!("{ENABLE}=false")]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(enable(&full, &world), "false");
    // ...and our own controller with `identity` from its sub-topic.
    let own = ctl_config(&broker, &world.root, OWN, true);
    let (code, v, err) = usp(&own, &["set", &format!("{ENABLE}=true")]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(enable(&own, &world), "true");
    // The read-only one reads from its sub-topic and may not write.
    let ro_cfg = ctl_config(&broker, &world.root, RO, true);
    assert_eq!(enable(&ro_cfg, &world), "true");
    let (code, v, _) = usp(&ro_cfg, &["set", &format!("{ENABLE}=false")]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["results"][0]["fault"]["code"], 7006, "{v}");
    world.stop_daemon();
}

/// A read-only and a full-access controller both on the bare topic: the broker cannot tell
/// them apart, so the agent refuses to start with that config, naming both.
#[test]
fn the_agent_refuses_mixed_roles_on_the_bare_topic() {
    let world = World::new("usp-spoof-cfg");
    let usp_file = world.root.join("usp.json");
    fs::write(
        &usp_file,
        serde_json::to_vec_pretty(&json!({
            "broker_host": "127.0.0.1", "endpoint_id": AGENT,
            "controllers": [
                {"endpoint_id": FULL, "role": "FullAccess"},
                {"endpoint_id": RO, "role": "ReadOnly"},
            ],
        }))
        .unwrap(),
    )
    .unwrap();
    let stderr = world.root.join("mixed.err");
    let mut child = std::process::Command::new(agentd::DAEMON)
        .arg("--state-dir")
        .arg(world.root.join("state-mixed"))
        .arg("--config")
        .arg(&world.config)
        .arg("--socket")
        .arg(world.root.join("mixed.sock"))
        .arg("--usp")
        .arg(&usp_file)
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("cpevisord");
    // An agent that accepts the config runs on: it must have exited by the deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cpevisord started with mixed roles on the bare topic:\n{}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{RO} could act as {FULL}")),
        "stderr: {err}"
    );
}
