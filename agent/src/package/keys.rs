//! ed25519 keys: trusted public keys and their ids, signing keys (the operator's: generation,
//! files), signatures over manifest digests. Both sides go through ring, linked for TLS already;
//! the checks a device makes are `ed25519`'s.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::fault::{Fault, FaultCode};
use crate::store::{io_fault, Digest};

/// Name `keygen` gives the secret key file (hex seed).
pub const SECRET_KEY_FILE: &str = "cpevisor-signing.key";
/// Name `keygen` gives the public key file (hex); copied into a trusted keys directory.
pub const PUBLIC_KEY_FILE: &str = "cpevisor-signing.pub";
/// Key files are one line of hex; anything longer is not ours.
const MAX_KEY_FILE: u64 = 256;

/// An ed25519 signature: R (32 bytes) then S (32 bytes), as RFC 8032 encodes it.
pub type Signature = [u8; 64];

/// A public key the ExecEnv trusts to sign packages: never one of small order (`ed25519`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    key: [u8; 32],
    id: String,
}

impl TrustedKey {
    /// A trusted key from its 32 bytes; refused if it is of small order (a weak key: it would
    /// take signatures that anyone can make).
    pub fn from_bytes(key: [u8; 32]) -> Result<TrustedKey, Fault> {
        TrustedKey::checked(key).map_err(|why| {
            Fault::new(
                FaultCode::InvalidArguments,
                format!("trusted key {}: {why}", crate::store::to_hex(&key)),
            )
        })
    }

    fn checked(key: [u8; 32]) -> Result<TrustedKey, &'static str> {
        if !super::ed25519::is_point(&key) {
            return Err("not an ed25519 point");
        }
        if super::ed25519::is_small_order(&key) {
            return Err("a small-order (weak) ed25519 key, which would verify forged signatures");
        }
        Ok(TrustedKey {
            id: key_id(&key),
            key,
        })
    }

    /// From 64 hex digits (the `.pub` file's content, also how ExecEnv config lists keys).
    pub fn from_hex(text: &str) -> Result<TrustedKey, Fault> {
        let bad = |why: &str| {
            Fault::new(
                FaultCode::InvalidArguments,
                format!("trusted key {:?}: {why}", crate::store::clip(text)),
            )
        };
        let bytes = crate::store::from_hex(text.trim()).ok_or_else(|| bad("not hex"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
        TrustedKey::checked(bytes).map_err(bad)
    }

    /// Reads a `.pub` file (64 hex digits).
    pub fn load(path: &Path) -> Result<TrustedKey, Fault> {
        let text = read_key_file(path)?;
        TrustedKey::from_hex(&text)
            .map_err(|f| Fault::new(f.code, format!("{}: {}", path.display(), f.message)))
    }

    /// Key id: first 16 hex digits of sha256 over the public key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ed25519 public key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// The key as 64 hex digits (the `.pub` file's content).
    pub fn to_hex(&self) -> String {
        crate::store::to_hex(&self.key)
    }

    /// Whether `signature` by this key is valid for `manifest_digest`, strictly (`ed25519`).
    pub fn verifies(&self, manifest_digest: &Digest, signature: &Signature) -> bool {
        super::ed25519::verify_strict(
            &self.key,
            signed_message(manifest_digest).as_bytes(),
            signature,
        )
    }
}

/// Key id: the first 16 hex digits of sha256 over the 32 public key bytes (one rule with the
/// firmware builder's trusted key file names: `cpevisor_types::digest::signing_key_id`).
pub fn key_id(key: &[u8; 32]) -> String {
    cpevisor_types::digest::signing_key_id(key)
}

/// An ed25519 signing key (the operator's), from its 32-byte seed (RFC 8032's private key).
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// The key of a 32-byte seed.
    pub fn from_bytes(seed: &[u8; 32]) -> SigningKey {
        // ring refuses only seeds of another length.
        SigningKey(Ed25519KeyPair::from_seed_unchecked(seed).expect("a 32-byte seed"))
    }

    /// The public key's 32 bytes.
    pub fn public_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.0.public_key().as_ref());
        key
    }

    /// The signature of `message` (deterministic: RFC 8032).
    pub fn sign(&self, message: &[u8]) -> Signature {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.0.sign(message).as_ref());
        sig
    }
}

