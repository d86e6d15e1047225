//! `sha256:<hex>` digests (the content addresses of packages, blobs and images), hex, and the
//! signing key id. Hashing comes with the `sha2` feature, for the crates that hash.

use std::fmt;

use crate::clip::clip;

/// A sha256 digest; text form `sha256:<64 lowercase hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

/// Text that is not `sha256:<64 lowercase hex>`; holds the start of the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestError(pub String);

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected sha256:<64 lowercase hex>, got {:?}", self.0)
    }
}

impl std::error::Error for DigestError {}

impl Sha256Digest {
    /// The sha256 of `bytes`.
    #[cfg(feature = "sha2")]
    pub fn of(bytes: &[u8]) -> Sha256Digest {
        use sha2::Digest as _;
        Sha256Digest(sha2::Sha256::digest(bytes).into())
    }

    /// A digest from its 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Sha256Digest {
        Sha256Digest(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(text: &str) -> Result<Sha256Digest, DigestError> {
        text.strip_prefix("sha256:")
            .and_then(Sha256Digest::parse_hex)
            .ok_or_else(|| DigestError(clip(text)))
    }

    /// Parses 64 lowercase hex digits (the blob file name form).
    pub fn parse_hex(hex: &str) -> Option<Sha256Digest> {
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        Some(Sha256Digest(from_hex(hex)?.try_into().ok()?))
    }

    /// The 64 lowercase hex digits, without `sha256:`.
    pub fn hex(&self) -> String {
        to_hex(&self.0)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Hex decoding, either case (odd length or other characters: `None`).
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|p| Some((hex_value(p[0])? << 4) | hex_value(p[1])?))
        .collect()
}

/// A package signer's key id: the first 16 hex digits of sha256 over the 32 public key bytes.
/// The agent names signers by it; the firmware builder names trusted key files by it.
#[cfg(feature = "sha2")]
pub fn signing_key_id(public_key: &[u8; 32]) -> String {
    Sha256Digest::of(public_key).hex()[..16].to_string()
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Sha256Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256Digest::parse(s)
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Sha256Digest, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sha256Digest::parse(&text).map_err(|e| serde::de::Error::custom(format!("digest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn text_round_trips() {
        let d = Sha256Digest::parse(ABC).unwrap();
        assert_eq!(d.to_string(), ABC);
        assert_eq!(d.hex(), &ABC[7..]);
        assert_eq!(Sha256Digest::parse_hex(&ABC[7..]), Some(d));
        assert_eq!(Sha256Digest::from_bytes(*d.as_bytes()), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Sha256Digest>(&json).unwrap(), d);
    }

    #[test]
    fn bad_text_is_refused_and_quoted() {
        for bad in [
            "sha512:00",
            "sha256:abc",
            &ABC.to_uppercase(),
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}g", "a".repeat(63)),
            &ABC[7..],
            "",
        ] {
            let e = Sha256Digest::parse(bad).unwrap_err();
            assert!(e.to_string().contains("64 lowercase hex"), "{bad}: {e}");
        }
        let long = format!("sha256:{}", "z".repeat(500));
        let e = Sha256Digest::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 200, "the peer's text is clipped: {e}");
        let e = serde_json::from_str::<Sha256Digest>("\"sha256:00\"").unwrap_err();
        assert!(e.to_string().contains("digest"), "{e}");
    }

    #[test]
    fn hex_either_case_in_lowercase_out() {
        assert_eq!(from_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(to_hex(&[0x0a, 0xff]), "0aff");
        assert_eq!(clip(&"é".repeat(60)).len(), 80 + 3);
    }

    #[cfg(feature = "sha2")]
    #[test]
    fn hashes_and_key_ids() {
        assert_eq!(Sha256Digest::of(b"abc").to_string(), ABC);
        let id = signing_key_id(&[7u8; 32]);
        assert_eq!(id, Sha256Digest::of(&[7u8; 32]).hex()[..16]);
    }
}
