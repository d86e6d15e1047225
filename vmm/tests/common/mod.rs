//! Helpers for tests that drive the real `cpevisor-vmm` binary.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cpevisor-vmm");

/// A fresh scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("cpv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    /// Also kills every process whose command line names a file in the directory: a test that
    /// fails between starting a VMM and waiting for it must not leave its guest spinning (seen:
    /// jailed VMMs left behind by failed runs, each burning a core until the machine was idle
    /// no more).
    fn drop(&mut self) {
        let dir = format!("{}/", self.0.display());
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for entry in procs.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&dir) {
                    // SAFETY: kill(2) on a pid; no memory is involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary to completion (killed after `timeout`), stdin closed.
pub fn run(args: &[&str], timeout: Duration) -> Output {
    let child = spawn(args);
    wait(child, timeout)
}

pub fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cpevisor-vmm")
}

pub fn wait(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "cpevisor-vmm did not exit within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until `path` exists (the VMM bound its control socket).
pub fn wait_for_path(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends one request line and reads one reply line.
pub fn control(path: &Path, request: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(path).expect("connect to control socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
}

pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn read_all(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        f.read_to_end(&mut v).unwrap();
    }
    v
}

/// x86 guests, hand-assembled. Long-mode code runs at 0x100000 with the first 4 GiB
/// identity-mapped; real-mode code at 0x1000 with CS = 0.
pub mod guest {
    /// Real mode: print "Hi\n" on COM1, then HLT.
    pub const REAL_MODE_HELLO: &[u8] = &[
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'H', 0xee, // mov al, 'H'; out dx, al
        0xb0, b'i', 0xee, // mov al, 'i'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xf4, // hlt
    ];

    /// Long mode: print "OK\n", then HLT.
    pub const LONG_MODE_HELLO: &[u8] = &[
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'O', 0xee, // mov al, 'O'; out dx, al
        0xb0, b'K', 0xee, // mov al, 'K'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xf4, // hlt
    ];

    /// Long mode: print '.' forever, with a delay loop between characters.
    pub const SPINNER: &[u8] = &[
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'.', // mov al, '.'
        0xee, // L: out dx, al
        0xb9, 0x00, 0x00, 0x10, 0x00, // mov ecx, 0x100000
        0xe2, 0xfe, // D: loop D
        0xeb, 0xf6, // jmp L
    ];

    /// Long mode: pulse the reset line through the i8042 (command 0xFE to port 0x64), then spin.
    pub const I8042_RESET: &[u8] = &[
        0xb0, 0xfe, // mov al, 0xfe
        0xe6, 0x64, // out 0x64, al
        0xeb, 0xfe, // jmp $
    ];

    /// Long mode: int3 with an empty IDT -> #GP -> double fault -> triple fault (shutdown).
    pub const TRIPLE_FAULT: &[u8] = &[0xcc];

    /// Long mode: write the boot-ready port (0x3f0), then spin.
    pub const BOOT_READY_SPIN: &[u8] = &[
        0x66, 0xba, 0xf0, 0x03, // mov dx, 0x3f0
        0xb0, 0x01, 0xee, // mov al, 1; out dx, al
        0xeb, 0xfe, // jmp $
    ];

    /// Long mode: write the boot-ready port (0x3f0), print "R\n", HLT.
    pub const BOOT_READY: &[u8] = &[
        0x66, 0xba, 0xf0, 0x03, // mov dx, 0x3f0
        0xb0, 0x01, 0xee, // mov al, 1; out dx, al
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'R', 0xee, // mov al, 'R'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xf4, // hlt
    ];
}

/// Long mode: read the virtio-mmio MagicValue of the first device (0xd0000000) and the DeviceID
/// of the first two devices (+0x008, +0x1008), print "virt" + both ids as digits + "\n", HLT.
pub const VIRTIO_PROBE: &[u8] = &[
    0xbb, 0x00, 0x00, 0x00, 0xd0, // mov ebx, 0xd0000000
    0x8b, 0x03, // mov eax, [rbx]
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0xee, // out dx, al
    0xc1, 0xe8, 0x08, 0xee, // shr eax, 8; out dx, al
    0xc1, 0xe8, 0x08, 0xee, // shr eax, 8; out dx, al
    0xc1, 0xe8, 0x08, 0xee, // shr eax, 8; out dx, al
    0x8b, 0x43, 0x08, // mov eax, [rbx + 8]
    0x04, b'0', 0xee, // add al, '0'; out dx, al
    0x8b, 0x83, 0x08, 0x10, 0x00, 0x00, // mov eax, [rbx + 0x1008]
    0x04, b'0', 0xee, // add al, '0'; out dx, al
    0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
    0xf4, // hlt
];

/// The first page of an ELF64 x86_64 executable with one PT_LOAD: `size` bytes from file offset
/// 0x1000 at physical (and virtual) `entry`, with program-header `flags` (4 R, 2 W, 1 X). The
/// caller appends the segment's bytes.
pub fn elf_x86_64_head(entry: u64, flags: u32, size: u64) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01");
    f.resize(16, 0);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&flags.to_le_bytes());
    for v in [0x1000u64, entry, entry, size, size, 0x1000] {
        f.extend_from_slice(&v.to_le_bytes()); // offset, vaddr, paddr, filesz, memsz, align
    }
    f.resize(0x1000, 0);
    f
}
