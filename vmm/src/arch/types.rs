//! The types the architecture seam (`arch`) and every architecture module share: what the
//! boot steps are given and return, the device map, the error, the boot seeds. A leaf below
//! both, so that an architecture module can name them without importing the seam that calls it.

use std::fmt;
use std::sync::Arc;

use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

#[cfg(target_arch = "aarch64")]
use super::aarch64::gic::IrqChip;
#[cfg(target_arch = "x86_64")]
use super::x86_64::irqchip::IrqChip;
use crate::config::KernelFormat;
use crate::devices::bus::SharedDevice;
use crate::devices::power_button::PowerButton;
use crate::devices::{IrqLine, PlatformRequests};
use crate::vstate::vcpu::Buses;
use crate::vstate::vm::Vm;

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
    /// The final command line ([`finalize_cmdline`](super::finalize_cmdline)).
    pub cmdline: &'a str,
    /// The platform and virtio devices to describe.
    pub devices: &'a DeviceMap,
    /// The kernel format (raw test guests get fewer tables).
    pub format: KernelFormat,
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
    /// What [`configure_system`](super::configure_system) returned.
    pub boot_arg: u64,
    /// The kernel format (x86 real-mode test guests start in real mode).
    pub format: KernelFormat,
    /// Whether the in-kernel interrupt controller exists.
    pub has_irqchip: bool,
}

/// The devices every board has, to be put on the buses by
/// [`attach_platform_devices`](super::attach_platform_devices).
pub struct PlatformSetup<'a> {
    /// The buses the vCPUs' exits are served from.
    pub buses: &'a mut Buses,
    /// Where each device goes ([`device_map`](super::device_map)).
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

