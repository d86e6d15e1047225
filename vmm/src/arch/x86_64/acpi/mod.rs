//! ACPI tables for x86_64 guests: RSDP -> XSDT -> {FADT -> DSDT, MADT}, hardware-reduced.
//!
//! Stock distribution kernels (Debian amd64: `VIRTIO_MMIO=m`, no command-line devices) find
//! virtio-mmio devices only through the DSDT; the FADT's sleep control and reset registers
//! (`devices::acpi_pm`) are how any ACPI guest powers off (VMM exit 0) or reboots (exit 3).
//! Kernels without ACPI keep using the MP table and `virtio_mmio.device=` on the command line.
//!
//! The tables live in the BIOS area 0xe0000-0xfffff, which the e820 map reserves and where
//! Linux scans for the RSDP; the zero page's `acpi_rsdp_addr` points at it as well.
//!
//! Our own encoder instead of the `acpi_tables` crate: five small tables and a DSDT of a few
//! dozen terms are a few hundred lines we test byte for byte, with no dependency to carry.

pub mod aml;
pub mod dsdt;
pub mod tables;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::types::{ArchError, DeviceMap};
use crate::devices::acpi_pm;
use tables::{ApicLayout, PowerRegisters};

/// First and one-past-last byte of the area the tables go in.
pub const ACPI_START: u64 = 0xe_0000;
/// One past the last byte of that area (the BIOS area ends at 1 MiB).
pub const ACPI_END: u64 = 0x10_0000;
const ALIGN: u64 = 16;

/// The tables and where each goes in guest memory.
pub struct AcpiTables {
    /// Guest address of the RSDP (the zero page's `acpi_rsdp_addr`).
    pub rsdp_addr: u64,
    /// (guest address, bytes), in address order, non-overlapping.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

fn align_up(v: u64) -> u64 {
    (v + ALIGN - 1) & !(ALIGN - 1)
}

/// Builds the tables for `cpus` vCPUs and the platform devices, placed from [`ACPI_START`].
/// `pm_port`: base port of the `devices::acpi_pm` register block.
pub fn build(
    cpus: u8,
    devices: &DeviceMap,
    pm_port: u16,
    apic: (u32, u32),
) -> Result<AcpiTables, ArchError> {
    if cpus == 0 {
        return Err(ArchError("ACPI tables need at least one CPU".into()));
    }
    let dsdt_body = dsdt::aml_body(
        &devices.serial,
        &devices.power_button,
        &devices.virtio,
        acpi_pm::S5_SLEEP_TYPE,
    )
    .map_err(|e| ArchError::new("DSDT", e))?;
    let dsdt = tables::sdt(b"DSDT", dsdt::DSDT_REVISION, &dsdt_body);
    let madt = tables::madt(ApicLayout {
        cpus,
        lapic_addr: apic.0,
        // The MP table numbers the I/O APIC after the CPUs; so do we.
        ioapic_id: cpus,
        ioapic_addr: apic.1,
    });
    let port = |off: u64| pm_port + off as u16;
    let regs = PowerRegisters {
        sleep_control_port: port(acpi_pm::SLEEP_CONTROL),
        sleep_status_port: port(acpi_pm::SLEEP_STATUS),
        reset_port: port(acpi_pm::RESET),
        reset_value: acpi_pm::RESET_VALUE,
    };
    const XSDT_ENTRIES: usize = 2;

    let rsdp_addr = ACPI_START;
    let xsdt_addr = align_up(rsdp_addr + tables::RSDP_LEN as u64);
    let fadt_addr = align_up(xsdt_addr + (tables::HEADER_LEN + 8 * XSDT_ENTRIES) as u64);
    let madt_addr = align_up(fadt_addr + tables::FADT_LEN as u64);
    let dsdt_addr = align_up(madt_addr + madt.len() as u64);
    let end = dsdt_addr + dsdt.len() as u64;
    if end > ACPI_END {
        return Err(ArchError(format!(
            "ACPI tables take {} bytes, more than the {} bytes at {ACPI_START:#x}",
            end - ACPI_START,
            ACPI_END - ACPI_START
        )));
    }
    let fadt = tables::fadt(dsdt_addr, regs);
    let xsdt = tables::xsdt(&[fadt_addr, madt_addr]);
    Ok(AcpiTables {
        rsdp_addr,
        blobs: vec![
            (rsdp_addr, tables::rsdp(xsdt_addr)),
            (xsdt_addr, xsdt),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (dsdt_addr, dsdt),
        ],
    })
}

/// Writes the tables into guest memory; returns the RSDP's address.
pub fn write(
    mem: &GuestMemoryMmap,
    cpus: u8,
    devices: &DeviceMap,
    pm_port: u16,
    apic: (u32, u32),
) -> Result<u64, ArchError> {
    let t = build(cpus, devices, pm_port, apic)?;
    for (addr, bytes) in &t.blobs {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(|e| ArchError::new("write ACPI tables", e))?;
    }
    Ok(t.rsdp_addr)
}

#[cfg(test)]
mod tests;
