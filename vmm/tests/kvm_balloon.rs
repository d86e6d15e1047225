//! virtio-balloon on /dev/kvm: memory a guest frees goes back to the host. This host's KVM
//! cannot boot Linux (shared/PLATFORM.md), so the guest is a freestanding balloon driver
//! (guests/balloon_driver.c, built here with the host's gcc) that touches 32 MiB, then frees
//! it the way Linux does: free page reporting (4 MiB ranges on the reporting queue, index 2)
//! or inflation (PFN lists on the inflate queue). The VMM's resident memory of its guest-RAM
//! mapping is read from /proc/PID/smaps before, at the peak and after; the figures are printed
//! (docs/density.md). Without a balloon the same guest keeps the memory resident.
#![cfg(target_arch = "x86_64")]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::*;

const GUEST_MIB: u64 = 128;
const ALLOC_KIB: u64 = 32 << 10;
/// How far above the level before the allocation the guest-RAM mapping may stay once the
/// guest gave its 32 MiB back: the guest touches nothing else, so this is slack only.
const BOUND_KIB: u64 = 1024;
const T: Duration = Duration::from_secs(20);

/// Builds the guest: a flat binary loaded at 0x100000, entry first.
fn build_guest(s: &Scratch) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests/balloon_driver.c");
    let ld = s.file(
        "guest.ld",
        b"SECTIONS {\n . = 0x100000;\n .text : { *(.text.entry) *(.text .text.*) }\n \
          .rodata : { *(.rodata .rodata.*) }\n .data : { *(.data .data.*) *(.bss .bss.*) \
          *(COMMON) }\n /DISCARD/ : { *(.eh_frame*) *(.note*) *(.comment) }\n}\n",
    );
    let elf = s.path("guest.elf");
    let bin = s.path("guest.bin");
    let cc = Command::new("gcc")
        .args([
            "-O2",
            "-ffreestanding",
            "-nostdlib",
            "-static",
            "-fno-pic",
            "-no-pie",
            "-mno-red-zone",
            "-mgeneral-regs-only",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-fno-builtin",
            "-fno-tree-loop-distribute-patterns",
            "-Wl,--build-id=none",
            "-Wl,--no-warn-rwx-segments",
            "-T",
        ])
        .arg(&ld)
        .arg("-o")
        .arg(&elf)
        .arg(&src)
        .output()
        .expect("run gcc (make setup installs it)");
    assert!(
        cc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let oc = Command::new("objcopy")
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&bin)
        .output()
        .expect("run objcopy");
    assert!(
        oc.status.success(),
        "{}",
        String::from_utf8_lossy(&oc.stderr)
    );
    bin
}

/// A running VMM with the guest, its console input and output.
struct Guest {
    child: Child,
    lines: Receiver<String>,
}

impl Guest {
    fn start(bin: &Path, balloon: bool) -> Guest {
        let memory = GUEST_MIB.to_string();
        let mut args = vec![
            "--kernel",
            bin.to_str().unwrap(),
            "--kernel-format",
            "raw-x86-64",
            "--memory",
            &memory,
        ];
        if balloon {
            args.push("--balloon");
        }
        Guest::spawn(&args)
    }

