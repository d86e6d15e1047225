//! cpevisor's reproducible image builder: board firmware (kernel + initramfs) today, guest app
//! images later, from the same deterministic pieces.

pub mod cpio;
pub mod modules;

pub use cpio::{CpioError, Initramfs};
pub use modules::{DependencyIndex, Module, ModuleError, ModulePlan};
