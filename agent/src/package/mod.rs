//! App packages (`.cpkg`): an OCI image layout in one uncompressed tar, signed with ed25519
//! over the manifest digest. The format is specified in `agent/PACKAGE.md`.

pub mod config;
mod ed25519;
pub mod head;
pub mod keys;
mod layer;
pub mod network;
pub mod oci;
mod pack;
#[cfg(feature = "operator-tools")]
mod pack_erofs;
pub mod tar;
mod verify;

pub use config::{AppConfig, Arch, Backend, HealthCheck, ProbeKind, RestartPolicy};
pub use keys::{key_id, keygen, load_signing_key, KeyPairFiles, Signature, SigningKey, TrustedKey};
pub use layer::{extract_layer, LayerCaps, LayerStats, JAIL_MOUNT_POINTS};
pub use oci::LayerKind;
pub use pack::{pack_dir, PackInfo, APP_FILE};
pub use verify::{verify_package, PackageBlob, PackageCaps, UnpackedPackage, VerifiedPackage};
