//! The real binary on /dev/kvm with hand-assembled long-mode guests that drive the x86
//! platform devices the ACPI tables describe: the sleep control register (power-off, exit 0),
//! the reset register (reboot, exit 3), and the boot-ready signal's MMIO page. Each guest ends
//! in `jmp $` rather than `hlt` where a `hlt` would end the VM by itself (raw guests run
//! without an interrupt controller, so HLT exits with code 0), so only the device under test
//! can end it.
#![cfg(target_arch = "x86_64")]

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// `mov dx, port; mov al, value; out dx, al`
fn out8(port: u16, value: u8) -> Vec<u8> {
    let p = port.to_le_bytes();
    vec![0x66, 0xba, p[0], p[1], 0xb0, value, 0xee]
}

const SPIN: [u8; 2] = [0xeb, 0xfe]; // jmp $
const PM: u16 = 0x600;
const SLEEP_CONTROL: u16 = PM;
const SLEEP_STATUS: u16 = PM + 1;
const RESET: u16 = PM + 2;
const SLP_EN: u8 = 1 << 5;
const S5: u8 = 5 << 2;

fn guest(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn run_raw(tag: &str, code: &[u8]) -> std::process::Output {
    let s = Scratch::new(tag);
    let k = s.file("guest.bin", code);
    run(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--kernel-format=raw-x86-64",
            "--memory=16",
        ],
        T,
    )
}

#[test]
fn s5_through_the_sleep_control_register_is_power_off() {
    // Writes the guest's ACPI code makes that must not end the VM: wrong reset value, a wake
    // status clear, SLP_TYP 5 without SLP_EN. Then S5 with SLP_EN.
    let code = guest(&[
        out8(RESET, 0x0f),
        out8(SLEEP_STATUS, 0x80),
        out8(SLEEP_CONTROL, S5),
        out8(SLEEP_CONTROL, S5 | SLP_EN),
        SPIN.to_vec(),
    ]);
    let o = run_raw("acpi-off", &code);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("exit: guest power-off (code 0)"), "{e}");
}

#[test]
fn reset_register_is_a_guest_reboot() {
    // Sleep states the DSDT does not offer (S3 with SLP_EN) are ignored; then the reset value.
    let code = guest(&[
        out8(SLEEP_CONTROL, (3 << 2) | SLP_EN),
        out8(RESET, 0x0e),
        SPIN.to_vec(),
    ]);
    let o = run_raw("acpi-reset", &code);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("exit: guest reset (code 3)"), "{e}");
}

/// `mov eax, addr; mov byte [rax], 1`, then "R\n" on the UART and `hlt`.
fn mmio_signal_guest(addr: u32) -> Vec<u8> {
    let a = addr.to_le_bytes();
    guest(&[
        vec![0xb8, a[0], a[1], a[2], a[3], 0xc6, 0x00, 0x01],
        out8(0x3f8, b'R'),
        out8(0x3f8, b'\n'),
        vec![0xf4],
    ])
}

#[test]
fn boot_ready_through_the_mmio_page() {
    let o = run_raw("acpi-mmio-ready", &mmio_signal_guest(0xcfff_f000));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert_eq!(stdout(&o), "R\n");
    let line = e
        .lines()
        .find(|l| l.starts_with("boot-ready: "))
        .unwrap_or_else(|| panic!("no boot-ready line in {e}"));
    assert!(line.ends_with(" ms since VMM start"), "{line}");
}

#[test]
fn a_write_next_to_the_mmio_page_is_no_signal() {
    let o = run_raw("acpi-mmio-miss", &mmio_signal_guest(0xcfff_e000));
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert_eq!(stdout(&o), "R\n");
    assert!(!e.contains("boot-ready"), "{e}");
}
