//! Process lifecycle on /dev/kvm: the control socket (status, pause, resume, stop), SIGTERM,
//! a second VMM on the same socket, a stale socket file.
#![cfg(target_arch = "x86_64")]

mod common;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// Starts the spinning guest with its console in a file and a control socket.
fn start_spinner(s: &Scratch) -> (std::process::Child, std::path::PathBuf, std::path::PathBuf) {
    start_guest(s, guest::SPINNER, "1")
}

/// Starts `code` on `vcpus` vCPUs (raw mode: every vCPU runs it) with its console in a file and a
/// control socket.
fn start_guest(
    s: &Scratch,
    code: &[u8],
    vcpus: &str,
) -> (std::process::Child, std::path::PathBuf, std::path::PathBuf) {
    start_guest_with(s, code, vcpus, &[])
}

/// As `start_guest`, with more flags.
pub fn start_guest_with(
    s: &Scratch,
    code: &[u8],
    vcpus: &str,
    extra: &[&str],
) -> (std::process::Child, std::path::PathBuf, std::path::PathBuf) {
    let k = s.file("spin.bin", code);
    let sock = s.path("ctl.sock");
    let console = s.path("console.log");
    let console_arg = format!("file:{}", console.display());
    let mut args = vec![
        "--kernel",
        k.to_str().unwrap(),
        "--kernel-format",
        "raw-x86-64",
        "--memory",
        "16",
        "--console",
        &console_arg,
        "--control-socket",
        sock.to_str().unwrap(),
        "--vcpus",
        vcpus,
    ];
    args.extend_from_slice(extra);
    let child = spawn(&args);
    wait_for_path(&sock, T);
    (child, sock, console)
}

/// Waits until the console file grows past `len`.
fn wait_growth(p: &std::path::Path, len: u64) -> u64 {
    let deadline = std::time::Instant::now() + T;
    loop {
        let now = file_len(p);
        if now > len {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest output stalled at {len} bytes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pause_resume_stop_over_the_control_socket() {
    let s = Scratch::new("ctl");
    // Two vCPUs: pause must park both before it answers.
    let (child, sock, console) = start_guest(&s, guest::SPINNER, "2");

    let st = control(&sock, r#"{"cmd":"status"}"#);
    assert_eq!(st["ok"], true, "{st}");
    assert_eq!(st["state"], "running");
    assert_eq!(st["memory"]["guest_mib"], 16);
    assert!(st["memory"]["rss_kib"].as_u64().unwrap() > 0);
    assert!(st["uptime_ms"].as_u64().is_some());
    assert!(st["boot_ready_ms"].is_null());
    wait_growth(&console, 0);

    let r = control(&sock, r#"{"cmd":"pause"}"#);
    assert_eq!(r["state"], "paused", "{r}");
    // The reply comes once every vCPU is parked, so the output must not move any more.
    let frozen = file_len(&console);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(file_len(&console), frozen, "guest ran while paused");
    assert_eq!(control(&sock, r#"{"cmd":"status"}"#)["state"], "paused");

    let r = control(&sock, r#"{"cmd":"resume"}"#);
    assert_eq!(r["state"], "running", "{r}");
    wait_growth(&console, frozen);

    let bad = control(&sock, r#"{"cmd":"reboot"}"#);
    assert_eq!(bad["ok"], false);
    assert!(bad["error"].as_str().unwrap().contains("unknown cmd"));

    let r = control(&sock, r#"{"cmd":"stop"}"#);
    assert_eq!(r["ok"], true);
    let o = wait(child, T);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("exit: stopped by the host (code 0)"));
    assert!(!sock.exists(), "control socket left behind");
}

/// With `shutdown_timeout_ms` 0 a SIGTERM stops at once, as before the power button existed
/// (kvm_shutdown.rs covers the graceful path).
#[test]
fn sigterm_stops_cleanly() {
    let s = Scratch::new("term");
    let (child, sock, console) =
        start_guest_with(&s, guest::SPINNER, "1", &["--shutdown-timeout", "0"]);
    wait_growth(&console, 0);
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let o = wait(child, T);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("stop requested by signal SIGTERM"));
    assert!(!stderr(&o).contains("power button"), "{}", stderr(&o));
    assert!(!sock.exists(), "control socket left behind");
}

#[test]
fn second_vmm_on_a_live_socket_is_refused() {
    let s = Scratch::new("second");
    let (first, sock, _console) = start_spinner(&s);
    let k = s.file("hello.bin", guest::LONG_MODE_HELLO);
    let o = run(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--kernel-format=raw-x86-64",
            "--memory=16",
            "--control-socket",
            sock.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("another VMM is listening on it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stdout(&o), "", "the second VMM must not have run its guest");
    // The first VMM still owns and serves its socket.
    assert_eq!(control(&sock, r#"{"cmd":"status"}"#)["state"], "running");
    control(&sock, r#"{"cmd":"stop"}"#);
    assert_eq!(wait(first, T).status.code(), Some(0));
    assert!(!sock.exists());
}

#[test]
fn stale_socket_file_is_replaced() {
    let s = Scratch::new("stale");
    let sock = s.path("ctl.sock");
    drop(UnixListener::bind(&sock).unwrap()); // the file stays, nobody listens
    let k = s.file("hello.bin", guest::LONG_MODE_HELLO);
    let o = run(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--kernel-format=raw-x86-64",
            "--memory=16",
            "--control-socket",
            sock.to_str().unwrap(),
        ],
        T,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "OK\n");
    assert!(stderr(&o).contains("replacing stale control socket"));
    assert!(!sock.exists(), "socket removed at exit");
}

#[test]
fn status_reports_boot_ready() {
    let s = Scratch::new("readyst");
    let (child, sock, _console) = start_guest(&s, guest::BOOT_READY_SPIN, "1");
    let deadline = std::time::Instant::now() + T;
    let ms = loop {
        let st = control(&sock, r#"{"cmd":"status"}"#);
        if let Some(ms) = st["boot_ready_ms"].as_f64() {
            break ms;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {st}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(ms > 0.0, "{ms}");
    control(&sock, r#"{"cmd":"stop"}"#);
    let o = wait(child, T);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("boot-ready: "));
}

#[test]
fn console_to_a_unix_socket() {
    let s = Scratch::new("consock");
    let path = s.path("console.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let k = s.file("hello.bin", guest::LONG_MODE_HELLO);
    let console = format!("socket:{}", path.display());
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
        got
    });
    let o = run(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--kernel-format=raw-x86-64",
            "--memory=16",
            "--console",
            &console,
        ],
        T,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    assert_eq!(reader.join().unwrap(), b"OK\n");
}
