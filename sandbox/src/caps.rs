//! Privilege drop: no_new_privs, not dumpable, an empty capability bounding set (so executing
//! as uid 0 grants nothing back), no ambient, inheritable, permitted or effective caps.

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// Linux has 41 capabilities today; the bounding set is dropped until the kernel says EINVAL.
const MAX_CAPS: libc::c_ulong = 64;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the calling thread's effective, permitted and inheritable capability sets (bit n is
/// capability n) with capset(2), version 3.
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // Version 3 takes each set as two 32-bit words, the low one first.
    let word = |i: u32| CapData {
        effective: (effective >> (32 * i)) as u32,
        permitted: (permitted >> (32 * i)) as u32,
        inheritable: (inheritable >> (32 * i)) as u32,
    };
    let data = [word(0), word(1)];
    // SAFETY: capset reads one header and two data words, both valid for the call.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!(
                "capset(effective {effective:#x}, permitted {permitted:#x}, \
                 inheritable {inheritable:#x}): {e}"
            ),
        ));
    }
    Ok(())
}

/// No exec of this process or its children can gain privileges (setuid bits, file caps).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setting no_new_privs: {e}"),
        ));
    }
    Ok(())
}

/// Not dumpable: /proc/<pid>/mem and friends become root-owned and ptrace needs
/// CAP_SYS_PTRACE, so a process of the same uid cannot write into this one.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes only integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("clearing dumpable: {e}")));
    }
    Ok(())
}

/// Drops every capability of the calling process for good.
pub fn drop_all() -> io::Result<()> {
    for cap in 0..MAX_CAPS {
        // SAFETY: PR_CAPBSET_DROP takes the capability number by value; no memory involved.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(io::Error::new(
                e.kind(),
                format!("dropping capability {cap} from the bounding set: {e}"),
            ));
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes only integer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        let e = io::Error::last_os_error();
        // Kernels before 4.3 have no ambient set: nothing to clear.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::new(
                e.kind(),
                format!("clearing ambient capabilities: {e}"),
            ));
        }
    }
    capset(0, 0, 0)
}

/// The `CapEff`/`NoNewPrivs` lines of /proc/<pid>/status, for tests and diagnostics.
pub fn status_field(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim_start_matches(':').trim().to_string())
}

/// `key`'s value in a /proc status file (`/proc/<pid>/status`, `/proc/<pid>/task/<tid>/status`),
/// for tests and diagnostics; an error names the file and what was missing.
pub fn read_status_field(
    status_file: impl AsRef<std::path::Path>,
    key: &str,
) -> io::Result<String> {
    let path = status_file.as_ref();
    let status = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    status_field(&status, key).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {key} in {}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_in_a_child_leaves_it_with_nothing() {
        // A forked child drops its caps and reports them back through its exit status, so the
        // test process keeps its own.
        // SAFETY: the child only calls async-signal-safe-enough code in this single test and
        // leaves with _exit; the parent waits for it.
        match unsafe { libc::fork() } {
            0 => {
                let ok = set_no_new_privs().is_ok()
                    && drop_all().is_ok()
                    && std::fs::read_to_string("/proc/self/status")
                        .ok()
                        .map(|s| {
                            status_field(&s, "CapEff").as_deref() == Some("0000000000000000")
                                && status_field(&s, "CapBnd").as_deref() == Some("0000000000000000")
                                && status_field(&s, "NoNewPrivs").as_deref() == Some("1")
                        })
                        .unwrap_or(false);
                // SAFETY: _exit ends the forked child without running the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            child => {
                assert!(child > 0, "fork failed");
                let mut status = 0;
                // SAFETY: waits for our own child; `status` is a valid out pointer.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "the child kept a capability or no_new_privs is unset"
                );
            }
        }
    }
}
