//! An app's network rules through the real daemon's lifecycle: in place while the app runs,
//! gone when it stops or is uninstalled, back after the agent restarts (and not doubled after a
//! power cut), a second app mapping the same port refused at install with nothing changed, a
//! bad network section refused naming the field. The daemon's `nft` is the real tool run in a
//! network namespace of the test's own (`nft_path` names a two-line wrapper), so the host's
//! ruleset is never touched. Needs root and nft; says so and passes without.

#[path = "common/agentd.rs"]
mod agentd;
mod common;
#[path = "common/netns.rs"]
mod netns;

use agentd::{App, World};
use netns::NamedNs;
use serde_json::{json, Value};

fn mapped_app(name: &str, port: u16) -> App {
    let mut a = App::new(name, "1.0");
    a.extra = json!({"network": {
        "port_mappings": [{"protocol": "tcp", "external_port": port, "internal_port": 80,
                           "interface": "wan"}],
        "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]}]
    }});
    a
}

#[test]
fn rules_follow_the_app_and_conflicts_change_nothing() {
    if !netns::can_run_nft() {
        return;
    }
    let ns = NamedNs::new("life");
    let mut w = World::new("nflife");
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

    let url_a = w.publish(&mapped_app("web", 8080), "web.cpkg");
    let url_b = w.publish(&mapped_app("other", 8080), "other.cpkg");
    // The packer refuses a bad network section: this package is built by hand.
    let key = cpevisor_agent::package::load_signing_key(&w.key).unwrap();
    let mut parts = common::Parts::good(&key);
    parts.config = serde_json::to_vec(&json!({
        "name": "bridgy", "version": "1.0", "vendor": "acme", "arch": "x86_64",
        "backends": ["jail"], "memory_mib": 16, "vcpus": 1, "command": ["/bin/sh"],
        "network": {"mode": "bridged"}
    }))
    .unwrap();
    parts.sign_with(&key);
    parts.write(&w.www.join("bridgy.cpkg"));
    let url_c = w.url("bridgy.cpkg");
    w.start_daemon(None);

    let du = w.ctl_json(&["install", &url_a]).expect("install");
    let eu = agentd::eu_of(&du);
    w.wait_eu_status(&eu, "Active", 10);
    let dnat = "tcp dport 8080 dnat ip to 10.100.0.6:80 comment \"eu-1\"";
    let running = ns.ruleset();
    assert!(running.contains(dnat), "{running}");
    let net = &w.list()["eu_networks"][&eu];
    assert_eq!(net["rules_active"], true, "{net}");
    assert_eq!(net["address"], "10.100.0.6");

    // The same port for a second app: 7025 at install, before download, nothing installed,
    // rules unchanged.
    let files = w.state_files();
    let (code, msg) = w.ctl_json(&["install", &url_b]).unwrap_err();
    assert_eq!(code, 7025, "{msg}");
    assert!(msg.contains("tcp port 8080 on the wan side"), "{msg}");
    assert!(msg.contains("refused before download"), "{msg}");
    assert_eq!(w.list()["deployment_units"].as_array().unwrap().len(), 1);
    assert_eq!(ns.ruleset(), running);
    assert_eq!(w.state_files(), files);
    // Bridged on an agent that sets no LAN addresses aside for apps: 7225 naming the field.
    let (code, msg) = w.ctl_json(&["install", &url_c]).unwrap_err();
    assert_eq!(code, 7225, "{msg}");
    assert!(
        msg.contains("bridged") && msg.contains("lan_app_range"),
        "{msg}"
    );
    assert_eq!(ns.ruleset(), running);
    assert_eq!(w.state_files(), files);

    // Stopped: no rule left; started: back.
    w.ctl_json(&["stop", &eu]).unwrap();
    assert_eq!(ns.ruleset(), before);
    assert_eq!(w.list()["eu_networks"][&eu]["rules_active"], false);
    w.ctl_json(&["start", &eu]).unwrap();
    assert_eq!(ns.ruleset(), running);

    // The agent stops (its apps with it) and starts again: the rules are back, once.
    w.stop_daemon();
    assert_eq!(ns.ruleset(), before);
    w.start_daemon(None);
    w.wait_eu_status(&eu, "Active", 10);
    assert_eq!(ns.ruleset(), running);
    // A power cut leaves the table; the next start makes it again from what runs.
    w.kill_daemon();
    agentd::kill_apps_of(&w.root);
    assert_eq!(ns.ruleset(), running);
    w.start_daemon(None);
    w.wait_eu_status(&eu, "Active", 10);
    assert_eq!(ns.ruleset(), running);

    // Uninstalled: exactly the ruleset from before.
    let uuid = du["uuid"].as_str().unwrap();
    w.ctl_json(&["uninstall", uuid]).expect("uninstall");
    assert_eq!(ns.ruleset(), before);
    let l: Value = w.list();
    assert!(l.get("eu_networks").is_none(), "{l}");

    // The port is free again.
    let du = w.ctl_json(&["install", &url_b]).expect("install other");
    w.wait_eu_status(&agentd::eu_of(&du), "Active", 10);
    assert!(ns
        .ruleset()
        .contains("tcp dport 8080 dnat ip to 10.100.0.10:80"));
    w.stop_daemon();
    assert_eq!(ns.ruleset(), before);
}
