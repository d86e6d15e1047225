//! The x86 interrupt controller handle: a leaf, so that the seam's `BootSetup` can name it
//! without importing the x86_64 module that uses `BootSetup`.

/// Marker that the in-kernel PIC, IOAPIC and PIT exist.
pub struct IrqChip;