/// A platform device that did not fit on its bus (both arches' `attach_platform_devices`).
impl From<crate::devices::bus::BusError> for ArchError {
    fn from(e: crate::devices::bus::BusError) -> ArchError {
        ArchError::new("device bus", e)
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

/// Checks that `len` bytes at `addr` lie in guest memory.
fn check_fits(
    mem: &vm_memory::GuestMemoryMmap,
    addr: u64,
    len: u64,
    what: &str,
) -> Result<(), ArchError> {
    use vm_memory::GuestMemoryBackend;
    let fits = addr
        .checked_add(len)
        .is_some_and(|end| end > 0 && mem.address_in_range(vm_memory::GuestAddress(end - 1)));
    if !fits {
        return Err(ArchError(format!(
            "{what} ({len} bytes) does not fit in guest memory at {addr:#x}"
        )));
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
    use vm_memory::Bytes;
    let what = format!("{what} {}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| ArchError::new(&what, e))?;
    let len = f.metadata().map_err(|e| ArchError::new(&what, e))?.len();
    check_fits(mem, addr.0, len, &what)?;
    mem.read_exact_volatile_from(addr, &mut f, len as usize)
        .map_err(|e| ArchError::new(&what, e))?;
    Ok(len)
}

/// Puts `len` bytes of `file` from `offset` at guest `addr`, as a copy would leave them, but
/// with every whole page mapped copy-on-write from the file ([`map_file_private`]) instead of
/// copied: guests booting the same file share those pages in the host page cache until they
/// write one. Pages the range covers only in part are copied, except the one holding the end of
/// the file, which is mapped too (past the end of a file a mapping reads zero, as untouched RAM
/// does). Nothing is mapped when `addr` and `offset` differ modulo the page size. Where mmap
/// refuses (a file system that cannot map files) the bytes are copied and the log says so.
/// Returns the bytes mapped.
///
/// [`map_file_private`]: crate::vstate::memory::map_file_private
pub(crate) fn place_file_range(
    mem: &vm_memory::GuestMemoryMmap,
    addr: u64,
    file: &mut std::fs::File,
    offset: u64,
    len: u64,
    what: &str,
) -> Result<u64, ArchError> {
    use crate::vstate::memory::{map_file_private, MapFileError, PAGE_SIZE};
    use std::io::{Seek, SeekFrom};
    use vm_memory::{Bytes, GuestAddress};
    let copy = |file: &mut std::fs::File, at: u64, n: u64| -> Result<(), ArchError> {
        if n == 0 {
            return Ok(());
        }
        file.seek(SeekFrom::Start(offset + (at - addr)))
            .and_then(|_| {
                mem.read_exact_volatile_from(GuestAddress(at), file, n as usize)
                    .map_err(std::io::Error::other)
            })
            .map_err(|e| ArchError::new(what, e))
    };
    check_fits(mem, addr, len, what)?;
    let file_len = file.metadata().map_err(|e| ArchError::new(what, e))?.len();
    let end = addr + len;
    if offset.checked_add(len).is_none_or(|e| e > file_len) {
        return Err(ArchError(format!(
            "{what}: {len} bytes from offset {offset:#x} run past the end of the file ({file_len} bytes)"
        )));
    }
    let page_up = |a: u64| a.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let body_start = page_up(addr);
    // The last page may be mapped only if nothing of the file follows the range in it.
    let body_end = match offset + len == file_len {
        true => page_up(end),
        false => end / PAGE_SIZE * PAGE_SIZE,
    };
    if addr % PAGE_SIZE != offset % PAGE_SIZE || body_end <= body_start {
        copy(file, addr, len)?;
        return Ok(0);
    }
    // The mapped length stops at the end of the range: past it, in the last page, a mapping
    // reads zero (the end of the file).
    let body_len = end.min(body_end) - body_start;
    copy(file, addr, body_start - addr)?;
    let mapped = match map_file_private(
        mem,
        GuestAddress(body_start),
        file,
        offset + (body_start - addr),
        body_len,
    ) {
        Ok(()) => body_len,
        Err(MapFileError::Mmap(e)) => {
            crate::log(&format!(
                "{what}: cannot map it copy-on-write ({e}); copying it into guest memory instead"
            ));
            copy(file, body_start, body_len)?;
            0
        }
        // Across two memory regions (x86 RAM split at the MMIO gap): a copy handles that.
        Err(MapFileError::BadRange(_)) => {
            copy(file, body_start, body_len)?;
            0
        }
        Err(e @ MapFileError::Restore(_)) => return Err(ArchError::new(what, e)),
    };
    copy(file, body_start + body_len, end - (body_start + body_len))?;
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{create_guest_memory, tests::vma};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

    #[test]
    fn a_whole_file_is_mapped_to_its_last_page_as_the_kernel_image_is() {
        let bytes: Vec<u8> = (0..0x3a00usize).map(|i| (i % 253) as u8 | 1).collect();
        let p = std::env::temp_dir().join(format!("cpv-place-{}", std::process::id()));
        std::fs::write(&p, &bytes).unwrap();
        let mem = create_guest_memory(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        let len = bytes.len() as u64;
        assert_eq!(
            place_file_range(&mem, 0x8_0000, &mut f, 0, len, "kernel").unwrap(),
            len
        );
        let host = mem.get_host_address(GuestAddress(0x8_0000)).unwrap();
        assert_ne!(vma(host, 0x4000).inode, 0, "all four pages from the file");
        let mut got = vec![0u8; 0x4000];
        mem.read_slice(&mut got, GuestAddress(0x8_0000)).unwrap();
        assert_eq!(got[..bytes.len()], bytes[..]);
        assert!(got[bytes.len()..].iter().all(|&b| b == 0), "past EOF");
        // Not congruent with its file offset: copied, nothing mapped.
        assert_eq!(
            place_file_range(&mem, 0x2_0100, &mut f, 0, len, "kernel").unwrap(),
            0
        );
        let mut got = vec![0u8; bytes.len()];
        mem.read_slice(&mut got, GuestAddress(0x2_0100)).unwrap();
        assert_eq!(got, bytes);
        // Past the end of guest memory: the same error a copy gives.
        let e = place_file_range(&mem, 0xf_f000, &mut f, 0, len, "kernel").unwrap_err();
        assert!(e.0.contains("does not fit in guest memory"), "{e}");
        std::fs::remove_file(&p).unwrap();
    }
}
