//! A microVM whose guest ignores the power button, stopped through the real daemon and the real
//! `cpevisor-vmm` on /dev/kvm (x86_64 hosts, as root): on a stop the VMM presses the guest's
//! power button, waits the app's `stop_timeout_ms` for the guest to power off, then stops it
//! itself (exit 5); the agent reports the EU Idle with FailureOnStop and that reason, for an
//! operator's stop and for the daemon's shutdown alike.
//!
//! The guest is a hand-written bzImage (prints "guest up", signals boot-ready, spins; no ACPI), swapped in for the
//! package's placeholder kernel by a shim in front of the VMM; the rest of the agent's VM
//! description is used as written. The VMM is the one vmm_confined.rs builds (target/test-hooks).
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
fn a_guest_that_ignores_the_power_button_is_stopped_at_its_deadline() {
    let Some((mut w, seen)) = tiny_vm_world("vmmstop") else {
        return;
    };
    // The agent-wide deadline: the package declares none.
    w.write_config_patched(json!({
        "vmm_path": w.root.join("fake-vmm"),
        "exec_envs": [{"name": "kvm0", "type": "kvm", "arch": "x86_64", "memory_budget_mib": 64}],
        "stop_timeout_ms": 1500,
    }));
    let mut app = App::new("vmapp", "1.0");
    app.kvm = true;
    app.restart["enable"] = json!(false);
    let url = w.publish(&app, "vmapp.cpkg");
    w.start_daemon(None);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    w.wait_eu_status(&eu, "Active", 10);
    w.wait_log(&eu, "guest up", 20);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(
        cfg["shutdown_timeout_ms"],
        1500,
        "{cfg}\n{}",
        w.daemon_log()
    );

    // The operator's stop: the VMM gives up on the guest at the deadline and says so (exit 5).
    assert!(w.ctl(&["stop", &eu]).status.success());
    let v = w.wait_eu_status(&eu, "Idle", 30);
    assert_eq!(v["execution_fault_code"], "FailureOnStop", "{v}");
    let msg = v["execution_fault_message"].as_str().unwrap();
    assert!(
        msg.contains("the guest did not power off within 1500 ms"),
        "{msg}\n{}",
        w.logs(&eu)
    );

    // The daemon's shutdown: the same, in the log; then the clean-stop record.
    assert!(w.ctl(&["start", &eu]).status.success());
    w.wait_eu_status(&eu, "Active", 10);
    // The log ring holds both runs: wait for the second guest's line.
    w.poll(20, || match w.logs(&eu).matches("guest up").count() {
        n if n >= 2 => Ok(()),
        n => Err(format!("{n} guests up")),
    });
    assert_eq!(w.stop_daemon(), Some(0));
    let log = w.daemon_log();
    assert_eq!(
        log.matches(&format!("{eu}: stop forced: the guest did not power off"))
            .count(),
        2,
        "{log}"
    );
    assert!(w.state.join("clean-stop.json").exists());
}
