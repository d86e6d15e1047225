//! Descriptors above stderr: what a process inherited must not reach the programs it runs.

use std::io;

/// `close_range(2)` flag: mark close-on-exec instead of closing (Linux 5.11).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Closes every descriptor from `first` up, except those in `keep`. For a process about to
/// exec into something less trusted. Uses close_range(2) between the kept ones; kernels
/// without it (before 5.9) get the /proc/self/fd walk.
pub fn close_from(first: libc::c_int, keep: &[libc::c_int]) -> io::Result<()> {
    let mut keep: Vec<libc::c_uint> = keep
        .iter()
        .filter(|&&fd| fd >= first)
        .map(|&fd| fd as libc::c_uint)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut start = first as libc::c_uint;
    for k in keep.iter().copied().chain([libc::c_uint::MAX]) {
        if k > start {
            let end = if k == libc::c_uint::MAX { k } else { k - 1 };
            close_range(start, end, 0)?;
        }
        start = k.saturating_add(1);
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec: for a daemon at start-up, so nothing
/// it inherited from whoever started it reaches the processes it spawns.
pub fn cloexec_from(first: libc::c_int) -> io::Result<()> {
    close_range(
        first as libc::c_uint,
        libc::c_uint::MAX,
        CLOSE_RANGE_CLOEXEC,
    )
}

fn close_range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes integers only; closing descriptors we own nothing through
    // (Rust objects holding them) is the caller's contract, as for close(2).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(io::Error::new(e.kind(), format!("close_range: {e}")));
    }
    walk_proc_fds(first, last, flags)
}

fn walk_proc_fds(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) -> io::Result<()> {
    let fds: Vec<libc::c_uint> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| (first..=last).contains(fd))
        .collect();
    for fd in fds {
        let fd = fd as libc::c_int;
        // SAFETY: integer-only calls on descriptor numbers; see close_range above.
        unsafe {
            if flags & CLOSE_RANGE_CLOEXEC != 0 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn is_open(fd: libc::c_int) -> bool {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    #[test]
    fn closes_all_but_the_kept_ones_in_a_child() {
        let a = std::fs::File::open("/proc/self/status").unwrap();
        let b = std::fs::File::open("/proc/self/status").unwrap();
        let (a, b) = (a.as_raw_fd(), b.as_raw_fd());
        // SAFETY: the child only makes integer syscalls and leaves with _exit.
        match unsafe { libc::fork() } {
            0 => {
                let ok = close_from(3, &[b]).is_ok() && !is_open(a) && is_open(b) && is_open(2);
                // SAFETY: ends the forked child without the parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            child => {
                assert!(child > 0);
                let mut status = 0;
                // SAFETY: our own child; valid out pointer.
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            }
        }
        assert!(is_open(a) && is_open(b), "the parent keeps its descriptors");
    }
}
