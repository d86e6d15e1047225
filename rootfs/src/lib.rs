//! cpevisor's reproducible image builder: board firmware (kernel + initramfs) today, guest app
//! images later, from the same deterministic pieces.

#![forbid(unsafe_code)]

pub mod app_tree;
pub mod board_spec;
pub mod cpio;
pub mod erofs;
pub mod firmware;
pub mod guest;
pub mod modules;

pub use cpio::{CpioError, Initramfs};
pub use firmware::{
    build_firmware, install_modules, FirmwareError, FirmwareInputs, FirmwareSpec, KernelPackage,
    Manifest,
};
pub use modules::{DependencyIndex, Module, ModuleError, ModulePlan};
