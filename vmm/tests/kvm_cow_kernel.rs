//! The kernel mapped copy-on-write from its file (vstate/memory.rs `map_file_private`), on
//! /dev/kvm with the x86_64 ELF path: a guest that writes into its own kernel image sees its
//! write and the file does not change; two guests booting the same real vmlinux share its
//! pages in the host page cache (measured from /proc/PID/smaps, numbers printed).
#![cfg(target_arch = "x86_64")]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const ENTRY: u64 = 0x10_0000;

/// Prints the byte at ENTRY + 0x800 (an `R` in the file), writes a `W` there, prints it again,
/// then halts (HLT parks the vCPU in KVM: the VMM stays up for the test to look at it).
const CODE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0x8a, 0x04, 0x25, 0x00, 0x08, 0x10, 0x00, // mov al, [0x100800]
    0xee, // out dx, al
    0xc6, 0x04, 0x25, 0x00, 0x08, 0x10, 0x00, b'W', // mov byte [0x100800], 'W'
    0x8a, 0x04, 0x25, 0x00, 0x08, 0x10, 0x00, // mov al, [0x100800]
    0xee, // out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
    0xf4, 0xeb, 0xfd, // hlt; jmp hlt
];

/// ELF64 x86_64 with one PT_LOAD: file offset 0x1000 at physical ENTRY (page-congruent), one
/// page: `code`, then an `R` at +0x800.
fn elf(code: &[u8]) -> Vec<u8> {
    let mut f = elf_x86_64_head(ENTRY, 7, 0x1000); // RWX
    f.extend_from_slice(code);
    f.resize(0x1800, 0);
    f.push(b'R');
    f.resize(0x2000, 0);
    f
}

