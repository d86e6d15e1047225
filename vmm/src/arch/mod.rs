//! The architecture seam. Each architecture module offers the same functions, re-exported here:
//!
//! - `ram_regions(bytes)`: guest RAM layout;
//! - `check_kernel(format, path)`: header checks before KVM is touched;
//! - `device_map(n_virtio)`: addresses and interrupt numbers of the platform devices;
//! - `prepare_vm(vm)`, `create_irqchip(vm, vcpus)` (see `IRQCHIP_BEFORE_VCPUS`);
//! - `load_kernel(mem, config)`: kernel + initrd into guest memory;
//! - `init_vcpu(vm, vcpu, id, n)`, `configure_system(...)`, `setup_boot_regs(...)`;
//! - `kvm_capabilities(kvm)`: what `kvm-info` prints.
//!
//! Pure parts of the aarch64 port (Image header, device tree) build on every host so their unit
//! tests run in CI; the KVM parts build only for their own architecture.

use std::fmt;

pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use self::aarch64::kvm::*;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;

/// One platform device's window and interrupt (GSI: SPI number on arm64, IRQ pin on x86).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSlot {
    pub addr: u64,
    pub len: u64,
    pub irq: u32,
}

/// Where the platform devices live. On x86_64 `serial.addr` is an I/O port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMap {
    pub serial: DeviceSlot,
    pub rtc: Option<DeviceSlot>,
    /// The boot-ready signal device (no interrupt; an I/O port on x86_64).
    pub boot_signal: DeviceSlot,
    /// The power button's device: a PL061 GPIO controller on aarch64, the ACPI Generic Event
    /// Device's register (an I/O port) on x86_64 (`devices::power_button`).
    pub power_button: DeviceSlot,
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
