//! The agent sets a balloon target on a real `cpevisor-vmm` (x86_64 hosts, as root, /dev/kvm):
//! the daemon runs with a low watermark above all of this host's memory, so its balloon policy
//! sees pressure at every tick and inflates the one microVM app's balloon by a step; the VMM
//! takes the target, `cpevisorctl list` shows the VMM's figures, and since the guest (a tiny
//! hand-written one without a balloon driver) never inflates, `actual` stays 0 and the agent
//! pushes no further. The VMM and guest are vmm_stop.rs's.
#![cfg(target_arch = "x86_64")]

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/tiny_guest.rs"]
mod tiny_guest;
#[path = "common/tiny_vm_world.rs"]
mod tiny_vm_world;

use agentd::{eu_of, App};
use serde_json::json;
use tiny_vm_world::tiny_vm_world;

#[test]
fn the_agent_sets_a_balloon_target_on_a_real_vmm() {
    let Some((mut w, seen)) = tiny_vm_world("vmmballoon") else {
        return;
    };
    w.write_config_patched(json!({
        "vmm_path": w.root.join("fake-vmm"),
        "exec_envs": [{"name": "kvm0", "type": "kvm", "arch": "x86_64", "memory_budget_mib": 64}],
        "stop_timeout_ms": 500,
        "balloon": {"low_watermark_mib": 100_000_000, "high_watermark_mib": 100_000_001,
                    "tick_ms": 500, "step_mib": 4, "floor_mib": 8, "floor_percent": 0},
    }));
    let mut app = App::new("vmapp", "1.0");
    app.kvm = true;
    app.memory_mib = 32;
    app.restart["enable"] = json!(false);
    let url = w.publish(&app, "vmapp.cpkg");
    w.start_daemon(None);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    w.wait_eu_status(&eu, "Active", 10);
    w.wait_log(&eu, "guest up", 20);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert!(cfg["balloon"].is_object(), "{cfg}");

    let balloon = || {
        let list = w.ctl_json(&["list"]).unwrap();
        list["execution_units"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["eu_id"] == eu.as_str()))
            .map(|e| e["balloon"].clone())
            .unwrap_or_default()
    };
    let b = w.poll(20, || match balloon() {
        b if b["target_mib"] == 4 => Ok(b),
        b => Err(format!("balloon {b}\n{}", w.daemon_log())),
    });
    assert_eq!(b["actual_mib"], 0, "{b}");
    assert_eq!(b["discarded_mib"], 0, "{b}");
    // Ticks go by; the guest never inflates, so the target is not pushed further.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let b = balloon();
    assert_eq!(
        (&b["target_mib"], &b["actual_mib"]),
        (&json!(4), &json!(0)),
        "{b}"
    );
    let log = w.daemon_log();
    assert_eq!(
        log.matches(&format!("{eu}: balloon target ")).count(),
        1,
        "{log}"
    );
    assert!(log.contains("balloon target 4 MiB (Pressure"), "{log}");
    // Stopped: its figures go with the run.
    assert!(w.ctl(&["stop", &eu]).status.success());
    w.wait_eu_status(&eu, "Idle", 30);
    assert!(balloon().is_null(), "{}", balloon());
    assert_eq!(w.stop_daemon(), Some(0));
}
