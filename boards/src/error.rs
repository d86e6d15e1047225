//! Errors of loading a board profile or building a command from one.
//!
//! Every error that comes from a profile names the file and, where one field is at fault, the
//! dotted field path (`boards/x.toml: memory.app_budget_mib: ...`), so a profile author can fix
//! it without reading code.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// What went wrong loading a board profile or building a command from one.
#[derive(Debug)]
pub enum BoardError {
    /// No profile of that name in the boards directory.
    NotFound {
        /// The name asked for.
        name: String,
        /// The directory searched.
        dir: PathBuf,
        /// The profile names that do exist, for the message.
        available: Vec<String>,
    },
    /// The profile file could not be read.
    Io {
        /// The profile file.
        file: PathBuf,
        /// Why reading it failed.
        source: io::Error,
    },
    /// The file is not valid TOML (or JSON, as installed on a board).
    Syntax {
        /// The profile file.
        file: PathBuf,
        /// `TOML` or `JSON`.
        format: &'static str,
        /// Line of the error, 1-based.
        line: usize,
        /// Column of the error, 1-based.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A field is missing, of the wrong type, unknown, or has a value the validation rejects.
    Field {
        /// The profile file.
        file: PathBuf,
        /// Dotted path of the field (`memory.app_budget_mib`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The board has no `[qemu]` section, so it cannot be emulated.
    NotEmulated {
        /// The board's profile name.
        board: String,
    },
    /// An argument given to a command builder (ports, paths, command-line text) is unusable.
    Argument {
        /// Which argument (`ssh port`, `kernel path`).
        what: String,
        /// What is wrong with it.
        message: String,
    },
}

impl BoardError {
    pub(crate) fn field(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        BoardError::Field {
            file: file.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn argument(what: impl Into<String>, message: impl Into<String>) -> Self {
        BoardError::Argument {
            what: what.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoardError::NotFound {
                name,
                dir,
                available,
            } => write!(
                f,
                "no board profile `{name}` in {} (available: {})",
                dir.display(),
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            BoardError::Io { file, source } => write!(f, "{}: {source}", file.display()),
            BoardError::Syntax {
                file,
                format,
                line,
                column,
                message,
            } => write!(
                f,
                "{}: line {line}, column {column}: invalid {format}: {message}",
                file.display()
            ),
            BoardError::Field {
                file,
                field,
                message,
            } => write!(f, "{}: {field}: {message}", file.display()),
            BoardError::NotEmulated { board } => write!(
                f,
                "board `{board}` is a hardware board: it has no [qemu] section to emulate it"
            ),
            BoardError::Argument { what, message } => write!(f, "{what}: {message}"),
        }
    }
}

impl std::error::Error for BoardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BoardError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
