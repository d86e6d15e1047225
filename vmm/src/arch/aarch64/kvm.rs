//! The KVM side of the aarch64 port: VM/vCPU/vGIC setup and the boot sequence of
//! Documentation/arch/arm64/booting.rst (MMU off, EL1h with DAIF masked, X0 = DTB address,
//! secondary CPUs held by PSCI until CPU_ON).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use kvm_bindings::*;
use kvm_ioctls::{DeviceFd, Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::fdt::{create_fdt, FdtConfig};
use super::gic::GicVersion;
pub use super::gic::IrqChip;
use super::image;
use super::layout::*;
pub use super::platform::attach_platform_devices;
use crate::arch::types::{
    load_file_at, place_file_range, ArchError, BootSetup, DeviceMap, DeviceSlot, LoadedKernel,
    VcpuBoot,
};
use crate::config::{ConfigError, KernelFormat, VmConfig};
use crate::vstate::vm::Vm;

/// On arm64 the vGIC is created after the vCPUs (it sizes redistributors by vCPU count).
pub const IRQCHIP_BEFORE_VCPUS: bool = false;

/// One RAM region from `RAM_START`.
pub fn ram_regions(bytes: u64) -> Vec<(GuestAddress, usize)> {
    vec![(GuestAddress(RAM_START), bytes as usize)]
}

/// See [`crate::arch::max_vcpus`].
pub fn max_vcpus() -> u64 {
    MAX_VCPUS
}

/// The arm64 `Image` header checks; raw test formats are x86_64 only.
pub fn check_kernel(format: KernelFormat, path: &Path) -> Result<(), ConfigError> {
    let what = format!("kernel {}", path.display());
    if format.is_raw() {
        return Err(ConfigError::invalid(
            "kernel_format",
            "raw test formats exist only on x86_64",
        ));
    }
    let mut f = File::open(path).map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
    let len = f
        .metadata()
        .map_err(|e| ConfigError::invalid(&what, e.to_string()))?
        .len();
    let mut hdr = [0u8; image::HEADER_LEN];
    let n = f
        .read(&mut hdr)
        .map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
    image::parse(&hdr[..n], len).map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
    Ok(())
}

/// See [`crate::arch::device_map`].
pub fn device_map(n_virtio: usize) -> Result<DeviceMap, ArchError> {
    let last_spi = VIRTIO_FIRST_SPI as usize + n_virtio;
    if last_spi >= (GIC_NR_IRQS - 32) as usize {
        return Err(ArchError(format!(
            "{n_virtio} virtio devices exceed the GIC's SPIs"
        )));
    }
    let slot = |addr, irq| DeviceSlot {
        addr,
        len: DEVICE_WINDOW,
        irq,
    };
    Ok(DeviceMap {
        serial: slot(SERIAL_BASE, SERIAL_SPI),
        rtc: Some(slot(RTC_BASE, RTC_SPI)),
        boot_signal: slot(BOOT_SIGNAL_BASE, 0),
        power_button: slot(GPIO_BASE, GPIO_SPI),
        virtio: (0..n_virtio)
            .map(|i| DeviceSlot {
                addr: VIRTIO_MMIO_BASE + i as u64 * DEVICE_WINDOW,
                len: crate::devices::virtio::MMIO_WINDOW_SIZE,
                irq: VIRTIO_FIRST_SPI + i as u32,
            })
            .collect(),
    })
}

/// Nothing to prepare on arm64.
pub fn prepare_vm(_vm: &Vm) -> Result<(), ArchError> {
    Ok(())
}

fn set_attr(fd: &DeviceFd, group: u32, attr: u64, addr: u64, what: &str) -> Result<(), ArchError> {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr,
    };
    fd.set_device_attr(&a).map_err(|e| ArchError::new(what, e))
}

fn create_gic(vm: &Vm, version: GicVersion) -> Result<DeviceFd, kvm_ioctls::Error> {
    let type_ = match version {
        GicVersion::V3 => kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
        GicVersion::V2 => kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2,
    };
    let mut dev = kvm_create_device {
        type_,
        fd: 0,
        flags: 0,
    };
    vm.fd().create_device(&mut dev)
}

