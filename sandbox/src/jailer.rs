//! A process's own empty world, for a program that opened everything it needs first (the VMM:
//! /dev/kvm, its tap, kernel, disks, control socket): a private mount namespace whose root is an
//! empty read-only tmpfs, new IPC and UTS namespaces, and an unprivileged uid/gid with no
//! capabilities left. After this, paths lead nowhere; only the descriptors already held work.
//!
//! Both steps need a single-threaded caller: unshare(CLONE_NEWNS) of one thread of many would
//! move only that thread, and setresuid(2) the raw syscall changes only the calling thread.

use std::ffi::CString;
use std::io;

use crate::caps;

/// Where the empty root is mounted before pivot_root: any directory will do (the mount lives
/// only in the new namespace); these exist on every system we run on.
const MOUNT_POINTS: [&str; 3] = ["/tmp", "/proc", "/"];

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a constant path")
}

/// Moves the calling process into new mount, IPC and UTS namespaces whose root directory is an
/// empty, read-only tmpfs, with the old root detached. Needs CAP_SYS_ADMIN.
///
/// A system running from its initramfs (many routers, the emulated kvm boards) has the kernel's
/// rootfs as `/`, which pivot_root refuses (EINVAL: it cannot be unmounted). There the empty
/// tmpfs is moved over `/` and chrooted into instead (as switch_root and runc's no-pivot mode
/// do): the old root stays mounted underneath, out of reach of a process that holds no
/// directory descriptor and no capability to chroot or mount again.
pub fn enter_empty_root() -> io::Result<()> {
    enter_empty_root_with(true)
}

fn enter_empty_root_with(try_pivot: bool) -> io::Result<()> {
    check(
        // SAFETY: unshare takes flags only.
        unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) },
        "unshare(mount, IPC, UTS namespaces)",
    )?;
    let root = cstr("/");
    // Nothing mounted or unmounted from here reaches the parent's namespace.
    check(
        // SAFETY: a valid NUL-terminated path and null pointers where the call allows them.
        unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        },
        "making / private",
    )?;
    let target = MOUNT_POINTS
        .iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_dir()))
        .copied()
        .unwrap_or("/");
    let target_c = cstr(target);
    let fstype = cstr("tmpfs");
    // Two inodes and one page: room for the root directory and nothing else.
    let opts = cstr("mode=0555,size=4k,nr_inodes=2");
    check(
        // SAFETY: valid NUL-terminated strings, alive for the call.
        unsafe {
            libc::mount(
                fstype.as_ptr(),
                target_c.as_ptr(),
                fstype.as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr().cast(),
            )
        },
        &format!("mounting an empty tmpfs on {target}"),
    )?;
    // pivot_root(".", "."): the old root ends up stacked under the new one, then is detached
    // (the way runc does it, without a directory for the old root).
    check(
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::chdir(target_c.as_ptr()) },
        &format!("chdir {target}"),
    )?;
    let dot = cstr(".");
    // SAFETY: pivot_root reads two valid NUL-terminated paths.
    let pivoted = try_pivot
        && unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } == 0;
    if pivoted {
        check(
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) },
            "detaching the old root",
        )?;
    } else {
        let e = io::Error::last_os_error();
        if try_pivot && e.raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::new(
                e.kind(),
                format!("pivot_root into the empty root: {e}"),
            ));
        }
        // The root is the initramfs: move the empty tmpfs over it and chroot there.
        check(
            // SAFETY: valid NUL-terminated paths; null pointers where the call allows them.
            unsafe {
                libc::mount(
                    dot.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_MOVE,
                    std::ptr::null(),
                )
            },
            "moving the empty root over /",
        )?;
        check(
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::chroot(dot.as_ptr()) },
            "chroot into the empty root",
        )?;
    }
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::chdir(root.as_ptr()) }, "chdir /")
}

/// `CAP_SETPCAP`: kept across the uid change only long enough to empty the bounding set.
const CAP_SETPCAP: u32 = 8;

