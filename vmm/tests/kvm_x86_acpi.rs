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

/// A bzImage shell around hand-written 64-bit code, booted through the real boot protocol
/// (zero page, ACPI tables, in-kernel irqchip): boot protocol 2.15, loaded high, 64-bit entry
/// 0x200 into the protected-mode part (file offset 0xc00 with 4 setup sectors).
fn fake_bzimage(code: &[u8]) -> Vec<u8> {
    let mut bz = vec![0u8; 0x2000];
    bz[0x1f1] = 4; // setup sectors
    bz[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    bz[0x211] = 1; // loadflags: LOADED_HIGH
    bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    bz[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    bz[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
    bz[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    bz[0xc00..0xc00 + code.len()].copy_from_slice(code);
    bz
}

/// The guest follows the zero page (RSI) to `acpi_rsdp_addr` (+0x70), prints the 8 bytes found
/// there on the UART, then powers off through the sleep control register. With the in-kernel
/// irqchip HLT would not end the VM: only the ACPI register can.
#[test]
fn booted_guest_finds_the_rsdp_through_the_zero_page_and_powers_off() {
    let code = guest(&[
        vec![0x48, 0x8b, 0x5e, 0x70], // mov rbx, [rsi + 0x70]
        vec![0xb9, 8, 0, 0, 0],       // mov ecx, 8
        vec![0x66, 0xba, 0xf8, 0x03], // mov dx, 0x3f8
        vec![0x8a, 0x03],             // loop: mov al, [rbx]
        vec![0xee],                   //   out dx, al
        vec![0x48, 0xff, 0xc3],       //   inc rbx
        vec![0xff, 0xc9],             //   dec ecx
        vec![0x75, 0xf6],             //   jnz loop
        vec![0xb0, b'\n', 0xee],      // newline
        out8(SLEEP_CONTROL, S5 | SLP_EN),
        SPIN.to_vec(),
    ]);
    let s = Scratch::new("acpi-rsdp");
    let k = s.file("bzImage", &fake_bzimage(&code));
    let o = run(
        &["--kernel", k.to_str().unwrap(), "--memory=32", "--vcpus=2"],
        T,
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert_eq!(stdout(&o), "RSD PTR \n", "{e}");
    assert!(e.contains("exit: guest power-off (code 0)"), "{e}");
}

/// The boot protocol's random seed reaches the guest: it follows the zero page's
/// `hdr.setup_data` (+0x250) to the first entry and prints its type + '0' and its length as
/// bytes: SETUP_RNG_SEED (9) with 64 bytes of seed reads "9@".
#[test]
fn booted_guest_finds_an_rng_seed_through_setup_data() {
    let code = guest(&[
        vec![0x48, 0x8b, 0x9e, 0x50, 0x02, 0x00, 0x00], // mov rbx, [rsi + 0x250]
        vec![0x66, 0xba, 0xf8, 0x03],                   // mov dx, 0x3f8
        vec![0x8b, 0x43, 0x08],                         // mov eax, [rbx + 8]  (type)
        vec![0x04, b'0', 0xee],                         // add al, '0'; out dx, al
        vec![0x8b, 0x43, 0x0c, 0xee],                   // mov eax, [rbx + 12] (len); out
        vec![0xb0, b'\n', 0xee],                        // newline
        out8(SLEEP_CONTROL, S5 | SLP_EN),
        SPIN.to_vec(),
    ]);
    let s = Scratch::new("setup-data");
    let k = s.file("bzImage", &fake_bzimage(&code));
    let o = run(&["--kernel", k.to_str().unwrap(), "--memory=32"], T);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert_eq!(stdout(&o), "9@\n", "{e}");
}
