//! 32-bit ARM (EABI): the 32-bit variants (_llseek, mmap2, fstat64, fcntl64, the *32 id
//! calls), the *_time64 calls of 64-bit time (glibc tries them first and falls back only on
//! ENOSYS: an EPERM here would break every time function), and the ARM private calls.

use libc::*;

#[rustfmt::skip]
pub const ARCH: &[c_long] = &[
    SYS__llseek, SYS__newselect, SYS_access, SYS_arm_fadvise64_64, SYS_arm_sync_file_range,
    SYS_chmod, SYS_chown, SYS_chown32, SYS_creat, SYS_dup2, SYS_epoll_create, SYS_epoll_wait,
    SYS_eventfd, SYS_fchown32, SYS_fcntl64, SYS_fork, SYS_fstat64, SYS_fstatat64, SYS_fstatfs64,
    SYS_ftruncate64, SYS_futimesat, SYS_getdents, SYS_getegid32, SYS_geteuid32, SYS_getgid32,
    SYS_getgroups32, SYS_getpgrp, SYS_getresgid32, SYS_getresuid32, SYS_getuid32,
    SYS_inotify_init, SYS_lchown, SYS_lchown32, SYS_link, SYS_lstat, SYS_lstat64, SYS_mkdir,
    SYS_mknod, SYS_mmap2, SYS_mseal, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd, SYS_open,
    SYS_pause, SYS_pipe, SYS_poll, SYS_readlink, SYS_recv, SYS_rename, SYS_renameat, SYS_rmdir,
    SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop, SYS_send, SYS_sendfile64, SYS_setfsgid32,
    SYS_setfsuid32, SYS_setgid32, SYS_setgroups32, SYS_setregid32, SYS_setresgid32,
    SYS_setresuid32, SYS_setreuid32, SYS_setrlimit, SYS_setuid32, SYS_shmat, SYS_shmctl,
    SYS_shmdt, SYS_shmget, SYS_signalfd, SYS_sigprocmask, SYS_sigreturn, SYS_stat, SYS_stat64,
    SYS_statfs64, SYS_symlink, SYS_truncate64, SYS_ugetrlimit, SYS_unlink, SYS_utimes,
    SYS_vfork,
    // Missing from the libc crate; numbers from the kernel's asm/unistd-eabi.h and
    // asm/unistd.h (__ARM_NR_BASE 0x0f0000).
    CLOCK_GETTIME64, CLOCK_GETRES_TIME64, CLOCK_NANOSLEEP_TIME64, TIMER_GETTIME64,
    TIMER_SETTIME64, TIMERFD_GETTIME64, TIMERFD_SETTIME64, UTIMENSAT_TIME64, PSELECT6_TIME64,
    PPOLL_TIME64, IO_PGETEVENTS, IO_PGETEVENTS_TIME64, RECVMMSG_TIME64, MQ_TIMEDSEND_TIME64,
    MQ_TIMEDRECEIVE_TIME64, SEMTIMEDOP_TIME64, RT_SIGTIMEDWAIT_TIME64, FUTEX_TIME64,
    SCHED_RR_GET_INTERVAL_TIME64,
    // glibc sets the thread pointer with set_tls at start-up: without it nothing runs.
    ARM_BREAKPOINT, ARM_CACHEFLUSH, ARM_SET_TLS,
];

pub const CLOCK_GETTIME64: c_long = 403;
pub const CLOCK_GETRES_TIME64: c_long = 406;
pub const CLOCK_NANOSLEEP_TIME64: c_long = 407;
pub const TIMER_GETTIME64: c_long = 408;
pub const TIMER_SETTIME64: c_long = 409;
pub const TIMERFD_GETTIME64: c_long = 410;
pub const TIMERFD_SETTIME64: c_long = 411;
pub const UTIMENSAT_TIME64: c_long = 412;
pub const PSELECT6_TIME64: c_long = 413;
pub const PPOLL_TIME64: c_long = 414;
pub const IO_PGETEVENTS: c_long = 399;
pub const IO_PGETEVENTS_TIME64: c_long = 416;
pub const RECVMMSG_TIME64: c_long = 417;
pub const MQ_TIMEDSEND_TIME64: c_long = 418;
pub const MQ_TIMEDRECEIVE_TIME64: c_long = 419;
pub const SEMTIMEDOP_TIME64: c_long = 420;
pub const RT_SIGTIMEDWAIT_TIME64: c_long = 421;
pub const FUTEX_TIME64: c_long = 422;
pub const SCHED_RR_GET_INTERVAL_TIME64: c_long = 423;
pub const ARM_BREAKPOINT: c_long = 0x0f_0001;
pub const ARM_CACHEFLUSH: c_long = 0x0f_0002;
pub const ARM_SET_TLS: c_long = 0x0f_0005;
