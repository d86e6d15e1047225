//! Syscalls every target has, allowed for apps (Docker's default profile, less what the jail
//! denies on top: see the parent module).

use libc::*;
// Calls the libc crate names for glibc but not for musl on these targets: the arch module
// defines them with the kernel's numbers (an explicit import shadows the glob).
#[cfg(any(target_arch = "arm", target_arch = "mips64"))]
use super::arch::SYS_rseq;
#[cfg(target_arch = "mips")]
use super::arch::{SYS_pread64, SYS_pwrite64, SYS_rseq};

#[rustfmt::skip]
pub const COMMON: &[c_long] = &[
    // The most frequent first: matching is linear.
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_futex, SYS_epoll_pwait, SYS_epoll_ctl,
    SYS_recvfrom, SYS_sendto, SYS_recvmsg, SYS_sendmsg, SYS_close, SYS_openat, SYS_fstat,
    SYS_lseek, SYS_munmap, SYS_brk, SYS_mprotect, SYS_rt_sigprocmask, SYS_rt_sigaction,
    SYS_rt_sigreturn, SYS_ppoll, SYS_pselect6, SYS_nanosleep, SYS_clock_gettime,
    SYS_clock_nanosleep, SYS_getpid, SYS_gettid, SYS_ioctl, SYS_fcntl, SYS_accept4, SYS_wait4,
    // The rest, by name.
    SYS_accept, SYS_bind, SYS_capget, SYS_capset, SYS_chdir, SYS_clock_getres, SYS_close_range,
    SYS_connect, SYS_copy_file_range, SYS_dup, SYS_dup3, SYS_epoll_create1, SYS_epoll_pwait2,
    SYS_eventfd2, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_faccessat,
    SYS_faccessat2, SYS_fallocate, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat,
    SYS_fchown, SYS_fchownat, SYS_fdatasync, SYS_fgetxattr, SYS_flistxattr, SYS_flock,
    SYS_fremovexattr, SYS_fsetxattr, SYS_fstatfs, SYS_fsync, SYS_ftruncate, SYS_futex_waitv,
    SYS_get_robust_list, SYS_getcpu, SYS_getcwd, SYS_getdents64, SYS_getegid, SYS_geteuid,
    SYS_getgid, SYS_getgroups, SYS_getitimer, SYS_getpeername, SYS_getpgid, SYS_getppid,
    SYS_getpriority, SYS_getrandom, SYS_getresgid, SYS_getresuid, SYS_getrusage, SYS_getsid,
    SYS_getsockname, SYS_getsockopt, SYS_gettimeofday, SYS_getuid, SYS_getxattr,
    SYS_inotify_add_watch, SYS_inotify_init1, SYS_inotify_rm_watch, SYS_io_cancel,
    SYS_io_destroy, SYS_io_getevents, SYS_io_setup, SYS_io_submit, SYS_ioprio_get,
    SYS_ioprio_set, SYS_kill, SYS_landlock_add_rule, SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self, SYS_lgetxattr, SYS_linkat, SYS_listen, SYS_listxattr,
    SYS_llistxattr, SYS_lremovexattr, SYS_lsetxattr, SYS_madvise, SYS_membarrier,
    SYS_memfd_create, SYS_mincore, SYS_mkdirat, SYS_mknodat, SYS_mlock, SYS_mlock2,
    SYS_mlockall, SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive,
    SYS_mq_timedsend, SYS_mq_unlink, SYS_mremap, SYS_msync, SYS_munlock, SYS_munlockall,
    SYS_openat2, SYS_pidfd_open, SYS_pidfd_send_signal, SYS_pipe2, SYS_pkey_alloc,
    SYS_pkey_free, SYS_pkey_mprotect, SYS_prctl, SYS_pread64, SYS_preadv, SYS_preadv2,
    SYS_prlimit64, SYS_process_mrelease, SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_readahead,
    SYS_readlinkat, SYS_recvmmsg, SYS_remap_file_pages, SYS_removexattr, SYS_renameat2,
    SYS_restart_syscall, SYS_rseq, SYS_rt_sigpending, SYS_rt_sigqueueinfo, SYS_rt_sigsuspend,
    SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo, SYS_sched_get_priority_max,
    SYS_sched_get_priority_min, SYS_sched_getaffinity, SYS_sched_getattr, SYS_sched_getparam,
    SYS_sched_getscheduler, SYS_sched_rr_get_interval, SYS_sched_setaffinity, SYS_sched_setattr,
    SYS_sched_setparam, SYS_sched_setscheduler, SYS_sched_yield, SYS_seccomp, SYS_sendfile,
    SYS_sendmmsg, SYS_set_robust_list, SYS_set_tid_address, SYS_setfsgid, SYS_setfsuid,
    SYS_setgid, SYS_setgroups, SYS_setitimer, SYS_setpgid, SYS_setpriority, SYS_setregid,
    SYS_setresgid, SYS_setresuid, SYS_setreuid, SYS_setsid, SYS_setsockopt, SYS_setuid,
    SYS_setxattr, SYS_shutdown, SYS_sigaltstack, SYS_signalfd4, SYS_socketpair, SYS_splice,
    SYS_statfs, SYS_statx, SYS_symlinkat, SYS_sync, SYS_syncfs, SYS_sysinfo, SYS_tee,
    SYS_tgkill, SYS_timer_create, SYS_timer_delete, SYS_timer_getoverrun, SYS_timer_gettime,
    SYS_timer_settime, SYS_timerfd_create, SYS_timerfd_gettime, SYS_timerfd_settime, SYS_times,
    SYS_tkill, SYS_truncate, SYS_umask, SYS_uname, SYS_unlinkat, SYS_utimensat, SYS_vmsplice,
    SYS_waitid,
];

