//! The flash store under the agent's state directory.
//!
//! ```text
//! <state>/blobs/sha256/<hex>   content-addressed package blobs (kernel, initrd, rootfs, ...)
//! <state>/apps/<uuid>/         per-DeploymentUnit files (unpacked rootfs, data disk, ...)
//! <state>/downloads/           packages being fetched (`<name>.part` kept for resume)
//! <state>/tmp/                 temporary files, emptied on open (same filesystem: rename works)
//! ```
//!
//! Every write that must survive power loss goes temp file -> fsync -> rename -> fsync dir, and
//! passes through [`persist_point`] so crash-injection tests can kill the process at each step.

mod atomic;
mod blobs;
mod crash;
mod digest;

pub use atomic::{atomic_write, fsync_dir, io_fault, read_json, write_json};
pub use blobs::{Store, APPS_DIR, BLOBS_DIR, DOWNLOADS_DIR, TMP_DIR};
pub use crash::{persist_point, CRASH_AT_ENV, CRASH_TRACE_ENV};
pub(crate) use digest::clip;
pub use digest::{from_hex, parse_digest, to_hex, Digest, Sha256Writer};