/// Becomes `uid`/`gid` with no supplementary groups and no capabilities at all (bounding,
/// ambient, permitted, effective, inheritable), then sets no_new_privs. Needs to start as root.
///
/// Emptying the bounding set needs CAP_SETPCAP, which a uid change from root clears; so the
/// permitted set is kept across the change (PR_SET_KEEPCAPS), CAP_SETPCAP alone is made
/// effective, and `caps::drop_all` then removes everything.
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    if uid == 0 || gid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("become_user: uid {uid} / gid {gid}: root is not a confinement"),
        ));
    }
    check(
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) },
        "PR_SET_KEEPCAPS",
    )?;
    check(
        // SAFETY: setgroups with an empty list reads no memory.
        unsafe { libc::setgroups(0, std::ptr::null()) },
        "setgroups([])",
    )?;
    check(
        // SAFETY: integer arguments only.
        unsafe { libc::setresgid(gid, gid, gid) },
        &format!("setresgid({gid})"),
    )?;
    check(
        // SAFETY: integer arguments only.
        unsafe { libc::setresuid(uid, uid, uid) },
        &format!("setresuid({uid})"),
    )?;
    // CAP_SETPCAP alone, effective and permitted: enough to empty the bounding set next.
    caps::capset(1 << CAP_SETPCAP, 1 << CAP_SETPCAP, 0)?;
    caps::drop_all()?;
    check(
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) },
        "clearing PR_SET_KEEPCAPS",
    )?;
    caps::set_no_new_privs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child (these steps cannot be undone) and returns its exit code.
    fn in_child(f: impl FnOnce() -> bool) -> i32 {
        // SAFETY: the test harness may have threads, but the child only runs `f`, which makes
        // syscalls and small allocations, then leaves with _exit.
        match unsafe { libc::fork() } {
            0 => {
                let ok = f();
                // SAFETY: ends the forked child without the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            child => {
                assert!(child > 0, "fork failed");
                let mut status = 0;
                // SAFETY: waits for our own child; valid out pointer.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
                assert!(libc::WIFEXITED(status), "child died: {status:#x}");
                libc::WEXITSTATUS(status)
            }
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn the_empty_root_is_empty_read_only_and_a_new_namespace() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let host_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let code = in_child(move || {
            if enter_empty_root().is_err() {
                return false;
            }
            let empty = std::fs::read_dir("/")
                .map(|d| d.count() == 0)
                .unwrap_or(false);
            let read_only = std::fs::File::create("/x").is_err();
            let no_host = !std::path::Path::new("/etc").exists();
            empty && read_only && no_host
        });
        assert_eq!(code, 0);
        assert_eq!(
            std::fs::read_link("/proc/self/ns/mnt").unwrap(),
            host_ns,
            "the parent's namespace is untouched"
        );
    }

    #[test]
    fn on_an_initramfs_root_the_empty_root_is_moved_over_it() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // The pivot_root-less path that a board running from its initramfs takes.
        let code = in_child(|| {
            if enter_empty_root_with(false).is_err() {
                return false;
            }
            let empty = std::fs::read_dir("/")
                .map(|d| d.count() == 0)
                .unwrap_or(false);
            let read_only = std::fs::File::create("/x").is_err();
            let no_host =
                !std::path::Path::new("/etc").exists() && !std::path::Path::new("/../etc").exists();
            empty && read_only && no_host
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn become_user_leaves_no_capability_and_no_way_back() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let code = in_child(|| {
            if become_user(65534, 65534).is_err() {
                return false;
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let field = |k| caps::status_field(&status, k);
            // SAFETY: integer-only calls; they must fail now.
            let back = unsafe { libc::setresuid(0, 0, 0) } == 0;
            field("Uid").as_deref() == Some("65534\t65534\t65534\t65534")
                && field("Gid").as_deref() == Some("65534\t65534\t65534\t65534")
                && field("Groups").as_deref() == Some("")
                && field("CapEff").as_deref() == Some("0000000000000000")
                && field("CapPrm").as_deref() == Some("0000000000000000")
                && field("CapBnd").as_deref() == Some("0000000000000000")
                && field("NoNewPrivs").as_deref() == Some("1")
                && !back
        });
        assert_eq!(code, 0);
        assert!(become_user(0, 5).is_err(), "root is refused");
    }
}
