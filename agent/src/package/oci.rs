//! The OCI image-layout documents a package carries, parsed strictly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Digest;

/// Name of the OCI image-layout marker file at the package root.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// Name of the image index at the package root (carries the signature annotations).
pub const INDEX_FILE: &str = "index.json";
/// Directory of the content-addressed blobs, relative to the package root.
pub const BLOBS_PREFIX: &str = "blobs/sha256/";

/// `mediaType` of the image index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `mediaType` of the app manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `mediaType` of the manifest's config blob: the app's package config (`package::config`).
pub const MEDIA_APP_CONFIG: &str = "application/vnd.cpevisor.app.config.v1+json";
/// `mediaType` of a KVM app's kernel image layer.
pub const MEDIA_KERNEL: &str = "application/vnd.cpevisor.kernel.v1";
/// `mediaType` of a KVM app's initrd layer.
pub const MEDIA_INITRD: &str = "application/vnd.cpevisor.initrd.v1";
/// `mediaType` of the root filesystem layer: a plain (uncompressed) tar.
pub const MEDIA_ROOTFS: &str = "application/vnd.oci.image.layer.v1.tar";
/// `mediaType` of a KVM app's raw disk image layer.
pub const MEDIA_DISK: &str = "application/vnd.cpevisor.disk.v1";
/// `mediaType` of a KVM app's root file system image (an erofs image): the guest's first disk,
/// read-only, shared by every app using the same blob.
pub const MEDIA_ROOTFS_IMAGE: &str = "application/vnd.cpevisor.rootfs-image.v1";
/// `mediaType` of a jail app's root file system as a read-only erofs image: stored once and
/// loop-mounted by the jail runner at start, never extracted (docs/flash.md).
pub const MEDIA_ROOTFS_EROFS: &str = "application/vnd.cpevisor.rootfs.erofs.v1";
/// erofs' superblock magic (`EROFS_SUPER_MAGIC_V1`), little-endian at [`EROFS_MAGIC_OFFSET`].
pub const EROFS_MAGIC: [u8; 4] = 0xE0F5_E1E2u32.to_le_bytes();
/// Where an erofs image holds its superblock's magic.
pub const EROFS_MAGIC_OFFSET: u64 = 1024;

/// Annotation on the manifest descriptor in index.json: ed25519 signature (hex or base64) over
/// the ASCII string `sha256:<hex>` of the manifest digest.
pub const ANNOTATION_SIGNATURE: &str = "dev.cpevisor.signature";
/// Annotation naming the signing key: first 16 hex digits of sha256(public key).
pub const ANNOTATION_SIGNER: &str = "dev.cpevisor.signer";
/// Standard OCI annotations pack writes for people browsing a registry.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// Standard OCI annotation for the app version, also written by pack.
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";

/// Most annotations accepted on one object, and longest key/value (bounded input).
pub const MAX_ANNOTATIONS: usize = 16;
/// Longest annotation key or value, in bytes.
pub const MAX_ANNOTATION_LEN: usize = 512;

/// What a layer is to the agent, from its mediaType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Guest kernel image (required for KVM apps).
    Kernel,
    /// Guest initrd, for KVM apps.
    Initrd,
    /// Root filesystem tar; extracted for jail apps.
    Rootfs,
    /// Raw disk image for a KVM guest.
    Disk,
    /// The KVM guest's root file system image, attached read-only as its first disk.
    #[serde(rename = "rootfs_image")]
    RootfsImage,
    /// A jail app's root file system as an erofs image, mounted read-only (instead of `Rootfs`).
    #[serde(rename = "rootfs_erofs")]
    RootfsErofs,
}

impl LayerKind {
    /// Every kind, in the order layers are listed.
    pub const ALL: [LayerKind; 6] = [
        LayerKind::Kernel,
        LayerKind::Initrd,
        LayerKind::Rootfs,
        LayerKind::Disk,
        LayerKind::RootfsImage,
        LayerKind::RootfsErofs,
    ];

