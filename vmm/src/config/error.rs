//! `ConfigError`, and the readable-file check that the config and the initramfs check share: a
//! leaf, so that the modules `config` calls into (initrd, boot_signal) can name it without
//! importing `config` back.

use std::fmt;
use std::fs::File;
use std::path::Path;

/// A configuration or usage error. `what` names the field, flag or file; `why` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field or file at fault.
    pub what: String,
    /// What is wrong with it.
    pub why: String,
}

impl ConfigError {
    /// An error for `what`, explained by `why`.
    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        ConfigError {
            what: what.into(),
            why: why.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn check_readable_file(what: &str, path: &Path) -> Result<(), ConfigError> {
    let what = format!("{what} {}", path.display());
    let f = File::open(path).map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
    let meta = f
        .metadata()
        .map_err(|e| ConfigError::invalid(&what, e.to_string()))?;
    if !meta.is_file() {
        return Err(ConfigError::invalid(&what, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(ConfigError::invalid(&what, "file is empty"));
    }
    Ok(())
}
