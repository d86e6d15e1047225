//! x86_64 vCPU state for the 64-bit boot protocol: GDT, identity-mapped page tables, segment and
//! control registers, FPU, MSRs, CPUID and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::*;
use crate::arch::types::ArchError;

/// Packs a GDT entry from flags, base and limit (Intel SDM vol. 3, 3.4.5).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
}

/// Unpacks a GDT entry into the segment KVM expects; `index` gives the selector.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let limit_raw = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let g = ((entry >> 55) & 1) as u8;
    // With 4 KiB granularity the limit counts pages; KVM wants bytes.
    let limit = if g == 1 {
        (limit_raw << 12) | 0xfff
    } else {
        limit_raw
    };
    let type_ = ((entry >> 40) & 0xf) as u8;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base,
        limit: limit as u32,
        selector: index as u16 * 8,
        type_,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        // An absent segment must be marked unusable or VM entry fails.
        unusable: (present == 0) as u8,
        padding: 0,
    }
}

/// NULL, 64-bit code, data, TSS: what Linux's startup_64 expects to find loaded.
pub const GDT: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Writes GDT, an empty IDT and page tables identity-mapping the first 4 GiB with 2 MiB pages
/// (RAM below the gap and the MMIO devices above it, so raw test guests can reach both).
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), ArchError> {
    let w = |r: Result<(), vm_memory::GuestMemoryError>, what: &str| {
        r.map_err(|e| ArchError::new(&format!("write {what}"), e))
    };
    for (i, e) in GDT.iter().enumerate() {
        w(
            mem.write_obj(*e, GuestAddress(GDT_ADDR + i as u64 * 8)),
            "GDT",
        )?;
    }
    w(mem.write_obj(0u64, GuestAddress(IDT_ADDR)), "IDT")?;
    // PML4[0] -> PDPT; PDPT[g] -> PD g; PD g entry i -> 2 MiB page (g * 512 + i), present,
    // writable, large.
    w(
        mem.write_obj(PDPT_ADDR | 0x03, GuestAddress(PML4_ADDR)),
        "PML4",
    )?;
    let mut pdpt = [0u8; 4 * 8];
    let mut pds = vec![0u8; PD_COUNT as usize * 4096];
    for g in 0..PD_COUNT {
        let pd = PD_ADDR + g * 0x1000;
        pdpt[g as usize * 8..][..8].copy_from_slice(&(pd | 0x03).to_le_bytes());
        for i in 0..512u64 {
            let entry = (((g << 9) + i) << 21) | 0x83;
            pds[((g * 512 + i) * 8) as usize..][..8].copy_from_slice(&entry.to_le_bytes());
        }
    }
    w(mem.write_slice(&pdpt, GuestAddress(PDPT_ADDR)), "PDPT")?;
    w(mem.write_slice(&pds, GuestAddress(PD_ADDR)), "PD")?;
    Ok(())
}

/// Long mode with paging on, flat segments from `GDT`.
pub fn setup_long_mode_sregs(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut sregs: kvm_sregs = vcpu
        .get_sregs()
        .map_err(|e| ArchError::new("KVM_GET_SREGS", e))?;
    let code = segment_from_gdt(GDT[1], 1);
    let data = segment_from_gdt(GDT[2], 2);
    let tss = segment_from_gdt(GDT[3], 3);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| ArchError::new("KVM_SET_SREGS", e))
}

/// Real mode with CS = 0, so `rip` is a physical address below 64 KiB.
pub fn setup_real_mode_sregs(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| ArchError::new("KVM_GET_SREGS", e))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| ArchError::new("KVM_SET_SREGS", e))
}

/// General registers: RIP = entry, RSI = boot data (zero page), stack at `BOOT_STACK`.
pub fn setup_regs(vcpu: &VcpuFd, rip: u64, rsi: u64) -> Result<(), ArchError> {
    let regs = kvm_regs {
        rflags: 0x2, // bit 1 is reserved and must be set
        rip,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| ArchError::new("KVM_SET_REGS", e))
}

/// FPU state: the x87 control word and MXCSR at their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| ArchError::new("KVM_SET_FPU", e))
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// Boot MSR values: syscall MSRs cleared, fast strings enabled.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| ArchError::new("MSR list", e))?;
    let n = vcpu
        .set_msrs(&msrs)
        .map_err(|e| ArchError::new("KVM_SET_MSRS", e))?;
    if n != entries.len() {
        return Err(ArchError(format!(
            "KVM_SET_MSRS set {n} of {} MSRs (MSR {:#x} refused)",
            entries.len(),
            entries[n].index
        )));
    }
    Ok(())
}

/// CPUID leaves KVM supports, fixed up per vCPU: APIC ids, logical CPU count, hypervisor bit.
pub fn setup_cpuid(vcpu: &VcpuFd, supported: &CpuId, id: u8, count: u8) -> Result<(), ArchError> {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                // EBX[31:24] initial APIC id, [23:16] logical processors; ECX[31] hypervisor.
                e.ebx = (e.ebx & 0x0000_ffff) | ((id as u32) << 24) | ((count as u32) << 16);
                e.ecx |= 1 << 31;
                if count > 1 {
                    e.edx |= 1 << 28; // HTT: the logical count field is valid
                }
            }
            0xb | 0x1f => {
                // Extended topology: EDX is the x2APIC id of this CPU.
                e.edx = id as u32;
            }
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| ArchError::new("KVM_SET_CPUID2", e))
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as on a PC; needs the in-kernel irqchip.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| ArchError::new("KVM_GET_LAPIC", e))?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i] as u8);
        let v = u32::from_le_bytes(bytes);
        let v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(|e| ArchError::new("KVM_SET_LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_round_trip() {
        let code = segment_from_gdt(GDT[1], 1);
        assert_eq!(code.selector, 8);
        assert_eq!(code.l, 1);
        assert_eq!(code.present, 1);
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.limit, 0xffff_ffff);
        let data = segment_from_gdt(GDT[2], 2);
        assert_eq!(data.db, 1);
        assert_eq!(data.l, 0);
        let null = segment_from_gdt(GDT[0], 0);
        assert_eq!(null.unusable, 1);
    }
}
