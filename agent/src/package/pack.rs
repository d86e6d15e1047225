//! Building a signed `.cpkg` from a directory holding `app.json` and the files it names.
//!
//! `app.json` is the app config plus the optional keys `kernel`, `initrd`, `rootfs`, `disk`,
//! `rootfs_image`, `rootfs_erofs`, each a file name relative to the directory (`rootfs_erofs`
//! may also name a directory or a tar, made into the image here: `pack_erofs`). The output is byte-for-byte reproducible:
//! entries sorted, mtime 0, uid/gid 0, canonical JSON.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Component, Path, PathBuf};

use super::config::AppConfig;
use super::keys::{key_id, sign_manifest, SigningKey};
use super::oci::{self, Descriptor, Index, LayerKind, Manifest, OciLayout};
use super::tar::TarWriter;
use crate::fault::{Fault, FaultCode};
use crate::store::{fsync_dir, io_fault, to_hex, Digest, Sha256Writer};

/// The app config file `pack` reads from the package source directory.
pub const APP_FILE: &str = "app.json";
const MAX_APP_FILE: u64 = 64 << 10;

/// What [`pack_dir`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// The package file written.
    pub path: PathBuf,
    /// Digest of its manifest (what the signature covers).
    pub manifest_digest: Digest,
    /// Its size, bytes.
    pub size: u64,
    /// Key id of the signing key.
    pub signer: String,
}

fn invalid(msg: impl Into<String>) -> Fault {
    Fault::new(FaultCode::InvalidArguments, msg.into())
}

/// Hashes a file without loading it.
fn hash_file(path: &Path) -> Result<(Digest, u64), Fault> {
    let mut f = File::open(path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let mut w = Sha256Writer::new(io::sink());
    io::copy(&mut f, &mut w).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let (_, d, n) = w.finish();
    Ok((d, n))
}

/// Reads `app.json`, splitting it into the config and the layer files it names.
fn read_app_file(dir: &Path) -> Result<(AppConfig, BTreeMap<LayerKind, PathBuf>), Fault> {
    let path = dir.join(APP_FILE);
    let mut text = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(MAX_APP_FILE + 1).read_to_end(&mut text))
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_APP_FILE {
        return Err(invalid(format!(
            "{}: over {MAX_APP_FILE} bytes",
            path.display()
        )));
    }
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let mut files = BTreeMap::new();
    for kind in LayerKind::ALL {
        let Some(value) = map.remove(kind.key()) else {
            continue;
        };
        let name = value.as_str().ok_or_else(|| {
            invalid(format!(
                "{}: `{}` must be a file name",
                path.display(),
                kind.key()
            ))
        })?;
        let rel = Path::new(name);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(invalid(format!(
                "{}: `{}` must be a relative path inside the directory",
                path.display(),
                kind.key()
            )));
        }
        files.insert(kind, dir.join(rel));
    }
    let config =
        AppConfig::from_json(&serde_json::to_vec(&map).map_err(|e| invalid(e.to_string()))?)?;
    Ok((config, files))
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        annotations: BTreeMap::new(),
    }
}

