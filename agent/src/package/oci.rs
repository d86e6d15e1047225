//! The OCI image-layout documents a package carries, parsed strictly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::store::Digest;

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const BLOBS_PREFIX: &str = "blobs/sha256/";

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_APP_CONFIG: &str = "application/vnd.cpevisor.app.config.v1+json";
pub const MEDIA_KERNEL: &str = "application/vnd.cpevisor.kernel.v1";
pub const MEDIA_INITRD: &str = "application/vnd.cpevisor.initrd.v1";
pub const MEDIA_ROOTFS: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_DISK: &str = "application/vnd.cpevisor.disk.v1";

/// Annotation on the manifest descriptor in index.json: ed25519 signature (hex or base64) over
/// the ASCII string `sha256:<hex>` of the manifest digest.
pub const ANNOTATION_SIGNATURE: &str = "dev.cpevisor.signature";
/// Annotation naming the signing key: first 16 hex digits of sha256(public key).
pub const ANNOTATION_SIGNER: &str = "dev.cpevisor.signer";
/// Standard OCI annotations pack writes for people browsing a registry.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";

/// Most annotations accepted on one object, and longest key/value (bounded input).
pub const MAX_ANNOTATIONS: usize = 16;
pub const MAX_ANNOTATION_LEN: usize = 512;

/// What a layer is to the agent, from its mediaType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Kernel,
    Initrd,
    Rootfs,
    Disk,
}

impl LayerKind {
    pub const ALL: [LayerKind; 4] = [
        LayerKind::Kernel,
        LayerKind::Initrd,
        LayerKind::Rootfs,
        LayerKind::Disk,
    ];

    pub fn media_type(self) -> &'static str {
        match self {
            LayerKind::Kernel => MEDIA_KERNEL,
            LayerKind::Initrd => MEDIA_INITRD,
            LayerKind::Rootfs => MEDIA_ROOTFS,
            LayerKind::Disk => MEDIA_DISK,
        }
    }

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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OciLayout {
    pub image_layout_version: String,
}

pub fn blob_name(digest: &Digest) -> String {
    format!("{BLOBS_PREFIX}{}", digest.hex())
}

/// A package's OCI metadata beyond the bounds; `what` names the part (`index.json`, `layer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciError {
    TooManyAnnotations { what: &'static str },
    AnnotationTooLong { what: &'static str },
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
