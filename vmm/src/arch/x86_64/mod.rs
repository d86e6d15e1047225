//! x86_64: Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst) for ELF `vmlinux` and
//! bzImage, zero page with an e820 map, MP table and ACPI tables (hardware-reduced: DSDT with
//! the virtio-mmio devices, power-off and reset registers), in-kernel PIC/IOAPIC/PIT, and two
//! raw test formats for hand-written guests.

pub mod acpi;
pub mod elf;
pub mod irqchip;
pub mod layout;
pub mod mptable;
pub mod platform;
pub mod regs;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub use self::irqchip::IrqChip;
pub use self::platform::attach_platform_devices;
use crate::arch::types::{
    load_file_at, ArchError, BootSetup, DeviceMap, DeviceSlot, LoadedKernel, VcpuBoot,
};
use crate::config::{ConfigError, KernelFormat, VmConfig};
use crate::vstate::vm::Vm;

use layout::*;

/// On x86 the PIC/IOAPIC must exist before the vCPUs so each gets an in-kernel LAPIC.
pub const IRQCHIP_BEFORE_VCPUS: bool = true;
/// The MP table in the EBDA has room for this many processors.
pub const MAX_VCPUS: u64 = 32;

/// See [`crate::arch::max_vcpus`].
pub fn max_vcpus() -> u64 {
    MAX_VCPUS
}

