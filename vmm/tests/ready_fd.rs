//! `ready_fd`: the real binary on /dev/kvm writes one byte to the inherited readiness pipe when
//! its guest first signals boot-ready, then closes it, unconfined and confined (where the VMM
//! closes every other inherited descriptor); a guest that never signals leaves the pipe silent;
//! a descriptor that is not a writable pipe is a configuration error naming `ready_fd`.
#![cfg(target_arch = "x86_64")]

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);
/// The descriptor number the pipe gets in the VMM, as the agent gives it.
const READY_FD: i32 = 3;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors, each wrapped at once and owned from then on.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: as above.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Starts the VMM on `cfg` with `fd` as its descriptor `READY_FD`.
fn start(cfg: &Path, fd: i32) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(cfg);
    // SAFETY: dup2/fcntl between fork and exec are async-signal-safe and allocate nothing.
    unsafe {
        cmd.pre_exec(move || {
            if fd == READY_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cpevisor-vmm")
}

fn config(s: &Scratch, code: &[u8], jail: bool) -> std::path::PathBuf {
    let k = s.file("guest.bin", code);
    let mut cfg = serde_json::json!({
        "kernel": k, "kernel_format": "raw-x86-64", "memory_mib": 16,
        "console": "stdout", "ready_fd": READY_FD,
    });
    if jail {
        cfg["jail"] = serde_json::json!({"uid": 100_977, "gid": 100_977});
    }
    s.file("vm.json", cfg.to_string().as_bytes())
}

fn one_byte_then_eof(jail: bool) {
    let s = Scratch::new(&format!("readyfd-{jail}"));
    let (mut r, w) = pipe();
    let child = start(&config(&s, guest::BOOT_READY, jail), w.as_raw_fd());
    drop(w);
    let o = wait(child, T);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"R", "{}", stderr(&o));
    if jail {
        assert!(stderr(&o).contains("jail: uid"), "{}", stderr(&o));
    }
}

#[test]
fn the_first_boot_ready_write_reaches_the_pipe() {
    one_byte_then_eof(false);
}

#[test]
fn the_pipe_survives_confinement() {
    if !is_root() {
        eprintln!("skipped: the jail needs root");
        return;
    }
    one_byte_then_eof(true);
}

#[test]
fn a_guest_that_never_signals_leaves_the_pipe_silent() {
    let s = Scratch::new("readyfd-mute");
    let (mut r, w) = pipe();
    let k = s.file("spin.bin", guest::SPINNER);
    let sock = s.path("ctl.sock");
    let cfg = serde_json::json!({
        "kernel": k, "kernel_format": "raw-x86-64", "memory_mib": 16,
        "console": "stdout", "ready_fd": READY_FD, "control_socket": sock,
    });
    let mut child = start(
        &s.file("vm.json", cfg.to_string().as_bytes()),
        w.as_raw_fd(),
    );
    drop(w);
    wait_for_path(&sock, T);
    let st = control(&sock, r#"{"cmd":"status"}"#);
    assert_eq!(st["state"], "running", "{st}");
    assert!(st["boot_ready_ms"].is_null(), "{st}");
    let _ = child.kill();
    let _ = child.wait();
    // The VMM is gone: EOF, and not one byte came before it.
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert!(
        got.is_empty(),
        "the pipe spoke for a guest that never signalled"
    );
}

#[test]
fn a_ready_fd_that_is_not_a_writable_pipe_is_refused() {
    let s = Scratch::new("readyfd-bad");
    let f = File::open(s.file("plain", b"x")).unwrap();
    let o = wait(
        start(&config(&s, guest::BOOT_READY, false), f.as_raw_fd()),
        T,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ready_fd: 3: not a pipe"),
        "{}",
        stderr(&o)
    );
    let (r, _w) = pipe();
    let o = wait(
        start(&config(&s, guest::BOOT_READY, false), r.as_raw_fd()),
        T,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not open for writing"),
        "{}",
        stderr(&o)
    );
}