/// The exact bytes a package signature covers.
pub fn signed_message(manifest_digest: &Digest) -> String {
    manifest_digest.to_string()
}

/// Signs a manifest digest: the signature the index's `ANNOTATION_SIGNATURE` carries.
pub fn sign_manifest(key: &SigningKey, manifest_digest: &Digest) -> Signature {
    key.sign(signed_message(manifest_digest).as_bytes())
}

fn read_key_file(path: &Path) -> Result<String, Fault> {
    let file = fs::File::open(path).map_err(|e| {
        Fault::new(
            FaultCode::InvalidArguments,
            format!("key file {}: {e}", path.display()),
        )
    })?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            Fault::new(
                FaultCode::InvalidArguments,
                format!("key file {}: {e}", path.display()),
            )
        })?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(Fault::new(
            FaultCode::InvalidArguments,
            format!("key file {}: longer than a key", path.display()),
        ));
    }
    Ok(text)
}

/// Loads a secret key file written by [`keygen`] (64 hex digits: the 32-byte seed).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Fault> {
    let text = read_key_file(path)?;
    let bytes = crate::store::from_hex(text.trim())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            Fault::new(
                FaultCode::InvalidArguments,
                format!("key file {}: expected 64 hex digits", path.display()),
            )
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Where [`keygen`] put the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairFiles {
    /// The secret key file.
    pub secret: PathBuf,
    /// The public key file.
    pub public: PathBuf,
    /// The key id of the pair.
    pub key_id: String,
}

/// Writes a new key pair into `out_dir`: `cpevisor-signing.key` (mode 0600, hex seed) and
/// `cpevisor-signing.pub` (hex public key). Never overwrites an existing key.
pub fn keygen(out_dir: &Path) -> Result<KeyPairFiles, Fault> {
    let mut seed = [0u8; 32];
    // The kernel's CSPRNG; reading the device avoids a getrandom crate for one call.
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(|e| io_fault("read", Path::new("/dev/urandom"), e))?;
    let key = SigningKey::from_bytes(&seed);
    fs::create_dir_all(out_dir).map_err(|e| io_fault("create", out_dir, e))?;
    let secret = out_dir.join(SECRET_KEY_FILE);
    let public = out_dir.join(PUBLIC_KEY_FILE);
    for path in [&secret, &public] {
        if path.exists() {
            return Err(Fault::new(
                FaultCode::InvalidArguments,
                format!("{} exists: refusing to overwrite a key", path.display()),
            ));
        }
    }
    write_new(&secret, 0o600, &crate::store::to_hex(&seed))?;
    let public_key = key.public_key();
    write_new(&public, 0o644, &crate::store::to_hex(&public_key))?;
    Ok(KeyPairFiles {
        secret,
        public,
        key_id: key_id(&public_key),
    })
}

