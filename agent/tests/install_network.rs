//! The operator's network section given at install (`X_CPEVISOR_NetworkConfig` of InstallDU
//! and Update, `cpevisorctl install --network`): it replaces the package's section for that DU
//! (its rules, its admission, what the data model shows), survives a restart of the agent, is
//! kept by an update that gives no other, and a bad one installs nothing.
//!
//! The rules test runs the real `nft` in a network namespace of its own (as
//! netfilter_lifecycle.rs does) and needs root; the others point `nft_path` at nothing, so they
//! run anywhere and touch no ruleset.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::{App, World};
use cpevisor_agent::lifecycle::config::AgentConfig;
use cpevisor_agent::lifecycle::Agent;
use cpevisor_agent::usp::config::{ControllerConfig, DeviceInfoConfig, Role, UspConfig};
use cpevisor_agent::usp::dm::{Caller, DataModel, OperateOutcome, RebootHook};
use netns::NamedNs;
use serde_json::{json, Value};

/// A package mapping the router's wan tcp `port` to its port 80.
fn mapped_app(name: &str, version: &str, port: u16) -> App {
    let mut a = App::new(name, version);
    a.extra = json!({"network": {
        "port_mappings": [{"protocol": "tcp", "external_port": port, "internal_port": 80,
                           "interface": "wan"}],
        "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]}]
    }});
    a
}

fn override_port(port: u16) -> String {
    json!({"port_mappings": [{"protocol": "tcp", "external_port": port, "internal_port": 80,
                              "interface": "wan"}]})
    .to_string()
}

/// An agent with a wan side but no app link and no `nft`: a package that maps a port is
/// refused (7225), one whose section the operator replaced by mode none installs and runs.
fn no_link_world(tag: &str) -> World {
    let w = World::new(tag);
    w.write_config_patched(json!({
        "wan_interface": "wan0",
        "lan_interface": "lan0",
        "nft_path": w.root.join("no-nft"),
    }));
    w
}

fn state(w: &World) -> (Vec<String>, Option<Value>) {
    (w.state_files(), w.state_json())
}

