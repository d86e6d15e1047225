//! A jailed VMM on /dev/kvm (`"jail"` in the VM description), started as root: after set-up it
//! is an unprivileged uid with no capabilities, no_new_privs, seccomp filters, its own empty
//! mount namespace and none of its parent's descriptors, and its guest still runs; a syscall
//! outside a thread's filter (made through the `test-hooks` control command) kills it.
#![cfg(target_arch = "x86_64")]

mod common;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use cpevisor_sandbox::caps::read_status_field;

// A bound for hangs, not a timing: CI machines run this beside board emulators.
const T: Duration = Duration::from_secs(60);
/// An id in the agent's range for apps (100000 + EU number), far above the EUs tests create.
const JAIL_ID: u32 = 100_000 + 990_001;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Writes a VM description for the spinning guest, jailed or not.
fn config(s: &Scratch, jail: bool) -> (PathBuf, PathBuf, PathBuf) {
    let k = s.file("spin.bin", guest::SPINNER);
    let sock = s.path("ctl.sock");
    let console = s.path("console.log");
    let mut cfg = serde_json::json!({
        "kernel": k, "kernel_format": "raw-x86-64", "memory_mib": 16, "vcpus": 2,
        "console": format!("file:{}", console.display()), "control_socket": sock,
    });
    if jail {
        cfg["jail"] = serde_json::json!({"uid": JAIL_ID, "gid": JAIL_ID});
    }
    let path = s.file("vm.json", cfg.to_string().as_bytes());
    (path, sock, console)
}

/// Starts the VMM with `extra_fd` inherited (close-on-exec cleared), as a supervisor might leak.
fn start(config: &Path, extra_fd: Option<i32>) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(fd) = extra_fd {
        // SAFETY: only fcntl between fork and exec; no allocation.
        unsafe {
            cmd.pre_exec(move || {
                libc::fcntl(fd, libc::F_SETFD, 0);
                Ok(())
            });
        }
    }
    cmd.spawn().expect("start cpevisor-vmm")
}

