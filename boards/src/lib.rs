//! Board profiles: one TOML file per board in `boards/`, loaded and validated here.
//!
//! ```no_run
//! use cpevisor_boards::{Board, DEFAULT_BOARD};
//! let board = Board::by_name(DEFAULT_BOARD)?;
//! println!("{} runs {} apps in {} MiB", board.name, board.isolation, board.memory.app_budget_mib);
//! # Ok::<(), cpevisor_boards::BoardError>(())
//! ```
//!
//! Profiles are found in `$CPEVISOR_BOARDS_DIR` if set, else in this crate's directory (the
//! repository's `boards/`). On a board itself, load the installed copy with [`Board::load`].

#![forbid(unsafe_code)]

mod error;
mod lookup;
mod profile;
mod qemu;
mod validate;

pub use error::BoardError;
pub use lookup::plain_value;
pub use profile::{
    parse_app_range, parse_lan_address, Arch, Board, BoardKind, Cpu, InterruptController,
    Isolation, Kernel, Memory, Network, Qemu,
};
pub use qemu::{shell_join, shell_quote, MAX_APPEND_EXTRA, MAX_HOST_FORWARDS};

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The board `make demo` and the tests use unless told otherwise.
pub const DEFAULT_BOARD: &str = "qemu-virt-a53";

/// Environment variable that overrides the directory holding the profiles.
pub const BOARDS_DIR_ENV: &str = "CPEVISOR_BOARDS_DIR";

/// A profile is a page of text; anything larger is not one.
pub const MAX_PROFILE_BYTES: u64 = 64 * 1024;

/// TOML files in `boards/` that are tooling, not boards.
const NOT_BOARDS: [&str; 4] = ["Cargo", "clippy", "rustfmt", "deny"];

/// The directory holding the profiles: `$CPEVISOR_BOARDS_DIR` or the repository's `boards/`.
pub fn boards_dir() -> PathBuf {
    match std::env::var_os(BOARDS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// Names of the profiles in [`boards_dir`], sorted. Empty if the directory cannot be read.
pub fn list_boards() -> Vec<String> {
    list_boards_in(&boards_dir())
}

/// Names of the profiles in `dir`, sorted. Empty if the directory cannot be read.
pub fn list_boards_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let path = entry.path();
            if path.extension()? != "toml" || !path.is_file() {
                return None;
            }
            let stem = path.file_stem()?.to_str()?.to_string();
            (!NOT_BOARDS.contains(&stem.as_str())).then_some(stem)
        })
        .collect();
    names.sort();
    names
}

/// Loads every profile in `dir`, checking each one's name against its file; returns the
/// boards that loaded and the errors of those that did not.
pub fn load_all_in(dir: &Path) -> (Vec<Board>, Vec<BoardError>) {
    let mut boards = Vec::new();
    let mut errors = Vec::new();
    for name in list_boards_in(dir) {
        match Board::by_name_in(dir, &name) {
            Ok(board) => boards.push(board),
            Err(e) => errors.push(e),
        }
    }
    (boards, errors)
}

impl Board {
    /// Loads and validates the profile at `path`. The file may have any name (an installed
    /// board keeps its profile as `/etc/cpevisor/board.toml`).
    pub fn load(path: impl AsRef<Path>) -> Result<Board, BoardError> {
        let path = path.as_ref();
        let io_err = |source| BoardError::Io {
            file: path.to_path_buf(),
            source,
        };
        let file = fs::File::open(path).map_err(io_err)?;
        let mut text = String::new();
        file.take(MAX_PROFILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io_err)?;
        if text.len() as u64 > MAX_PROFILE_BYTES {
            return Err(BoardError::field(
                path,
                ".",
                format!("file is larger than {MAX_PROFILE_BYTES} bytes"),
            ));
        }
        Board::from_toml_str(&text, path)
    }

    /// Parses and validates profile text; `origin` is the file name used in errors.
    pub fn from_toml_str(text: &str, origin: impl AsRef<Path>) -> Result<Board, BoardError> {
        let origin = origin.as_ref();
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((1, 1));
            BoardError::Syntax {
                file: origin.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let board: Board = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| typed_field_error(origin, e))?;
        validate::validate(&board, origin)?;
        Ok(board)
    }

    /// Loads `<boards_dir>/<name>.toml` (see [`boards_dir`]).
    pub fn by_name(name: &str) -> Result<Board, BoardError> {
        Board::by_name_in(&boards_dir(), name)
    }

    /// Loads `<dir>/<name>.toml` and checks that the profile calls itself `name`.
    pub fn by_name_in(dir: &Path, name: &str) -> Result<Board, BoardError> {
        let not_found = || BoardError::NotFound {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            available: list_boards_in(dir),
        };
        // The name becomes a path: refuse anything that could leave the directory.
        validate::check_name(name).map_err(|_| not_found())?;
        let path = dir.join(format!("{name}.toml"));
        if !path.is_file() {
            return Err(not_found());
        }
        let board = Board::load(&path)?;
        if board.name != name {
            return Err(BoardError::field(
                &path,
                "name",
                format!("`{}` differs from the file name `{name}.toml`", board.name),
            ));
        }
        Ok(board)
    }

    /// Whether the board runs under QEMU (`kind = "emulated"`).
    pub fn is_emulated(&self) -> bool {
        self.kind == BoardKind::Emulated
    }
}

/// Turns a serde error into one naming the field. A missing field is reported at its parent's
/// path with the field's name in the message: move the name into the path. (An unknown field's
/// path already ends with its name.)
fn typed_field_error(origin: &Path, e: serde_path_to_error::Error<toml::de::Error>) -> BoardError {
    let path = e.path().to_string();
    let message = e.inner().message().trim().to_string();
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
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
