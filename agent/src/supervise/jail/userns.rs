//! The jail's user namespace: uid/gid 0 inside map to one unprivileged host id per app, so an
//! app that escapes its mounts is nobody on the host.
//!
//! One id, not a 65536 range: the app needs no second identity (no_new_privs, no setuid
//! binaries), a single map needs no subordinate-id bookkeeping on the router, and every file the
//! app creates is owned by one host uid that names the app (`USERNS_ID_BASE` + EU number).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// First host id handed to apps (above the ids of ordinary accounts and of subuid ranges'
/// usual start).
pub const USERNS_ID_BASE: u32 = 100_000;
/// Host ids reserved for apps: EU numbers 0..USERNS_ID_SPAN.
pub const USERNS_ID_SPAN: u32 = 1 << 20;
/// Deepest data-volume tree whose ownership is changed (deeper entries are an error).
const MAX_CHOWN_DEPTH: usize = 64;

/// Whether this kernel offers user namespaces, or why not.
pub fn available() -> Result<(), String> {
    if !Path::new("/proc/self/ns/user").exists() {
        return Err("the kernel has no user namespaces (no /proc/self/ns/user)".into());
    }
    let max = "/proc/sys/user/max_user_namespaces";
    match fs::read_to_string(max) {
        Ok(s) if s.trim().parse::<u64>().is_ok_and(|n| n > 0) => Ok(()),
        Ok(s) => Err(format!("{max} is {}", s.trim())),
        Err(e) => Err(format!("{max}: {e}")),
    }
}

/// The host uid/gid the app `eu_id` (`eu-N`) is root as.
pub fn host_id(eu_id: &str) -> Result<u32, String> {
    let n: u32 = eu_id
        .strip_prefix("eu-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{eu_id}: not an agent EUID"))?;
    if n >= USERNS_ID_SPAN {
        return Err(format!(
            "{eu_id}: beyond the {USERNS_ID_SPAN} host ids of jailed apps"
        ));
    }
    Ok(USERNS_ID_BASE + n)
}

/// Checks a spec's host id.
pub fn check_host_id(id: u32) -> Result<(), String> {
    if !(USERNS_ID_BASE..USERNS_ID_BASE + USERNS_ID_SPAN).contains(&id) {
        return Err(format!(
            "host_id: {id} not in {USERNS_ID_BASE}..{}",
            USERNS_ID_BASE + USERNS_ID_SPAN
        ));
    }
    Ok(())
}

/// Maps uid and gid 0 of `pid`'s (fresh) user namespace to `host_id`. setgroups is denied
/// first: the jail then cannot drop the (empty) group list to get past a "not this group"
/// permission.
pub fn write_maps(pid: i32, host_id: u32) -> Result<(), String> {
    let proc = Path::new("/proc").join(pid.to_string());
    let map = format!("0 {host_id} 1\n");
    for (file, text) in [
        ("uid_map", map.as_str()),
        ("setgroups", "deny\n"),
        ("gid_map", map.as_str()),
    ] {
        let path = proc.join(file);
        fs::write(&path, text).map_err(|e| format!("jail: write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Gives the data volume to `owner` (uid = gid) when its top directory belongs to someone
/// else: first start with a user namespace, or the setting changed since the last run. The
/// app is not running, so nothing moves under the walk; symlinks are changed, not followed.
pub fn own_data(dir: &Path, owner: u32) -> Result<(), String> {
    let md = fs::symlink_metadata(dir).map_err(|e| format!("jail: {}: {e}", dir.display()))?;
    if md.uid() == owner && md.gid() == owner {
        return Ok(());
    }
    chown_tree(dir, owner, 0).map_err(|e| format!("jail: give {} to {owner}: {e}", dir.display()))
}

fn chown_tree(path: &Path, owner: u32, depth: usize) -> io::Result<()> {
    if depth > MAX_CHOWN_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested deeper than {MAX_CHOWN_DEPTH}",
            path.display()
        )));
    }
    std::os::unix::fs::lchown(path, Some(owner), Some(owner))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), owner, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_follow_the_eu_number_and_are_bounded() {
        assert_eq!(host_id("eu-0"), Ok(USERNS_ID_BASE));
        assert_eq!(host_id("eu-7"), Ok(USERNS_ID_BASE + 7));
        assert!(host_id("eu-x").unwrap_err().contains("not an agent EUID"));
        assert!(host_id(&format!("eu-{USERNS_ID_SPAN}"))
            .unwrap_err()
            .contains("beyond"));
        assert_eq!(check_host_id(USERNS_ID_BASE + 7), Ok(()));
        assert!(check_host_id(0).unwrap_err().contains("host_id: 0"));
        assert!(check_host_id(USERNS_ID_BASE + USERNS_ID_SPAN).is_err());
    }
}
