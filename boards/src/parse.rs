//! Profile text to a validated [`Board`]: TOML as written in `boards/` (feature `toml`, the
//! host's), JSON as the firmware installs it (the device's). Both go through the same serde
//! types and the same [`validate`](crate::validate) rules; errors name the file and the field.

use std::path::Path;

use crate::error::BoardError;
use crate::profile::Board;
use crate::validate;

impl Board {
    /// Parses and validates TOML profile text; `origin` is the file name used in errors.
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Board, BoardError> {
        let origin = origin.as_ref();
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            BoardError::Syntax {
                file: origin.to_path_buf(),
                format: "TOML",
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let board: Board = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| typed_field_error(origin, e.path().to_string(), e.inner().message()))?;
        validate::validate(&board, origin)?;
        Ok(board)
    }

    /// Parses and validates JSON profile text (the shape of [`Board::to_json`]); `origin` is
    /// the file name used in errors.
    pub fn from_json_str(text: &str, origin: impl AsRef<Path>) -> Result<Board, BoardError> {
        let origin = origin.as_ref();
        // From bytes, as the agent's other JSON: one instance of serde_json's reader code.
        let mut de = serde_json::Deserializer::from_slice(text.as_bytes());
        let board: Board = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| json_error(origin, e.path().to_string(), e.inner()))?;
        // Anything after the profile's object is refused too.
        de.end().map_err(|e| json_error(origin, ".".into(), &e))?;
        validate::validate(&board, origin)?;
        Ok(board)
    }
}

/// A serde_json error at field `path`: a data error (type, missing or unknown field) names the
/// field, a syntax error the line and column.
fn json_error(origin: &Path, path: String, e: &serde_json::Error) -> BoardError {
    if e.is_data() {
        return typed_field_error(origin, path, &json_message(e));
    }
    BoardError::Syntax {
        file: origin.to_path_buf(),
        format: "JSON",
        line: e.line(),
        column: e.column(),
        message: json_message(e),
    }
}

/// serde_json's message without the ` at line L column C` it appends (the error reports the
/// position in its own fields).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix)
        .unwrap_or(&text)
        .trim()
        .to_string()
}

/// A serde error as one naming the field. A missing field is reported at its parent's path
/// with the field's name in the message: move the name into the path. (An unknown field's path
/// already ends with its name.)
fn typed_field_error(origin: &Path, path: String, message: &str) -> BoardError {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((child, tail)) = rest.split_once('`') {
            let field = if path == "." {
                child.to_string()
            } else {
                format!("{path}.{child}")
            };
            return BoardError::field(origin, field, format!("missing field{tail}"));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((_, tail)) = rest.split_once('`') {
            return BoardError::field(origin, path, format!("unknown field{tail}"));
        }
    }
    BoardError::field(origin, path, message)
}

/// 1-based line and column of byte `offset` in `text`.
#[cfg(feature = "toml")]
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