/// Creates the vGIC: GICv3 when the host has one, else GICv2 (GIC-400 SoCs), then initializes it.
/// Must run after every vCPU exists.
pub fn create_irqchip(vm: &Vm, _vcpus: u64) -> Result<IrqChip, ArchError> {
    let (fd, version) = match create_gic(vm, GicVersion::V3) {
        Ok(fd) => (fd, GicVersion::V3),
        Err(e3) => match create_gic(vm, GicVersion::V2) {
            Ok(fd) => {
                crate::log(&format!("GICv3 unavailable ({e3}), using GICv2"));
                (fd, GicVersion::V2)
            }
            Err(e2) => {
                return Err(ArchError(format!(
                    "cannot create a vGIC: v3: {e3}; v2: {e2}"
                )))
            }
        },
    };
    // KVM reads the addresses through these pointers during the ioctl.
    let dist: u64 = GIC_DIST_BASE;
    let (second, second_type) = match version {
        GicVersion::V3 => (GICV3_REDIST_BASE, KVM_VGIC_V3_ADDR_TYPE_REDIST),
        GicVersion::V2 => (GICV2_CPU_BASE, KVM_VGIC_V2_ADDR_TYPE_CPU),
    };
    let dist_type = match version {
        GicVersion::V3 => KVM_VGIC_V3_ADDR_TYPE_DIST,
        GicVersion::V2 => KVM_VGIC_V2_ADDR_TYPE_DIST,
    };
    set_attr(
        &fd,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        dist_type as u64,
        &dist as *const u64 as u64,
        "vGIC distributor address",
    )?;
    set_attr(
        &fd,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        second_type as u64,
        &second as *const u64 as u64,
        "vGIC redistributor/CPU interface address",
    )?;
    let nr_irqs: u32 = GIC_NR_IRQS;
    set_attr(
        &fd,
        KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
        0,
        &nr_irqs as *const u32 as u64,
        "vGIC interrupt count",
    )?;
    set_attr(
        &fd,
        KVM_DEV_ARM_VGIC_GRP_CTRL,
        KVM_DEV_ARM_VGIC_CTRL_INIT as u64,
        0,
        "vGIC init",
    )?;
    Ok(IrqChip { _fd: fd, version })
}

/// KVM_ARM_VCPU_INIT with the host's preferred target, PSCI 0.2+, secondaries powered off.
pub fn init_vcpu(vm: &Vm, vcpu: &VcpuFd, id: u64, _n: u64) -> Result<(), ArchError> {
    let mut kvi = kvm_vcpu_init::default();
    vm.fd()
        .get_preferred_target(&mut kvi)
        .map_err(|e| ArchError::new("KVM_ARM_PREFERRED_TARGET", e))?;
    kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    if id > 0 {
        kvi.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
    }
    vcpu.vcpu_init(&kvi)
        .map_err(|e| ArchError::new(&format!("KVM_ARM_VCPU_INIT vcpu {id}"), e))
}

/// Register id of a field of `struct kvm_regs`, given its byte offset (KVM counts in u32 words).
const fn core_reg(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4) as u64
}
const REG_X0: u64 = core_reg(0);
const REG_PC: u64 = core_reg(32 * 8);
const REG_PSTATE: u64 = core_reg(33 * 8);
/// MPIDR_EL1: op0 3, op1 0, CRn 0, CRm 0, op2 5.
const REG_MPIDR_EL1: u64 =
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG as u64 | (3 << 14) | 5;

fn mpidr(vcpu: &VcpuFd) -> Result<u64, ArchError> {
    let mut b = [0u8; 8];
    vcpu.get_one_reg(REG_MPIDR_EL1, &mut b)
        .map_err(|e| ArchError::new("read MPIDR_EL1", e))?;
    Ok(u64::from_le_bytes(b))
}

/// The `Image` at its `text_offset` from `RAM_START`, the initrd just below the device tree.
pub fn load_kernel(mem: &GuestMemoryMmap, cfg: &VmConfig) -> Result<LoadedKernel, ArchError> {
    let what = format!("kernel {}", cfg.kernel.display());
    let mut f = File::open(&cfg.kernel).map_err(|e| ArchError::new(&what, e))?;
    let len = f.metadata().map_err(|e| ArchError::new(&what, e))?.len();
    let mut hdr = [0u8; image::HEADER_LEN];
    f.read_exact(&mut hdr)
        .map_err(|e| ArchError::new(&what, e))?;
    let h = image::parse(&hdr, len).map_err(|e| ArchError::new(&what, e))?;
    // RAM_START is 2 MiB aligned, so this is a valid base for any text_offset.
    let entry = RAM_START + h.text_offset;
    let kernel_end = entry + h.image_size;
    let ram_end = RAM_START + (cfg.memory_mib << 20);
    let fdt_addr = fdt_address(ram_end);
    if kernel_end > fdt_addr {
        return Err(ArchError(format!(
            "{what}: needs {:#x} bytes, more than the {} MiB of guest memory allow",
            h.image_size, cfg.memory_mib
        )));
    }
    // Mapped copy-on-write from the file, not copied: its text and read-only data, the bulk of
    // it, stay shared in the host page cache by every guest booting the same Image (`entry` is
    // page aligned: RAM_START is, and image::parse checked text_offset). The fd is closed here;
    // the mapping keeps the file.
    place_file_range(mem, entry, &mut f, 0, len, &what)?;
    drop(f);
    let initrd = match &cfg.initrd {
        None => None,
        Some(p) => {
            let size = std::fs::metadata(p)
                .map_err(|e| ArchError::new(&format!("initrd {}", p.display()), e))?
                .len();
            // Just below the device tree, page aligned, clear of the kernel's BSS.
            let start = fdt_addr
                .checked_sub(size)
                .map(|a| a & !0xfff)
                .filter(|&a| a >= kernel_end)
                .ok_or_else(|| {
                    ArchError(format!(
                        "initrd {} ({size} bytes) does not fit in guest memory next to the kernel",
                        p.display()
                    ))
                })?;
            load_file_at(mem, GuestAddress(start), p, "initrd")?;
            Some((start, size))
        }
    };
    Ok(LoadedKernel {
        entry,
        kernel_end,
        initrd,
    })
}

