//! A real `cpevisor-vmm` for agent tests on this host's /dev/kvm, which runs hand-written guests
//! only: the VMM built with the `test-hooks` feature (once, a debug build in its own target dir)
//! and a tiny bzImage-shaped guest.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// cpevisor-vmm with the test hooks (a control command that makes a VMM thread perform a
/// forbidden syscall), built in its own target dir so it never replaces the normal binary.
pub fn vmm_with_test_hooks() -> PathBuf {
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
/// code that prints `console` on COM1, then (if `ready`) writes the VMM's boot-ready port
/// 0x3f0, and spins; it needs 2 MiB of guest RAM.
pub fn tiny_bzimage(console: &str, ready: bool) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for &b in console.as_bytes() {
        code.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    if ready {
        code.extend_from_slice(&[0x66, 0xba, 0xf0, 0x03]); // mov dx, 0x3f0
        code.extend_from_slice(&[0xb0, 0x01, 0xee]); // mov al, 1; out dx, al
    }
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    let mut bz = vec![0u8; 0x2000];
    assert!(0xc00 + code.len() <= bz.len(), "guest code too long");
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

/// A shim in front of `vmm` that records its pid in `pid_file`, swaps the agent's kernel (a
/// placeholder in the package) for `guest` in a copy of the VM description at `seen`, and execs
/// the VMM on it; everything else the agent wrote (jail, ready_fd, control socket) is used as
/// is. `$1` is `--config`, `$2` the agent's description.
pub fn vmm_shim(vmm: &Path, guest: &Path, seen: &Path, pid_file: &Path) -> String {
    format!(
        "#!/bin/sh\necho $$ > {pid}\nsed 's|\"kernel\": \"[^\"]*\"|\"kernel\": \"{guest}\"|' \"$2\" > {seen}\nexec {vmm} --config {seen}\n",
        pid = pid_file.display(),
        guest = guest.display(),
        seen = seen.display(),
        vmm = vmm.display(),
    )
}
