//! The app config read from the first bytes of a package, before it is downloaded. `cpevisorctl
//! pack` writes the layout, index, manifest and config ahead of the layers, so the head of a
//! package (`HEAD_BYTES`) holds what admission needs: arch, backends and memory.
//!
//! Nothing here is trusted: the head is neither digest-checked nor signature-checked. It is only
//! used to refuse early (7225, 7227) a package that would be refused after download anyway; the
//! full verification and the same checks run again on the downloaded package. A head that does
//! not parse (another packer, a huge manifest) yields None and the install proceeds as before.

use std::collections::BTreeMap;

use super::config::AppConfig;
use super::oci::{self, Index, Manifest};
use super::tar::{field_str, parse_octal, BLOCK};

/// How much of a package the agent reads before deciding to download it.
pub const HEAD_BYTES: usize = 64 * 1024;
/// Entries looked at in the head; the metadata comes within the first five.
const MAX_HEAD_ENTRIES: usize = 16;

/// The regular files that lie wholly within `head`, by name.
fn files_in(head: &[u8]) -> BTreeMap<String, &[u8]> {
    let mut files = BTreeMap::new();
    let mut pos = 0usize;
    let block = BLOCK as usize;
    for _ in 0..MAX_HEAD_ENTRIES {
        let Some(h) = head.get(pos..pos + block) else {
            break;
        };
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let (Ok(name), Ok(size)) = (
            field_str(&h[..100], ""),
            parse_octal(&h[124..136], "size", ""),
        ) else {
            break;
        };
        // A prefix field means a long name: never one of the metadata files we look for.
        let data = pos + block;
        let Some(end) = usize::try_from(size).ok().and_then(|s| data.checked_add(s)) else {
            break;
        };
        if matches!(h[156], b'0' | 0) && h[345] == 0 {
            match head.get(data..end) {
                Some(bytes) => {
                    files.insert(name.trim_start_matches("./").to_string(), bytes);
                }
                None => break,
            }
        }
        pos = data + (end - data).div_ceil(block) * block;
    }
    files
}

/// The app config declared in the head of a package, if the head holds it.
pub fn peek_config(head: &[u8]) -> Option<AppConfig> {
    let files = files_in(head);
    let index: Index = serde_json::from_slice(files.get(oci::INDEX_FILE)?).ok()?;
    let manifest_desc = index.manifests.first()?;
    let manifest: Manifest =
        serde_json::from_slice(files.get(&oci::blob_name(&manifest_desc.digest))?).ok()?;
    if manifest.config.media_type != oci::MEDIA_APP_CONFIG {
        return None;
    }
    AppConfig::from_json(files.get(&oci::blob_name(&manifest.config.digest))?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{pack_dir, SigningKey};

    /// A packed package with a 1 MiB kernel layer, as bytes.
    fn package(tag: &str) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("cpv-head-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let app = serde_json::json!({
            "name": "probe", "version": "2.1", "vendor": "acme", "arch": "mipsel",
            "backends": ["jail"], "memory_mib": 48, "vcpus": 1, "command": ["/bin/probe"],
            "kernel": "Image",
        });
        std::fs::write(dir.join("app.json"), app.to_string()).unwrap();
        std::fs::write(dir.join("Image"), vec![7u8; 1 << 20]).unwrap();
        let out = dir.join("p.cpkg");
        pack_dir(&dir, &SigningKey::from_bytes(&[3; 32]), &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    }

    #[test]
    fn the_head_of_a_packed_package_declares_its_config() {
        let pkg = package("peek");
        let config = peek_config(&pkg[..HEAD_BYTES]).expect("config in the head");
        assert_eq!(config.name, "probe");
        assert_eq!(config.memory_mib, 48);
        assert_eq!(config.arch.as_str(), "mipsel");
    }

    #[test]
    fn a_short_or_foreign_head_tells_nothing() {
        let pkg = package("short");
        // Cut inside the config: not enough to know.
        assert!(peek_config(&pkg[..2048]).is_none());
        assert!(peek_config(&[]).is_none());
        assert!(peek_config(&[0x55; HEAD_BYTES]).is_none());
        // A tar whose first entries are not the metadata (an older packer's order).
        let mut w = crate::package::tar::TarWriter::new(Vec::new());
        w.add_file("blobs/sha256/00", 70_000, &mut &vec![1u8; 70_000][..])
            .unwrap();
        let other = w.finish().unwrap();
        assert!(peek_config(&other[..HEAD_BYTES]).is_none());
    }
}
