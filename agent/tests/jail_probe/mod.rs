//! What a hostile app tries from inside its jail, run by the jail test binary itself (copied
//! into the rootfs with its shared libraries): the attacks of issue 10 on the jail's init
//! (/proc/1/mem, ptrace, process_vm_writev, pidfd_getfd), the descriptors it holds, the /proc
//! entries runc masks or makes read-only, and syscalls Docker's default profile refuses. Each
//! outcome is one `PROBE <what> <result>` line on stdout for the test outside to check; the
//! probe itself asserts nothing, so one run reports everything.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;

/// Set in the jailed probe's environment; without it the probe "test" does nothing.
pub const ENV: &str = "CPV_JAIL_PROBE";

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// "ok" or "err <errno>" of a raw syscall's return.
fn outcome(rc: libc::c_long) -> String {
    if rc >= 0 {
        "ok".into()
    } else {
        format!("err {}", errno())
    }
}

fn report(what: &str, result: impl std::fmt::Display) {
    println!("PROBE {what} {result}");
}

pub fn run() {
    println!(); // after libtest's "test jail_probe_entry ... "
    init_status();
    init_memory();
    init_tracing();
    own_descriptors();
    proc_entries();
    syscalls();
}

fn init_status() {
    let status = fs::read_to_string("/proc/1/status").unwrap_or_default();
    for key in ["Seccomp", "NoNewPrivs", "CapEff"] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or("none");
        report(&format!("init-{key}"), value);
    }
}

/// The attack that escaped: open the init's memory for writing, and write its own code back
/// over itself (harmless if it works, but proves the init could be given any code).
fn init_memory() {
    let mut mem = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/1/mem")
    {
        Ok(f) => f,
        Err(e) => return report("init-mem", format!("err {}", e.raw_os_error().unwrap_or(0))),
    };
    let maps = fs::read_to_string("/proc/1/maps").unwrap_or_default();
    let code = maps
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("r-xp"))
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok());
    let Some(addr) = code else {
        return report("init-mem", "opened");
    };
    let mut byte = [0u8; 1];
    let written = mem.seek(SeekFrom::Start(addr)).is_ok()
        && mem.read_exact(&mut byte).is_ok()
        && mem.seek(SeekFrom::Start(addr)).is_ok()
        && mem.write_all(&byte).is_ok();
    report("init-mem", if written { "written" } else { "opened" });
}

fn init_tracing() {
    // SAFETY: PTRACE_ATTACH takes no pointers; a successful attach is undone at once.
    let rc = unsafe { libc::ptrace(libc::PTRACE_ATTACH, 1, 0, 0) };
    if rc == 0 {
        // SAFETY: as above.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, 1, 0, 0) };
    }
    report("init-ptrace", outcome(rc));
    // One byte to address 1 of the init: EFAULT would mean the permission check passed.
    let byte = [0u8; 1];
    let local = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: std::ptr::dangling_mut::<libc::c_void>(), // address 1
        iov_len: 1,
    };
    // SAFETY: both iovecs are valid for the call; the remote address is the kernel's to check.
    let rc = unsafe { libc::syscall(libc::SYS_process_vm_writev, 1, &local, 1, &remote, 1, 0) };
    report("init-vm-write", outcome(rc));
    // SAFETY: pidfd_open takes integers only.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, 1, 0) };
    let mut taken = Vec::new();
    let mut last = String::from("none");
    if pidfd >= 0 {
        for fd in 0..64 {
            // SAFETY: integers only; a descriptor obtained is ours to close.
            let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
            if got >= 0 {
                let link = fs::read_link(format!("/proc/self/fd/{got}")).unwrap_or_default();
                taken.push(format!("{fd}={}", link.display()));
                // SAFETY: the descriptor just obtained.
                unsafe { libc::close(got as i32) };
            } else {
                last = format!("err {}", errno());
            }
        }
        // SAFETY: the pidfd opened above, ours.
        unsafe { libc::close(pidfd as i32) };
    } else {
        last = format!("pidfd_open err {}", errno());
    }
    report("init-getfd-taken", taken.len());
    report("init-getfd-last", last);
}