    /// The layer `mediaType` that marks this kind.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerKind::Kernel => MEDIA_KERNEL,
            LayerKind::Initrd => MEDIA_INITRD,
            LayerKind::Rootfs => MEDIA_ROOTFS,
            LayerKind::Disk => MEDIA_DISK,
            LayerKind::RootfsImage => MEDIA_ROOTFS_IMAGE,
            LayerKind::RootfsErofs => MEDIA_ROOTFS_EROFS,
        }
    }

    /// The kind a layer `mediaType` names; `None` for one the agent does not know.
    pub fn from_media_type(media_type: &str) -> Option<LayerKind> {
        LayerKind::ALL
            .into_iter()
            .find(|k| k.media_type() == media_type)
    }

    /// The key naming this layer's file in `app.json`.
    pub fn key(self) -> &'static str {
        match self {
            LayerKind::Kernel => "kernel",
            LayerKind::Initrd => "initrd",
            LayerKind::Rootfs => "rootfs",
            LayerKind::Disk => "disk",
            LayerKind::RootfsImage => "rootfs_image",
            LayerKind::RootfsErofs => "rootfs_erofs",
        }
    }
}

/// An OCI content descriptor (image-spec `descriptor.md`): the reference to one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Descriptor {
    /// `mediaType` of the referenced blob.
    pub media_type: String,
    /// `digest`: `sha256:<hex>` of the blob's bytes.
    pub digest: Digest,
    /// `size` of the blob in bytes; the blob must match it.
    pub size: u64,
    /// `annotations` (bounded by `MAX_ANNOTATIONS` and `MAX_ANNOTATION_LEN`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `index.json` of the package, as OCI image-spec `image-index.md` defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Index {
    /// `schemaVersion`: 2.
    pub schema_version: u32,
    /// `mediaType`: `MEDIA_INDEX`.
    pub media_type: String,
    /// `manifests`: the package's app manifest (with the signature annotations).
    pub manifests: Vec<Descriptor>,
    /// `annotations` of the index.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (image-spec `manifest.md`): the app's config and its layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    /// `schemaVersion`: 2.
    pub schema_version: u32,
    /// `mediaType`: `MEDIA_MANIFEST`.
    pub media_type: String,
    /// `config`: the descriptor of the package config blob (`MEDIA_APP_CONFIG`).
    pub config: Descriptor,
    /// `layers`: the kernel, initrd, rootfs, disk and root image blobs the app needs.
    pub layers: Vec<Descriptor>,
    /// `annotations` (title, version).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The `oci-layout` file of an image layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OciLayout {
    /// `imageLayoutVersion`: `1.0.0`.
    pub image_layout_version: String,
}

/// Path of a blob inside the package: `blobs/sha256/<hex>`.
pub fn blob_name(digest: &Digest) -> String {
    format!("{BLOBS_PREFIX}{}", digest.hex())
}

/// A package's OCI metadata beyond the bounds; `what` names the part (`index.json`, `layer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciError {
    /// More than `MAX_ANNOTATIONS` annotations on one object.
    TooManyAnnotations {
        /// The object that carries them (`index.json`, `manifest`, `layer`, ...).
        what: &'static str,
    },
    /// An annotation key or value longer than `MAX_ANNOTATION_LEN`.
    AnnotationTooLong {
        /// The object that carries them (`index.json`, `manifest`, `layer`, ...).
        what: &'static str,
    },
}

impl std::fmt::Display for OciError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OciError::TooManyAnnotations { what } => {
                write!(f, "{what}: more than {MAX_ANNOTATIONS} annotations")
            }
            OciError::AnnotationTooLong { what } => write!(
                f,
                "{what}: an annotation is longer than {MAX_ANNOTATION_LEN} bytes"
            ),
        }
    }
}

impl std::error::Error for OciError {}

/// Refuses annotation maps beyond the bounds (keys and values come from the package).
pub fn check_annotations(
    what: &'static str,
    map: &BTreeMap<String, String>,
) -> Result<(), OciError> {
    if map.len() > MAX_ANNOTATIONS {
        return Err(OciError::TooManyAnnotations { what });
    }
    if map
        .iter()
        .any(|(k, v)| k.len() > MAX_ANNOTATION_LEN || v.len() > MAX_ANNOTATION_LEN)
    {
        return Err(OciError::AnnotationTooLong { what });
    }
    Ok(())
}