#[test]
fn bad_overrides_install_nothing_and_name_the_field() {
    let mut w = no_link_world("inet-bad");
    let url = w.publish(&App::new("plain", "1.0"), "plain.cpkg");
    let url_other = w.publish(&App::new("other", "1.0"), "other.cpkg");
    w.start_daemon(None);
    w.ctl_json(&["install", &url]).expect("install");
    let before = state(&w);

    let too_big = w.root.join("big.json");
    fs::write(
        &too_big,
        format!(r#"{{"mode": "nat"{}}}"#, " ".repeat(9000)),
    )
    .unwrap();
    let port0 = json!({"port_mappings": [{"protocol": "udp", "external_port": 0,
                                          "internal_port": 53, "interface": "lan"}]})
    .to_string();
    let cases: [(&str, &str); 5] = [
        (r#"{"mode": "nat", "#, "not a network section"),
        (r#"{"mode": "host"}"#, "unknown variant `host`"),
        (r#"{"nodes": "nat"}"#, "unknown field `nodes`"),
        (
            &port0,
            "field `port_mappings[0].external_port`: must be 1..=65535",
        ),
        (too_big.to_str().unwrap(), "more than the 8192 allowed"),
    ];
    for (net, want) in cases {
        let (code, msg) = w
            .ctl_json(&["install", &url_other, "--network", net])
            .unwrap_err();
        assert_eq!(code, 7004, "{net}: {msg}");
        assert!(msg.starts_with("X_CPEVISOR_NetworkConfig"), "{msg}");
        assert!(msg.contains(want), "{net}: {msg}");
        assert_eq!(state(&w), before, "{net}: nothing installed");
        assert_eq!(w.list()["deployment_units"].as_array().unwrap().len(), 1);
    }
    // The same for an update: refused, the DU as it was.
    let uuid = w.list()["deployment_units"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, msg) = w
        .ctl_json(&["update", &uuid, &url, "--network", r#"{"mode": "host"}"#])
        .unwrap_err();
    assert_eq!(code, 7004, "{msg}");
    assert_eq!(state(&w), before);
    w.stop_daemon();
}

#[test]
fn an_override_is_admitted_kept_across_restart_and_update_and_dropped_by_null() {
    let mut w = no_link_world("inet-keep");
    let v1 = w.publish(&mapped_app("web", "1.0", 8080), "web1.cpkg");
    let v2 = w.publish(&mapped_app("web", "2.0", 8080), "web2.cpkg");
    let v3 = w.publish(&mapped_app("web", "3.0", 8080), "web3.cpkg");
    w.start_daemon(None);

    // The package's own section needs an app link this agent does not give.
    let (code, msg) = w.ctl_json(&["install", &v1]).unwrap_err();
    assert_eq!(code, 7225, "{msg}");
    // The operator's replaces it: installed, running, shown.
    let du = w
        .ctl_json(&["install", &v1, "--network", r#"{"mode": "none"}"#])
        .expect("install with the override");
    let uuid = du["uuid"].as_str().unwrap().to_string();
    let eu = agentd::eu_of(&du);
    w.wait_eu_status(&eu, "Active", 10);
    let shown = |w: &World| w.list()["eu_networks"][&eu]["config"].clone();
    assert_eq!(shown(&w), json!({"mode": "none", "intercept_dns": false}));
    let kept = |w: &World| w.state_json().unwrap()["dus"][0]["network_override"].clone();
    assert_eq!(kept(&w), json!({"mode": "none", "intercept_dns": false}));

    // The agent restarts: the same.
    w.stop_daemon();
    w.start_daemon(None);
    w.wait_eu_status(&eu, "Active", 10);
    assert_eq!(shown(&w)["mode"], "none");

    // An update without --network keeps it (the package's would be refused again).
    let du2 = w
        .ctl_json(&["update", &uuid, &v2])
        .expect("update keeps it");
    assert_eq!(du2["version"], "2.0");
    w.wait_eu_status(&eu, "Active", 10);
    assert_eq!(shown(&w)["mode"], "none");
    assert_eq!(kept(&w)["mode"], "none");

    // `null` goes back to the package's section: here refused, 2.0 and its override stay.
    let before = state(&w);
    let (code, msg) = w
        .ctl_json(&["update", &uuid, &v3, "--network", "null"])
        .unwrap_err();
    assert_eq!(code, 7225, "{msg}");
    assert_eq!(w.list()["deployment_units"][0]["version"], "2.0");
    assert_eq!(kept(&w)["mode"], "none");
    assert_eq!(state(&w).1, before.1);
    w.stop_daemon();
}

#[test]
fn usp_install_and_update_take_the_argument() {
    let w = no_link_world("inet-usp");
    let v1 = w.publish(&mapped_app("web", "1.0", 8080), "web1.cpkg");
    let v2 = w.publish(&mapped_app("web", "2.0", 8080), "web2.cpkg");
    let cfg = AgentConfig::load(&w.config).expect("config");
    let agent = Arc::new(Agent::open(&w.state, cfg).expect("agent"));
    let usp_dir = w.root.join("usp-state");
    fs::create_dir_all(&usp_dir).unwrap();
    let hook: RebootHook = Arc::new(|| Ok(()));
    let mut dm = DataModel::open(agent.clone(), usp_config(), &usp_dir, hook).expect("dm");
    let caller = Caller {
        endpoint_id: CTL.into(),
        role: Role::FullAccess,
    };
    let operate = |dm: &mut DataModel, cmd: &str, args: &[(&str, &str)]| {
        let args: BTreeMap<String, String> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut r = dm.operate(&caller, cmd, "k", &args).expect("operate");
        assert_eq!(r.len(), 1);
        r.remove(0).outcome
    };

    // A bad value: the command fails at once, naming the argument and the field.
    let before = (w.state_files(), w.state_json());
    let bad = json!({"port_mappings": [{"protocol": "tcp", "external_port": 8080,
                                        "internal_port": 0, "interface": "wan"}]})
    .to_string();
    let out = operate(
        &mut dm,
        "Device.SoftwareModules.InstallDU()",
        &[("URL", &v1), ("X_CPEVISOR_NetworkConfig", &bad)],
    );
    let OperateOutcome::Failure(e) = out else {
        panic!("not refused: {out:?}")
    };
    assert_eq!(e.code, 7027, "{e:?}");
    assert_eq!(
        e.message,
        "InstallDU: X_CPEVISOR_NetworkConfig field `port_mappings[0].internal_port`: \
         must be 1..=65535"
    );
    assert_eq!((w.state_files(), w.state_json()), before);

    // A good one: the DU installs with it, the data model shows it.
    let out = operate(
        &mut dm,
        "Device.SoftwareModules.InstallDU()",
        &[
            ("URL", &v1),
            ("X_CPEVISOR_NetworkConfig", r#"{"mode": "none"}"#),
        ],
    );
    assert!(matches!(out, OperateOutcome::Request(_)), "{out:?}");
    let version = |a: &Agent| {
        a.snapshot()
            .deployment_units
            .first()
            .map(|d| d.version.clone())
    };
    wait(|| version(&agent).as_deref() == Some("1.0"));
    let mode = "Device.SoftwareModules.ExecutionUnit.1.NetworkConfig.X_CPEVISOR_Mode";
    let get = |dm: &mut DataModel, p: &str| {
        let r = dm.get(&[p.to_string()], 0);
        assert!(r[0].err.is_none(), "{p}: {:?}", r[0].err);
        r[0].resolved[0].1[0].1.clone()
    };
    assert_eq!(get(&mut dm, mode), "none");

    // Update with another section (nat, no mappings): the new one is in force.
    let out = operate(
        &mut dm,
        "Device.SoftwareModules.DeploymentUnit.1.Update()",
        &[
            ("URL", &v2),
            ("X_CPEVISOR_NetworkConfig", r#"{"mode": "nat"}"#),
        ],
    );
    assert!(matches!(out, OperateOutcome::Request(_)), "{out:?}");
    wait(|| version(&agent).as_deref() == Some("2.0"));
    assert_eq!(get(&mut dm, mode), "nat");
    assert_eq!(
        get(
            &mut dm,
            "Device.SoftwareModules.ExecutionUnit.1.NetworkConfig.X_CPEVISOR_PortMappingNumberOfEntries"
        ),
        "0"
    );
    agent.shutdown();
}

fn wait(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CTL: &str = "self::ctl";

fn usp_config() -> UspConfig {
    UspConfig {
        endpoint_id: "os::012345-cpe0001".into(),
        controllers: vec![ControllerConfig {
            endpoint_id: CTL.into(),
            role: Role::FullAccess,
            identity: None,
            reply_to: None,
        }],
        device_info: DeviceInfoConfig {
            manufacturer: "Example Networks".into(),
            manufacturer_oui: "012345".into(),
            model_name: "qemu-aarch64-virt".into(),
            product_class: "HomeGateway".into(),
            serial_number: "cpe0001".into(),
        },
    }
}

#[test]
fn an_override_replaces_the_package_rules() {
    if !netns::can_run_nft() {
        return;
    }
    let ns = NamedNs::new("inet");
    let mut w = World::new("inet-nft");
    let wrapper = ns.nft_wrapper(&w.root);
    w.write_config_patched(json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "runner": "process",
                       "app_network": "10.100.0.0/16"}],
        "wan_interface": "wan0",
        "lan_interface": "lan0",
        "nft_path": wrapper,
    }));
    let before = ns.ruleset();
    let v1 = w.publish(&mapped_app("web", "1.0", 8080), "web1.cpkg");
    let v2 = w.publish(&mapped_app("web", "2.0", 8080), "web2.cpkg");
    let v3 = w.publish(&mapped_app("web", "3.0", 8080), "web3.cpkg");
    let other = w.publish(&App::new("other", "1.0"), "other.cpkg");
    w.start_daemon(None);

    let du = w
        .ctl_json(&["install", &v1, "--network", &override_port(9090)])
        .expect("install");
    let uuid = du["uuid"].as_str().unwrap().to_string();
    let eu = agentd::eu_of(&du);
    w.wait_eu_status(&eu, "Active", 10);
    let operator = "tcp dport 9090 dnat ip to 10.100.0.6:80";
    let package = "tcp dport 8080 dnat ip to 10.100.0.6:80";
    let running = ns.ruleset();
    assert!(running.contains(operator), "{running}");
    assert!(!running.contains("dport 8080"), "{running}");
    // No egress in the override: the package's udp 53 is not allowed either.
    assert!(!running.contains("udp dport"), "{running}");
    let shown = &w.list()["eu_networks"][&eu]["config"]["port_mappings"][0];
    assert_eq!(shown["external_port"], 9090, "{shown}");

    // The port the override took is taken: another app's override asking for it is refused.
    let files = state(&w);
    let (code, msg) = w
        .ctl_json(&["install", &other, "--network", &override_port(9090)])
        .unwrap_err();
    assert_eq!(code, 7025, "{msg}");
    assert!(msg.contains("tcp port 9090 on the wan side"), "{msg}");
    assert_eq!(state(&w), files);
    assert_eq!(ns.ruleset(), running);

    // Restarted agent: the override's rules again.
    w.stop_daemon();
    assert_eq!(ns.ruleset(), before);
    w.start_daemon(None);
    w.wait_eu_status(&eu, "Active", 10);
    assert_eq!(ns.ruleset(), running);

    // An update without --network keeps it.
    w.ctl_json(&["update", &uuid, &v2]).expect("update");
    w.wait_eu_status(&eu, "Active", 10);
    assert_eq!(ns.ruleset(), running);
    // `null`: the new package's own section, its rules.
    w.ctl_json(&["update", &uuid, &v3, "--network", "null"])
        .expect("update to the package's");
    w.wait_eu_status(&eu, "Active", 10);
    let rules = ns.ruleset();
    assert!(rules.contains(package), "{rules}");
    assert!(!rules.contains("dport 9090"), "{rules}");
    assert!(w.state_json().unwrap()["dus"][0]
        .get("network_override")
        .is_none());

    w.ctl_json(&["uninstall", &uuid]).expect("uninstall");
    assert_eq!(ns.ruleset(), before);
    w.stop_daemon();
}
