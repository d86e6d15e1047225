//! A hand-written x86_64 guest for tests on this host's KVM, which runs no Linux guests.

/// A bzImage shell (boot protocol 2.15, 64-bit entry at file offset 0xc00) around long-mode
/// code that prints "guest up" on COM1 and spins: it has no ACPI and ignores the power button.
/// It needs 2 MiB of guest RAM.
pub fn tiny_bzimage() -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for &b in b"guest up\n" {
        code.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
    let mut bz = vec![0u8; 0x2000];
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
