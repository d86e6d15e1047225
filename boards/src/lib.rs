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
//! repository's `boards/`). On a board itself, load the installed copy with
//! [`Board::load_json`]: the firmware installs the profile as JSON, and the device's build of
//! this crate leaves out the TOML parser (feature `toml`, on by default; docs/flash.md).

#![forbid(unsafe_code)]

mod error;
mod lookup;
mod parse;
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

/// Where the firmware installs the board's profile, as JSON ([`Board::to_json_text`]), and
/// where the agent on the board reads it ([`Board::load_json`]).
pub const INSTALLED_PROFILE: &str = "/etc/cpevisor/board.json";

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
#[cfg(feature = "toml")]
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
    /// Loads and validates the TOML profile at `path`. The file may have any name.
    #[cfg(feature = "toml")]
    pub fn load(path: impl AsRef<Path>) -> Result<Board, BoardError> {
        let path = path.as_ref();
        Board::from_toml_str(&read_profile(path)?, path)
    }

    /// Loads and validates a profile as the firmware installs it on a board: JSON
    /// (`/etc/cpevisor/board.json`, written by the firmware builder from the TOML profile with
    /// [`Board::to_json`]), so that the device needs no TOML parser. The file may have any name.
    pub fn load_json(path: impl AsRef<Path>) -> Result<Board, BoardError> {
        let path = path.as_ref();
        Board::from_json_str(&read_profile(path)?, path)
    }

    /// Loads `<boards_dir>/<name>.toml` (see [`boards_dir`]).
    #[cfg(feature = "toml")]
    pub fn by_name(name: &str) -> Result<Board, BoardError> {
        Board::by_name_in(&boards_dir(), name)
    }

    /// Loads `<dir>/<name>.toml` and checks that the profile calls itself `name`.
    #[cfg(feature = "toml")]
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

/// The text of the profile file at `path`, refused if larger than [`MAX_PROFILE_BYTES`].
fn read_profile(path: &Path) -> Result<String, BoardError> {
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
    Ok(text)
}