/// The child's stdout, collected by a thread.
fn collect_stdout(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut pipe = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

fn wait_for_output(child: &mut Child, out: &Mutex<Vec<u8>>, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if String::from_utf8_lossy(&out.lock().unwrap()).contains(want) {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "VMM exited ({st}) before printing {want:?}; stdout:\n{}",
                String::from_utf8_lossy(&out.lock().unwrap())
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {want:?} within {timeout:?}; stdout:\n{}",
            String::from_utf8_lossy(&out.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Totals in kB of the smaps entries of `pid` that map `file`.
fn file_mapping_kib(pid: u32, file: &Path, field: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let name = file.to_str().unwrap();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.ends_with(name);
            continue;
        }
        if inside && first == format!("{field}:") {
            total += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    total
}

fn rollup_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_guest_writing_its_mapped_kernel_changes_only_its_own_copy() {
    let s = Scratch::new("cowkernel");
    let bytes = elf(CODE);
    let k = s.file("vmlinux", &bytes);
    let mut child = spawn(&["--kernel", k.to_str().unwrap(), "--memory", "32"]);
    let out = collect_stdout(&mut child);
    wait_for_output(&mut child, &out, "\n", Duration::from_secs(20));
    let pid = child.id();
    // The segment is mapped from the file, and the page the guest wrote is now a private copy.
    assert_eq!(
        file_mapping_kib(pid, &k, "Size"),
        4,
        "kernel page not mapped"
    );
    assert_eq!(
        file_mapping_kib(pid, &k, "Anonymous"),
        4,
        "written page not copied"
    );
    stop(child);
    assert_eq!(String::from_utf8_lossy(&out.lock().unwrap()), "RW\n");
    assert_eq!(std::fs::read(&k).unwrap(), bytes, "the file changed");
}

/// Image size of the kernel-like guest: about the minimal arm64 Image (3,988 KiB).
const IMAGE: u64 = 4 << 20;
/// The part of it the guest writes (data, BSS-like, init freed and reused): the last 768 KiB,
/// so that ~3.3 MiB are only read, like the minimal kernel's text and rodata.
const WRITTEN_FROM: u64 = ENTRY + IMAGE - (768 << 10);

/// Reads one byte of every page of its 4 MiB image, writes one byte of every page of the last
/// 768 KiB, prints `K`, halts.
fn kernel_like_code() -> Vec<u8> {
    let end = (ENTRY + IMAGE) as u32;
    let mut c = vec![0x48, 0xc7, 0xc3]; // mov rbx, ENTRY
    c.extend_from_slice(&(ENTRY as u32).to_le_bytes());
    c.extend_from_slice(&[0x48, 0xc7, 0xc1]); // mov rcx, end
    c.extend_from_slice(&end.to_le_bytes());
    c.extend_from_slice(&[0x31, 0xc0]); // xor eax, eax
    c.extend_from_slice(&[
        0x02, 0x03, // L: add al, [rbx]
        0x48, 0x81, 0xc3, 0x00, 0x10, 0x00, 0x00, // add rbx, 0x1000
        0x48, 0x39, 0xcb, // cmp rbx, rcx
        0x72, 0xf2, // jb L
        0x48, 0xc7, 0xc3, // mov rbx, WRITTEN_FROM
    ]);
    c.extend_from_slice(&(WRITTEN_FROM as u32).to_le_bytes());
    c.extend_from_slice(&[
        0x88, 0x03, // W: mov [rbx], al
        0x48, 0x81, 0xc3, 0x00, 0x10, 0x00, 0x00, // add rbx, 0x1000
        0x48, 0x39, 0xcb, // cmp rbx, rcx
        0x72, 0xf2, // jb W
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'K', 0xee, // mov al, 'K'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xf4, 0xeb, 0xfd, // hlt; jmp hlt
    ]);
    c
}

/// The kernel-like guest as an ELF whose one segment starts at file offset `offset`: 0x1000 is
/// page-congruent with ENTRY (mapped), 0x1800 is not (copied, as every kernel was before).
fn kernel_like_elf(offset: u64) -> Vec<u8> {
    let mut f = elf(&[]);
    f.truncate(64 + 56);
    let ph = 64;
    f[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
    f[ph + 32..ph + 40].copy_from_slice(&IMAGE.to_le_bytes());
    f[ph + 40..ph + 48].copy_from_slice(&IMAGE.to_le_bytes());
    f.resize(offset as usize, 0);
    f.extend_from_slice(&kernel_like_code());
    // Non-zero contents, as a kernel's text is.
    let n = f.len();
    f.extend((n..(offset + IMAGE) as usize).map(|i| (i % 249) as u8 | 1));
    f
}

/// (whole VMM Pss, whole VMM Anonymous, kernel file mappings Rss, Pss, Anonymous) in KiB, of
/// two VMMs booting the same kernel-like guest at once.
fn two_guests(s: &Scratch, name: &str, offset: u64) -> Vec<[u64; 5]> {
    let k = s.file(name, &kernel_like_elf(offset));
    let boot = || {
        let mut child = spawn(&["--kernel", k.to_str().unwrap(), "--memory", "32"]);
        let out = collect_stdout(&mut child);
        wait_for_output(&mut child, &out, "K\n", Duration::from_secs(30));
        child
    };
    let (a, b) = (boot(), boot());
    let figures = [&a, &b]
        .iter()
        .map(|c| {
            let pid = c.id();
            let f = |field| file_mapping_kib(pid, &k, field);
            [
                rollup_kib(pid, "Pss"),
                rollup_kib(pid, "Anonymous"),
                f("Rss"),
                f("Pss"),
                f("Anonymous"),
            ]
        })
        .collect();
    stop(a);
    stop(b);
    figures
}

/// Two VMMs booting the same 4 MiB kernel-like guest share the pages the guest only reads:
/// measured against the same guest copied (a segment not page-congruent), figures printed
/// (docs/density.md).
#[test]
fn two_guests_of_one_kernel_share_the_pages_they_only_read() {
    let s = Scratch::new("cowshare");
    let mapped = two_guests(&s, "mapped", 0x1000);
    let copied = two_guests(&s, "copied", 0x1800);
    for (how, rows) in [("mapped", &mapped), ("copied", &copied)] {
        for r in rows.iter() {
            println!(
                "cow-kernel {how}: VMM pss {} KiB, anonymous {} KiB; kernel file mapping rss {} \
                 KiB, pss {} KiB, copied pages {} KiB",
                r[0], r[1], r[2], r[3], r[4]
            );
        }
    }
    let image_kib = IMAGE >> 10;
    let written_kib = 768;
    for r in &mapped {
        assert_eq!(r[2], image_kib, "every page of the image read: {r:?}");
        assert_eq!(r[4], written_kib, "just the written pages copied: {r:?}");
        // The read-only part counted half in each of the two VMMs.
        assert_eq!(r[3], written_kib + (image_kib - written_kib) / 2, "{r:?}");
    }
    for r in &copied {
        assert_eq!(r[2], 0, "a copied kernel maps no file: {r:?}");
    }
    // Each VMM's private memory is smaller by the shared part (give or take its other pages).
    let saved = copied[1][1] as i64 - mapped[1][1] as i64;
    let expected = (image_kib - written_kib) as i64;
    assert!(
        (saved - expected).abs() < 256,
        "anonymous memory saved {saved} KiB, expected about {expected}"
    );
}