fn wait_growth(p: &Path, len: u64) -> u64 {
    let deadline = Instant::now() + T;
    loop {
        let now = file_len(p);
        if now > len {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "guest output stalled at {len} bytes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status_field(pid: u32, key: &str) -> String {
    read_status_field(format!("/proc/{pid}/status"), key).unwrap()
}

/// PF_USER_WORKER (include/linux/sched.h): a kernel worker that lives in the process's thread
/// group but never returns to user space, such as the NX huge page recovery task that KVM on
/// x86 starts on demand (a vhost_task since Linux 6.13). It runs no VMM code, so it carries no
/// filter of ours.
const PF_USER_WORKER: u64 = 0x4000;

fn is_kernel_worker(task: &std::path::Path) -> bool {
    let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
    // Fields after the parenthesised comm: state, ppid, pgrp, session, tty_nr, tpgid, flags.
    let flags = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    flags & PF_USER_WORKER != 0
}

#[test]
fn a_jailed_vmm_keeps_nothing_but_what_its_guest_needs() {
    if !is_root() {
        eprintln!("skipped: the jail needs root");
        return;
    }
    let s = Scratch::new("jail-ok");
    let (cfg, sock, console) = config(&s, true);
    let leak = std::fs::File::open(s.path("vm.json")).unwrap();
    let leak_fd = std::os::fd::AsRawFd::as_raw_fd(&leak);
    let child = start(&cfg, Some(leak_fd));
    wait_for_path(&sock, T);
    wait_growth(&console, 0);
    let pid = child.id();

    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(pid, "CapBnd"), "0000000000000000");
    let uid = format!("{JAIL_ID}\t{JAIL_ID}\t{JAIL_ID}\t{JAIL_ID}");
    assert_eq!(status_field(pid, "Uid"), uid);
    assert_eq!(status_field(pid, "Gid"), uid);
    // Every thread has its filter (vCPUs too). A vCPU thread installs its own before it enters
    // the guest, so one the scheduler has not run yet (still named after the process) shows
    // none for a moment: wait for each to get there, within the deadline.
    let deadline = Instant::now() + T;
    loop {
        let mut unfiltered = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = task.unwrap().path();
            let Ok(seccomp) = read_status_field(task.join("status"), "Seccomp") else {
                continue; // the thread ended
            };
            if seccomp != "2" && !is_kernel_worker(&task) {
                let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
                unfiltered.push(format!(
                    "{} ({}): Seccomp {seccomp}",
                    task.display(),
                    comm.trim()
                ));
            }
        }
        if unfiltered.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "threads without a filter: {unfiltered:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/mnt")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "the VMM shares our mounts"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/ipc")).unwrap(),
        std::fs::read_link("/proc/self/ns/ipc").unwrap()
    );
    // Its root is empty: nothing of the host's files.
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .collect();
    assert!(root.is_empty(), "the VMM's root holds {root:?}");
    // The descriptor it inherited was closed before anything else happened.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        !fds.iter().any(|p| p.ends_with("vm.json")),
        "inherited descriptor still open: {fds:?}"
    );
    // Not dumpable: /proc/<pid>/mem is root's, not the VMM uid's.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/mem")).unwrap().uid(),
        0
    );

    // The control socket still works: status (memory read through the descriptor kept open),
    // pause parks both vCPUs, resume, stop.
    let st = control(&sock, r#"{"cmd":"status"}"#);
    assert_eq!(st["state"], "running", "{st}");
    assert!(st["memory"]["rss_kib"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(control(&sock, r#"{"cmd":"pause"}"#)["state"], "paused");
    let frozen = file_len(&console);
    assert_eq!(control(&sock, r#"{"cmd":"resume"}"#)["state"], "running");
    wait_growth(&console, frozen);
    assert_eq!(control(&sock, r#"{"cmd":"stop"}"#)["ok"], true);
    let o = wait(child, T);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("jail: uid"), "{}", stderr(&o));
    drop(leak);
}

/// Starts a guest, asks `thread` to make a forbidden syscall, returns how the VMM ended.
fn forbidden_syscall(jail: bool, thread: &str) -> (std::process::Output, serde_json::Value) {
    let s = Scratch::new(&format!("jail-{thread}-{jail}"));
    let (cfg, sock, console) = config(&s, jail);
    let child = start(&cfg, None);
    wait_for_path(&sock, T);
    wait_growth(&console, 0);
    let req = format!(r#"{{"cmd":"test-forbidden-syscall","thread":"{thread}"}}"#);
    let reply = try_control(&sock, &req);
    if !jail {
        // Unconfined, the syscall is harmless and the VMM goes on: the kill below is the filter.
        wait_growth(&console, file_len(&console));
        control(&sock, r#"{"cmd":"stop"}"#);
    }
    (wait(child, T), reply)
}

/// One request; Null when the VMM died before answering.
fn try_control(path: &Path, request: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(&mut s).read_line(&mut line);
    serde_json::from_str(&line).unwrap_or(serde_json::Value::Null)
}

#[test]
fn a_forbidden_syscall_on_any_thread_kills_a_jailed_vmm() {
    if !is_root() || !cfg!(debug_assertions) {
        eprintln!("skipped: needs root and a debug build (the test hook)");
        return;
    }
    for thread in ["main", "vcpu"] {
        let (o, reply) = forbidden_syscall(false, thread);
        assert_eq!(
            o.status.code(),
            Some(0),
            "unconfined {thread}: {}",
            stderr(&o)
        );
        assert_eq!(reply["ok"], true, "unconfined {thread}: {reply}");

        let (o, _) = forbidden_syscall(true, thread);
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGSYS),
            "jailed {thread}: {:?}\n{}",
            o.status,
            stderr(&o)
        );
    }
}

/// glibc's allocator opens /proc/sys/vm/overcommit_memory the first time a thread's own arena
/// trims its heap; the filters forbid openat, so a jailed VMM whose vCPU thread freed a large
/// heap died of SIGSYS (seen at every graceful stop on the boards, after the guest's last disk
/// writes). With one arena (confine::one_malloc_arena) it lives on and stops cleanly.
#[test]
fn a_vcpu_thread_trimming_its_heap_does_not_kill_a_jailed_vmm() {
    if !is_root() || !cfg!(debug_assertions) {
        eprintln!("skipped: needs root and a debug build (the test hook)");
        return;
    }
    let s = Scratch::new("jail-heap");
    let (cfg, sock, console) = config(&s, true);
    let child = start(&cfg, None);
    wait_for_path(&sock, T);
    wait_growth(&console, 0);
    let reply = try_control(
        &sock,
        r#"{"cmd":"test-forbidden-syscall","thread":"vcpu-heap"}"#,
    );
    assert_eq!(reply["ok"], true, "{reply}");
    // The kick makes the vCPU leave KVM_RUN at once; a second is ample for the churn (its log
    // line is checked below), then a clean stop. Killed, the VMM exits by SIGSYS instead.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let st = match std::os::unix::net::UnixStream::connect(&sock) {
        Ok(_) => try_control(&sock, r#"{"cmd":"stop"}"#),
        Err(e) => serde_json::Value::from(format!("no control socket: {e}")),
    };
    let o = wait(child, T);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{:?} (stop reply {st})\n{}",
        o.status,
        stderr(&o)
    );
    assert!(stderr(&o).contains("heap churned"), "{}", stderr(&o));
}

#[test]
fn root_is_not_a_jail() {
    let s = Scratch::new("jail-root");
    let k = s.file("spin.bin", guest::SPINNER);
    let cfg = serde_json::json!({"kernel": k, "kernel_format": "raw-x86-64",
        "jail": {"uid": 0, "gid": 0}});
    let path = s.file("vm.json", cfg.to_string().as_bytes());
    let o = run(&["--config", path.to_str().unwrap()], T);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("jail: uid 0"), "{}", stderr(&o));
}
