//! The real daemon with the real `cpevisor-vmm` on /dev/kvm (x86_64 hosts, as root): the VMM the
//! agent starts for a kvm app confines itself (its uid is the app's host id, seccomp, no
//! capabilities), its guest runs, and a syscall outside the VMM's filter kills it, which the
//! agent reports as FailureWhileActive.
//!
//! This host's KVM runs hand-written guests only, so the package's kernel layer is a placeholder
//! and a shim in front of the VMM swaps in a tiny bzImage (prints "guest up", spins); everything
//! else in the agent's VM description (jail, control socket, console, rng) is used as written.
//! The VMM is built with the `test-hooks` feature into target/test-hooks (once; a debug build).
#![cfg(target_arch = "x86_64")]

#[path = "common/agentd.rs"]
mod agentd;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentd::{eu_of, App, World};
use cpevisor_sandbox::caps::read_status_field;
use serde_json::json;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// cpevisor-vmm with the test hooks (a control command that makes a VMM thread perform a
/// forbidden syscall), built in its own target dir so it never replaces the normal binary.
fn vmm_with_test_hooks() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = workspace.join("target/test-hooks");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "cpevisor-vmm",
            "--features",
            "test-hooks",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(workspace)
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building cpevisor-vmm with test-hooks failed"
    );
    target.join("debug/cpevisor-vmm")
}

/// A bzImage shell (boot protocol 2.15, 64-bit entry at file offset 0xc00) around long-mode
/// code that prints "guest up" on COM1 and spins; it needs 2 MiB of guest RAM.
fn tiny_bzimage() -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for &b in b"guest up\n" {
        code.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    let mut bz = vec![0u8; 0x2000];
    bz[0x1f1] = 4; // setup sectors
    bz[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    bz[0x211] = 1; // loadflags: LOADED_HIGH
    bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    bz[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    bz[0x258..0x260].copy_from_slice(&0x10_0000u64.to_le_bytes()); // pref_address
    bz[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    bz[0xc00..0xc00 + code.len()].copy_from_slice(&code);
    bz
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
    std::fs::write(&guest, tiny_bzimage()).unwrap();
    let seen = w.root.join("vm.json");
    let pid_file = w.root.join("vmm.pid");
    // $1 is --config, $2 the agent's VM description.
    w.use_vmm_script(
        &format!(
            "#!/bin/sh\necho $$ > {pid}\nsed 's|\"kernel\": \"[^\"]*\"|\"kernel\": \"{guest}\"|' \"$2\" > {seen}\nexec {vmm} --config {seen}\n",
            pid = pid_file.display(),
            guest = guest.display(),
            seen = seen.display(),
            vmm = vmm.display(),
        ),
        json!({}),
    );
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
