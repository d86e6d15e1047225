//! ed25519 signing keys: generation, files, key ids, signatures over manifest digests.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::fault::{Fault, FaultCode};
use crate::store::{io_fault, Digest};

/// Name `keygen` gives the secret key file (hex seed).
pub const SECRET_KEY_FILE: &str = "cpevisor-signing.key";
/// Name `keygen` gives the public key file (hex); copied into a trusted keys directory.
pub const PUBLIC_KEY_FILE: &str = "cpevisor-signing.pub";
/// Key files are one line of hex; anything longer is not ours.
const MAX_KEY_FILE: u64 = 256;

/// A public key the ExecEnv trusts to sign packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    key: VerifyingKey,
    id: String,
}

impl TrustedKey {
    /// A trusted key and its key id (`key_id`).
    pub fn new(key: VerifyingKey) -> TrustedKey {
        TrustedKey {
            id: key_id(&key),
            key,
        }
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
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not an ed25519 point"))?;
        Ok(TrustedKey::new(key))
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

    /// The ed25519 public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key as 64 hex digits (the `.pub` file's content).
    pub fn to_hex(&self) -> String {
        crate::store::to_hex(self.key.as_bytes())
    }
}

/// Key id: the first 16 hex digits of sha256 over the 32 public key bytes (one rule with the
/// firmware builder's trusted key file names: `cpevisor_types::digest::signing_key_id`).
pub fn key_id(key: &VerifyingKey) -> String {
    cpevisor_types::digest::signing_key_id(key.as_bytes())
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
    let trusted = TrustedKey::new(key.verifying_key());
    write_new(&public, 0o644, &trusted.to_hex())?;
    Ok(KeyPairFiles {
        secret,
        public,
        key_id: trusted.id().to_string(),
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
    let bytes: [u8; 64] = bytes.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
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
        let hex = crate::store::to_hex(&sig.to_bytes());
        assert_eq!(decode_signature(&hex), Some(sig));
        // base64 of the 64 bytes, written by hand to avoid a dependency
        let b64 = {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for chunk in sig.to_bytes().chunks(3) {
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
        assert!(key
            .verifying_key()
            .verify_strict(signed_message(&d).as_bytes(), &sig)
            .is_ok());
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
        assert_eq!(pk.verifying_key(), &sk.verifying_key());
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
