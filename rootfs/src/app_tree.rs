//! A prepared tree of files an app's root file system carries beside the builder's own (the DNS
//! filter's Debian dnsmasq with its shared libraries and loader, from
//! `scripts/dns-filter-tree.sh`), read into memory for the jail tar or the guest image.
//!
//! Only directories and regular files are taken: the script resolves every symlink, and the jail
//! tar has no links. Bounded in files and bytes, so a wrong `--tree` (a whole root) fails here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Most regular files in a tree (dnsmasq's closure is 25).
pub const MAX_TREE_FILES: usize = 256;
/// Most bytes of file data in a tree (dnsmasq's closure is ~11 MiB).
pub const MAX_TREE_BYTES: u64 = 64 << 20;
/// Deepest directory nesting accepted.
const MAX_DEPTH: usize = 16;

/// One regular file of a tree: its relative path (`/`-separated), contents and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative path, `/`-separated, no leading `/`.
    pub path: String,
    /// The file's bytes.
    pub data: Vec<u8>,
    /// 0o755 when the source was executable by anyone, else 0o644.
    pub mode: u32,
}

/// What went wrong reading a tree.
#[derive(Debug)]
pub enum TreeError {
    /// The tree breaks a rule (the message says which).
    Input(String),
    /// Reading `path` failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeError::Input(m) => f.write_str(m),
            TreeError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for TreeError {}

/// Reads every regular file under `root`, sorted by path; modes keep their 0o755/0o644 bits.
/// Refuses symlinks and special files, names that are not plain UTF-8 components, and trees over
/// [`MAX_TREE_FILES`] files or [`MAX_TREE_BYTES`] bytes.
pub fn read_tree(root: &Path) -> Result<Vec<TreeFile>, TreeError> {
    let mut files = Vec::new();
    let mut bytes = 0u64;
    walk(root, "", 0, &mut files, &mut bytes)?;
    if files.is_empty() {
        return Err(TreeError::Input(format!(
            "{}: no files in the tree",
            root.display()
        )));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    files: &mut Vec<TreeFile>,
    bytes: &mut u64,
) -> Result<(), TreeError> {
    let io_at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| TreeError::Io { path: p, source }
    };
    if depth > MAX_DEPTH {
        return Err(TreeError::Input(format!(
            "{}: nested deeper than {MAX_DEPTH} directories",
            dir.display()
        )));
    }
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .ok()
            .filter(|n| !n.is_empty() && !n.contains(['/', '\0']))
            .ok_or_else(|| TreeError::Input(format!("{}: not a UTF-8 name", path.display())))?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        // symlink_metadata: a link is refused, not followed.
        let meta = fs::symlink_metadata(&path).map_err(io_at(&path))?;
        if meta.is_dir() {
            walk(&path, &rel, depth + 1, files, bytes)?;
        } else if meta.is_file() {
            if files.len() >= MAX_TREE_FILES {
                return Err(TreeError::Input(format!(
                    "{}: more than {MAX_TREE_FILES} files",
                    dir.display()
                )));
            }
            *bytes += meta.len();
            if *bytes > MAX_TREE_BYTES {
                return Err(TreeError::Input(format!(
                    "{}: more than {MAX_TREE_BYTES} bytes of files",
                    dir.display()
                )));
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let data = fs::read(&path).map_err(io_at(&path))?;
            files.push(TreeFile {
                path: rel,
                data,
                mode,
            });
        } else {
            return Err(TreeError::Input(format!(
                "{}: not a regular file or directory (the tree must hold no links)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Every directory above the files' paths (`a/b/c` gives `a` and `a/b`), sorted, each once.
pub fn parent_dirs(files: &[TreeFile]) -> Vec<String> {
    let mut dirs: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let parts: Vec<&str> = f.path.split('/').collect();
            (1..parts.len())
                .map(|n| parts[..n].join("/"))
                .collect::<Vec<_>>()
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_sorted_with_modes_and_lists_their_parents() {
        let dir = std::env::temp_dir().join(format!("app-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("usr/sbin")).unwrap();
        fs::create_dir_all(dir.join("lib/x")).unwrap();
        fs::write(dir.join("usr/sbin/server"), b"elf").unwrap();
        fs::set_permissions(
            dir.join("usr/sbin/server"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        fs::write(dir.join("lib/x/libc.so.6"), b"lib").unwrap();
        let files = read_tree(&dir).unwrap();
        let got: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            got,
            [("lib/x/libc.so.6", 0o644), ("usr/sbin/server", 0o755)]
        );
        assert_eq!(parent_dirs(&files), ["lib", "lib/x", "usr", "usr/sbin"]);

        // A symlink is refused, not followed.
        std::os::unix::fs::symlink("libc.so.6", dir.join("lib/x/libc.so")).unwrap();
        let err = read_tree(&dir).unwrap_err().to_string();
        assert!(err.contains("no links"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_empty_or_missing_tree_is_refused() {
        let dir = std::env::temp_dir().join(format!("app-tree-empty-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert!(read_tree(&dir)
            .unwrap_err()
            .to_string()
            .contains("no files"));
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(read_tree(&dir), Err(TreeError::Io { .. })));
    }
}