/// See [`crate::arch::ram_regions`]: RAM below the MMIO gap, the rest above 4 GiB.
pub fn ram_regions(bytes: u64) -> Vec<(GuestAddress, usize)> {
    if bytes <= MMIO_GAP_START {
        vec![(GuestAddress(0), bytes as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(FIRST_ADDR_PAST_4G),
                (bytes - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const EM_X86_64: u16 = 62;
const HDRS_MAGIC: u32 = 0x5372_6448; // "HdrS"
/// XLF_KERNEL_64: the bzImage has the 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1;

/// Format checks done before KVM is touched; errors name the file and what is wrong with it.
pub fn check_kernel(format: KernelFormat, path: &Path) -> Result<(), ConfigError> {
    let what = format!("kernel {}", path.display());
    let err = |why: String| ConfigError::invalid(&what, why);
    let mut f = File::open(path).map_err(|e| err(e.to_string()))?;
    let len = f.metadata().map_err(|e| err(e.to_string()))?.len();
    match format {
        KernelFormat::RawRealMode => {
            let room = PML4_ADDR - RAW_REAL_MODE_ADDR;
            if len > room {
                return Err(err(format!(
                    "raw real-mode code is {len} bytes, at most {room}"
                )));
            }
            return Ok(());
        }
        KernelFormat::RawX86_64 => {
            if len > (64 << 20) {
                return Err(err(format!("raw code is {len} bytes, at most 64 MiB")));
            }
            return Ok(());
        }
        KernelFormat::Auto => {}
    }
    let mut head = [0u8; 0x240];
    let n = read_up_to(&mut f, &mut head).map_err(|e| err(e.to_string()))?;
    let head = &head[..n];
    if head.starts_with(ELF_MAGIC) {
        if n < 20 || head[4] != 2 || head[5] != 1 {
            return Err(err(
                "ELF file is not 64-bit little endian (an x86_64 vmlinux)".into(),
            ));
        }
        let machine = u16::from_le_bytes([head[18], head[19]]);
        if machine != EM_X86_64 {
            return Err(err(format!(
                "ELF machine {machine}, expected x86_64 ({EM_X86_64})"
            )));
        }
        return Ok(());
    }
    if n >= 0x238
        && u32::from_le_bytes(head[0x202..0x206].try_into().unwrap_or_default()) == HDRS_MAGIC
    {
        let boot_flag = u16::from_le_bytes([head[0x1fe], head[0x1ff]]);
        if boot_flag != 0xaa55 {
            return Err(err(format!(
                "bzImage boot flag {boot_flag:#x}, expected 0xaa55"
            )));
        }
        let version = u16::from_le_bytes([head[0x206], head[0x207]]);
        let xloadflags = u16::from_le_bytes([head[0x236], head[0x237]]);
        if version < 0x20c || xloadflags & XLF_KERNEL_64 == 0 {
            return Err(err(format!(
                "bzImage (boot protocol {}.{:02}) has no 64-bit entry point",
                version >> 8,
                version & 0xff
            )));
        }
        let setup_sects = head[0x1f1].max(4) as u64;
        if len <= (setup_sects + 1) * 512 {
            return Err(err(format!("truncated bzImage: {len} bytes")));
        }
        return Ok(());
    }
    Err(err(
        "not an x86_64 kernel: expected an ELF vmlinux or a bzImage (or set kernel_format for raw test code)"
            .into(),
    ))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// See [`crate::arch::device_map`].
pub fn device_map(n_virtio: usize) -> Result<DeviceMap, ArchError> {
    let last_irq = VIRTIO_FIRST_IRQ as usize + n_virtio;
    if last_irq > mptable::IOAPIC_PINS as usize {
        return Err(ArchError(format!(
            "{n_virtio} virtio devices exceed the IOAPIC's pins"
        )));
    }
    Ok(DeviceMap {
        serial: DeviceSlot {
            addr: SERIAL_PORT,
            len: 8,
            irq: SERIAL_IRQ,
        },
        rtc: None,
        boot_signal: DeviceSlot {
            addr: BOOT_SIGNAL_PORT,
            len: BOOT_SIGNAL_PORT_LEN,
            irq: 0,
        },
        power_button: DeviceSlot {
            addr: GED_PORT,
            len: crate::devices::ged::LEN,
            irq: GED_IRQ,
        },
        virtio: (0..n_virtio)
            .map(|i| DeviceSlot {
                addr: VIRTIO_MMIO_BASE + i as u64 * DEVICE_WINDOW,
                len: crate::devices::virtio::MMIO_WINDOW_SIZE,
                irq: VIRTIO_FIRST_IRQ + i as u32,
            })
            .collect(),
    })
}

/// The TSS pages KVM needs on Intel hosts, out of the guest's RAM.
pub fn prepare_vm(vm: &Vm) -> Result<(), ArchError> {
    vm.fd()
        .set_tss_address(TSS_ADDR)
        .map_err(|e| ArchError::new("KVM_SET_TSS_ADDR", e))
}

/// Creates the in-kernel PIC, IOAPIC and PIT.
pub fn create_irqchip(vm: &Vm, _vcpus: u64) -> Result<IrqChip, ArchError> {
    vm.fd()
        .create_irq_chip()
        .map_err(|e| ArchError::new("KVM_CREATE_IRQCHIP", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.fd()
        .create_pit2(pit)
        .map_err(|e| ArchError::new("KVM_CREATE_PIT2", e))?;
    Ok(IrqChip)
}

/// Nothing to do at creation on x86 (all state is set in `setup_vcpu`).
pub fn init_vcpu(_vm: &Vm, _vcpu: &VcpuFd, _id: u64, _n: u64) -> Result<(), ArchError> {
    Ok(())
}

/// See [`crate::arch::load_kernel`]: ELF vmlinux, bzImage or raw code, initrd at the top of low RAM.
pub fn load_kernel(mem: &GuestMemoryMmap, cfg: &VmConfig) -> Result<LoadedKernel, ArchError> {
    let what = format!("kernel {}", cfg.kernel.display());
    let mut loaded = match cfg.kernel_format {
        KernelFormat::RawRealMode => {
            let len = load_file_at(mem, GuestAddress(RAW_REAL_MODE_ADDR), &cfg.kernel, "kernel")?;
            LoadedKernel {
                entry: RAW_REAL_MODE_ADDR,
                kernel_end: RAW_REAL_MODE_ADDR + len,
                ..Default::default()
            }
        }
        KernelFormat::RawX86_64 => {
            let len = load_file_at(mem, GuestAddress(RAW_LOAD_ADDR), &cfg.kernel, "kernel")?;
            LoadedKernel {
                entry: RAW_LOAD_ADDR,
                kernel_end: RAW_LOAD_ADDR + len,
                ..Default::default()
            }
        }
        KernelFormat::Auto => {
            let mut f = File::open(&cfg.kernel).map_err(|e| ArchError::new(&what, e))?;
            let mut magic = [0u8; 4];
            f.read_exact(&mut magic)
                .map_err(|e| ArchError::new(&what, e))?;
            f.seek(SeekFrom::Start(0))
                .map_err(|e| ArchError::new(&what, e))?;
            if &magic == ELF_MAGIC {
                // Segments mapped copy-on-write from the file where page-congruent (elf.rs).
                // The fd is closed when `f` drops at the end of this arm; mappings keep the file.
                let r = elf::load(mem, &mut f, HIMEM_START, &what)?;
                LoadedKernel {
                    entry: r.entry,
                    kernel_end: r.end,
                    initrd: None,
                    setup_header: None,
                }
            } else {
                // A bzImage decompresses itself into guest RAM: nothing to share, copied.
                let himem = Some(GuestAddress(HIMEM_START));
                let r = BzImage::load(mem, None, &mut f, himem)
                    .map_err(|e| ArchError::new(&what, e))?;
                let mut kernel_end = r.kernel_end;
                if let Some(extract_end) = r.setup_header.and_then(|h| decompression_end(&h)) {
                    let low_ram = (cfg.memory_mib << 20).min(MMIO_GAP_START);
                    if extract_end > low_ram {
                        return Err(ArchError(format!(
                            "{what} decompresses itself into guest memory up to {:#x} \
                             ({} MiB), more than the {} MiB it has",
                            extract_end,
                            extract_end.div_ceil(1 << 20),
                            low_ram >> 20
                        )));
                    }
                    // The initrd must stay clear of it too.
                    kernel_end = kernel_end.max(extract_end);
                }
                LoadedKernel {
                    // The 64-bit entry point is 0x200 past the protected-mode code.
                    entry: r.kernel_load.0 + 0x200,
                    kernel_end,
                    initrd: None,
                    setup_header: r.setup_header,
                }
            }
        }
    };
    if let Some(p) = &cfg.initrd {
        let size = std::fs::metadata(p)
            .map_err(|e| ArchError::new(&format!("initrd {}", p.display()), e))?
            .len();
        // At the top of low RAM, page aligned, clear of the kernel, and no higher than the
        // kernel's `initrd_addr_max` (2 GiB - 1 by default).
        let addr_max = loaded
            .setup_header
            .map(|h| u64::from(h.initrd_addr_max))
            .filter(|&m| m != 0)
            .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
        let top = (cfg.memory_mib << 20).min(MMIO_GAP_START).min(addr_max + 1);
        let start = top
            .checked_sub(size)
            .map(|a| a & !0xfff)
            .filter(|&a| a >= loaded.kernel_end)
            .ok_or_else(|| {
                ArchError(format!(
                    "initrd {} ({size} bytes) does not fit in guest memory next to the kernel",
                    p.display()
                ))
            })?;
        load_file_at(mem, GuestAddress(start), p, "initrd")?;
        loaded.initrd = Some((start, size));
    }
    Ok(loaded)
}

/// Where a bzImage's decompressor ends writing: it extracts the kernel at `pref_address` (the
/// kernel's LOAD_PHYSICAL_ADDR, 16 MiB for distribution kernels, never lower) and needs
/// `init_size` bytes there (boot protocol 2.10+). A stock Debian kernel asks for 64 MiB, so a
/// 64 MiB guest would die in the decompressor with nothing on the console.
fn decompression_end(h: &linux_loader::loader::bootparam::setup_header) -> Option<u64> {
    if h.version < 0x20a {
        return None;
    }
    h.pref_address.checked_add(u64::from(h.init_size))
}

/// Adds the virtio-mmio devices to the command line (kernels with
/// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES find them there).
pub fn finalize_cmdline(user: &str, devices: &DeviceMap) -> Result<String, ArchError> {
    let mut cmdline = linux_loader::cmdline::Cmdline::new(CMDLINE_MAX as usize)
        .map_err(|e| ArchError::new("kernel command line", e))?;
    if !user.is_empty() {
        cmdline
            .insert_str(user)
            .map_err(|e| ArchError::new("kernel command line", e))?;
    }
    for v in &devices.virtio {
        cmdline
            .add_virtio_mmio_device(v.len, GuestAddress(v.addr), v.irq, None)
            .map_err(|e| ArchError::new("kernel command line", e))?;
    }
    let s = cmdline
        .as_cstring()
        .map_err(|e| ArchError::new("kernel command line", e))?;
    Ok(s.to_string_lossy().into_owned())
}

/// Highest initrd byte address for kernels that do not say (boot protocol < 2.03 rule).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

/// Writes the zero page, command line, MP table, ACPI tables, GDT and page tables. Returns the
/// zero page address (RSI at entry). Raw formats get only the GDT and page tables.
pub fn configure_system(setup: &BootSetup) -> Result<u64, ArchError> {
    let BootSetup {
        mem,
        vcpus,
        irqchip: _,
        kernel,
        mem_bytes,
        cmdline,
        devices,
        format,
    } = *setup;
    match format {
        // Real-mode code needs no tables, and they would overwrite it above 0x9000.
        KernelFormat::RawRealMode => return Ok(0),
        KernelFormat::RawX86_64 => return regs::write_boot_tables(mem).map(|_| 0),
        KernelFormat::Auto => regs::write_boot_tables(mem)?,
    }
    let cpus = u8::try_from(vcpus.len())
        .map_err(|_| ArchError(format!("{} vCPUs do not fit the tables", vcpus.len())))?;
    // Both: kernels without ACPI read the MP table, kernels with ACPI prefer the MADT.
    mptable::write(mem, EBDA_START, cpus, HIMEM_START)?;
    let rsdp = acpi::write(
        mem,
        cpus,
        devices,
        ACPI_PM_PORT as u16,
        (mptable::APIC_DEFAULT_BASE, mptable::IOAPIC_DEFAULT_BASE),
    )?;

    let bytes = cmdline.as_bytes();
    if bytes.len() as u64 >= CMDLINE_MAX {
        return Err(ArchError(format!(
            "kernel command line longer than {CMDLINE_MAX} bytes"
        )));
    }
    mem.write_slice(bytes, GuestAddress(CMDLINE_ADDR))
        .and_then(|_| mem.write_obj(0u8, GuestAddress(CMDLINE_ADDR + bytes.len() as u64)))
        .map_err(|e| ArchError::new("write command line", e))?;

    let mut params = boot_params::default();
    if let Some(h) = kernel.setup_header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = HDRS_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    // Boot protocol 2.14+: saves the kernel its scan of the BIOS area.
    params.acpi_rsdp_addr = rsdp;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = bytes.len() as u32;
    if let Some((addr, size)) = kernel.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let seeds =
        crate::arch::types::BootSeeds::generate().map_err(|e| ArchError::new("boot seeds", e))?;
    link_rng_seed(mem, &mut params, &seeds)?;
    let low_end = mem_bytes.min(MMIO_GAP_START);
    let mut e820 = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
        (HIMEM_START, low_end - HIMEM_START, E820_RAM),
    ];
    if mem_bytes > MMIO_GAP_START {
        e820.push((FIRST_ADDR_PAST_4G, mem_bytes - MMIO_GAP_START, E820_RAM));
    }
    for (i, (addr, size, kind)) in e820.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| ArchError::new("write zero page", e))?;
    Ok(ZERO_PAGE_ADDR)
}

/// `struct setup_data` type of a random seed the kernel mixes into its CRNG before anything
/// else runs (arch/x86/include/uapi/asm/bootparam.h), the x86 counterpart of `/chosen/rng-seed`;
/// KASLR draws from RDRAND/RDTSC and this pool.
const SETUP_RNG_SEED: u32 = 9;
/// `setup_data` (and the zero page field pointing at it) exists from boot protocol 2.09.
const SETUP_DATA_MIN_PROTOCOL: u16 = 0x0209;

/// Writes a `SETUP_RNG_SEED` entry at `SETUP_DATA_ADDR` and links it from `hdr.setup_data`
/// (ahead of any list the header already named).
fn link_rng_seed(
    mem: &GuestMemoryMmap,
    params: &mut boot_params,
    seeds: &crate::arch::types::BootSeeds,
) -> Result<(), ArchError> {
    let version = params.hdr.version;
    if params.hdr.header == HDRS_MAGIC && version != 0 && version < SETUP_DATA_MIN_PROTOCOL {
        return Ok(());
    }
    // struct setup_data { u64 next; u32 type; u32 len; u8 data[]; }
    let mut entry = Vec::with_capacity(16 + seeds.rng.len());
    entry.extend_from_slice(&{ params.hdr.setup_data }.to_le_bytes());
    entry.extend_from_slice(&SETUP_RNG_SEED.to_le_bytes());
    entry.extend_from_slice(&(seeds.rng.len() as u32).to_le_bytes());
    entry.extend_from_slice(&seeds.rng);
    mem.write_slice(&entry, GuestAddress(SETUP_DATA_ADDR))
        .map_err(|e| ArchError::new("write setup_data", e))?;
    params.hdr.setup_data = SETUP_DATA_ADDR;
    Ok(())
}

/// Registers, CPUID, MSRs, FPU and LAPIC of vCPU `id`. With the in-kernel irqchip KVM holds the
/// application processors in wait-for-SIPI whatever their registers say; Linux starts them with
/// INIT/SIPI. (Raw test guests have no irqchip: every vCPU runs the code.)
pub fn setup_vcpu(boot: &VcpuBoot) -> Result<(), ArchError> {
    let VcpuBoot {
        vm,
        vcpu,
        id,
        count,
        kernel,
        boot_arg: zero_page,
        format,
        has_irqchip,
    } = *boot;
    let cpuid = vm
        .kvm()
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| ArchError::new("KVM_GET_SUPPORTED_CPUID", e))?;
    regs::setup_cpuid(vcpu, &cpuid, id as u8, count as u8)?;
    regs::setup_msrs(vcpu)?;
    regs::setup_fpu(vcpu)?;
    if has_irqchip {
        regs::setup_lapic(vcpu)?;
    }
    match format {
        KernelFormat::RawRealMode => {
            regs::setup_real_mode_sregs(vcpu)?;
        }
        _ => regs::setup_long_mode_sregs(vcpu)?,
    }
    regs::setup_regs(vcpu, kernel.entry, zero_page)
}

/// Lines for `kvm-info`.
pub fn kvm_capabilities(kvm: &Kvm, _vm: &Vm) -> Vec<String> {
    use kvm_ioctls::Cap;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map(|c| c.as_slice().len().to_string())
        .unwrap_or_else(|e| format!("unavailable ({e})"));
    vec![
        format!("irqchip: {}", kvm.check_extension(Cap::Irqchip)),
        format!("irqfd: {}", kvm.check_extension(Cap::Irqfd)),
        format!("PIT2: {}", kvm.check_extension(Cap::Pit2)),
        format!(
            "immediate exit: {}",
            kvm.check_extension(Cap::ImmediateExit)
        ),
        format!("supported CPUID leaves: {cpuid}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_layout_splits_at_the_gap() {
        assert_eq!(ram_regions(64 << 20), vec![(GuestAddress(0), 64 << 20)]);
        let r = ram_regions(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], (GuestAddress(1 << 32), (1 << 30)));
    }

    #[test]
    fn cmdline_announces_virtio_devices() {
        let d = device_map(2).unwrap();
        let c = finalize_cmdline("console=ttyS0", &d).unwrap();
        assert!(c.starts_with("console=ttyS0 "), "{c}");
        assert!(c.contains("virtio_mmio.device=512@0xd0000000:5"), "{c}");
        assert!(c.contains("virtio_mmio.device=512@0xd0001000:6"), "{c}");
        assert!(device_map(30).is_err());
    }

    #[test]
    fn zero_page_links_a_fresh_rng_seed() {
        let mem = crate::vstate::memory::create_guest_memory(&ram_regions(16 << 20)).unwrap();
        let seed = |mem: &GuestMemoryMmap| {
            let mut params = boot_params::default();
            params.hdr.header = HDRS_MAGIC;
            params.hdr.version = 0x020f;
            let seeds = crate::arch::types::BootSeeds::generate().unwrap();
            link_rng_seed(mem, &mut params, &seeds).unwrap();
            let at = params.hdr.setup_data;
            assert_eq!(at, SETUP_DATA_ADDR);
            assert_eq!(
                mem.read_obj::<u64>(GuestAddress(at)).unwrap(),
                0,
                "end of list"
            );
            assert_eq!(
                mem.read_obj::<u32>(GuestAddress(at + 8)).unwrap(),
                9,
                "SETUP_RNG_SEED"
            );
            let len = mem.read_obj::<u32>(GuestAddress(at + 12)).unwrap() as usize;
            assert_eq!(len, crate::arch::RNG_SEED_LEN);
            let mut data = vec![0u8; len];
            mem.read_slice(&mut data, GuestAddress(at + 16)).unwrap();
            assert_eq!(data, seeds.rng);
            assert_ne!(data, vec![0u8; len]);
            data
        };
        assert_ne!(seed(&mem), seed(&mem), "two boots got the same seed");
        // Too old a boot protocol has no setup_data field: nothing is linked.
        let mut old = boot_params::default();
        old.hdr.header = HDRS_MAGIC;
        old.hdr.version = 0x0208;
        let seeds = crate::arch::types::BootSeeds::generate().unwrap();
        link_rng_seed(&mem, &mut old, &seeds).unwrap();
        assert_eq!({ old.hdr.setup_data }, 0);
    }

    /// A bzImage shell BzImage::load accepts: boot protocol 2.15, loaded high, 64-bit entry.
    fn fake_bzimage(pref_address: u64, init_size: u32) -> Vec<u8> {
        let mut bz = vec![0u8; 0x2000];
        bz[0x1f1] = 4; // setup sectors
        bz[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        bz[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x211] = 1; // loadflags: LOADED_HIGH
        bz[0x214..0x218].copy_from_slice(&(HIMEM_START as u32).to_le_bytes()); // code32_start
        bz[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
        bz[0x258..0x260].copy_from_slice(&pref_address.to_le_bytes());
        bz[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        bz
    }

    #[test]
    fn bzimage_needs_room_to_decompress() {
        use crate::config::VmConfigExt as _;
        let dir = std::env::temp_dir().join(format!("cpv-x86bz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("bzImage");
        let initrd = dir.join("initrd");
        std::fs::write(&initrd, vec![0u8; 4 << 20]).unwrap();
        let mem = crate::vstate::memory::create_guest_memory(&ram_regions(64 << 20)).unwrap();
        let cfg = |init_rd: bool| {
            let json = format!(r#"{{"kernel": "{}", "memory_mib": 64}}"#, kernel.display());
            let mut c = VmConfig::from_json(&json).unwrap();
            c.initrd = init_rd.then(|| initrd.clone());
            c
        };
        // A Debian-sized request: 16 MiB + 64 MiB does not fit 64 MiB.
        std::fs::write(&kernel, fake_bzimage(16 << 20, 64 << 20)).unwrap();
        let e = load_kernel(&mem, &cfg(false)).err().unwrap();
        assert!(
            e.0.contains("decompresses itself") && e.0.contains("80 MiB"),
            "{e}"
        );
        // 16 + 46 MiB fits, but then a 4 MiB initrd has no room above it.
        std::fs::write(&kernel, fake_bzimage(16 << 20, 46 << 20)).unwrap();
        let k = load_kernel(&mem, &cfg(false)).unwrap();
        assert_eq!(k.kernel_end, 62 << 20);
        let e = load_kernel(&mem, &cfg(true)).err().unwrap();
        assert!(
            e.0.contains("initrd") && e.0.contains("does not fit"),
            "{e}"
        );
        // 16 + 40 MiB leaves room for it at the top of RAM.
        std::fs::write(&kernel, fake_bzimage(16 << 20, 40 << 20)).unwrap();
        let k = load_kernel(&mem, &cfg(true)).unwrap();
        assert_eq!(k.initrd, Some((60 << 20, 4 << 20)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_checks_name_the_problem() {
        let dir = std::env::temp_dir().join(format!("cpv-x86k-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let e = check_kernel(KernelFormat::Auto, &p).unwrap_err();
        assert!(e.why.contains("not an x86_64 kernel"), "{e}");
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(ELF_MAGIC);
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 183; // aarch64
        std::fs::write(&p, &elf).unwrap();
        let e = check_kernel(KernelFormat::Auto, &p).unwrap_err();
        assert!(e.why.contains("expected x86_64"), "{e}");
        elf[18] = EM_X86_64 as u8;
        std::fs::write(&p, &elf).unwrap();
        check_kernel(KernelFormat::Auto, &p).unwrap();
        let mut bz = vec![0u8; 0x1000];
        bz[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        bz[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
        bz[0x1f1] = 30;
        std::fs::write(&p, &bz).unwrap();
        let e = check_kernel(KernelFormat::Auto, &p).unwrap_err();
        assert!(e.why.contains("truncated bzImage"), "{e}");
        bz.resize(0x10000, 0);
        std::fs::write(&p, &bz).unwrap();
        check_kernel(KernelFormat::Auto, &p).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
