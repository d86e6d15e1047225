//! Guest-physical layout of the aarch64 microVM, close to QEMU's `virt` board so that kernels and
//! earlycon settings people already use keep working.

/// RAM starts at 2 GiB, like QEMU virt.
pub const RAM_START: u64 = 0x8000_0000;
/// The kernel's 2 MiB aligned base: `text_offset` is added to it.
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// The device tree gets the last 2 MiB of RAM (booting.rst: at most 2 MiB, 8-byte aligned, in a
/// 2 MiB region of its own).
pub const FDT_MAX_SIZE: u64 = 2 << 20;

/// GIC distributor base.
pub const GIC_DIST_BASE: u64 = 0x0800_0000;
/// GIC distributor window size.
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// GICv2 CPU interface (KVM_VGIC_V2_CPU_SIZE is 8 KiB).
pub const GICV2_CPU_BASE: u64 = 0x0801_0000;
/// GICv2 CPU interface window size.
pub const GICV2_CPU_SIZE: u64 = 0x2000;
/// GICv3 redistributors: two 64 KiB frames per vCPU, up to the serial port.
pub const GICV3_REDIST_BASE: u64 = 0x080a_0000;
/// GICv3 redistributor window per vCPU (RD and SGI frames).
pub const GICV3_REDIST_SIZE_PER_CPU: u64 = 0x2_0000;

/// 16550 UART base.
pub const SERIAL_BASE: u64 = 0x0900_0000;
/// PL031 RTC base.
pub const RTC_BASE: u64 = 0x0901_0000;
/// The boot-ready signal: the guest writes here once it is up.
pub const BOOT_SIGNAL_BASE: u64 = crate::devices::boot_signal::AARCH64_MMIO_ADDR;
/// The PL061 GPIO controller carrying the power button (where QEMU's virt board has its own).
pub const GPIO_BASE: u64 = 0x0903_0000;
/// Size of each platform device's MMIO window.
pub const DEVICE_WINDOW: u64 = 0x1000;
/// First virtio-mmio slot; the others follow every `DEVICE_WINDOW`.
pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;

/// SPI numbers (GIC INTID - 32); irqfd GSIs equal SPI numbers on arm64.
pub const SERIAL_SPI: u32 = 1;
/// PL031 RTC interrupt (SPI number).
pub const RTC_SPI: u32 = 2;
/// PL061 GPIO (power button) interrupt (SPI number).
pub const GPIO_SPI: u32 = 7;
/// First virtio-mmio interrupt (SPI number); one per device after it.
pub const VIRTIO_FIRST_SPI: u32 = 16;
/// Interrupts the vGIC is created with (SGIs + PPIs + SPIs); a multiple of 32.
pub const GIC_NR_IRQS: u32 = 128;

/// vCPUs the redistributor window can hold before it would overlap the serial port.
pub const MAX_VCPUS: u64 = (SERIAL_BASE - GICV3_REDIST_BASE) / GICV3_REDIST_SIZE_PER_CPU;
