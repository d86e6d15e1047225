//! The lifecycle's view of app packages: download, verify, unpack, remove. Wraps the `fetch`,
//! `package` and `store` modules so the operations read as steps.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fault::{Fault, FaultCode};
use crate::fetch::{download_path, fetch, fetch_head, meta_path, part_path, FetchOptions};
use crate::package::head::{peek_config, HEAD_BYTES};
use crate::package::{
    verify_package, AppConfig, Backend as PkgBackend, LayerKind, PackageCaps, TrustedKey,
    VerifiedPackage,
};
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

impl AppSpec {
    pub fn from_config(c: &AppConfig) -> AppSpec {
        let r = &c.restart;
        AppSpec {
            name: c.name.clone(),
            version: c.version.clone(),
            vendor: c.vendor.clone(),
            description: c.description.clone(),
            arch: c.arch.as_str().to_string(),
            backends: c
                .backends
                .iter()
                .map(|b| match b {
                    PkgBackend::Kvm => "kvm".to_string(),
                    PkgBackend::Jail => "jail".to_string(),
                })
                .collect(),
            memory_mib: c.memory_mib,
            vcpus: c.vcpus,
            cmdline: c.cmdline.clone(),
            command: c.command.clone(),
            restart: RestartPolicy {
                enable: r.enable,
                retry_min_wait_s: r.retry_min_wait_s,
                retry_max_wait_s: r.retry_max_wait_s,
                retry_interval_multiplier: r.retry_interval_multiplier,
                max_retry_count: r.max_retry_count,
                reset_period_s: r.reset_period_s,
            },
            autostart: c.autostart,
            run_level: u32::from(c.run_level),
        }
    }
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
    verified: VerifiedPackage,
    pub spec: AppSpec,
    pub manifest_digest: String,
}

pub struct Packages {
    pub store: Store,
    pub trusted_keys_dir: Option<PathBuf>,
    pub download_cap_bytes: u64,
    pub ca_file: Option<PathBuf>,
}

impl Packages {
    fn trusted_keys(&self) -> Result<Vec<TrustedKey>, Fault> {
        let Some(dir) = &self.trusted_keys_dir else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        let rd = std::fs::read_dir(dir).map_err(|e| {
            Fault::new(
                FaultCode::SignatureFailure,
                format!("trusted keys directory {}: {e}", dir.display()),
            )
        })?;
        for entry in rd.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pub") {
                keys.push(TrustedKey::load(&path)?);
            }
            if keys.len() > 64 {
                break;
            }
        }
        Ok(keys)
    }

    fn caps(&self) -> PackageCaps {
        PackageCaps {
            max_package_bytes: self.download_cap_bytes,
            ..PackageCaps::default()
        }
    }

    /// Downloads `url` into `downloads/` (a stable name per URL, so `fetch` resumes a `.part`
    /// within the operation), checking `expected` when given.
    pub fn download(
        &self,
        url: &str,
        expected: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<PathBuf, Fault> {
        let expected_sha256 = expected
            .map(|d| crate::store::Digest::parse(d, "expected digest"))
            .transpose()?;
        let opts = FetchOptions {
            max_bytes: self.download_cap_bytes,
            expected_sha256,
            extra_ca_file: self.ca_file.clone(),
            ..FetchOptions::default()
        };
        let dest = download_path(&self.store.downloads_dir(), url);
        fetch(url, &dest, &opts, progress).map(|f| f.path)
    }

    /// The app config the package at `url` declares in its head, read before downloading it
    /// (unverified: only good for refusing early, see `package::head`). None when the server
    /// or the package does not tell.
    pub fn peek_spec(&self, url: &str) -> Option<AppSpec> {
        let opts = FetchOptions {
            extra_ca_file: self.ca_file.clone(),
            ..FetchOptions::default()
        };
        let head = fetch_head(url, &opts, HEAD_BYTES)?;
        peek_config(&head).map(|c| AppSpec::from_config(&c))
    }

    /// Verifies every blob, the signature and the config of a downloaded package.
    pub fn check(&self, path: &Path) -> Result<CheckedPackage, Fault> {
        let keys = self.trusted_keys()?;
        if keys.is_empty() {
            return Err(Fault::new(
                FaultCode::SignatureFailure,
                match &self.trusted_keys_dir {
                    Some(d) => format!("no trusted signer keys (*.pub) in {}", d.display()),
                    None => "no trusted signer keys are configured (trusted_keys_dir)".into(),
                },
            ));
        }
        let verified = verify_package(path, &keys, &self.caps())?;
        let spec = AppSpec::from_config(&verified.config);
        Ok(CheckedPackage {
            path: path.to_path_buf(),
            spec,
            manifest_digest: verified.manifest_digest.to_string(),
            verified,
        })
    }

    /// Copies a checked package's blobs into the store and creates its `apps/<app_id>/`.
    pub fn unpack(&self, pkg: &CheckedPackage, app_id: &str) -> Result<InstalledFiles, Fault> {
        let unpacked = pkg.verified.unpack(&self.store)?;
        let app_dir = self.store.create_app_dir(app_id)?;
        Ok(InstalledFiles {
            app_id: app_id.to_string(),
            app_dir,
            kernel: unpacked.layer_path(&self.store, LayerKind::Kernel),
            initrd: unpacked.layer_path(&self.store, LayerKind::Initrd),
            rootfs: unpacked.layer_path(&self.store, LayerKind::Rootfs),
            disk: unpacked.layer_path(&self.store, LayerKind::Disk),
            blobs: unpacked.blobs().iter().map(|d| d.to_string()).collect(),
        })
    }

    pub fn discard_download(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    /// Removes every download left behind except the partial download of `url`: an install or
    /// update cut by a crash or power loss is rolled back, and the operator's retry of the same
    /// URL resumes from the `.part` instead of starting over. At most one part is kept: every
    /// operation clears the others when it starts. The kept part is only ever resumed by a
    /// download of the same URL, and its digest is checked like any other download.
    pub fn clear_downloads_except_part(&self, url: &str) {
        let dest = download_path(&self.store.downloads_dir(), url);
        let part = part_path(&dest);
        // An empty part saves nothing: drop it with its meta.
        let has_data = std::fs::metadata(&part).is_ok_and(|m| m.len() > 0);
        let keep = if has_data {
            vec![part, meta_path(&dest)]
        } else {
            Vec::new()
        };
        if let Ok(rd) = std::fs::read_dir(self.store.downloads_dir()) {
            for e in rd.flatten() {
                if !keep.contains(&e.path()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
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