    fn spawn(args: &[&str]) -> Guest {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cpevisor-vmm");
        let mut out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut byte = [0u8];
            while let Ok(1) = out.read(&mut byte) {
                if byte[0] == b'\n' {
                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                    line.clear();
                } else {
                    line.push(byte[0]);
                }
            }
        });
        Guest { child, lines }
    }

    /// The next console line.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(T)
            .unwrap_or_else(|e| panic!("no console line within {T:?}: {e}"))
    }

    fn command(&mut self, c: u8) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(&[c]).unwrap();
        stdin.flush().unwrap();
    }

    /// Resident KiB of the guest-RAM mapping (the one anonymous mapping of the guest's size).
    fn guest_rss_kib(&self) -> u64 {
        let pid = self.child.id();
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let size = format!("{}", GUEST_MIB << 10);
        let mut inside = false;
        let mut found = None;
        for line in smaps.lines() {
            let mut f = line.split_whitespace();
            match (f.next(), f.next()) {
                (Some("Size:"), Some(kib)) => inside = kib == size,
                (Some("Rss:"), Some(kib)) if inside => {
                    *found.get_or_insert(0) += kib.parse::<u64>().unwrap()
                }
                _ => {}
            }
        }
        found.expect("no mapping of the guest's size in smaps")
    }

    /// Polls the guest-RAM RSS until `ok` holds or the deadline passes; returns the last value.
    fn rss_until(&self, ok: impl Fn(u64) -> bool, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let rss = self.guest_rss_kib();
            if ok(rss) || Instant::now() > deadline {
                return rss;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots the guest, touches 32 MiB, frees it with `free` ('f' report, 'i' inflate); returns
/// (before, peak, after) in KiB, and the guest's verdict line.
fn allocate_and_free(bin: &Path, balloon: bool, free: u8) -> (Guest, [u64; 3], String) {
    measure(Guest::start(bin, balloon), balloon, free)
}

fn measure(mut g: Guest, balloon: bool, free: u8) -> (Guest, [u64; 3], String) {
    let first = g.line();
    if !balloon {
        assert_eq!(first, "NODEV");
        assert_eq!(g.line(), "READY");
    } else {
        assert_eq!(first, "READY");
    }
    let before = g.guest_rss_kib();
    g.command(b'a');
    assert_eq!(g.line(), "PEAK");
    let peak = g.guest_rss_kib();
    g.command(free);
    let verdict = g.line();
    // Reporting is served before the guest's notify returns; the poll only bounds a slow host.
    let after = g.rss_until(|r| r <= before + BOUND_KIB, Duration::from_secs(5));
    (g, [before, peak, after], verdict)
}

#[test]
fn free_page_reporting_gives_the_freed_memory_back() {
    let s = Scratch::new("balloon-report");
    let bin = build_guest(&s);
    let (mut g, [before, peak, after], verdict) = allocate_and_free(&bin, true, b'f');
    println!(
        "balloon reporting: guest RAM rss before {before} KiB, peak {peak} KiB, after {after} KiB"
    );
    assert!(
        peak >= before + ALLOC_KIB,
        "peak {peak} KiB, before {before} KiB"
    );
    assert!(
        after <= before + BOUND_KIB,
        "after {after} KiB: not within {BOUND_KIB} KiB of {before} KiB"
    );
    // The guest's view changed too (KVM follows the host mapping): the pages read as zeros.
    assert_eq!(verdict, "FREED zero");
    // The memory is the guest's again on its next touch.
    g.command(b'a');
    assert_eq!(g.line(), "PEAK");
    let again = g.guest_rss_kib();
    assert!(again >= before + ALLOC_KIB, "touched again: {again} KiB");
}

#[test]
fn inflating_gives_the_pages_back() {
    let s = Scratch::new("balloon-inflate");
    let bin = build_guest(&s);
    let (_g, [before, peak, after], verdict) = allocate_and_free(&bin, true, b'i');
    println!(
        "balloon inflate: guest RAM rss before {before} KiB, peak {peak} KiB, after {after} KiB"
    );
    assert!(peak >= before + ALLOC_KIB);
    assert!(
        after <= before + BOUND_KIB,
        "after {after} KiB, before {before} KiB"
    );
    assert_eq!(verdict, "FREED zero");
}

/// The control: the same guest without a balloon frees its 32 MiB and the host keeps them.
#[test]
fn without_a_balloon_the_memory_stays() {
    let s = Scratch::new("balloon-none");
    let bin = build_guest(&s);
    let (g, [before, peak, _], verdict) = allocate_and_free(&bin, false, b'f');
    assert_eq!(verdict, "FREED kept");
    // Give the host every chance to get it back; it must not.
    std::thread::sleep(Duration::from_secs(2));
    let after = g.guest_rss_kib();
    println!("no balloon: guest RAM rss before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(peak >= before + ALLOC_KIB);
    assert!(
        after >= peak - BOUND_KIB,
        "after {after} KiB, peak {peak} KiB"
    );
}

/// A jailed VMM (seccomp on every thread) serves the balloon too: the vCPU thread's filter
/// allows madvise with MADV_DONTNEED.
#[test]
fn a_jailed_vmm_gives_the_memory_back() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jail needs root");
        return;
    }
    let s = Scratch::new("balloon-jail");
    let bin = build_guest(&s);
    let id = 100_000 + 990_002;
    let cfg = serde_json::json!({
        "kernel": bin, "kernel_format": "raw-x86-64", "memory_mib": GUEST_MIB,
        "balloon": {}, "jail": {"uid": id, "gid": id},
    });
    let path = s.file("vm.json", cfg.to_string().as_bytes());
    let g = Guest::spawn(&["--config", path.to_str().unwrap()]);
    let (mut g, [before, peak, after], verdict) = measure(g, true, b'f');
    println!(
        "jailed, reporting: guest RAM rss before {before} KiB, peak {peak} KiB, after {after} KiB"
    );
    assert_eq!(verdict, "FREED zero");
    assert!(peak >= before + ALLOC_KIB);
    assert!(
        after <= before + BOUND_KIB,
        "after {after} KiB, before {before} KiB"
    );
    assert!(g.child.try_wait().unwrap().is_none(), "the jailed VMM died");
    g.command(b'i');
    assert_eq!(g.line(), "FREED zero");
    assert!(g.child.try_wait().unwrap().is_none(), "the jailed VMM died");
}
