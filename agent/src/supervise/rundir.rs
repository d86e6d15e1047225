//! The agent's run state: one private directory (`run_dir` in the config, root-owned 0700 when
//! the agent is root) holding a directory per running EU with the files a backend is started
//! with (`vm.json`, `jail.json`) and the VMM's control socket. Nobody else can create, replace
//! or read anything in it, so a privileged reader of those files reads only what the agent wrote.
//!
//! Everything is made without following links: the base is checked with lstat, an EU's
//! directory is removed and made afresh for each start (0700), and files are created
//! exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Where run state lives when the config names no `run_dir` and the agent runs as root
/// (a tmpfs on the boards, see rootfs/files/init).
pub const DEFAULT_RUN_DIR: &str = "/run/cpevisor";

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn named(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("run directory {}: {why}", path.display()),
    )
}

/// Checks that `path` (lstat) is a directory of ours that nobody else can enter.
fn check_private(path: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if md.file_type().is_symlink() {
        return Err(named(path, "is a symbolic link (refused)"));
    }
    if !md.is_dir() {
        return Err(named(path, "is not a directory (refused)"));
    }
    if md.uid() != euid() {
        return Err(named(
            path,
            format!(
                "owned by uid {}, not by the agent (uid {})",
                md.uid(),
                euid()
            ),
        ));
    }
    if md.mode() & 0o077 != 0 {
        return Err(named(
            path,
            format!(
                "mode {:o} lets group or others in (must be 0700)",
                md.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Checks that no other user can replace `dir` or anything above it: every ancestor is owned
/// by root or the agent and writable by nobody else, unless sticky (as /tmp is: others cannot
/// rename or remove what is ours there).
fn check_ancestors(dir: &Path) -> io::Result<()> {
    let mut at = PathBuf::new();
    for c in dir.components() {
        at.push(c);
        let md = fs::symlink_metadata(&at)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", at.display())))?;
        if md.uid() != 0 && md.uid() != euid() {
            return Err(named(
                dir,
                format!("{} is owned by uid {}", at.display(), md.uid()),
            ));
        }
        if md.mode() & 0o022 != 0 && md.mode() & libc::S_ISVTX == 0 {
            return Err(named(
                dir,
                format!(
                    "{} is writable by others (mode {:o})",
                    at.display(),
                    md.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// Makes the base run directory at start-up, or accepts an existing one only if it is ours and
/// private; returns it with its parent resolved (no symlink on the way is looked at again).
/// `configured`: the config's `run_dir`; None: `DEFAULT_RUN_DIR` as root, else
/// `<state_dir>/run`.
pub fn prepare_base(configured: Option<&Path>, state_dir: &Path) -> io::Result<PathBuf> {
    let wanted = match configured {
        Some(p) => p.to_path_buf(),
        None if euid() == 0 => PathBuf::from(DEFAULT_RUN_DIR),
        None => state_dir.join("run"),
    };
    let (parent, name) = match (wanted.parent(), wanted.file_name()) {
        (Some(p), Some(n)) if !p.as_os_str().is_empty() => (p, n),
        _ => {
            return Err(named(
                &wanted,
                "must be an absolute path below / (not / itself)",
            ))
        }
    };
    if !wanted.is_absolute() {
        return Err(named(&wanted, "must be an absolute path"));
    }
    fs::create_dir_all(parent)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
    let parent = fs::canonicalize(parent)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
    check_ancestors(&parent)?;
    let base = parent.join(name);
    match fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(named(&base, e)),
    }
    check_private(&base)?;
    Ok(base)
}

/// `<base>/<eu_id>`, for an EU id that is one plain path component.
pub fn eu_dir(base: &Path, eu_id: &str) -> io::Result<PathBuf> {
    let mut comps = Path::new(eu_id).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(n)), None) if n == OsStr::new(eu_id) => Ok(base.join(eu_id)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("EU id {eu_id:?} is not a plain name"),
        )),
    }
}

/// Makes `dir` (an EU's directory directly in a private base) empty and 0700: what is there
/// from an earlier run is removed first, links themselves and never what they point to.
pub fn fresh_eu_dir(dir: &Path) -> io::Result<()> {
    let base = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| named(dir, "has no parent run directory"))?;
    check_private(base)?;
    match fs::symlink_metadata(dir) {
        // remove_dir_all does not follow symlinks inside the tree.
        Ok(md) if md.is_dir() => fs::remove_dir_all(dir)?,
        Ok(_) => fs::remove_file(dir)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(dir, e)),
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| named(dir, e))?;
    check_private(dir)
}

/// Creates `dir/name` exclusively (0600, not through a link, close-on-exec) with `bytes`;
/// fails with EEXIST or ELOOP when anything is already there. Returns the file's path.
pub fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    let path = dir.join(name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        // O_CREAT|O_EXCL; std adds O_CLOEXEC.
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cpv-rundir-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    }

    #[test]
    fn the_base_is_made_private_and_a_foreign_one_is_refused() {
        let root = scratch("base");
        let base = prepare_base(Some(&root.join("run")), &root).unwrap();
        let md = fs::symlink_metadata(&base).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o700);
        assert_eq!(md.uid(), euid());
        // Again: an existing private one is accepted.
        assert_eq!(prepare_base(Some(&base), &root).unwrap(), base);

        let wide = root.join("wide");
        fs::create_dir(&wide).unwrap();
        fs::set_permissions(&wide, fs::Permissions::from_mode(0o755)).unwrap();
        let e = prepare_base(Some(&wide), &root).unwrap_err().to_string();
        assert!(e.contains("wide") && e.contains("must be 0700"), "{e}");

        let link = root.join("link");
        std::os::unix::fs::symlink(&base, &link).unwrap();
        let e = prepare_base(Some(&link), &root).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        let file = root.join("file");
        fs::write(&file, b"").unwrap();
        let e = prepare_base(Some(&file), &root).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");

        let open = root.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_base(Some(&open.join("run")), &root)
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by others"), "{e}");

        assert!(prepare_base(Some(Path::new("relative/run")), &root).is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_eu_dir_is_made_afresh_and_files_are_created_exclusively() {
        let root = scratch("eu");
        let base = prepare_base(Some(&root.join("run")), &root).unwrap();
        let dir = eu_dir(&base, "eu-1").unwrap();
        assert!(eu_dir(&base, "../eu-1").is_err() && eu_dir(&base, "a/b").is_err());

        // A leftover of an earlier run, with a link out of it: removed, the target kept.
        let outside = root.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
        fresh_eu_dir(&dir).unwrap();
        assert!(outside.join("keep").exists());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(fs::symlink_metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        // The EU "dir" being a symlink: the link goes, not its target.
        fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&outside, &dir).unwrap();
        fresh_eu_dir(&dir).unwrap();
        assert!(outside.join("keep").exists());
        assert!(fs::symlink_metadata(&dir).unwrap().is_dir());

        let p = write_new(&dir, "jail.json", b"{}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        // Anything already there is refused, never followed or opened.
        let e = write_new(&dir, "jail.json", b"{}").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        mkfifo(&dir.join("vm.json"));
        let e = write_new(&dir, "vm.json", b"{}").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        std::os::unix::fs::symlink(outside.join("planted"), dir.join("link.json")).unwrap();
        let e = write_new(&dir, "link.json", b"{}").unwrap_err();
        // EEXIST (O_EXCL sees the link itself) or ELOOP (O_NOFOLLOW).
        assert!(
            e.kind() == io::ErrorKind::AlreadyExists || e.to_string().contains("os error 40"),
            "{e}"
        );
        assert!(!outside.join("planted").exists());
        assert!(write_new(&dir, "../x", b"").is_err());

        // An EU dir whose parent is not private is refused.
        let e = fresh_eu_dir(&outside.join("eu-1")).unwrap_err().to_string();
        assert!(e.contains("must be 0700"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
