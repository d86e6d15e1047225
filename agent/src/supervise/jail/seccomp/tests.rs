//! The tables and policies of this target, run through the BPF evaluator, and the installed
//! filters tried for real in a forked child. They compile for every target we build: run them
//! there (or under qemu-user) to check that target's table.

use super::*;
use cpevisor_sandbox::seccomp::{evaluate, AUDIT_ARCH, MAX_INSTRUCTIONS};

fn check(p: &Policy, nr: libc::c_long, arg0: u64) -> Action {
    let prog = p.program(AUDIT_ARCH).unwrap();
    evaluate(&prog, AUDIT_ARCH, nr as u32, [arg0, 0, 0, 0, 0, 0])
}

/// What every app needs on this target (busybox sh, httpd and wget among them).
fn needed_here() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_openat,
        libc::SYS_close,
        libc::SYS_execve,
        libc::SYS_wait4,
        libc::SYS_exit_group,
        libc::SYS_getdents64,
        libc::SYS_rt_sigaction,
        libc::SYS_set_tid_address,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_prlimit64,
        libc::SYS_getrandom,
        libc::SYS_statx,
        libc::SYS_accept4,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_setsockopt,
        libc::SYS_connect,
        libc::SYS_sendfile,
        libc::SYS_pipe2,
        libc::SYS_dup3,
        libc::SYS_uname,
        libc::SYS_ppoll,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        libc::SYS_open,
        libc::SYS_stat,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_mmap,
        libc::SYS_arch_prctl,
        libc::SYS_newfstatat,
        libc::SYS_dup2,
        libc::SYS_poll,
    ]);
    #[cfg(target_arch = "aarch64")]
    v.extend([libc::SYS_mmap, libc::SYS_newfstatat, 38 /* renameat */]);
    // The 32-bit targets: the 32-bit variants and the *_time64 calls.
    #[cfg(any(target_arch = "arm", target_arch = "mips"))]
    v.extend([
        libc::SYS_mmap2,
        libc::SYS__llseek,
        libc::SYS_fstat64,
        libc::SYS_fstatat64,
        libc::SYS_fcntl64,
        libc::SYS_sigreturn,
        libc::SYS_send,
        libc::SYS_recv,
        libc::SYS_sendfile64,
        common::CLOCK_GETTIME64,
        common::FUTEX_TIME64,
        common::PPOLL_TIME64,
    ]);
    #[cfg(target_arch = "arm")]
    v.extend([libc::SYS_getuid32, arch::ARM_SET_TLS, arch::ARM_CACHEFLUSH]);
    #[cfg(target_arch = "mips")]
    v.extend([
        libc::SYS_waitpid,
        libc::SYS_ipc,
        libc::SYS_set_thread_area,
        libc::SYS_cacheflush,
        arch::SEMGET,
    ]);
    #[cfg(target_arch = "mips64")]
    v.extend([
        libc::SYS_mmap,
        libc::SYS_newfstatat,
        libc::SYS_set_thread_area,
        libc::SYS_cacheflush,
        libc::SYS_fork,
        libc::SYS_open,
    ]);
    v
}

/// What no app gets, on every target.
const DENIED: [libc::c_long; 22] = [
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_memfd_secret,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_pivot_root,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_add_key,
    libc::SYS_keyctl,
    libc::SYS_userfaultfd,
    libc::SYS_init_module,
    libc::SYS_reboot,
    libc::SYS_open_by_handle_at,
];

#[test]
fn app_policy_allows_what_apps_need_and_denies_the_rest() {
    let p = app_policy();
    for nr in needed_here() {
        assert_eq!(check(&p, nr, 0), Action::Allow, "syscall {nr}");
    }
    for nr in DENIED {
        assert_eq!(check(&p, nr, 0), EPERM, "syscall {nr}");
    }
    // Arguments: namespaces, personas, address families.
    assert_eq!(
        check(&p, libc::SYS_clone, libc::SIGCHLD as u64),
        Action::Allow
    );
    assert_eq!(check(&p, libc::SYS_clone, 0x1000_0000 | 17), EPERM);
    assert_eq!(check(&p, libc::SYS_clone, 0x0002_0000 | 17), EPERM);
    assert_eq!(
        check(&p, libc::SYS_clone3, 0),
        Action::Errno(libc::ENOSYS as u16)
    );
    for persona in [0, 8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
        assert_eq!(check(&p, libc::SYS_personality, persona), Action::Allow);
    }
    for persona in [
        0x0040000, /* ADDR_NO_RANDOMIZE */
        0x0400000, /* READ_IMPLIES_EXEC */
    ] {
        assert_eq!(check(&p, libc::SYS_personality, persona), EPERM);
    }
    for family in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
    ] {
        assert_eq!(check(&p, libc::SYS_socket, family as u64), Action::Allow);
    }
    for family in [libc::AF_VSOCK, 12, 46] {
        assert_eq!(check(&p, libc::SYS_socket, family as u64), EPERM);
    }
    // A number nobody allowed, and the foreign ABI.
    assert_eq!(check(&p, 9999, 0), EPERM); // beyond every table here (MIPS n64 ends near 5470)
    let prog = p.program(AUDIT_ARCH).unwrap();
    assert_eq!(
        evaluate(&prog, AUDIT_ARCH ^ 1, libc::SYS_read as u32, [0; 6]),
        Action::KillProcess
    );
}

