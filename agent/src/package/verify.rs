//! Verifying a `.cpkg` before anything in it is used, then unpacking it into the store.
//!
//! Order matters: the manifest's digest and signature are checked before the manifest is
//! parsed, and every blob's size and sha256 before the package is accepted; unpack hashes each
//! blob again while copying it, so a file changed after verification is still caught.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::AppConfig;
use super::keys::{decode_signature, TrustedKey};
use super::oci::{self, Descriptor, Index, LayerKind, Manifest, OciLayout};
use super::tar::{self, TarEntry};
use crate::fault::{Fault, FaultCode};
use crate::store::{clip, Digest, Sha256Writer, Store};

/// Bounds on what a package may contain; the ExecEnv config sets the package size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageCaps {
    /// Largest `.cpkg` accepted, bytes.
    pub max_package_bytes: u64,
    /// Largest index.json, manifest or config blob, bytes.
    pub max_json_bytes: u64,
    /// Most tar entries (files and directories).
    pub max_entries: usize,
}

impl Default for PackageCaps {
    fn default() -> Self {
        PackageCaps {
            max_package_bytes: 256 << 20,
            max_json_bytes: 64 << 10,
            max_entries: 32,
        }
    }
}

/// One verified blob inside the package file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageBlob {
    /// Its `sha256:` digest, checked.
    pub digest: Digest,
    /// Its size in bytes, checked.
    pub size: u64,
    offset: u64,
}

/// A package whose structure, digests and signature have all been checked.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    /// The package file.
    pub path: PathBuf,
    /// Digest of its manifest (what the signature covers).
    pub manifest_digest: Digest,
    /// Key id of the trusted key that signed it.
    pub signer: String,
    /// The app config, parsed and validated.
    pub config: AppConfig,
    /// The config blob.
    pub config_blob: PackageBlob,
    manifest_blob: PackageBlob,
    /// The layers by kind, one blob each.
    pub layers: BTreeMap<LayerKind, PackageBlob>,
}

/// A package's blobs in the store: what the lifecycle records and the backends run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackedPackage {
    /// Digest of the manifest (what the signature covers).
    pub manifest_digest: Digest,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// The app config.
    pub config: AppConfig,
    /// Layer kind -> blob digest; paths come from [`UnpackedPackage::layer_path`].
    pub layers: BTreeMap<LayerKind, Digest>,
}

impl UnpackedPackage {
    /// Path in `store` of the layer blob of `kind`, if the package has that layer.
    pub fn layer_path(&self, store: &Store, kind: LayerKind) -> Option<PathBuf> {
        self.layers.get(&kind).map(|d| store.blob_path(d))
    }

    /// Every blob this package keeps alive in the store (for [`Store::gc`]).
    pub fn blobs(&self) -> Vec<Digest> {
        let mut v = vec![self.manifest_digest, self.config_digest];
        v.extend(self.layers.values().copied());
        v
    }
}

fn corrupt(msg: impl Into<String>) -> Fault {
    Fault::new(FaultCode::CorruptData, msg.into())
}

fn signature_fault(msg: impl Into<String>) -> Fault {
    Fault::new(FaultCode::SignatureFailure, msg.into())
}

struct PackageFile {
    file: BufReader<File>,
    entries: BTreeMap<String, TarEntry>,
    used: HashSet<String>,
}

impl PackageFile {
    fn entry(&mut self, name: &str) -> Result<TarEntry, Fault> {
        let e = *self
            .entries
            .get(name)
            .ok_or_else(|| corrupt(format!("package has no {name}")))?;
        self.used.insert(name.to_string());
        Ok(e)
    }

    fn read_small(&mut self, name: &str, max: u64) -> Result<Vec<u8>, Fault> {
        let e = self.entry(name)?;
        if e.size > max {
            return Err(corrupt(format!(
                "{name} is {} bytes, over the {max} byte limit",
                e.size
            )));
        }
        let mut buf = vec![0u8; e.size as usize];
        self.file
            .seek(SeekFrom::Start(e.offset))
            .and_then(|_| self.file.read_exact(&mut buf))
            .map_err(|err| corrupt(format!("reading {name}: {err}")))?;
        Ok(buf)
    }

    /// Checks a descriptor against its blob: present, same size, same sha256.
    fn check_blob(&mut self, what: &str, d: &Descriptor) -> Result<PackageBlob, Fault> {
        let name = oci::blob_name(&d.digest);
        let e = self.entry(&name).map_err(|_| {
            corrupt(format!(
                "{what} blob {} is missing from the package",
                d.digest
            ))
        })?;
        if e.size != d.size {
            return Err(corrupt(format!(
                "{what} blob {}: {} bytes in the package, descriptor says {}",
                d.digest, e.size, d.size
            )));
        }
        self.file
            .seek(SeekFrom::Start(e.offset))
            .map_err(|err| corrupt(format!("reading {what} blob: {err}")))?;
        let mut hasher = Sha256Writer::new(io::sink());
        io::copy(&mut (&mut self.file).take(e.size), &mut hasher)
            .map_err(|err| corrupt(format!("reading {what} blob: {err}")))?;
        let (_, actual, n) = hasher.finish();
        if n != e.size || actual != d.digest {
            return Err(corrupt(format!(
                "{what} blob {}: digest mismatch, content hashes to {actual}",
                d.digest
            )));
        }
        Ok(PackageBlob {
            digest: d.digest,
            size: d.size,
            offset: e.offset,
        })
    }
}

