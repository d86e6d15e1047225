//! The real daemon with the real `cpevisor-vmm` on /dev/kvm (x86_64 hosts, as root): the VMM the
//! agent starts for a kvm app confines itself (its uid is the app's host id, seccomp, no
//! capabilities), its guest runs, and a syscall outside the VMM's filter kills it, which the
//! agent reports as FailureWhileActive.
//!
//! This host's KVM runs hand-written guests only, so the package's kernel layer is a placeholder
//! and a shim in front of the VMM swaps in a tiny bzImage (prints "guest up", signals ready,
//! spins); everything else in the agent's VM description (jail, control socket, console, rng,
//! readiness pipe) is used as written.
//! The VMM is built with the `test-hooks` feature into target/test-hooks (once; a debug build).
#![cfg(target_arch = "x86_64")]

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/tiny_guest.rs"]
mod tiny_guest;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use agentd::{eu_of, App, World};
use cpevisor_sandbox::caps::read_status_field;
use serde_json::json;
use tiny_guest::{tiny_bzimage, vmm_shim, vmm_with_test_hooks};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn status_field(pid: &str, key: &str) -> String {
    read_status_field(format!("/proc/{pid}/status"), key).unwrap()
}

#[test]
fn a_vmm_killed_by_its_seccomp_filter_is_failure_while_active() {
    if !is_root() || !Path::new("/dev/kvm").exists() || !cfg!(debug_assertions) {
        eprintln!("skipped: needs root, /dev/kvm and a debug build");
        return;
    }
    let vmm = vmm_with_test_hooks();
    let mut w = World::new("vmmjail");
    let guest = w.root.join("guest.bzImage");
    // It signals boot-ready: the agent reports Active only then.
    std::fs::write(&guest, tiny_bzimage("guest up\n", true)).unwrap();
    let seen = w.root.join("vm.json");
    let pid_file = w.root.join("vmm.pid");
    w.use_vmm_script(&vmm_shim(&vmm, &guest, &seen, &pid_file), json!({}));
    let mut app = App::new("vmapp", "1.0");
    app.kvm = true;
    app.restart["enable"] = json!(false);
    let url = w.publish(&app, "vmapp.cpkg");
    w.start_daemon(None);
    let du = w.ctl_json(&["install", &url]).unwrap();
    let eu = eu_of(&du);
    w.wait_eu_status(&eu, "Active", 10);
    let log = w.wait_log(&eu, "guest up", 20);
    assert!(log.contains("jail: uid"), "{log}");

    // The VMM the agent started is confined, as the app's own host id.
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let n: u32 = eu.strip_prefix("eu-").unwrap().parse().unwrap();
    let id = (100_000 + n).to_string();
    assert_eq!(status_field(&pid, "Seccomp"), "2");
    assert_eq!(status_field(&pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(&pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&pid, "Uid"), format!("{id}\t{id}\t{id}\t{id}"));

    // A vCPU thread makes a syscall outside its filter: the VMM dies of SIGSYS.
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
    assert_eq!(cfg["jail"]["uid"], json!(100_000 + n), "{cfg}");
    let sock = cfg["control_socket"].as_str().unwrap();
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"cmd\":\"test-forbidden-syscall\",\"thread\":\"vcpu\"}\n")
        .unwrap();
    let mut reply = String::new();
    let _ = BufReader::new(&mut s).read_line(&mut reply);

    let v = w.poll(20, || {
        let v = w.eu(&eu);
        if v["execution_fault_code"] == "FailureWhileActive" {
            Ok(v)
        } else {
            Err(format!("{eu} not FailureWhileActive: {v}"))
        }
    });
    assert_eq!(v["status"], "Idle", "{v}");
    let msg = v["execution_fault_message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("killed by signal {}", libc::SIGSYS)),
        "{msg}"
    );
}

/// The device's layout: the VMM is the multi-call `cpevisor` run as its `cpevisor-vmm` link.
/// The VMM the agent starts through it confines itself exactly as the VMM binary does: every
/// thread under a seccomp filter, no new privileges, no capabilities, the app's host id.
#[test]
fn the_vmm_applet_of_the_multicall_binary_is_confined_the_same() {
    if !is_root() || !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: needs root and /dev/kvm");
        return;
    }
    let mut w = World::new("vmmapplet");
    let bin = w.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("cpevisor-vmm");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_cpevisor"), &link).unwrap();
    let guest = w.root.join("guest.bzImage");
    std::fs::write(&guest, tiny_bzimage("guest up\n", true)).unwrap();
    let seen = w.root.join("vm.json");
    let pid_file = w.root.join("vmm.pid");
    w.use_vmm_script(&vmm_shim(&link, &guest, &seen, &pid_file), json!({}));
    let mut app = App::new("vmapp", "1.0");
    app.kvm = true;
    app.restart["enable"] = json!(false);
    let url = w.publish(&app, "vmapp.cpkg");
    w.start_daemon(None);
    let eu = eu_of(&w.ctl_json(&["install", &url]).unwrap());
    w.wait_eu_status(&eu, "Active", 10);
    let log = w.wait_log(&eu, "guest up", 20);
    assert!(log.contains("jail: uid"), "{log}");

    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe,
        std::fs::canonicalize(env!("CARGO_BIN_EXE_cpevisor")).unwrap()
    );
    let n: u32 = eu.strip_prefix("eu-").unwrap().parse().unwrap();
    let id = (100_000 + n).to_string();
    assert_eq!(status_field(&pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(&pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&pid, "Uid"), format!("{id}\t{id}\t{id}\t{id}"));
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(threads.len() >= 2, "main and vCPU threads: {threads:?}");
    for t in &threads {
        let status = format!("/proc/{pid}/task/{t}/status");
        assert_eq!(
            read_status_field(&status, "Seccomp").unwrap(),
            "2",
            "thread {t}"
        );
    }
    assert!(w.ctl(&["stop", &eu]).status.success());
    assert_eq!(w.eu(&eu)["status"], "Idle");
}
