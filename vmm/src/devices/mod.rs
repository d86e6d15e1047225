//! Device models. Nothing here talks to KVM directly: a device sees guest memory
//! (`vm_memory::GuestMemoryMmap`), its register window, and an `IrqLine` to raise its interrupt.
//! That keeps every model unit-testable against plain guest memory, hostile input included.

pub mod bus;

use std::io;

/// A device mapped on the MMIO or port-I/O bus. `offset` is relative to the device's base.
/// Accesses of unexpected size or offset must be ignored (reads return zeros), never panic.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// An interrupt line a device raises. Implemented by the VM wiring (KVM irqfd / irq_line) and by
/// test doubles that count triggers.
pub trait IrqLine: Send + Sync {
    fn trigger(&self) -> io::Result<()>;
}
