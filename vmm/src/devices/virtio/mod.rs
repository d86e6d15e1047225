//! virtio devices over the virtio-mmio transport (version 2, modern only: no PCI, because
//! GICv2 router SoCs have no MSI).
//!
//! - `mmio`  the transport: the register window the guest driver programs.
//! - `chain` our checks on top of `virtio-queue`: every descriptor chain is validated (length,
//!   loops, bounds, direction) before a device touches a byte of it.
//! - `balloon`, `block`, `net` (+ `tap`), `rng`: the devices.

pub mod balloon;
pub mod block;
pub mod chain;
pub mod mmio;
pub mod net;
pub mod rng;
pub mod tap;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::IrqLine;

/// Size of one device's register window (0x100 of transport registers, then config space).
pub const MMIO_WINDOW_SIZE: u64 = 0x200;

/// `VIRTIO_F_VERSION_1`: every device offers it and the driver must accept it.
pub const FEATURE_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

/// Bits of the transport's InterruptStatus register.
pub const INTERRUPT_USED_RING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// Interrupt status bit: the configuration changed.
pub const INTERRUPT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// A device's way to interrupt the guest: sets InterruptStatus bits, then raises the line.
/// Shared by the transport (which reads and acknowledges the bits) and the device.
#[derive(Clone)]
pub struct VirtioInterrupt {
    status: Arc<AtomicU32>,
    line: Arc<dyn IrqLine>,
}

impl VirtioInterrupt {
    /// Interrupts raised on `line`.
    pub fn new(line: Arc<dyn IrqLine>) -> Self {
        VirtioInterrupt {
            status: Arc::new(AtomicU32::new(0)),
            line,
        }
    }

    /// "The device used buffers in a queue."
    pub fn signal_used_ring(&self) {
        self.raise(INTERRUPT_USED_RING);
    }

    /// "The device configuration (or its status: DEVICE_NEEDS_RESET) changed."
    pub fn signal_config(&self) {
        self.raise(INTERRUPT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.line.trigger() {
            crate::log(&format!("virtio: cannot raise interrupt: {e}"));
        }
    }

    pub(crate) fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub(crate) fn acknowledge(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub(crate) fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActiveQueues {
    /// Guest memory the queues live in.
    pub mem: GuestMemoryMmap,
    /// One per entry of `VirtioDevice::queue_max_sizes`, configured and checked by the
    /// transport (ready, sizes valid, rings inside guest memory).
    pub queues: Vec<Queue>,
    /// To signal the driver.
    pub interrupt: VirtioInterrupt,
}

impl ActiveQueues {
    /// Serves every chain the driver made available on queue `index`: `serve` handles one
    /// (validated) chain and says how many bytes it wrote into it; each chain goes back to the
    /// driver with that length, and the driver is signalled once if any did. What block, rng
    /// and net TX do with a notified queue.
    pub fn serve_queue(
        &mut self,
        index: usize,
        mut serve: impl FnMut(&GuestMemoryMmap, &chain::Chain) -> u32,
    ) -> Result<(), DeviceError> {
        let queue = self.queues.get_mut(index).ok_or(DeviceError::NotActive)?;
        let mut used_any = false;
        while let Some(c) = chain::pop_chain(queue, &self.mem)? {
            let written = serve(&self.mem, &c);
            chain::complete(queue, &self.mem, c.head, written)?;
            used_any = true;
        }
        if used_any {
            self.interrupt.signal_used_ring();
        }
        Ok(())
    }
}

/// A failure that makes the device unusable until the driver resets it. The transport reacts
/// by setting DEVICE_NEEDS_RESET and raising a configuration interrupt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// The driver broke the virtqueue protocol (bad ring index, malformed chain structure,
    /// descriptors outside guest memory...). The text says what was wrong.
    Protocol(String),
    /// The host side failed in a way the device cannot report per request.
    Backend(String),
    /// A queue index the device does not have, or a call before activation.
    NotActive,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Protocol(s) => write!(f, "driver protocol violation: {s}"),
            DeviceError::Backend(s) => write!(f, "backend failure: {s}"),
            DeviceError::NotActive => write!(f, "device not activated"),
        }
    }
}

impl std::error::Error for DeviceError {}

impl From<chain::ChainError> for DeviceError {
    fn from(e: chain::ChainError) -> Self {
        DeviceError::Protocol(e.to_string())
    }
}

/// A virtio device model, independent of the transport.
pub trait VirtioDevice: Send {
    /// virtio device ID (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;

    /// Maximum size of each queue (powers of two); the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// How many of the queues (the first ones) the driver sets up with the accepted features;
    /// the transport activates those only. A device whose queues depend on features (balloon:
    /// Linux numbers the queues of negotiated features only) says so here.
    fn queues_in_use(&self) -> usize {
        self.queue_max_sizes().len()
    }

    /// Feature bits the device offers (always including `FEATURE_VERSION_1`).
    fn features(&self) -> u64;

    /// The features the driver accepted (a subset of `features()`), before activation.
    fn ack_features(&mut self, _features: u64) {}

    /// Reads device configuration space at `offset`. Out-of-range bytes read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device configuration space. Devices without writable config ignore it.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// Starts the device with its configured queues.
    fn activate(&mut self, active: ActiveQueues) -> Result<(), DeviceError>;

    /// The driver notified queue `index`: process what it made available.
    fn process_queue(&mut self, index: usize) -> Result<(), DeviceError>;

    /// Back to the pre-activation state (driver wrote 0 to Status). Host resources (file,
    /// tap) are kept.
    fn reset(&mut self);

    /// A host fd whose readability means input for the guest (net: the tap).
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    /// Called when `rx_fd()` is readable.
    fn process_rx(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}

/// Errors from host-side setup of a device (opening an image, a tap...), named for the user.
#[derive(Debug)]
pub struct SetupError {
    /// What was being opened (file, tap, device).
    pub what: String,
    /// The OS error.
    pub source: io::Error,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