fn write_new(path: &Path, mode: u32, hex: &str) -> Result<(), Fault> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io_fault("create", path, e))?;
    f.write_all(format!("{hex}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io_fault("write", path, e))
}

/// Decodes a signature annotation: 128 hex digits or standard base64 (padded or not).
pub fn decode_signature(text: &str) -> Option<Signature> {
    let bytes = if text.len() == 128 {
        crate::store::from_hex(text)?
    } else {
        decode_base64(text)?
    };
    bytes.try_into().ok()
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() > 128 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding, else the text was cut or altered.
    if acc != 0 || bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_decode_from_hex_and_base64() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let d = Digest::of(b"manifest");
        let sig = sign_manifest(&key, &d);
        let hex = crate::store::to_hex(&sig);
        assert_eq!(decode_signature(&hex), Some(sig));
        // base64 of the 64 bytes, written by hand to avoid a dependency
        let b64 = {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for chunk in sig.chunks(3) {
                let n =
                    chunk.iter().fold(0u32, |a, &b| (a << 8) | b as u32) << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            s + "=="
        };
        assert_eq!(decode_signature(&b64), Some(sig));
        assert_eq!(decode_signature("zz"), None);
        let trusted = TrustedKey::from_bytes(key.public_key()).unwrap();
        assert!(trusted.verifies(&d, &sig));
        assert!(!trusted.verifies(&Digest::of(b"another manifest"), &sig));
    }

    /// A small-order key verifies signatures anyone can make (package/ed25519.rs): refused
    /// when loaded, in each of its encodings, with 7004 as a malformed key is.
    #[test]
    fn small_order_keys_are_refused_when_loaded() {
        let dir = std::env::temp_dir().join(format!("cpevisor-weak-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("weak.pub");
        // y = 1 (the identity), y = p - 1 (order 2), y = 0 (order 4), both signs, canonical
        // or not, and an order-8 point.
        for hex in [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000080",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        ] {
            let err = TrustedKey::from_hex(hex).unwrap_err();
            assert_eq!(err.code, FaultCode::InvalidArguments, "{hex}");
            assert!(err.message.contains("small-order"), "{}", err.message);
            fs::write(&file, format!("{hex}\n")).unwrap();
            let err = TrustedKey::load(&file).unwrap_err();
            assert_eq!(err.code, FaultCode::InvalidArguments);
            assert!(
                err.message.contains("weak.pub: trusted key"),
                "{}",
                err.message
            );
            let bytes: [u8; 32] = crate::store::from_hex(hex).unwrap().try_into().unwrap();
            assert!(TrustedKey::from_bytes(bytes).is_err(), "{hex}");
        }
        fs::remove_dir_all(&dir).unwrap();
        let good = SigningKey::from_bytes(&[5; 32]).public_key();
        assert!(TrustedKey::from_bytes(good).is_ok());
    }

    /// Bytes that are no point of the curve are refused when loaded, as ed25519-dalek refused
    /// them; points of prime order are taken.
    #[test]
    fn keys_that_are_no_point_are_refused_when_loaded() {
        let (mut refused, mut taken) = (0, 0);
        for y in 2u8..64 {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            let dalek = ed25519_dalek::VerifyingKey::from_bytes(&bytes);
            match TrustedKey::from_bytes(bytes) {
                Ok(_) => {
                    assert!(dalek.is_ok_and(|k| !k.is_weak()), "y = {y}");
                    taken += 1;
                }
                Err(f) if dalek.is_err() => {
                    assert_eq!(f.code, FaultCode::InvalidArguments);
                    assert!(f.message.contains("not an ed25519 point"), "{}", f.message);
                    refused += 1;
                }
                Err(f) => panic!("y = {y}: {}", f.message),
            }
        }
        assert!(refused > 10 && taken > 10, "{refused} {taken}");
    }

    #[test]
    fn key_id_is_the_firmware_builders() {
        // rootfs/src/firmware.rs names the trusted key file of this key by the same id.
        let key = TrustedKey::from_hex(
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        )
        .unwrap();
        assert_eq!(key.id(), "21fe31dfa154a261");
    }

    #[test]
    fn keygen_writes_loadable_pair_once() {
        let dir = std::env::temp_dir().join(format!("cpevisor-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let files = keygen(&dir).unwrap();
        let sk = load_signing_key(&files.secret).unwrap();
        let pk = TrustedKey::load(&files.public).unwrap();
        assert_eq!(pk.as_bytes(), &sk.public_key());
        assert_eq!(pk.id(), files.key_id);
        assert_eq!(files.key_id.len(), 16);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&files.secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(keygen(&dir).unwrap_err().code, FaultCode::InvalidArguments);
        fs::remove_dir_all(&dir).unwrap();
    }
}
