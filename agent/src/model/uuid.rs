//! `DeploymentUnit.UUID` as TR-181 derives it: an RFC 4122 name-based UUID (we use version 5,
//! SHA-1) whose name is the DU's `Vendor` followed by its `Name`. It does not depend on the
//! version, so an update keeps the UUID and installing the same app twice is a duplicate (7226).
//!
//! Namespace: TR-181 leaves the namespace ID to the implementation; ours is the version-5 UUID of
//! the name "cpevisor" in the RFC 4122 DNS namespace, fixed below so every device agrees.

// SHA-1 here only names a UUID (RFC 4122 v5), as TR-181 prescribes; it protects nothing.
use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};

/// RFC 4122 appendix C: the DNS namespace, `6ba7b810-9dad-11d1-80b4-00c04fd430c8`.
const NAMESPACE_DNS: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

/// Version-5 UUID of `name` in `namespace`, as 16 bytes (RFC 4122 section 4.3).
pub fn uuid_v5(namespace: &[u8; 16], name: &[u8]) -> [u8; 16] {
    let mut input = Vec::with_capacity(16 + name.len());
    input.extend_from_slice(namespace);
    input.extend_from_slice(name);
    let hash = digest(&SHA1_FOR_LEGACY_USE_ONLY, &input);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_ref()[..16]);
    out[6] = (out[6] & 0x0f) | 0x50; // version 5
    out[8] = (out[8] & 0x3f) | 0x80; // RFC 4122 variant
    out
}

/// Canonical lower-case 8-4-4-4-12 text form.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The namespace all cpevisor DU UUIDs live in.
pub fn cpevisor_namespace() -> [u8; 16] {
    uuid_v5(&NAMESPACE_DNS, b"cpevisor")
}

/// The TR-181 `DeploymentUnit.UUID` for an app from `vendor` named `name`.
pub fn deployment_unit_uuid(vendor: &str, name: &str) -> String {
    let mut n = String::with_capacity(vendor.len() + name.len());
    n.push_str(vendor);
    n.push_str(name);
    format_uuid(&uuid_v5(&cpevisor_namespace(), n.as_bytes()))
}

/// True when `s` is a canonical UUID string (what `deployment_unit_uuid` produces).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4122_v5_known_value() {
        // Widely published v5 vector: DNS namespace, "www.example.com".
        assert_eq!(
            format_uuid(&uuid_v5(&NAMESPACE_DNS, b"www.example.com")),
            "2ed6657d-e927-568b-95e1-2665a8aea6a2"
        );
    }

    /// UUIDs are persisted (the store, `usp.json`, controllers' records): these must never
    /// change, whatever computes the hash. Values as the hand-written SHA-1 gave them, checked
    /// against Python's `uuid.uuid5`.
    #[test]
    fn persisted_uuids_are_unchanged() {
        assert_eq!(
            format_uuid(&cpevisor_namespace()),
            "a06a29b0-7f67-514d-9a79-681e0a80923c"
        );
        assert_eq!(
            deployment_unit_uuid("acme", "dnsfilter"),
            "df48a249-b4f1-5b92-8307-d5a3c7aefe66"
        );
    }

    #[test]
    fn du_uuid_depends_on_vendor_and_name_only() {
        let a = deployment_unit_uuid("acme", "dnsfilter");
        assert!(is_uuid(&a));
        assert_eq!(a, deployment_unit_uuid("acme", "dnsfilter"));
        assert_ne!(a, deployment_unit_uuid("acme", "voip"));
        assert_ne!(a, deployment_unit_uuid("other", "dnsfilter"));
        assert_eq!(&a[14..15], "5");
        assert!(!is_uuid("not-a-uuid"));
        assert!(!is_uuid(&a.to_uppercase()));
    }
}
