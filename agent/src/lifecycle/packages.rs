//! The lifecycle's view of app packages: download, verify, unpack, remove. Wraps the `fetch`,
//! `package` and `store` modules so the operations read as steps.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::{Fault, FaultCode};
use crate::store::Store;

/// What the lifecycle needs from a package's app config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    pub version: String,
    pub vendor: String,
    pub description: String,
    pub arch: String,
    pub backends: Vec<String>,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub cmdline: String,
    pub command: Vec<String>,
    pub restart: RestartPolicy,
    pub autostart: bool,
    pub run_level: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub enable: bool,
    pub retry_min_wait_s: u32,
    pub retry_max_wait_s: u32,
    pub retry_interval_multiplier: u32,
    pub max_retry_count: u32,
    pub reset_period_s: u32,
}

/// Files of one installed version, under `apps/<app_id>/` and `blobs/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFiles {
    pub app_id: String,
    pub app_dir: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub disk: Option<PathBuf>,
    /// `sha256:<hex>` of every blob this version uses (kept by GC).
    pub blobs: Vec<String>,
}

/// A downloaded package whose digests, signature and config were all checked.
pub struct CheckedPackage {
    pub path: PathBuf,
    pub spec: AppSpec,
    pub manifest_digest: String,
}

pub struct Packages {
    pub store: Store,
    pub trusted_keys_dir: Option<PathBuf>,
    pub download_cap_bytes: u64,
    pub ca_file: Option<PathBuf>,
}

fn not_built(what: &str) -> Fault {
    Fault::new(
        FaultCode::ResourcesExceeded,
        format!("{what}: package support is not built into this agent yet"),
    )
}

impl Packages {
    /// Downloads `url` into `downloads/` (resumable), checking `expected` when given.
    pub fn download(
        &self,
        url: &str,
        expected: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<PathBuf, Fault> {
        let _ = (url, expected, progress);
        Err(not_built("download"))
    }

    /// Verifies every blob, the signature and the config of a downloaded package.
    pub fn check(&self, path: &Path) -> Result<CheckedPackage, Fault> {
        let _ = path;
        Err(not_built("verify"))
    }

    /// Unpacks a checked package into `apps/<app_id>/` and its blobs into the store.
    pub fn unpack(&self, pkg: &CheckedPackage, app_id: &str) -> Result<InstalledFiles, Fault> {
        let _ = (pkg, app_id);
        Err(not_built("unpack"))
    }

    pub fn discard_download(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    /// Removes every download left behind (e.g. by an interrupted install).
    pub fn clear_downloads(&self) {
        if let Ok(rd) = std::fs::read_dir(self.store.downloads_dir()) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    pub fn remove_app(&self, app_id: &str) -> Result<(), Fault> {
        self.store.remove_app_dir(app_id)
    }

    /// Drops blobs no installed version references.
    pub fn gc(&self, keep: &HashSet<String>) -> Result<(), Fault> {
        let digests = keep
            .iter()
            .filter_map(|d| crate::store::Digest::parse(d, "blob").ok())
            .collect();
        self.store.gc(&digests).map(|_| ())
    }
}
