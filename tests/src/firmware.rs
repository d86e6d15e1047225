//! Where the build puts things the tests need.

use std::path::{Path, PathBuf};

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

/// `target/firmware/<board>/`: `kernel` and `initramfs.cpio.gz`, written by `make firmware`.
pub fn firmware_dir(board: &str) -> PathBuf {
    workspace_root().join("target/firmware").join(board)
}

/// Multiplier for every timeout, for slow machines (`CPEVISOR_TIMEOUT_SCALE=2`).
pub fn timeout_scale() -> f64 {
    std::env::var("CPEVISOR_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}
