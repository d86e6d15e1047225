//! Helpers shared by the board tests: scratch directories and profile text edits.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository's `boards/` directory, where the shipped profiles live.
pub fn shipped_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Text of a shipped profile.
pub fn shipped_text(name: &str) -> String {
    std::fs::read_to_string(shipped_dir().join(format!("{name}.toml")))
        .unwrap_or_else(|e| panic!("reading shipped profile {name}: {e}"))
}

/// A fresh empty directory under the system temp dir, unique to this process and call;
/// removed when dropped.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch_dir(label: &str) -> Scratch {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "cpevisor-boards-test-{}-{label}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    Scratch(dir)
}

/// Writes `text` as `<dir>/<file>` and returns the path.
pub fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write profile");
    path
}

/// Replaces exactly one occurrence of the line starting with `line_start`; panics if there is
/// none, so a changed shipped profile cannot make a test pass vacuously.
pub fn replace_line(text: &str, line_start: &str, new_line: &str) -> String {
    let hits = text
        .lines()
        .filter(|l| l.trim_start().starts_with(line_start))
        .count();
    assert_eq!(hits, 1, "expected one line starting with `{line_start}`");
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with(line_start) {
                new_line.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Removes the line starting with `line_start` (exactly one must exist).
pub fn remove_line(text: &str, line_start: &str) -> String {
    replace_line(text, line_start, "")
}

/// Removes a `[section]` and its keys (up to the next section or the end).
pub fn remove_section(text: &str, section: &str) -> String {
    let header = format!("[{section}]");
    assert!(text.contains(&header), "no section {header}");
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.trim_start().starts_with('[') {
            skipping = line.trim() == header;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n") + "\n"
}
