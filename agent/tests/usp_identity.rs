//! Controller identity over MQTT. The agent's TLS peer is the broker, not the controller, so
//! the agent cannot see a controller's certificate: a Record's `from_id` alone would let any
//! client the broker admits speak as any controller. With `identity` configured, a controller's
//! Records count only on `usp/agent/<agent>/<identity>`, a topic the broker's ACL
//! (`broker::usp_acl`, `IdentitySubTopic`: `topic write usp/agent/+/<CN>`) lets only the client
//! whose certificate CN is `<identity>` write. Here a read-only controller tries to pass for the full-access one:
//! on its own sub-topic, on the other's sub-topic and on the bare topic. Nothing changes, and
//! the full-access controller still manages the agent.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/usp.rs"]
mod usp_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentd::World;
use cpevisor_usp::broker::{AclController, BrokerOptions, ControllerTopic, TestBroker};
use cpevisor_usp::mqtt::{Event, MqttClient, USP_CONTENT_TYPE};
use cpevisor_usp::proto::set::{UpdateObject, UpdateParamSetting};
use cpevisor_usp::proto::{Msg, Record};
use cpevisor_usp::record::{encode_record, Limits};
use serde_json::{json, Value};

const AGENT: &str = "os::cpe-id-1";
const FULL: &str = "self::full";
const RO: &str = "self::ro";
const ENABLE: &str = "Device.SoftwareModules.ExecEnv.1.Enable";

/// A controller's config, publishing under its own identity (its certificate's CN).
fn ctl_config(broker: &TestBroker, dir: &Path, id: &str) -> PathBuf {
    usp_common::ctl_config(broker, dir, id, true, json!({ "identity": id }))
}

/// `cpevisor-controller` for our one agent.
fn usp(cfg: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--agent", AGENT, "--timeout", "5"];
    all.extend_from_slice(args);
    usp_common::usp(cfg, &all)
}

/// `ExecEnv.1.Enable` as the full-access controller reads it, once the agent answers.
fn enable(cfg: &Path, world: &World) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v, err) = usp(cfg, &["get", ENABLE]);
        if code == 0 {
            let rows = v["results"][0]["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            return rows
                .iter()
                .find(|r| r[0].as_str().is_some_and(|k| k.ends_with("Enable")))
                .and_then(|r| r[1].as_str())
                .unwrap_or_else(|| panic!("no Enable in {v}"))
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "agent never answered: {v} {err}\n{}",
            world.daemon_log()
        );
    }
}

/// A Set of ExecEnv.1.Enable=false claiming to come from `from`, encoded.
fn forged_set(from: &str, n: u32) -> Vec<u8> {
    let msg = Msg::set(
        format!("forged-{n}"),
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
    encode_record(
        &Record::no_session_msg(AGENT, from, &msg),
        &Limits::default(),
    )
    .unwrap()
}

#[test]
fn a_controller_cannot_speak_for_another() {
    let mut world = World::new("usp-ident");
    let options = BrokerOptions {
        usp_acl: true,
        acl_controllers: vec![
            AclController::new(FULL, ControllerTopic::IdentitySubTopic),
            AclController::new(RO, ControllerTopic::IdentitySubTopic),
        ],
        ..BrokerOptions::default()
    };
    let broker = TestBroker::start_with(&world.root.join("broker"), &options).expect("mosquitto");
    let agent_id = broker.identity(AGENT).unwrap();
    let full = ctl_config(&broker, &world.root, FULL);
    let usp_file = world.root.join("usp.json");
    fs::write(
        &usp_file,
        serde_json::to_vec_pretty(&json!({
            "broker_host": broker.host(), "broker_port": broker.port(),
            "ca_file": broker.ca(), "cert_file": agent_id.cert, "key_file": agent_id.key,
            "endpoint_id": AGENT,
            "controllers": [
                {"endpoint_id": FULL, "role": "FullAccess", "identity": FULL},
                {"endpoint_id": RO, "role": "ReadOnly", "identity": RO},
            ],
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
    assert_eq!(enable(&full, &world), "true");
    let before = world.state_files();

    // The read-only controller, with its own certificate, forges `from_id` = the full one.
    let (ro, ro_events) =
        MqttClient::start(broker.mqtt_config(RO, "self::ro-raw").unwrap()).unwrap();
    loop {
        match ro_events
            .recv_timeout(Duration::from_secs(10))
            .expect("connects")
        {
            Event::Connected { .. } => break,
            _ => continue,
        }
    }
    let base = format!("usp/agent/{AGENT}");
    let reply_to = Some("usp/controller/self::ro");
    for (n, topic) in [
        format!("{base}/{RO}"), // its own sub-topic: the suffix says RO, the record says FULL
        format!("{base}/{FULL}"), // the full one's sub-topic: the broker's ACL refuses it
        base.clone(),           // the bare topic: carries no identity at all
    ]
    .iter()
    .enumerate()
    {
        // The broker may refuse the publish (ACL); either way nothing may reach the agent as FULL.
        let _ = ro.publish(
            topic,
            &forged_set(FULL, n as u32),
            reply_to,
            Some(USP_CONTENT_TYPE),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    ro.shutdown();
    assert_eq!(enable(&full, &world), "true", "a forged Set went through");
    assert_eq!(world.state_files(), before);

    // Its own Set, under its own identity, is refused for its role.
    let ro_cfg = ctl_config(&broker, &world.root, RO);
    let (code, v, _) = usp(&ro_cfg, &["set", &format!("{ENABLE}=false")]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["results"][0]["fault"]["code"], 7006, "{v}");

    // The full-access controller, on its sub-topic, may.
    let (code, v, err) = usp(&full, &["set", &format!("{ENABLE}=false")]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(enable(&full, &world), "false");
    let (code, v, err) = usp(&full, &["set", &format!("{ENABLE}=true")]);
    assert_eq!(code, 0, "{v} {err}");

    // Without `identity` the same controller's requests on the bare topic are not accepted.
    let mut bare: Value = serde_json::from_slice(&fs::read(&full).unwrap()).unwrap();
    bare.as_object_mut().unwrap().remove("identity");
    let bare_cfg = world.root.join("ctl-bare.json");
    fs::write(&bare_cfg, serde_json::to_vec(&bare).unwrap()).unwrap();
    let (code, v, _) = usp(&bare_cfg, &["get", ENABLE]);
    assert_ne!(code, 0, "a bare-topic request was answered: {v}");
    world.stop_daemon();
}
