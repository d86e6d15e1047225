//! Harness for end-to-end tests on emulated boards.
//!
//! `BoardVm::boot` starts a board's firmware (built by `make firmware` into
//! `target/firmware/<board>/`) under QEMU with the serial console on a pipe, collects the console
//! output, waits for markers with timeouts, runs shell commands on the console, and forwards TCP
//! ports from 127.0.0.1 into the board. QEMU is always killed when the `BoardVm` is dropped, so a
//! failing assertion never leaves an emulator behind.

#![forbid(unsafe_code)]

pub mod agent;
pub mod bench;
pub mod board_shell;
pub mod console;
pub mod density;
pub mod dns;
pub mod firmware;
pub mod many_apps;
pub mod microvm;
pub mod packages;
pub mod router;
pub mod usp;
pub mod vm;

pub use firmware::{firmware_dir, workspace_root};
pub use vm::{BoardVm, BootOptions};
