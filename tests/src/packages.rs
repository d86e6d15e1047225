//! Variants of the signed sample packages: a staged package (`target/packages/build/<name>/`,
//! left there by scripts/sample-app.sh) copied, its `app.json` edited, and packed and signed
//! again with the key the firmware trusts, so a test gets a package that is good but for the
//! one change it makes.

use crate::agent::host_cpevisorctl;
use crate::microvm::cache_dir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bounds the copy: a staged package is a handful of files.
const MAX_FILES: usize = 64;

/// Copies the stage `<dir>/build/<from>` to `<dir>/build/<name>`, lets `edit` change its app
/// config, and packs it into `<dir>/<name>.cpkg`; returns that file's name.
pub fn repack(
    dir: &Path,
    from: &str,
    name: &str,
    edit: impl Fn(&mut Value),
) -> Result<String, String> {
    let from = dir.join("build").join(from);
    let stage = dir.join("build").join(name);
    let _ = std::fs::remove_dir_all(&stage);
    let mut copied = 0;
    copy_tree(&from, &stage, &mut copied)
        .map_err(|e| format!("{}: {e} (rerun scripts/sample-app.sh)", from.display()))?;
    let text = std::fs::read_to_string(from.join("app.json"))
        .map_err(|e| format!("{}/app.json: {e}", from.display()))?;
    let mut config: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}/app.json: {e}", from.display()))?;
    edit(&mut config);
    std::fs::write(stage.join("app.json"), config.to_string())
        .map_err(|e| format!("{}/app.json: {e}", stage.display()))?;
    let file = format!("{name}.cpkg");
    let key = cache_dir()?.join("keys/cpevisor-signing.key");
    let out = Command::new(host_cpevisorctl()?)
        .arg("pack")
        .arg(&stage)
        .arg("--key")
        .arg(&key)
        .arg("--out")
        .arg(dir.join(&file))
        .output()
        .map_err(|e| format!("cannot run cpevisorctl pack: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cpevisorctl pack {}: {}",
            stage.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(file)
}

/// Packages made by [`repack`] into one directory, each removed with its stage when this is
/// dropped (a test's or a bench's own variants, not left beside the shared packages).
pub struct Variants {
    dir: PathBuf,
    files: Vec<String>,
}

impl Variants {
    /// None yet, in `dir`.
    pub fn new(dir: &Path) -> Variants {
        Variants {
            dir: dir.to_path_buf(),
            files: Vec::new(),
        }
    }

    /// Takes `file` (a `<name>.cpkg` in the directory) to remove later; returns it.
    pub fn keep(&mut self, file: String) -> String {
        self.files.push(file.clone());
        file
    }
}

impl Drop for Variants {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(self.dir.join(f));
            let _ =
                std::fs::remove_dir_all(self.dir.join("build").join(f.trim_end_matches(".cpkg")));
        }
    }
}

/// Edits a jail app config so that its root is an erofs image (issue 15: mounted, never
/// extracted): `pack` makes the image from the stage's tar layer that `rootfs` named.
pub fn erofs_root(config: &mut Value) {
    if let Some(tar) = config.as_object_mut().and_then(|o| o.remove("rootfs")) {
        config["rootfs_erofs"] = tar;
    }
}

/// Plain files and directories only (a stage holds nothing else).
fn copy_tree(from: &Path, to: &Path, copied: &mut usize) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        *copied += 1;
        if *copied > MAX_FILES {
            return Err(std::io::Error::other(format!(
                "more than {MAX_FILES} files"
            )));
        }
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, copied)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