impl PackageFile {
    /// A jail root image must start as erofs does: anything else is refused at install rather
    /// than failing every start. The rest is the kernel's to judge when it mounts the image
    /// (`supervise::jail::root` says what guards that).
    fn check_erofs_magic(&mut self, blob: &PackageBlob) -> Result<(), Fault> {
        let mut magic = [0u8; 4];
        let read = blob.size >= oci::EROFS_MAGIC_OFFSET + 4
            && self
                .file
                .seek(SeekFrom::Start(blob.offset + oci::EROFS_MAGIC_OFFSET))
                .and_then(|_| self.file.read_exact(&mut magic))
                .is_ok();
        if !read || magic != oci::EROFS_MAGIC {
            return Err(corrupt(format!(
                "rootfs_erofs blob {}: not an erofs image (no erofs magic at byte {})",
                blob.digest,
                oci::EROFS_MAGIC_OFFSET
            )));
        }
        Ok(())
    }
}

fn parse_json<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, Fault> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(format!("{what} is malformed: {e}")))
}

/// Verifies the package at `path`: layout, index, manifest digest and signature by one of
/// `trusted`, every blob's size and sha256, the app config, and that every file in the tar is
/// accounted for. Faults: 7035 structure/digest/size/truncation, 7036 signature, 7004 config,
/// 7005 package over `caps.max_package_bytes`.
pub fn verify_package(
    path: &Path,
    trusted: &[TrustedKey],
    caps: &PackageCaps,
) -> Result<VerifiedPackage, Fault> {
    let file = File::open(path).map_err(|e| corrupt(format!("package {}: {e}", path.display())))?;
    let len = file
        .metadata()
        .map_err(|e| corrupt(format!("package {}: {e}", path.display())))?
        .len();
    if len > caps.max_package_bytes {
        return Err(Fault::new(
            FaultCode::ResourcesExceeded,
            format!(
                "package is {len} bytes, over the {} byte cap",
                caps.max_package_bytes
            ),
        ));
    }
    let mut file = BufReader::with_capacity(64 * 1024, file);
    let entries = tar::index(&mut file, len, caps.max_entries)?;
    let mut pkg = PackageFile {
        file,
        entries,
        used: HashSet::new(),
    };

    let layout: OciLayout = parse_json(
        oci::OCI_LAYOUT_FILE,
        &pkg.read_small(oci::OCI_LAYOUT_FILE, caps.max_json_bytes)?,
    )?;
    if layout.image_layout_version != "1.0.0" {
        return Err(corrupt(format!(
            "oci-layout: unsupported imageLayoutVersion {:?}",
            clip(&layout.image_layout_version)
        )));
    }
    let index: Index = parse_json(
        oci::INDEX_FILE,
        &pkg.read_small(oci::INDEX_FILE, caps.max_json_bytes)?,
    )?;
    if index.schema_version != 2 || index.media_type != oci::MEDIA_INDEX {
        return Err(corrupt(
            "index.json: expected schemaVersion 2 and the OCI index mediaType",
        ));
    }
    oci::check_annotations("index.json", &index.annotations)?;
    let [desc] = index.manifests.as_slice() else {
        return Err(corrupt(format!(
            "index.json: expected exactly one manifest, found {}",
            index.manifests.len()
        )));
    };
    if desc.media_type != oci::MEDIA_MANIFEST {
        return Err(corrupt(format!(
            "index.json: manifest mediaType {:?} is not {}",
            clip(&desc.media_type),
            oci::MEDIA_MANIFEST
        )));
    }
    oci::check_annotations("manifest descriptor", &desc.annotations)?;
    if desc.size > caps.max_json_bytes {
        return Err(corrupt(format!(
            "manifest is {} bytes, over the {} byte limit",
            desc.size, caps.max_json_bytes
        )));
    }
    let manifest_blob = pkg.check_blob("manifest", desc)?;
    let signer = check_signature(desc, trusted)?;

    // Only signed bytes are parsed from here on.
    let manifest_bytes = pkg.read_small(&oci::blob_name(&desc.digest), caps.max_json_bytes)?;
    let manifest: Manifest = parse_json("manifest", &manifest_bytes)?;
    if manifest.schema_version != 2 || manifest.media_type != oci::MEDIA_MANIFEST {
        return Err(corrupt(
            "manifest: expected schemaVersion 2 and the OCI manifest mediaType",
        ));
    }
    oci::check_annotations("manifest", &manifest.annotations)?;
    if manifest.config.media_type != oci::MEDIA_APP_CONFIG {
        return Err(corrupt(format!(
            "manifest config mediaType {:?} is not {}",
            clip(&manifest.config.media_type),
            oci::MEDIA_APP_CONFIG
        )));
    }
    if manifest.config.size > caps.max_json_bytes {
        return Err(corrupt(format!(
            "app config is {} bytes, over the {} byte limit",
            manifest.config.size, caps.max_json_bytes
        )));
    }
    let config_blob = pkg.check_blob("config", &manifest.config)?;
    let config = AppConfig::from_json(&pkg.read_small(
        &oci::blob_name(&manifest.config.digest),
        caps.max_json_bytes,
    )?)?;

    let mut layers = BTreeMap::new();
    for layer in &manifest.layers {
        oci::check_annotations("layer", &layer.annotations)?;
        let kind = LayerKind::from_media_type(&layer.media_type).ok_or_else(|| {
            corrupt(format!(
                "layer mediaType {:?} is not supported",
                clip(&layer.media_type)
            ))
        })?;
        if layers.contains_key(&kind) {
            return Err(corrupt(format!("manifest has two {} layers", kind.key())));
        }
        let blob = pkg.check_blob(kind.key(), layer)?;
        if kind == LayerKind::RootfsErofs {
            pkg.check_erofs_magic(&blob)?;
        }
        layers.insert(kind, blob);
    }
    check_layers_match_backends(&config, &layers)?;

    if let Some(extra) = pkg.entries.keys().find(|n| !pkg.used.contains(*n)) {
        return Err(corrupt(format!(
            "package holds {extra:?}, which no descriptor references"
        )));
    }

    Ok(VerifiedPackage {
        path: path.to_path_buf(),
        manifest_digest: desc.digest,
        signer,
        config,
        config_blob,
        manifest_blob,
        layers,
    })
}