/// A file `pack_dir` made for the package, removed when it is done (packed or failed).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// Packs `dir` into a signed package at `out_path` (written to a temp name, then renamed).
pub fn pack_dir(dir: &Path, signing_key: &SigningKey, out_path: &Path) -> Result<PackInfo, Fault> {
    let (config, files) = read_app_file(dir)?;
    let mut blobs: BTreeMap<Digest, (u64, Source)> = BTreeMap::new();

    let config_bytes = config.to_json();
    let config_digest = Digest::of(&config_bytes);
    let config_desc = descriptor(
        oci::MEDIA_APP_CONFIG,
        config_digest,
        config_bytes.len() as u64,
    );
    blobs.insert(
        config_digest,
        (config_bytes.len() as u64, Source::Bytes(config_bytes)),
    );

    let mut layers = Vec::new();
    // A jail root image built here from a directory or a tar; removed when packed.
    #[cfg_attr(not(feature = "operator-tools"), allow(unused_mut, unused_variables))]
    let mut built = RemoveOnDrop(None);
    for (kind, path) in &files {
        #[cfg(feature = "operator-tools")]
        let path = &match kind {
            LayerKind::RootfsErofs if !super::pack_erofs::is_image(path) => {
                built.0 = Some(super::pack_erofs::build(path, out_path)?);
                built.0.clone().unwrap_or_default()
            }
            _ => path.clone(),
        };
        let (digest, size) = hash_file(path)?;
        layers.push(descriptor(kind.media_type(), digest, size));
        blobs.insert(digest, (size, Source::File(path.clone())));
    }

    let mut annotations = BTreeMap::new();
    annotations.insert(oci::ANNOTATION_TITLE.to_string(), config.name.clone());
    annotations.insert(oci::ANNOTATION_VERSION.to_string(), config.version.clone());
    let manifest = Manifest {
        schema_version: 2,
        media_type: oci::MEDIA_MANIFEST.to_string(),
        config: config_desc,
        layers,
        annotations,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| invalid(e.to_string()))?;
    let manifest_digest = Digest::of(&manifest_bytes);
    let signer = key_id(&signing_key.public_key());
    let mut manifest_desc = descriptor(
        oci::MEDIA_MANIFEST,
        manifest_digest,
        manifest_bytes.len() as u64,
    );
    manifest_desc.annotations.insert(
        oci::ANNOTATION_SIGNATURE.to_string(),
        to_hex(&sign_manifest(signing_key, &manifest_digest)),
    );
    manifest_desc
        .annotations
        .insert(oci::ANNOTATION_SIGNER.to_string(), signer.clone());
    blobs.insert(
        manifest_digest,
        (manifest_bytes.len() as u64, Source::Bytes(manifest_bytes)),
    );

    let index = Index {
        schema_version: 2,
        media_type: oci::MEDIA_INDEX.to_string(),
        manifests: vec![manifest_desc],
        annotations: BTreeMap::new(),
    };
    let index_bytes = serde_json::to_vec(&index).map_err(|e| invalid(e.to_string()))?;
    let layout_bytes = serde_json::to_vec(&OciLayout {
        image_layout_version: "1.0.0".to_string(),
    })
    .map_err(|e| invalid(e.to_string()))?;

    let out_dir = out_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let out_name = out_path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid(format!("{}: not a file path", out_path.display())))?;
    let tmp = out_dir.join(format!(".{out_name}.tmp"));
    let write = || -> io::Result<u64> {
        let file = File::create(&tmp)?;
        let mut tar = TarWriter::new(BufWriter::new(file));
        // The small metadata first (layout, index, manifest, config), then the layers in the
        // sorted order of their names: an agent reads the app's declared arch, backends and
        // memory from the first few KiB and can refuse a package before downloading it
        // (`package::head`). Verification does not depend on the order.
        tar.add_file(
            oci::OCI_LAYOUT_FILE,
            layout_bytes.len() as u64,
            &mut &layout_bytes[..],
        )?;
        tar.add_file(
            oci::INDEX_FILE,
            index_bytes.len() as u64,
            &mut &index_bytes[..],
        )?;
        tar.add_dir("blobs")?;
        tar.add_dir("blobs/sha256")?;
        let metadata_first = [manifest_digest, config_digest];
        let rest = blobs.keys().filter(|d| !metadata_first.contains(d));
        for digest in metadata_first.iter().chain(rest) {
            let (size, source) = &blobs[digest];
            let name = oci::blob_name(digest);
            match source {
                Source::Bytes(b) => tar.add_file(&name, *size, &mut &b[..])?,
                Source::File(p) => tar.add_file(&name, *size, &mut File::open(p)?)?,
            }
        }
        let file = tar.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file.metadata()?.len())
    };
    let size = match write() {
        Ok(size) => size,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(io_fault("write package", &tmp, e));
        }
    };
    fs::rename(&tmp, out_path).map_err(|e| io_fault("rename into", out_path, e))?;
    fsync_dir(out_dir)?;
    Ok(PackInfo {
        path: out_path.to_path_buf(),
        manifest_digest,
        size,
        signer,
    })
}
