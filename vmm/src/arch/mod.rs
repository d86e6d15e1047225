//! The architecture seam: the one API a board architecture implements, and the only way the
//! rest of the VMM reaches architecture code. Each architecture module (`x86_64`,
//! `aarch64::kvm`) provides the functions and types this module forwards to, with the same
//! signatures; a new architecture adds its module and one `imp` line below, and nothing
//! outside `arch/` changes.
//!
//! In build order (`builder`):
//! - [`check_kernel`], [`max_vcpus`]: checks before KVM is touched;
//! - [`ram_regions`]: guest RAM layout;
//! - [`prepare_vm`], [`create_irqchip`] (before or after the vCPUs: [`IRQCHIP_BEFORE_VCPUS`]),
//!   [`init_vcpu`];
//! - [`device_map`], [`attach_platform_devices`]: where the platform devices live, and putting
//!   them on the buses;
//! - [`load_kernel`], [`finalize_cmdline`], [`configure_system`] ([`BootSetup`]),
//!   [`setup_vcpu`] ([`VcpuBoot`]): kernel, boot data and boot registers;
//! - [`kvm_capabilities`]: what `kvm-info` prints.
//!
//! Pure parts of the aarch64 port (Image header, device tree) build on every host so their unit
//! tests run in CI; the KVM parts build only for their own architecture.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::config::{ConfigError, KernelFormat, VmConfig};
use crate::devices::bus::SharedDevice;
use crate::devices::power_button::PowerButton;
use crate::devices::{IrqLine, PlatformRequests};
use crate::vstate::vcpu::Buses;
use crate::vstate::vm::Vm;

pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
use self::aarch64::kvm as imp;
#[cfg(target_arch = "x86_64")]
use self::x86_64 as imp;

/// The in-kernel interrupt controller, kept alive for the VM's lifetime.
pub use self::imp::IrqChip;

/// Whether the interrupt controller is created before the vCPUs (x86: each vCPU then gets an
/// in-kernel LAPIC) or after them (arm64: the vGIC sizes its redistributors by vCPU count).
pub const IRQCHIP_BEFORE_VCPUS: bool = imp::IRQCHIP_BEFORE_VCPUS;

/// The most vCPUs this architecture's boot tables describe.
pub fn max_vcpus() -> u64 {
    imp::max_vcpus()
}

/// Guest RAM regions (address, bytes) for `bytes` of guest memory.
pub fn ram_regions(bytes: u64) -> Vec<(GuestAddress, usize)> {
    imp::ram_regions(bytes)
}

/// Kernel header checks done before KVM is touched; errors name the file and what is wrong.
pub fn check_kernel(format: KernelFormat, path: &Path) -> Result<(), ConfigError> {
    imp::check_kernel(format, path)
}

/// Addresses and interrupts of the platform devices and of `n_virtio` virtio-mmio slots.
pub fn device_map(n_virtio: usize) -> Result<DeviceMap, ArchError> {
    imp::device_map(n_virtio)
}

/// VM-wide setup needed before guest memory is registered (x86: the TSS pages).
pub fn prepare_vm(vm: &Vm) -> Result<(), ArchError> {
    imp::prepare_vm(vm)
}

/// Creates the in-kernel interrupt controller for `vcpus` vCPUs.
pub fn create_irqchip(vm: &Vm, vcpus: u64) -> Result<IrqChip, ArchError> {
    imp::create_irqchip(vm, vcpus)
}

/// Initializes vCPU `id` of `count` right after it is created (arm64: KVM_ARM_VCPU_INIT).
pub fn init_vcpu(vm: &Vm, vcpu: &VcpuFd, id: u64, count: u64) -> Result<(), ArchError> {
    imp::init_vcpu(vm, vcpu, id, count)
}

/// Loads the kernel (and initrd) of `cfg` into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, cfg: &VmConfig) -> Result<LoadedKernel, ArchError> {
    imp::load_kernel(mem, cfg)
}

/// The kernel command line the guest gets: the user's, plus what the architecture announces
/// there (x86: the virtio-mmio devices).
pub fn finalize_cmdline(user: &str, devices: &DeviceMap) -> Result<String, ArchError> {
    imp::finalize_cmdline(user, devices)
}