/// Every descriptor open here, with what it is (the directory being listed included).
fn own_descriptors() {
    let mut fds: Vec<(u32, String)> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let fd = e.file_name().to_str()?.parse().ok()?;
                let target = fs::read_link(e.path()).ok()?;
                Some((fd, target.display().to_string()))
            })
            .collect()
        })
        .unwrap_or_default();
    fds.sort();
    for (fd, target) in fds {
        report("fd", format!("{fd} {target}"));
    }
}

/// /proc files the jail masks with a character device (as runc does).
pub const MASKED_FILES: [&str; 4] = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
];
/// /proc directories the jail masks with an empty one.
pub const MASKED_DIRS: [&str; 2] = ["/proc/acpi", "/proc/scsi"];
/// /proc paths the jail makes read-only.
pub const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn proc_entries() {
    for p in MASKED_FILES.into_iter().chain(MASKED_DIRS) {
        let kind = match fs::symlink_metadata(p) {
            Err(_) => "absent".to_string(),
            Ok(md) if md.file_type().is_char_device() => "chr".into(),
            Ok(md) if md.is_dir() => format!(
                "dir {}",
                fs::read_dir(p).map(|d| d.count()).unwrap_or(usize::MAX)
            ),
            Ok(_) => {
                let mut buf = Vec::new();
                match fs::File::open(p).and_then(|mut f| f.read_to_end(&mut buf)) {
                    Ok(n) => format!("file {n}"),
                    Err(e) => format!("file err {}", e.raw_os_error().unwrap_or(0)),
                }
            }
        };
        report(&format!("mask:{p}"), kind);
    }
    // Rewriting the current value: harmless where it is allowed, and it is not meant to be.
    let path = "/proc/irq/default_smp_affinity";
    let result = match fs::read(path) {
        Err(e) => format!("read err {}", e.raw_os_error().unwrap_or(0)),
        Ok(v) => match fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(&v))
        {
            Ok(()) => "written".into(),
            Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
        },
    };
    report("irq-write", result);
    // The mount options of each read-only path (the last mount on it is what is seen).
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for p in READ_ONLY {
        let opts = mountinfo
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.nth(4)? == p).then(|| f.next().map(str::to_string))?
            })
            .next_back()
            .unwrap_or_else(|| "none".into());
        let ro = opts.split(',').any(|o| o == "ro");
        report(&format!("ro:{p}"), if ro { "yes" } else { "no" });
    }
}

/// A raw syscall's outcome, read before anything else can change errno.
fn report_sys(name: &str, rc: libc::c_long) {
    let result = outcome(rc);
    report(&format!("sys:{name}"), result);
}

fn syscalls() {
    // struct io_uring_params, zeroed as the kernel requires.
    let mut params = [0u8; 120];
    // Each call below runs in the jailed probe, a throwaway process: whatever a call manages to
    // create (an fd, a ring, a persona) dies with it, and the probe reads no memory back.
    // SAFETY: getpid takes no arguments and cannot fail.
    let pid = unsafe { libc::getpid() } as libc::c_long;
    report_sys(
        "io_uring_setup",
        // SAFETY: `params` is a live, writable 120-byte buffer, the size of io_uring_params, that
        // outlives the call; the kernel writes only within it.
        unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) },
    );
    report_sys(
        "pidfd_getfd",
        // SAFETY: integer arguments only, no memory is passed to the kernel.
        unsafe { libc::syscall(libc::SYS_pidfd_getfd, 0, 0, 0) },
    );
    report_sys(
        "kcmp",
        // SAFETY: integer arguments only (KCMP_FILE compares two fds by number).
        unsafe {
            libc::syscall(libc::SYS_kcmp, pid, pid, 0 /* KCMP_FILE */, 0, 0)
        },
    );
    report_sys(
        "memfd_secret",
        // SAFETY: a flags integer only; a returned fd closes when the probe exits.
        unsafe { libc::syscall(libc::SYS_memfd_secret, 0) },
    );
    report_sys(
        "socket-vsock",
        // SAFETY: integer arguments only.
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0) },
    );
    report_sys(
        "personality-addr-no-randomize",
        // SAFETY: an integer persona; it affects only later execs, and the probe execs nothing.
        unsafe { libc::syscall(libc::SYS_personality, 0x0040000) },
    );
    // Still allowed: an inet socket, the query persona.
    report_sys(
        "socket-inet",
        // SAFETY: integer arguments only.
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) },
    );
    report_sys(
        "personality-query",
        // SAFETY: 0xffffffff only queries the persona; nothing changes.
        unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu32) },
    );
}
