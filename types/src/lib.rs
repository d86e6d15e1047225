//! The types several cpevisor crates agree on, each defined once: interface names (`IfName`),
//! sha256 digests and hex (`digest`), signing key ids (`digest::signing_key_id`, with the
//! `sha2` feature) and the VM description the agent writes and the VMM reads (`vm`).
//!
//! Parsing and formatting only: checks that need the host (a file exists, a tap exists) stay
//! with the crate that has the host.

#![forbid(unsafe_code)]

pub mod digest;
pub mod ifname;
pub mod vm;

pub use digest::{from_hex, to_hex, DigestError, Sha256Digest};
pub use ifname::{IfName, IfNameError};

/// Keeps a peer's text short in error messages (80 bytes, cut on a character boundary).
pub fn clip(text: &str) -> String {
    const MAX: usize = 80;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
