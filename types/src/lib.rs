//! The types several cpevisor crates agree on, each defined once: interface names (`IfName`),
//! sha256 digests and hex (`digest`), signing key ids (`digest::signing_key_id`, with the
//! `sha2` feature) and the VM description the agent writes and the VMM reads (`vm`).
//!
//! Parsing and formatting only: checks that need the host (a file exists, a tap exists) stay
//! with the crate that has the host.

#![forbid(unsafe_code)]

mod clip;
pub mod digest;
pub mod ifname;
pub mod vm;

pub use clip::clip;
pub use digest::{from_hex, to_hex, DigestError, Sha256Digest};
pub use ifname::{IfName, IfNameError};