/// Everything the boot data (device tree, or zero page and ACPI/MP tables) is written from.
pub struct BootSetup<'a> {
    /// Guest memory, with the kernel already loaded.
    pub mem: &'a GuestMemoryMmap,
    /// Every vCPU, created and initialized.
    pub vcpus: &'a [VcpuFd],
    /// The interrupt controller (None for raw test guests).
    pub irqchip: Option<&'a IrqChip>,
    /// Where the kernel and initrd landed.
    pub kernel: &'a LoadedKernel,
    /// Guest RAM size in bytes.
    pub mem_bytes: u64,
    /// The final command line ([`finalize_cmdline`]).
    pub cmdline: &'a str,
    /// The platform and virtio devices to describe.
    pub devices: &'a DeviceMap,
    /// The kernel format (raw test guests get fewer tables).
    pub format: KernelFormat,
}

/// Writes the boot data into guest memory; returns the address the boot vCPU is handed
/// (arm64: the device tree in X0; x86: the zero page in RSI).
pub fn configure_system(setup: &BootSetup) -> Result<u64, ArchError> {
    imp::configure_system(setup)
}

/// What one vCPU's boot registers are set from.
pub struct VcpuBoot<'a> {
    /// The VM (x86 reads the supported CPUID from it).
    pub vm: &'a Vm,
    /// The vCPU to set up.
    pub vcpu: &'a VcpuFd,
    /// Its index, 0 being the boot vCPU.
    pub id: u64,
    /// How many vCPUs the VM has.
    pub count: u64,
    /// Where the kernel landed (its entry point).
    pub kernel: &'a LoadedKernel,
    /// What [`configure_system`] returned.
    pub boot_arg: u64,
    /// The kernel format (x86 real-mode test guests start in real mode).
    pub format: KernelFormat,
    /// Whether the in-kernel interrupt controller exists.
    pub has_irqchip: bool,
}

/// Sets one vCPU's registers (and on x86 its CPUID, MSRs, FPU and LAPIC) for the boot.
pub fn setup_vcpu(boot: &VcpuBoot) -> Result<(), ArchError> {
    imp::setup_vcpu(boot)
}

/// The devices every board has, to be put on the buses by [`attach_platform_devices`].
pub struct PlatformSetup<'a> {
    /// The buses the vCPUs' exits are served from.
    pub buses: &'a mut Buses,
    /// Where each device goes ([`device_map`]).
    pub devices: &'a DeviceMap,
    /// The console UART.
    pub serial: SharedDevice,
    /// The boot-ready signal device.
    pub boot_signal: SharedDevice,
    /// The power button's interrupt line.
    pub button_irq: Arc<dyn IrqLine>,
}

/// What the event loop needs from the platform devices.
pub struct Platform {
    /// The guest's power button, pressed on a graceful shutdown.
    pub power_button: Arc<dyn PowerButton>,
    /// Devices through which the guest asks for power-off or reset (x86: i8042, ACPI PM).
    pub requests: Vec<Arc<dyn PlatformRequests>>,
}

/// Puts the serial port, boot signal, power button and the architecture's own platform devices
/// (arm64: PL031 RTC; x86: ACPI PM, i8042) on the buses.
pub fn attach_platform_devices(setup: PlatformSetup) -> Result<Platform, ArchError> {
    imp::attach_platform_devices(setup)
}

/// Lines for `kvm-info`: the host's KVM features this architecture uses.
pub fn kvm_capabilities(kvm: &Kvm, vm: &Vm) -> Vec<String> {
    imp::kvm_capabilities(kvm, vm)
}

/// One platform device's window and interrupt (GSI: SPI number on arm64, IRQ pin on x86).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSlot {
    /// Base address (guest physical, or an I/O port on x86_64).
    pub addr: u64,
    /// Window length in bytes.
    pub len: u64,
    /// Interrupt number (0 for devices without one).
    pub irq: u32,
}

