//! Bad input to the real binary: each case exits 2 with a line naming what is wrong, runs no
//! guest, and leaves no control socket behind.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// A minimal valid kernel for this architecture's checks.
fn valid_kernel(s: &Scratch) -> std::path::PathBuf {
    if cfg!(target_arch = "x86_64") {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        s.file("vmlinux", &elf)
    } else {
        let mut img = vec![0u8; 4096];
        img[16..24].copy_from_slice(&4096u64.to_le_bytes());
        img[56..60].copy_from_slice(b"ARM\x64");
        s.file("Image", &img)
    }
}

fn cpio_newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        write!(
            out,
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0o100644,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .unwrap();
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    out
}

/// Runs with `args` plus a control socket and checks the common contract of a config error.
fn expect_config_error(s: &Scratch, args: &[&str], needle: &str) {
    let sock = s.path("ctl.sock");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--control-socket", sock.to_str().unwrap()]);
    let o = run(&all, T);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "args {args:?}: {e}");
    assert!(e.contains("error: "), "{e}");
    assert!(
        e.contains(needle),
        "args {args:?}: expected {needle:?} in {e}"
    );
    assert!(!e.contains("first instruction"), "a guest ran: {e}");
    assert!(!sock.exists(), "socket left behind for {args:?}");
}

#[test]
fn missing_kernel() {
    let s = Scratch::new("e-missing");
    let p = s.path("nope");
    expect_config_error(
        &s,
        &["--kernel", p.to_str().unwrap()],
        &format!("kernel {}: No such file", p.display()),
    );
}

#[test]
fn corrupt_kernel_header() {
    let s = Scratch::new("e-corrupt");
    let k = s.file("k", &[0x5a; 8192]);
    let needle = if cfg!(target_arch = "x86_64") {
        "not an x86_64 kernel"
    } else {
        "not an arm64 Image"
    };
    expect_config_error(&s, &["--kernel", k.to_str().unwrap()], needle);
}

#[test]
fn truncated_initramfs() {
    let s = Scratch::new("e-initrd");
    let k = valid_kernel(&s);
    let whole = cpio_newc(&[("init", &[1u8; 3000]), ("TRAILER!!!", &[])]);
    let cut = s.file("initrd.cpio", &whole[..1500]);
    expect_config_error(
        &s,
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            cut.to_str().unwrap(),
        ],
        "truncated cpio archive",
    );
    let junk = s.file("junk", b"this is not an initramfs at all");
    expect_config_error(
        &s,
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            junk.to_str().unwrap(),
        ],
        "not an initramfs",
    );
}

#[test]
fn memory_limits() {
    let s = Scratch::new("e-mem");
    let k = valid_kernel(&s);
    let k = k.to_str().unwrap();
    expect_config_error(
        &s,
        &["--kernel", k, "--memory", "0"],
        "memory_mib: must be at least 1",
    );
    expect_config_error(
        &s,
        &["--kernel", k, "--memory", "512", "--max-memory", "256"],
        "above the limit max_memory_mib = 256 MiB",
    );
    expect_config_error(
        &s,
        &["--kernel", k, "--memory", "lots"],
        "--memory: 'lots' is not a number",
    );
}

/// A config planted as a FIFO (nobody ever writes to it) or a symlink is refused at once: the
/// VMM runs as root and is handed the path.
#[test]
fn config_must_be_a_regular_file() {
    let s = Scratch::new("e-fifo");
    let fifo = s.path("fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    expect_config_error(
        &s,
        &["--config", fifo.to_str().unwrap()],
        "not a regular file",
    );
    let good = s.file("vm.json", b"{\"kernel\": \"/k\"}");
    let link = s.path("link.json");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    expect_config_error(&s, &["--config", link.to_str().unwrap()], "symbolic link");
}

#[test]
fn bad_json_and_unknown_fields() {
    let s = Scratch::new("e-json");
    let c = s.file("vm.json", b"{\"kernel\": \"/k\",");
    expect_config_error(&s, &["--config", c.to_str().unwrap()], "config file");
    let c = s.file("vm2.json", b"{\"kernel\": \"/k\", \"memory\": 64}");
    expect_config_error(
        &s,
        &["--config", c.to_str().unwrap()],
        "unknown field `memory`",
    );
    let missing = s.path("absent.json");
    expect_config_error(&s, &["--config", missing.to_str().unwrap()], "No such file");
}

#[test]
fn missing_tap_device() {
    let s = Scratch::new("e-tap");
    let k = valid_kernel(&s);
    expect_config_error(
        &s,
        &["--kernel", k.to_str().unwrap(), "--net", "cpvnotap0"],
        "tap device 'cpvnotap0' does not exist",
    );
}

#[test]
fn usage_errors() {
    let s = Scratch::new("e-usage");
    expect_config_error(&s, &["--frobnicate"], "--frobnicate: unknown argument");
    expect_config_error(&s, &["--memory", "64"], "--kernel: required");
}

#[test]
fn help_lists_exit_codes() {
    let o = run(&["--help"], T);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for s in [
        "EXIT CODES",
        "0  guest powered off",
        "3  guest asked for a reboot",
        "--control-socket",
    ] {
        assert!(out.contains(s), "missing {s:?} in help");
    }
}
