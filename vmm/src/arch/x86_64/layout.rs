//! Guest-physical layout of the x86_64 microVM.

/// Global descriptor table of the boot CPU.
pub const GDT_ADDR: u64 = 0x500;
/// Interrupt descriptor table (empty) of the boot CPU.
pub const IDT_ADDR: u64 = 0x520;
/// Real-mode raw guests are loaded here (CS = 0).
pub const RAW_REAL_MODE_ADDR: u64 = 0x1000;
/// The zero page (`struct boot_params`), handed over in RSI.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Page map level 4 of the boot identity map.
pub const PML4_ADDR: u64 = 0x9000;
/// Page directory pointer table of the boot identity map.
pub const PDPT_ADDR: u64 = 0xa000;
/// Four page directories (0xb000..0xf000), one per GiB of the identity map.
pub const PD_ADDR: u64 = 0xb000;
/// How many page directories (GiB) the identity map covers.
pub const PD_COUNT: u64 = 4;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Room for the command line, NUL included.
pub const CMDLINE_MAX: u64 = 0x1_0000;
/// The `setup_data` list (one `SETUP_RNG_SEED` entry), just above the command line.
pub const SETUP_DATA_ADDR: u64 = CMDLINE_ADDR + CMDLINE_MAX;
/// Start of the EBDA, where the MP table goes; up to 1 MiB is reserved in the e820 map.
pub const EBDA_START: u64 = 0x9_fc00;
/// Start of high memory (1 MiB), where kernels load.
pub const HIMEM_START: u64 = 0x10_0000;
/// Long-mode raw guests are loaded and entered here.
pub const RAW_LOAD_ADDR: u64 = HIMEM_START;
/// RAM below 4 GiB ends here; the gap holds MMIO devices, the IOAPIC and the LAPIC.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// RAM above the MMIO gap resumes here.
pub const FIRST_ADDR_PAST_4G: u64 = 1 << 32;
/// Three pages KVM needs for the TSS on Intel hosts, out of guest RAM.
pub const TSS_ADDR: usize = 0xfffb_d000;
/// The boot-ready signal: an I/O port (`devices::boot_signal::X86_PORT`) and, for guests
/// without /dev/port, an MMIO page below the virtio window (`X86_MMIO_ADDR`).
pub const BOOT_SIGNAL_PORT: u64 = crate::devices::boot_signal::X86_PORT;
/// Length of the boot signal port.
pub const BOOT_SIGNAL_PORT_LEN: u64 = crate::devices::boot_signal::X86_PORT_LEN;
/// The boot signal's MMIO page.
pub const BOOT_SIGNAL_MMIO: u64 = crate::devices::boot_signal::X86_MMIO_ADDR;
/// Length of the boot signal's MMIO page.
pub const BOOT_SIGNAL_MMIO_LEN: u64 = crate::devices::boot_signal::X86_MMIO_LEN;
/// The ACPI sleep control / status / reset registers (`devices::acpi_pm`), named by the FADT.
pub const ACPI_PM_PORT: u64 = 0x600;
/// Length of the ACPI PM register block.
pub const ACPI_PM_PORT_LEN: u64 = crate::devices::acpi_pm::LEN;
/// First virtio-mmio slot; the others follow every `DEVICE_WINDOW`.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Distance between virtio-mmio slots.
pub const DEVICE_WINDOW: u64 = 0x1000;
/// The ACPI Generic Event Device's event register (the power button) and its interrupt:
/// IRQ 3, free (no COM2), below the virtio range.
pub const GED_PORT: u64 = 0x610;
/// The GED's interrupt (IOAPIC pin).
pub const GED_IRQ: u32 = 3;
/// COM1.
pub const SERIAL_PORT: u64 = 0x3f8;
/// COM1's interrupt.
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 controller's ports (0x60 data, 0x64 command); only reset is used.
pub const I8042_PORT: u64 = 0x60;
/// The i8042's keyboard interrupt (unused: no keyboard).
pub const I8042_IRQ: u32 = 1;
/// First virtio-mmio interrupt; one per device after it.
pub const VIRTIO_FIRST_IRQ: u32 = 5;