/// Where the platform devices live. On x86_64 `serial.addr` is an I/O port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMap {
    /// The console UART.
    pub serial: DeviceSlot,
    /// The PL031 RTC (aarch64 only).
    pub rtc: Option<DeviceSlot>,
    /// The boot-ready signal device (no interrupt; an I/O port on x86_64).
    pub boot_signal: DeviceSlot,
    /// The power button's device: a PL061 GPIO controller on aarch64, the ACPI Generic Event
    /// Device's register (an I/O port) on x86_64 (`devices::power_button`).
    pub power_button: DeviceSlot,
    /// One slot per virtio-mmio device, in `builder` order (disks, nets, rng).
    pub virtio: Vec<DeviceSlot>,
}

/// Where the kernel (and initrd) landed in guest memory.
#[derive(Clone, Debug, Default)]
pub struct LoadedKernel {
    /// Entry point (guest physical).
    pub entry: u64,
    /// First byte after the kernel's in-memory footprint.
    pub kernel_end: u64,
    /// Guest address and size of the initrd.
    pub initrd: Option<(u64, u64)>,
    /// bzImage setup header, copied into the zero page.
    #[cfg(target_arch = "x86_64")]
    pub setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

/// An architecture setup failure (KVM ioctl, guest memory, a kernel that does not fit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchError(pub String);

impl fmt::Display for ArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArchError {}

impl ArchError {
    /// "`context`: `err`".
    pub fn new(context: &str, err: impl fmt::Display) -> ArchError {
        ArchError(format!("{context}: {err}"))
    }
}

/// Bytes of the boot-time random seed handed to every guest (arm64 `/chosen/rng-seed`, x86
/// `SETUP_RNG_SEED`): enough for the kernel's CRNG before any device feeds it.
pub const RNG_SEED_LEN: usize = 64;

/// The seeds one boot gets: KASLR offset entropy and the kernel's early RNG seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSeeds {
    /// Non-zero: a zero `kaslr-seed` reads as "no seed" to the kernel.
    pub kaslr: u64,
    /// Mixed into the kernel's CRNG before anything else runs.
    pub rng: [u8; RNG_SEED_LEN],
}

impl BootSeeds {
    /// Fresh seeds from getrandom(2), so no two guests (or two boots of one) share a layout.
    pub fn generate() -> std::io::Result<BootSeeds> {
        let mut kaslr = [0u8; 8];
        let mut rng = [0u8; RNG_SEED_LEN];
        loop {
            random_bytes(&mut kaslr)?;
            if kaslr != [0; 8] {
                break;
            }
        }
        random_bytes(&mut rng)?;
        Ok(BootSeeds {
            kaslr: u64::from_le_bytes(kaslr),
            rng,
        })
    }
}

/// Fills `buf` from the kernel's CRNG (getrandom(2), blocking only until it is initialized).
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, valid for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(std::io::Error::new(e.kind(), format!("getrandom: {e}")));
        }
        done += n as usize;
    }
    Ok(())
}

/// Reads a whole file into guest memory at `addr`, straight from the file into the mapping.
pub(crate) fn load_file_at(
    mem: &vm_memory::GuestMemoryMmap,
    addr: vm_memory::GuestAddress,
    path: &std::path::Path,
    what: &str,
) -> Result<u64, ArchError> {
    use vm_memory::{Bytes, GuestMemoryBackend};
    let mut f = std::fs::File::open(path)
        .map_err(|e| ArchError::new(&format!("{what} {}", path.display()), e))?;
    let len = f
        .metadata()
        .map_err(|e| ArchError::new(&format!("{what} {}", path.display()), e))?
        .len();
    let fits = addr
        .0
        .checked_add(len)
        .is_some_and(|end| end > 0 && mem.address_in_range(vm_memory::GuestAddress(end - 1)));
    if !fits {
        return Err(ArchError(format!(
            "{what} {} ({len} bytes) does not fit in guest memory at {:#x}",
            path.display(),
            addr.0
        )));
    }
    mem.read_exact_volatile_from(addr, &mut f, len as usize)
        .map_err(|e| ArchError::new(&format!("{what} {}", path.display()), e))?;
    Ok(len)
}