#[test]
fn tables_have_no_duplicates_and_programs_fit() {
    let mut all: Vec<libc::c_long> = app_allowed().collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a syscall is listed twice");
    let app = app_policy().program(AUDIT_ARCH).unwrap().len();
    let init = init_policy().program(AUDIT_ARCH).unwrap().len();
    eprintln!("app program: {app} instructions for {n} syscalls; init program: {init}");
    // Far below the kernel's limit, and a bound on the linear matching's cost.
    assert!(
        app < 1000,
        "{app} instructions (the kernel takes {MAX_INSTRUCTIONS})"
    );
    assert!(init < 64, "{init} instructions");
}

#[test]
fn init_policy_only_waits_signals_and_reports() {
    let p = init_policy();
    for nr in [
        libc::SYS_wait4,
        libc::SYS_kill,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_exit_group,
        libc::SYS_rt_sigreturn,
    ] {
        assert_eq!(check(&p, nr, 0), Action::Allow, "syscall {nr}");
    }
    for nr in [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_openat,
        libc::SYS_read,
        libc::SYS_socket,
        libc::SYS_clone,
        libc::SYS_mprotect,
        libc::SYS_ptrace,
        libc::SYS_mount,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_add_key,
        libc::SYS_prctl,
        libc::SYS_seccomp,
    ] {
        assert_eq!(check(&p, nr, 0), EPERM, "syscall {nr}");
    }
}

/// Forks; the child installs `install` and exits 0 if `probe` holds, 1 if not, 2 if the
/// filter did not install.
fn in_filtered_child(install: fn() -> io::Result<()>, probe: fn() -> bool) -> i32 {
    // SAFETY: the child only makes syscalls (and glibc's fork-safe malloc for the program)
    // and leaves with _exit; the parent waits for it.
    match unsafe { libc::fork() } {
        0 => {
            let code = if cpevisor_sandbox::caps::set_no_new_privs().is_err() || install().is_err()
            {
                2
            } else if probe() {
                0
            } else {
                1
            };
            // SAFETY: ends the forked child without the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        child => {
            assert!(child > 0, "fork: {}", io::Error::last_os_error());
            let mut status = 0;
            // SAFETY: our own child; `status` is a valid out pointer.
            assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
            assert!(libc::WIFEXITED(status), "child status {status:#x}");
            libc::WEXITSTATUS(status)
        }
    }
}

/// -1 with `errno`.
fn fails_with(rc: libc::c_long, errno: i32) -> bool {
    rc == -1 && io::Error::last_os_error().raw_os_error() == Some(errno)
}

#[test]
fn installed_app_filter_refuses_with_eperm() {
    let probe = || {
        let mut params = [0u8; 120]; // struct io_uring_params
                                     // SAFETY: raw syscalls with valid (or no) pointers; those the filter lets through
                                     // only create descriptors that die with the child.
        unsafe {
            let pid = libc::getpid() as libc::c_long;
            let denied = [
                libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()),
                libc::syscall(libc::SYS_pidfd_getfd, 0, 0, 0),
                libc::syscall(libc::SYS_kcmp, pid, pid, 0 /* KCMP_FILE */, 0, 0),
                libc::syscall(libc::SYS_memfd_secret, 0),
                libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0),
                libc::syscall(
                    libc::SYS_personality,
                    0x0040000, /* ADDR_NO_RANDOMIZE */
                ),
                libc::syscall(libc::SYS_unshare, 0),
            ];
            let all_eperm = denied.iter().all(|&rc| fails_with(rc, libc::EPERM));
            // Still usable: the query persona, an inet socket, the process's own calls.
            let ok = libc::syscall(libc::SYS_personality, 0xffff_ffffu32) >= 0
                && libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) >= 0
                && libc::syscall(libc::SYS_getppid) > 0;
            all_eperm && ok
        }
    };
    assert_eq!(in_filtered_child(install, probe), 0);
}

#[test]
fn installed_init_filter_leaves_only_waiting_and_signalling() {
    let probe = || {
        // SAFETY: raw syscalls with valid pointers (a NUL-terminated path, argv/envp of one
        // NULL) or none.
        unsafe {
            let path = c"/bin/sh".as_ptr();
            let argv = [std::ptr::null::<libc::c_char>()];
            let denied = [
                libc::syscall(libc::SYS_execve, path, argv.as_ptr(), argv.as_ptr()),
                libc::syscall(libc::SYS_openat, libc::AT_FDCWD, path, libc::O_RDONLY),
                libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0),
                libc::syscall(libc::SYS_unshare, 0),
            ];
            let all_eperm = denied.iter().all(|&rc| fails_with(rc, libc::EPERM));
            // kill(own pid, 0) and a wait with no children: allowed, answered by the kernel.
            let kill = libc::syscall(libc::SYS_kill, libc::getpid(), 0) == 0;
            let wait = fails_with(
                libc::syscall(
                    libc::SYS_wait4,
                    -1,
                    std::ptr::null_mut::<i32>(),
                    libc::WNOHANG,
                    std::ptr::null_mut::<libc::rusage>(),
                ),
                libc::ECHILD,
            );
            all_eperm && kill && wait
        }
    };
    assert_eq!(in_filtered_child(install_init, probe), 0);
}
