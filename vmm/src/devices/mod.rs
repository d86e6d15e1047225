//! Device models. Nothing here talks to KVM directly: a device sees guest memory
//! (`vm_memory::GuestMemoryMmap`), its register window, and an `IrqLine` to raise its interrupt.
//! That keeps every model unit-testable against plain guest memory, hostile input included.
//!
//! # Wiring (what the VMM core does with each device)
//!
//! Every device is a [`BusDevice`]; the core puts it on a [`bus::Bus`] (one bus for MMIO, one
//! for x86 port I/O) as `Arc<Mutex<_>>` and forwards KVM exits: `bus.read(addr, data)` /
//! `bus.write(addr, data)`, which return false when nothing is mapped there (the core decides:
//! reads of unmapped space give zeros / all ones, writes are dropped). `offset` passed to a
//! device is relative to its base. `Bus::insert(device, base, len)` rejects zero length,
//! overflow and overlap with a [`bus::BusError`] naming both ranges.
//!
//! | device | constructor | where | interrupt | host fd to poll → call |
//! |---|---|---|---|---|
//! | console UART | `serial::Serial::new(&SerialBackend, Arc<dyn IrqLine>) -> Result<_, SerialError>` | x86: port 0x3f8, len 8, IRQ 4. aarch64: MMIO `SERIAL_BASE`, len 0x1000 (registers are bytes at offsets 0..8), DT `compatible = "ns16550a"`, `clock-frequency = <1843200>`, edge SPI | yes | `input_fd() -> Option<RawFd>` readable → `process_input() -> InputState`; on `Closed` stop polling |
//! | PL031 RTC (aarch64) | `rtc_pl031::RtcPl031::new()` | MMIO `RTC_BASE`, len `RTC_WINDOW_SIZE` (0x1000), DT `compatible = "arm,pl031", "arm,primecell"`, clocks `apb_pclk` | none (alarm not modelled) | none |
//! | i8042 (x86) | `i8042::ExitRequest::new() -> io::Result<Arc<ExitRequest>>`, then `i8042::I8042::new(Arc<ExitRequest>)` | port `I8042_PORT_BASE` 0x60, len `I8042_PORT_LEN` 5; add `i8042.dumbkbd` to x86 guest command lines (no keyboard, no IRQ 1: avoids a ~0.4 s probe wait) | none | `ExitRequest::as_raw_fd()` readable (eventfd) → `acknowledge()`, then `reset_requested()` is true: guest reboot |
//! | ACPI power management (x86) | `acpi_pm::SystemRequest::new() -> io::Result<Arc<SystemRequest>>`, then `acpi_pm::AcpiPm::new(Arc<SystemRequest>)` | port `ACPI_PM_PORT` 0x600, len `acpi_pm::LEN` 3 (sleep control, sleep status, reset; named by the FADT) | none | `SystemRequest::as_raw_fd()` readable (eventfd) → `acknowledge()`, then `requested()`: `PowerOff` or `Reset` |
//! | PL061 GPIO (aarch64): the power button | `pl061::Pl061::new(Arc<dyn IrqLine>)`, shared as `Arc<Mutex<_>>` with `pl061::Pl061Button` | MMIO `GPIO_BASE` 0x0903_0000, len 0x1000, DT `compatible = "arm,pl061", "arm,primecell"`, clocks `apb_pclk`, and a `gpio-keys` node with key `poweroff` (KEY_POWER) on line 3 | edge SPI, raised when MIS goes non-zero | none; the event loop calls `press()`, then `release()` 100 ms later |
//! | ACPI GED (x86): the power button | `ged::Ged::new(Arc<dyn IrqLine>) -> Arc<Ged>`; `ged::GedDevice(Arc<Ged>)` on the bus, `ged::GedButton(Arc<Ged>)` to press | port `GED_PORT` 0x610, len 1 (event register, read-to-clear); DSDT `ACPI0013` with `_EVT` -> `Notify(PWRB, 0x80)` | edge, `GED_IRQ` | none; the event loop calls `press()` |
//! | boot signal | `boot_signal::BootSignal::new(vmm_start: Instant)`; `.handle() -> BootReady` for status | x86: port `X86_PORT` 0x3f0, len 1, and the same device at MMIO `X86_MMIO_ADDR` 0xcfff_f000, len 0x1000. aarch64: MMIO `AARCH64_MMIO_ADDR` 0x0902_0000, len 0x1000 | none | none; `BootReady::ready_ms() -> Option<f64>` / `ready_us()` |
//! | virtio-blk | `virtio::block::Block::new(&Path, read_only: bool) -> Result<_, SetupError>` | see virtio below | see below | none |
//! | virtio-net | `virtio::net::Net::new(Box<dyn NetBackend>, mac: [u8; 6])`, backend `virtio::tap::Tap::open(name) -> Result<Tap, SetupError>` (tap must exist); `Net::counters()` before boxing gives shared rx/tx/drop counters | see below | see below | `MmioTransport::rx_fd()`: register with **EPOLLIN \| EPOLLET** (edge-triggered) → `MmioTransport::process_rx()` |
//! | virtio-rng | `virtio::rng::Rng::new() -> Result<_, SetupError>` (opens /dev/urandom) | see below | see below | none |
//!
//! ## virtio devices
//! Each virtio device is wrapped in its transport:
//! `virtio::mmio::MmioTransport::new(mem: GuestMemoryMmap, irq: Arc<dyn IrqLine>, Box<dyn VirtioDevice>)`
//! and the transport goes on the MMIO bus with length [`virtio::MMIO_WINDOW_SIZE`] (0x200; one
//! per 0x200-aligned slot, e.g. `VIRTIO_MMIO_BASE + i * 0x200`), one edge-triggered interrupt
//! each. Announce them to the guest as DT nodes `compatible = "virtio,mmio"`, `reg = <base
//! 0x200>`, `dma-coherent`; on x86 as `virtio_mmio.device=512@0xBASE:IRQ` on the command line
//! (or ACPI `LNRO0005` devices). Queue notifications are handled synchronously inside the
//! vCPU's MMIO write exit (no ioeventfd needed). Keep an `Arc<Mutex<MmioTransport>>` clone
//! for net to serve `rx_fd()` / `process_rx()` from the event loop; it takes the same lock as
//! the vCPU path. `MmioTransport::is_failed()` tells whether the device marked itself failed
//! (DEVICE_NEEDS_RESET) after a driver protocol violation; the VMM keeps running either way.
//!
//! ## Threads and errors
//! Devices are `Send`; the bus serialises accesses per device through its mutex. No device
//! panics on guest input: bad accesses are ignored (reads give zeros), bad requests fail with
//! the protocol's error status, and broken virtqueues mark the device failed. Host-side
//! setup errors (`SerialError`, `SetupError`) name the file, socket or tap at fault.

