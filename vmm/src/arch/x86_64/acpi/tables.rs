//! The fixed-layout ACPI tables (ACPI 6.5 chapter 5.2): RSDP, XSDT, FADT and MADT, each built
//! as bytes with its length and checksum filled in.

/// OEM fields of every table we make.
pub const OEM_ID: &[u8; 6] = b"CPEVSR";
/// OEM table id in every table header.
pub const OEM_TABLE_ID: &[u8; 8] = b"MICROVM ";
/// OEM revision in every table header.
pub const OEM_REVISION: u32 = 1;
/// Creator id (the table writer) in every table header.
pub const CREATOR_ID: &[u8; 4] = b"CPEV";
/// Creator revision in every table header.
pub const CREATOR_REVISION: u32 = 1;

/// Length of the common System Description Table header.
pub const HEADER_LEN: usize = 36;
/// ACPI 2.0+ RSDP length.
pub const RSDP_LEN: usize = 36;
/// FADT of revision 6 (ACPI 6.x): header + fields up to the hypervisor vendor identity.
pub const FADT_LEN: usize = 276;

/// The byte that makes `bytes` sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// A table: the common header (length, checksum) followed by `body`.
pub fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(signature);
    t.extend_from_slice(&(len as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&OEM_REVISION.to_le_bytes());
    t.extend_from_slice(CREATOR_ID);
    t.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// Root System Description Pointer, revision 2, pointing at the XSDT only.
pub fn rsdp(xsdt_addr: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(RSDP_LEN);
    r.extend_from_slice(b"RSD PTR ");
    r.push(0); // checksum of the first 20 bytes, below
    r.extend_from_slice(OEM_ID);
    r.push(2); // revision: ACPI 2.0+
    r.extend_from_slice(&0u32.to_le_bytes()); // RSDT address: none, the XSDT serves
    r.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    r.extend_from_slice(&xsdt_addr.to_le_bytes());
    r.push(0); // extended checksum, below
    r.extend_from_slice(&[0; 3]);
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

/// Extended System Description Table: 64-bit pointers to the other tables (the DSDT is
/// reached through the FADT).
pub fn xsdt(entries: &[u64]) -> Vec<u8> {
    let body: Vec<u8> = entries.iter().flat_map(|a| a.to_le_bytes()).collect();
    sdt(b"XSDT", 1, &body)
}

/// A Generic Address Structure (5.2.3.2): one byte-wide register in I/O port space.
pub fn gas_io_byte(port: u16) -> [u8; 12] {
    const SYSTEM_IO: u8 = 1;
    const ACCESS_BYTE: u8 = 1;
    let mut g = [0u8; 12];
    g[0] = SYSTEM_IO;
    g[1] = 8; // register bit width
    g[2] = 0; // bit offset
    g[3] = ACCESS_BYTE;
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

/// The registers the FADT points a hardware-reduced guest at.
#[derive(Clone, Copy, Debug)]
pub struct PowerRegisters {
    /// I/O port of the sleep control register (power-off).
    pub sleep_control_port: u16,
    /// I/O port of the sleep status register.
    pub sleep_status_port: u16,
    /// I/O port of the reset register.
    pub reset_port: u16,
    /// Value the guest writes there to reset.
    pub reset_value: u8,
}

/// FADT field offsets (ACPI 6.5, table 5.9) and flag bits.
pub mod fadt {
    /// Offset of the 32-bit DSDT address.
    pub const DSDT: usize = 40;
    /// Offset of the IA-PC boot architecture flags.
    pub const IAPC_BOOT_ARCH: usize = 109;
    /// Offset of the fixed feature flags.
    pub const FLAGS: usize = 112;
    /// Offset of the reset register's address (GAS).
    pub const RESET_REG: usize = 116;
    /// Offset of the reset value.
    pub const RESET_VALUE: usize = 128;
    /// Offset of the minor version.
    pub const MINOR_VERSION: usize = 131;
    /// Offset of the 64-bit DSDT address.
    pub const X_DSDT: usize = 140;
    /// Offset of the sleep control register's address (GAS).
    pub const SLEEP_CONTROL_REG: usize = 244;
    /// Offset of the sleep status register's address (GAS).
    pub const SLEEP_STATUS_REG: usize = 256;
    /// Offset of the hypervisor vendor identity.
    pub const HYPERVISOR_VENDOR: usize = 268;

    /// Flags: the reset register is supported.
    pub const RESET_REG_SUP: u32 = 1 << 10;
    /// Flags: the power and sleep buttons are control-method devices (the DSDT's PNP0C0C), not
    /// fixed-feature buttons a hardware-reduced platform cannot have; without them Linux adds
    /// a fixed "Power Button" input device that never fires.
    pub const PWR_BUTTON: u32 = 1 << 4;
    /// Flags: the sleep button likewise.
    pub const SLP_BUTTON: u32 = 1 << 5;
    /// Flags: hardware-reduced ACPI (no PM1/GPE blocks, no SCI, no legacy PIC or PIT).
    pub const HW_REDUCED_ACPI: u32 = 1 << 20;
    /// IA-PC boot architecture flags: no VGA, no MSI, no CMOS RTC. No 8042 bit: Linux then
    /// skips its PS/2 probe; the VMM's i8042 serves only the reset command.
    pub const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
    /// IA-PC boot architecture flag: no MSI.
    pub const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
    /// IA-PC boot architecture flag: no CMOS RTC.
    pub const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
}

/// Fixed ACPI Description Table, revision 6.5, hardware-reduced: power-off through the sleep
/// control register (the guest writes SLP_TYP of `\_S5` with SLP_EN), reboot through the reset
/// register.
pub fn fadt(dsdt_addr: u64, regs: PowerRegisters) -> Vec<u8> {
    let mut body = vec![0u8; FADT_LEN - HEADER_LEN];
    let mut put = |off: usize, bytes: &[u8]| {
        body[off - HEADER_LEN..off - HEADER_LEN + bytes.len()].copy_from_slice(bytes);
    };
    // The 32-bit DSDT field stays too: older parsers read it when it is non-zero.
    if let Ok(low) = u32::try_from(dsdt_addr) {
        put(fadt::DSDT, &low.to_le_bytes());
    }
    let boot_arch =
        fadt::IAPC_VGA_NOT_PRESENT | fadt::IAPC_MSI_NOT_SUPPORTED | fadt::IAPC_CMOS_RTC_NOT_PRESENT;
    put(fadt::IAPC_BOOT_ARCH, &boot_arch.to_le_bytes());
    put(
        fadt::FLAGS,
        &(fadt::HW_REDUCED_ACPI | fadt::RESET_REG_SUP | fadt::PWR_BUTTON | fadt::SLP_BUTTON)
            .to_le_bytes(),
    );
    put(fadt::RESET_REG, &gas_io_byte(regs.reset_port));
    put(fadt::RESET_VALUE, &[regs.reset_value]);
    put(fadt::MINOR_VERSION, &[5]);
    put(fadt::X_DSDT, &dsdt_addr.to_le_bytes());
    put(
        fadt::SLEEP_CONTROL_REG,
        &gas_io_byte(regs.sleep_control_port),
    );
    put(fadt::SLEEP_STATUS_REG, &gas_io_byte(regs.sleep_status_port));
    put(fadt::HYPERVISOR_VENDOR, b"CPEVISOR");
    sdt(b"FACP", 6, &body)
}

/// What the MADT describes.
#[derive(Clone, Copy, Debug)]
pub struct ApicLayout {
    /// vCPUs, one Local APIC entry each.
    pub cpus: u8,
    /// Local APIC base address.
    pub lapic_addr: u32,
    /// The IOAPIC's id.
    pub ioapic_id: u8,
    /// IOAPIC base address.
    pub ioapic_addr: u32,
}

/// MADT entry types.
pub mod madt {
    /// Processor Local APIC entry.
    pub const LOCAL_APIC: u8 = 0;
    /// I/O APIC entry.
    pub const IO_APIC: u8 = 1;
    /// Local APIC NMI entry.
    pub const LOCAL_APIC_NMI: u8 = 4;
    /// Local APIC flag: the processor is enabled.
    pub const LAPIC_ENABLED: u32 = 1;
}

/// Multiple APIC Description Table: one enabled local APIC per vCPU (APIC id = ACPI
/// processor UID = vCPU index), the I/O APIC with GSI base 0, and LINT1 as NMI on every CPU.
/// No PC-AT compatibility flag: a hardware-reduced guest does not use the 8259s.
pub fn madt(layout: ApicLayout) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + layout.cpus as usize * 8 + 12 + 6);
    body.extend_from_slice(&layout.lapic_addr.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // flags
    for id in 0..layout.cpus {
        body.extend_from_slice(&[madt::LOCAL_APIC, 8, id, id]);
        body.extend_from_slice(&madt::LAPIC_ENABLED.to_le_bytes());
    }
    body.extend_from_slice(&[madt::IO_APIC, 12, layout.ioapic_id, 0]);
    body.extend_from_slice(&layout.ioapic_addr.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
                                                 // Processor UID 0xff = all processors; flags 0 = bus defaults; LINT1.
    body.extend_from_slice(&[madt::LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    sdt(b"APIC", 6, &body)
}