/// The *_time64 calls of 64-bit time on 32-bit targets (armv7, MIPS o32): glibc tries them
/// first and falls back only on ENOSYS, so an EPERM here would break every time function.
/// Missing from the libc crate; the same numbers above each ABI's base on every 32-bit target
/// (the kernel's uapi/asm-generic/unistd.h, 403 to 423).
#[cfg(target_pointer_width = "32")]
#[rustfmt::skip]
pub const TIME64: &[c_long] = &[
    CLOCK_GETTIME64, CLOCK_GETRES_TIME64, CLOCK_NANOSLEEP_TIME64, TIMER_GETTIME64,
    TIMER_SETTIME64, TIMERFD_GETTIME64, TIMERFD_SETTIME64, UTIMENSAT_TIME64, PSELECT6_TIME64,
    PPOLL_TIME64, IO_PGETEVENTS_TIME64, RECVMMSG_TIME64, MQ_TIMEDSEND_TIME64,
    MQ_TIMEDRECEIVE_TIME64, SEMTIMEDOP_TIME64, RT_SIGTIMEDWAIT_TIME64, FUTEX_TIME64,
    SCHED_RR_GET_INTERVAL_TIME64,
];

/// No *_time64 calls where time_t has always been 64 bits.
#[cfg(not(target_pointer_width = "32"))]
pub const TIME64: &[c_long] = &[];

#[cfg(target_pointer_width = "32")]
pub use time64::*;

#[cfg(target_pointer_width = "32")]
mod time64 {
    use super::super::arch::NR_BASE;
    use libc::c_long;

    pub const CLOCK_GETTIME64: c_long = NR_BASE + 403;
    pub const CLOCK_GETRES_TIME64: c_long = NR_BASE + 406;
    pub const CLOCK_NANOSLEEP_TIME64: c_long = NR_BASE + 407;
    pub const TIMER_GETTIME64: c_long = NR_BASE + 408;
    pub const TIMER_SETTIME64: c_long = NR_BASE + 409;
    pub const TIMERFD_GETTIME64: c_long = NR_BASE + 410;
    pub const TIMERFD_SETTIME64: c_long = NR_BASE + 411;
    pub const UTIMENSAT_TIME64: c_long = NR_BASE + 412;
    pub const PSELECT6_TIME64: c_long = NR_BASE + 413;
    pub const PPOLL_TIME64: c_long = NR_BASE + 414;
    pub const IO_PGETEVENTS_TIME64: c_long = NR_BASE + 416;
    pub const RECVMMSG_TIME64: c_long = NR_BASE + 417;
    pub const MQ_TIMEDSEND_TIME64: c_long = NR_BASE + 418;
    pub const MQ_TIMEDRECEIVE_TIME64: c_long = NR_BASE + 419;
    pub const SEMTIMEDOP_TIME64: c_long = NR_BASE + 420;
    pub const RT_SIGTIMEDWAIT_TIME64: c_long = NR_BASE + 421;
    pub const FUTEX_TIME64: c_long = NR_BASE + 422;
    pub const SCHED_RR_GET_INTERVAL_TIME64: c_long = NR_BASE + 423;
}
