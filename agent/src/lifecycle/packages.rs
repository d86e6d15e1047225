//! The lifecycle's view of app packages: download, verify, unpack, remove. Wraps the `fetch`,
//! `package` and `store` modules so the operations read as steps.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::DownloadLimits;
use crate::fault::{Fault, FaultCode};
use crate::fetch::{download_path, fetch, fetch_head, meta_path, part_path, FetchOptions};
use crate::package::head::{peek_config, HEAD_BYTES};
use crate::package::{
    verify_package, AppConfig, Backend as PkgBackend, HealthCheck, LayerKind, PackageCaps,
    RestartPolicy, TrustedKey, VerifiedPackage,
};
use crate::store::{Digest, Store};

/// What the lifecycle needs from a package's app config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    /// App name (`AppConfig.name`).
    pub name: String,
    /// App version (`AppConfig.version`).
    pub version: String,
    /// Vendor (`AppConfig.vendor`).
    pub vendor: String,
    /// Description (`AppConfig.description`).
    pub description: String,
    /// Architecture as the config spells it (`aarch64`, ...).
    pub arch: String,
    /// Backends the app supports: `kvm`, `jail`.
    pub backends: Vec<String>,
    /// Declared memory, MiB.
    pub memory_mib: u32,
    /// vCPUs of a microVM.
    pub vcpus: u32,
    /// Guest kernel command line (kvm backend).
    pub cmdline: String,
    /// argv of the app inside the jail (jail backend).
    pub command: Vec<String>,
    /// AutoRestart policy, as the package declared it (the same type in state.json).
    pub restart: RestartPolicy,
    /// Start the app at install and at boot.
    pub autostart: bool,
    /// TR-181 `RunLevel`.
    pub run_level: u32,
    /// None: the agent's default. (Absent in state files written before it existed.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_deadline_s: Option<u32>,
    /// Health probe, if the package declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// The package's stop deadline; None: the agent's default (state files from before the
    /// field read as None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout_ms: Option<u32>,
    /// The package's network section; None: a link and no rules (and in state files from
    /// before the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::package::network::NetworkConfig>,
    /// Declared flash, MiB (`AppConfig.disk_mib`); None: undeclared (also in state files
    /// from before the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mib: Option<u32>,
}

impl AppSpec {
    /// The lifecycle's copy of a validated app config.
    pub fn from_config(c: &AppConfig) -> AppSpec {
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
            restart: c.restart.clone(),
            autostart: c.autostart,
            run_level: u32::from(c.run_level),
            start_deadline_s: c.start_deadline_s,
            health: c.health.clone(),
            stop_timeout_ms: c.stop_timeout_ms,
            network: c.network.clone(),
            disk_mib: c.disk_mib,
        }
    }
}

/// Files of one installed version, under `apps/<app_id>/` and `blobs/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFiles {
    /// Name of the version's directory under `apps/` (`Store::create_app_dir`).
    pub app_id: String,
    /// That directory (holds the extracted `rootfs/` of a jail app).
    pub app_dir: PathBuf,
    /// Kernel layer blob in the store, if the package has one.
    pub kernel: Option<PathBuf>,
    /// Initrd layer blob in the store, if the package has one.
    pub initrd: Option<PathBuf>,
    /// Rootfs layer blob (tar) in the store, if the package has one.
    pub rootfs: Option<PathBuf>,
    /// Root file system image blob in the store (a kvm guest's read-only first disk, used in
    /// place: every DU of every app with the same image shares the one file), if the package
    /// has one. Absent in the records of agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_image: Option<PathBuf>,
    /// A jail app's root as an erofs image blob in the store, mounted read-only at each start
    /// and never extracted (`supervise::jail::root`); None for a tar rootfs. Absent in the
    /// records of agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_erofs: Option<PathBuf>,
    /// The app's private data disk in its data directory, made from the package's disk layer; None
    /// without one.
    pub disk: Option<PathBuf>,
    /// `sha256:<hex>` of every blob this version uses (kept by GC).
    pub blobs: Vec<String>,
}

