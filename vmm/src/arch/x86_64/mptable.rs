//! Intel MultiProcessor Specification 1.4 tables: how a Linux guest without ACPI finds its CPUs,
//! the I/O APIC and the ISA interrupt routing.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::types::ArchError;

/// Default Local APIC base address.
pub const APIC_DEFAULT_BASE: u32 = 0xfee0_0000;
/// Default IOAPIC base address.
pub const IOAPIC_DEFAULT_BASE: u32 = 0xfec0_0000;
/// I/O APIC input pins; GSIs 0..24 route 1:1 to them.
pub const IOAPIC_PINS: u8 = 24;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// CPU signature/features reported for every processor entry (family 6, with FPU and APIC).
const CPU_SIGNATURE: u32 = (6 << 8) | (1 << 4);
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

/// Bytes the table takes for `cpus` processors (floating pointer + configuration table).
pub fn table_size(cpus: u8) -> usize {
    16 + 44 + cpus as usize * 20 + 8 + 8 + IOAPIC_PINS as usize * 8 + 2 * 8
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the floating pointer followed by the configuration table, for placement at `base`.
pub fn build(base: u64, cpus: u8) -> Result<Vec<u8>, ArchError> {
    if cpus == 0 {
        return Err(ArchError("MP table needs at least one CPU".into()));
    }
    let ioapic_id = cpus; // APIC ids 0..cpus belong to the CPUs
    let config_addr = u32::try_from(base + 16)
        .map_err(|_| ArchError(format!("MP table at {base:#x} is above 4 GiB")))?;

    let mut table = Vec::with_capacity(table_size(cpus));
    let mut entries = 0u16;
    // Header placeholder; filled in once the entries are known.
    table.extend_from_slice(&[0u8; 44]);
    for id in 0..cpus {
        table.extend_from_slice(&[0, id, APIC_VERSION]);
        table.push(CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 });
        table.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        table.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        table.extend_from_slice(&[0u8; 8]);
        entries += 1;
    }
    table.extend_from_slice(&[1, 0]);
    table.extend_from_slice(b"ISA   ");
    entries += 1;
    table.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    table.extend_from_slice(&IOAPIC_DEFAULT_BASE.to_le_bytes());
    entries += 1;
    for irq in 0..IOAPIC_PINS {
        // type, irq type, flags (conforming), source bus 0, bus irq, dest I/O APIC, dest pin
        table.extend_from_slice(&[3, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
        entries += 1;
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0u8), (INT_TYPE_NMI, 1u8)] {
        // type, irq type, flags, source bus, bus irq, dest: all local APICs, LINTn
        table.extend_from_slice(&[4, kind, 0, 0, 0, 0, 0xff, lint]);
        entries += 1;
    }
    let len = table.len() as u16;
    let mut hdr = Vec::with_capacity(44);
    hdr.extend_from_slice(b"PCMP");
    hdr.extend_from_slice(&len.to_le_bytes());
    hdr.push(4); // spec revision 1.4
    hdr.push(0); // checksum, below
    hdr.extend_from_slice(b"CPEVISOR");
    hdr.extend_from_slice(b"MICROVM     ");
    hdr.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    hdr.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    hdr.extend_from_slice(&entries.to_le_bytes());
    hdr.extend_from_slice(&APIC_DEFAULT_BASE.to_le_bytes());
    hdr.extend_from_slice(&[0u8; 4]); // extended table length, checksum, reserved
    table[..44].copy_from_slice(&hdr);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&config_addr.to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 16 bytes, rev 1.4, checksum, features
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP floating pointer and table for `cpus` vCPUs at `base`; fails past `limit`.
pub fn write(mem: &GuestMemoryMmap, base: u64, cpus: u8, limit: u64) -> Result<(), ArchError> {
    let bytes = build(base, cpus)?;
    if base + bytes.len() as u64 > limit {
        return Err(ArchError(format!(
            "MP table for {cpus} vCPUs does not fit below {limit:#x}"
        )));
    }
    mem.write_slice(&bytes, GuestAddress(base))
        .map_err(|e| ArchError::new("write MP table", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts() {
        for cpus in [1u8, 2, 8] {
            let t = build(0x9fc00, cpus).unwrap();
            assert_eq!(t.len(), table_size(cpus));
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
            assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0x9fc10);
            let cfg = &t[16..];
            assert_eq!(&cfg[..4], b"PCMP");
            let len = u16::from_le_bytes([cfg[4], cfg[5]]) as usize;
            assert_eq!(len, cfg.len());
            assert_eq!(sum(cfg), 0, "configuration table checksum");
            let count = u16::from_le_bytes([cfg[34], cfg[35]]);
            assert_eq!(count as usize, cpus as usize + 2 + 24 + 2);
            // The first processor entry is the enabled boot processor.
            assert_eq!(cfg[44], 0);
            assert_eq!(cfg[47], CPU_ENABLED | CPU_BOOTPROCESSOR);
        }
        assert!(build(0x9fc00, 0).is_err());
    }
}