pub mod acpi_pm;
pub mod boot_signal;
pub mod bus;
pub mod ged;
pub mod i8042;
pub mod pl061;
pub mod power_button;
pub mod rtc_pl031;
pub mod serial;
pub mod virtio;

use std::io;
use std::os::unix::io::RawFd;

/// A device mapped on the MMIO or port-I/O bus. `offset` is relative to the device's base.
/// Accesses of unexpected size or offset must be ignored (reads return zeros), never panic.
pub trait BusDevice: Send {
    /// A guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// An interrupt line a device raises. Implemented by the VM wiring (KVM irqfd / irq_line) and by
/// test doubles that count triggers.
pub trait IrqLine: Send + Sync {
    /// Raises the interrupt (edge).
    fn trigger(&self) -> io::Result<()>;
}

/// What a guest asked of the platform through a power-management device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformRequest {
    /// Power off: the VM ends (exit 0).
    PowerOff,
    /// Reboot: the VM ends and the supervisor decides whether to start it again (exit 3).
    Reset,
}

/// A device through which the guest asks for power-off or reset; it wakes the event loop
/// through an eventfd, so the loop needs no architecture-specific cases.
pub trait PlatformRequests: Send + Sync {
    /// Readable once a request is pending.
    fn event_fd(&self) -> RawFd;
    /// Consumes the wake-up and returns the pending request, if any (it stays set).
    fn take_request(&self) -> Option<PlatformRequest>;
}
