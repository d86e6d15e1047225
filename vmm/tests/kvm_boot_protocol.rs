//! The non-raw x86_64 path on /dev/kvm with a hand-made ELF "kernel": linux-loader's ELF loader,
//! the zero page (e820 map, command line pointer), MP table, in-kernel irqchip, LAPIC, CPUID and
//! MSR setup, irqfd-backed serial, and the i8042 reset as the way out (HLT does not exit once the
//! in-kernel irqchip exists).
#![cfg(target_arch = "x86_64")]

mod common;

use std::time::Duration;

use common::*;

const ENTRY: u64 = 0x10_0000;

/// Prints the e820 entry count as a digit, then the command line the zero page points to, then
/// resets through the i8042.
const CODE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
    0x8a, 0x86, 0xe8, 0x01, 0x00, 0x00, // mov al, [rsi + 0x1e8]   (e820_entries)
    0x04, b'0', 0xee, // add al, '0'; out dx, al
    0x8b, 0x9e, 0x28, 0x02, 0x00, 0x00, // mov ebx, [rsi + 0x228] (hdr.cmd_line_ptr)
    0x8a, 0x03, // L: mov al, [rbx]
    0x84, 0xc0, // test al, al
    0x74, 0x06, // jz done
    0xee, // out dx, al
    0x48, 0xff, 0xc3, // inc rbx
    0xeb, 0xf4, // jmp L
    0xb0, b'\n', 0xee, // done: mov al, '\n'; out dx, al
    0xb0, 0xfe, 0xe6, 0x64, // mov al, 0xfe; out 0x64, al
    0xeb, 0xfe, // jmp $
];

/// A minimal ELF64 x86_64 executable: one PT_LOAD of `code` at physical `ENTRY`.
fn elf(code: &[u8]) -> Vec<u8> {
    let mut f = elf_x86_64_head(ENTRY, 5, code.len() as u64); // R+X
    f.extend_from_slice(code);
    f
}

#[test]
fn elf_kernel_sees_boot_params_and_resets() {
    let s = Scratch::new("elfboot");
    let k = s.file("vmlinux", &elf(CODE));
    let o = run(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "32",
            "--vcpus",
            "2",
            "--cmdline",
            "console=ttyS0 panic=-1",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    // e820: RAM below the EBDA, the reserved EBDA/BIOS hole, RAM from 1 MiB.
    assert_eq!(stdout(&o), "3console=ttyS0 panic=-1\n");
}