/// A downloaded package whose digests, signature and config were all checked.
pub struct CheckedPackage {
    /// The downloaded package file.
    pub path: PathBuf,
    verified: VerifiedPackage,
    /// The app config as the lifecycle keeps it.
    pub spec: AppSpec,
    /// `sha256:<hex>` of the package manifest (becomes `DeploymentUnit.manifest_digest`).
    pub manifest_digest: String,
}

/// Packages on flash: downloads, checks, unpacks and removes them, over the blob store.
pub struct Packages {
    /// The content-addressed store (blobs, app directories, downloads).
    pub store: Store,
    /// Directory of the trusted signer keys (`*.pub`); None, or one without keys, refuses every
    /// package.
    pub trusted_keys_dir: Option<PathBuf>,
    /// Largest package a download may bring, bytes.
    pub download_cap_bytes: u64,
    /// Extra CA certificates (PEM) for HTTPS package servers, beside the firmware's CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Deadlines and minimum rates of package downloads.
    pub limits: DownloadLimits,
}

/// Name of an app's private data disk in its data directory.
pub const DATA_DISK: &str = "disk.img";

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
            .map(|d| crate::store::parse_digest(d, "expected digest"))
            .transpose()?;
        let opts = FetchOptions {
            max_bytes: self.download_cap_bytes,
            expected_sha256,
            extra_ca_file: self.ca_file.clone(),
            limits: self.limits.download(),
            ..FetchOptions::default()
        };
        let dest = download_path(&self.store.downloads_dir(), url);
        fetch(url, &dest, &opts, progress).map(|f| f.path)
    }

    /// The app config the package at `url` declares in its head, read before downloading it
    /// (unverified: only good for refusing early, see `package::head`). None when the server
    /// or the package does not tell; an error (7033, naming the URL and the bound) when the
    /// server is too slow to send the head within the probe's deadline and minimum rate.
    pub fn peek_spec(&self, url: &str) -> Result<Option<AppSpec>, Fault> {
        let opts = FetchOptions {
            extra_ca_file: self.ca_file.clone(),
            limits: self.limits.probe(),
            ..FetchOptions::default()
        };
        let Some(head) = fetch_head(url, &opts, HEAD_BYTES)? else {
            return Ok(None);
        };
        Ok(peek_config(&head).map(|c| AppSpec::from_config(&c)))
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

    /// Every blob a checked package will put in the store (what GC must keep while it is
    /// being unpacked and not yet committed).
    pub fn blob_digests(&self, pkg: &CheckedPackage) -> Vec<String> {
        let v = &pkg.verified;
        let mut out = vec![
            v.manifest_digest.to_string(),
            v.config_blob.digest.to_string(),
        ];
        out.extend(v.layers.values().map(|b| b.digest.to_string()));
        out
    }

    /// Copies a checked package's blobs into the store and creates its `apps/<app_id>/`.
    /// With `extract_rootfs` (jail apps) a tar rootfs layer is extracted there now, at install,
    /// so that a start does no extraction; an erofs root image is not (it is mounted as it is). `disk` is left to [`Packages::make_data_disk`]:
    /// this sets it to None.
    pub fn unpack(
        &self,
        pkg: &CheckedPackage,
        app_id: &str,
        extract_rootfs: bool,
    ) -> Result<(InstalledFiles, Option<Digest>), Fault> {
        let unpacked = pkg.verified.unpack(&self.store)?;
        let app_dir = self.store.create_app_dir(app_id)?;
        let rootfs = unpacked.layer_path(&self.store, LayerKind::Rootfs);
        if let (true, Some(layer)) = (extract_rootfs, &rootfs) {
            let dest = app_dir.join("rootfs");
            if !dest.is_dir() {
                crate::package::extract_layer(layer, &dest, &crate::package::LayerCaps::default())?;
            }
        }
        let files = InstalledFiles {
            app_id: app_id.to_string(),
            app_dir,
            kernel: unpacked.layer_path(&self.store, LayerKind::Kernel),
            initrd: unpacked.layer_path(&self.store, LayerKind::Initrd),
            rootfs,
            rootfs_image: unpacked.layer_path(&self.store, LayerKind::RootfsImage),
            rootfs_erofs: unpacked.layer_path(&self.store, LayerKind::RootfsErofs),
            disk: None,
            blobs: unpacked.blobs().iter().map(|d| d.to_string()).collect(),
        };
        Ok((files, unpacked.layers.get(&LayerKind::Disk).copied()))
    }

    /// The path of the DU's private data disk in its data directory `data_id`.
    pub fn data_disk_path(&self, data_id: &str) -> Result<PathBuf, Fault> {
        Ok(self.store.app_dir(data_id)?.join(DATA_DISK))
    }

    /// Makes the DU's private, writable copy of its package's disk blob in its data directory
    /// (created if needed). An existing copy is kept: it is the app's data (an update keeps
    /// it; so does a reinstall after an uninstall that kept the data). Returns the path and
    /// whether it was created now.
    pub fn make_data_disk(&self, data_id: &str, blob: &Digest) -> Result<(PathBuf, bool), Fault> {
        let path = self.data_disk_path(data_id)?;
        if path.is_file() {
            return Ok((path, false));
        }
        self.store.create_app_dir(data_id)?;
        self.store.copy_blob_to(blob, &path)?;
        Ok((path, true))
    }

    /// The private data disk of a DU an older agent installed, whose app wrote into the blob
    /// itself: that blob's current bytes are its data, copied as they are.
    pub fn make_data_disk_from_legacy(
        &self,
        data_id: &str,
        blob: &Digest,
    ) -> Result<PathBuf, Fault> {
        let path = self.data_disk_path(data_id)?;
        if !path.is_file() {
            self.store.create_app_dir(data_id)?;
            self.store.copy_blob_as_is(blob, &path)?;
        }
        Ok(path)
    }

    /// Removes a downloaded package file (errors ignored: a leftover is cleaned up later).
    pub fn discard_download(&self, path: &Path) {
        let _ = std::fs::remove_file(path);
    }

    /// Removes every download left behind except the partial download of `url` and the files
    /// of the downloads in `busy` (URLs other operations are downloading now): an install or
    /// update cut by a crash or power loss is rolled back, and the operator's retry of the same
    /// URL resumes from the `.part` instead of starting over. The kept part is only ever
    /// resumed by a download of the same URL, and its digest is checked like any other
    /// download.
    pub fn clear_downloads_except_part(&self, url: &str, busy: &[String]) {
        let dir = self.store.downloads_dir();
        let dest = download_path(&dir, url);
        let part = part_path(&dest);
        // An empty part saves nothing: drop it with its meta.
        let has_data = std::fs::metadata(&part).is_ok_and(|m| m.len() > 0);
        let mut keep = if has_data {
            vec![part, meta_path(&dest)]
        } else {
            Vec::new()
        };
        for other in busy.iter().filter(|u| *u != url) {
            let d = download_path(&dir, other);
            keep.extend([part_path(&d), meta_path(&d), d]);
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
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

    /// Removes an app version's directory under `apps/`.
    pub fn remove_app(&self, app_id: &str) -> Result<(), Fault> {
        self.store.remove_app_dir(app_id)
    }

    /// Drops blobs no installed version references.
    pub fn gc(&self, keep: &HashSet<String>) -> Result<(), Fault> {
        let digests = keep
            .iter()
            .filter_map(|d| crate::store::parse_digest(d, "blob").ok())
            .collect();
        self.store.gc(&digests).map(|_| ())
    }
}