fn check_signature(desc: &Descriptor, trusted: &[TrustedKey]) -> Result<String, Fault> {
    let sig_text = desc
        .annotations
        .get(oci::ANNOTATION_SIGNATURE)
        .ok_or_else(|| {
            signature_fault(format!(
                "package is not signed (no {} annotation)",
                oci::ANNOTATION_SIGNATURE
            ))
        })?;
    let signer = desc
        .annotations
        .get(oci::ANNOTATION_SIGNER)
        .ok_or_else(|| {
            signature_fault(format!(
                "package names no signer (no {} annotation)",
                oci::ANNOTATION_SIGNER
            ))
        })?;
    let key = trusted.iter().find(|k| k.id() == signer).ok_or_else(|| {
        signature_fault(format!("signer {:?} is not a trusted key", clip(signer)))
    })?;
    let signature = decode_signature(sig_text)
        .ok_or_else(|| signature_fault("signature is not 64 bytes of hex or base64"))?;
    if !key.verifies(&desc.digest, &signature) {
        return Err(signature_fault(format!(
            "signature by {signer} does not match manifest {}",
            desc.digest
        )));
    }
    Ok(key.id().to_string())
}

fn check_layers_match_backends(
    config: &AppConfig,
    layers: &BTreeMap<LayerKind, PackageBlob>,
) -> Result<(), Fault> {
    use super::config::Backend;
    if config.backends.contains(&Backend::Kvm) && !layers.contains_key(&LayerKind::Kernel) {
        return Err(corrupt(
            "config names the kvm backend but the package has no kernel layer",
        ));
    }
    let tar = layers.contains_key(&LayerKind::Rootfs);
    let erofs = layers.contains_key(&LayerKind::RootfsErofs);
    if config.backends.contains(&Backend::Jail) && !tar && !erofs {
        return Err(corrupt(
            "config names the jail backend but the package has no rootfs layer (tar or erofs)",
        ));
    }
    // One root per jail: with both, the other would be flash spent for nothing.
    if tar && erofs {
        return Err(corrupt(
            "package has both a rootfs tar layer and a rootfs erofs image; a jail app's root is one of them",
        ));
    }
    Ok(())
}

impl VerifiedPackage {
    fn all_blobs(&self) -> impl Iterator<Item = &PackageBlob> {
        [&self.manifest_blob, &self.config_blob]
            .into_iter()
            .chain(self.layers.values())
    }

    /// Total bytes the package's blobs take in the store (for a flash-space check).
    pub fn blob_bytes(&self) -> u64 {
        self.all_blobs().map(|b| b.size).sum()
    }

    /// Copies every blob into the store (content-addressed, hash re-checked while writing).
    /// Blobs already stored are shared, not copied again.
    pub fn unpack(&self, store: &Store) -> Result<UnpackedPackage, Fault> {
        let mut file = File::open(&self.path)
            .map_err(|e| corrupt(format!("package {}: {e}", self.path.display())))?;
        for blob in self.all_blobs() {
            if store.has_blob(&blob.digest) {
                continue;
            }
            file.seek(SeekFrom::Start(blob.offset))
                .map_err(|e| corrupt(format!("package {}: {e}", self.path.display())))?;
            store.put_blob(&blob.digest, blob.size, &mut (&mut file).take(blob.size))?;
        }
        Ok(UnpackedPackage {
            manifest_digest: self.manifest_digest,
            config_digest: self.config_blob.digest,
            config: self.config.clone(),
            layers: self.layers.iter().map(|(k, b)| (*k, b.digest)).collect(),
        })
    }
}