fn fdt_address(ram_end: u64) -> u64 {
    ram_end - FDT_MAX_SIZE
}

/// Writes the device tree at the top of RAM. Returns its address (for X0).
pub fn configure_system(setup: &BootSetup) -> Result<u64, ArchError> {
    let BootSetup {
        mem,
        vcpus,
        irqchip,
        kernel,
        mem_bytes,
        cmdline,
        devices,
        format: _,
    } = *setup;
    let irqchip = irqchip.ok_or_else(|| ArchError("aarch64 guests need the vGIC".into()))?;
    let mpidrs = vcpus.iter().map(mpidr).collect::<Result<Vec<_>, _>>()?;
    let seeds =
        crate::arch::types::BootSeeds::generate().map_err(|e| ArchError::new("boot seeds", e))?;
    let blob = create_fdt(&FdtConfig {
        mem_size: mem_bytes,
        mpidrs: &mpidrs,
        gic: irqchip.version,
        cmdline,
        initrd: kernel.initrd,
        devices,
        seeds: &seeds,
    })
    .map_err(|e| ArchError::new("device tree", e))?;
    if blob.len() as u64 > FDT_MAX_SIZE {
        return Err(ArchError(format!(
            "device tree of {} bytes exceeds 2 MiB",
            blob.len()
        )));
    }
    let addr = fdt_address(RAM_START + mem_bytes);
    mem.write_slice(&blob, GuestAddress(addr))
        .map_err(|e| ArchError::new("write device tree", e))?;
    Ok(addr)
}

/// The user's command line, unchanged: arm64 devices are described by the device tree.
pub fn finalize_cmdline(user: &str, _devices: &DeviceMap) -> Result<String, ArchError> {
    Ok(user.to_string())
}

/// Boot vCPU: PC = kernel entry, X0 = DTB, EL1h with DAIF masked. Secondaries start through PSCI
/// CPU_ON, which sets their registers in KVM.
pub fn setup_vcpu(boot: &VcpuBoot) -> Result<(), ArchError> {
    let VcpuBoot {
        vcpu,
        id,
        kernel,
        boot_arg: fdt_addr,
        ..
    } = *boot;
    let pstate = (PSR_MODE_EL1h | PSR_A_BIT | PSR_F_BIT | PSR_I_BIT | PSR_D_BIT) as u64;
    let set = |reg: u64, v: u64, name: &str| {
        vcpu.set_one_reg(reg, &v.to_le_bytes())
            .map(|_| ())
            .map_err(|e| ArchError::new(&format!("set {name} on vcpu {id}"), e))
    };
    set(REG_PSTATE, pstate, "PSTATE")?;
    if id == 0 {
        set(REG_PC, kernel.entry, "PC")?;
        set(REG_X0, fdt_addr, "X0")?;
    }
    Ok(())
}

/// Lines for `kvm-info`.
pub fn kvm_capabilities(kvm: &Kvm, vm: &Vm) -> Vec<String> {
    use kvm_ioctls::Cap;
    let mut kvi = kvm_vcpu_init::default();
    let target = match vm.fd().get_preferred_target(&mut kvi) {
        Ok(()) => format!("{}", kvi.target),
        Err(e) => format!("unavailable ({e})"),
    };
    // A real create (not KVM_CREATE_DEVICE_TEST, whose fd 0 result kvm-ioctls would close);
    // the probe VM is thrown away after `kvm-info`.
    let gic = match create_gic(vm, GicVersion::V3) {
        Ok(_) => "v3",
        Err(_) => match create_gic(vm, GicVersion::V2) {
            Ok(_) => "v2 (no GICv3)",
            Err(_) => "none",
        },
    };
    vec![
        format!("Preferred vCPU target: {target}"),
        format!("Host IPA limit: {} bits", kvm.get_host_ipa_limit()),
        format!("PSCI 0.2: {}", kvm.check_extension(Cap::ArmPsci02)),
        format!("vGIC: {gic}"),
        format!("irqfd: {}", kvm.check_extension(Cap::Irqfd)),
    ]
}
