//! The API's bearer tokens: read from a file only its owner can read (`private_file`), one
//! token a line, and compared in constant time: each token is kept as its HMAC-SHA-256 under
//! a key drawn at start, and a presented token is checked with `hmac::verify`, so neither its
//! bytes nor its length tell how close it came.

use std::path::Path;

use ring::hmac;
use ring::rand::SystemRandom;

/// Largest token file.
const MAX_FILE: u64 = 64 * 1024;
/// Shortest token taken: guessing must be out of reach.
pub const MIN_TOKEN: usize = 16;

/// The tokens that open the API.
pub struct Tokens {
    key: hmac::Key,
    tags: Vec<hmac::Tag>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.tags.len())
    }
}

impl Tokens {
    /// Tokens from `text`: one a line, blank lines and `#` comments skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| "no randomness for the token key".to_string())?;
        let mut tags = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < MIN_TOKEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a token is at least {MIN_TOKEN} visible ASCII characters",
                    i + 1
                ));
            }
            tags.push(hmac::sign(&key, t.as_bytes()));
        }
        if tags.is_empty() {
            return Err("no token in it".into());
        }
        Ok(Tokens { key, tags })
    }

    /// Reads `path`: a regular file, not a symlink, not readable or writable by group or
    /// others.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let what = |e: String| format!("API token file {}: {e}", path.display());
        let bytes = crate::private_file::read(path, MAX_FILE).map_err(what)?;
        let text = String::from_utf8(bytes).map_err(|_| what("not UTF-8 text".into()))?;
        Tokens::parse(&text).map_err(what)
    }

    /// Whether the `Authorization` header's value is `Bearer <one of the tokens>`. Every
    /// token is checked, whichever matches.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization.and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        }) else {
            return false;
        };
        let mut ok = false;
        for tag in &self.tags {
            ok |= hmac::verify(&self.key, token.as_bytes(), tag.as_ref()).is_ok();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef-token-a";

    #[test]
    fn bearer_tokens_match_whole() {
        let t = Tokens::parse(&format!("# ops\n{A}\n\n  another-token-0123456  \n")).unwrap();
        assert!(t.allows(Some(&format!("Bearer {A}"))));
        assert!(t.allows(Some(&format!("bearer  {A} "))));
        assert!(t.allows(Some("Bearer another-token-0123456")));
        assert!(!t.allows(Some(&format!("Bearer {A}x"))));
        assert!(!t.allows(Some(&format!("Bearer {}", &A[..A.len() - 1]))));
        assert!(!t.allows(Some(&format!("Basic {A}"))));
        assert!(!t.allows(Some(A)));
        assert!(!t.allows(Some("Bearer ")));
        assert!(!t.allows(None));
        assert!(Tokens::parse("# nothing\n")
            .unwrap_err()
            .contains("no token"));
        assert!(Tokens::parse("short\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("with space in 0123456789\n").is_err());
    }

    #[test]
    fn the_file_must_be_private_and_not_a_symlink() {
        let dir = std::env::temp_dir().join(format!("cpv-api-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("tokens");
        std::fs::write(&f, format!("{A}\n")).unwrap();
        let set = |mode| {
            std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap()
        };
        set(0o600);
        assert!(Tokens::load(&f)
            .unwrap()
            .allows(Some(&format!("Bearer {A}"))));
        set(0o640);
        assert!(Tokens::load(&f).unwrap_err().contains("chmod 600"));
        set(0o604);
        assert!(Tokens::load(&f).unwrap_err().contains("chmod 600"));
        set(0o600);
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(Tokens::load(&link).unwrap_err().contains("symlink"));
        assert!(Tokens::load(&dir).is_err(), "a directory");
        assert!(Tokens::load(&dir.join("absent")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
