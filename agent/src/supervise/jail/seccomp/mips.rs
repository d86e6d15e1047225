//! 32-bit MIPS (o32, numbers from 4000): the 32-bit variants (_llseek, mmap2, fstat64,
//! fcntl64, send/recv), the multiplexed ipc call (glibc for kernels before 5.1),
//! set_thread_area (the TLS pointer, set by glibc at start-up) and cacheflush; its *_time64
//! calls are `common::TIME64`. Not sysmips (MIPS_ATOMIC_SET for CPUs without ll/sc, unused by today's libcs).

use libc::*;

#[rustfmt::skip]
pub const ARCH: &[c_long] = &[
    SYS__llseek, SYS__newselect, SYS_access, SYS_alarm, SYS_cacheflush, SYS_chmod, SYS_chown,
    SYS_creat, SYS_dup2, SYS_epoll_create, SYS_epoll_wait, SYS_eventfd, SYS_fadvise64,
    SYS_fcntl64, SYS_fork, SYS_fstat64, SYS_fstatat64, SYS_fstatfs64, SYS_ftruncate64,
    SYS_futimesat, SYS_getdents, SYS_getpgrp, SYS_getrlimit, SYS_inotify_init, SYS_ipc,
    SYS_lchown, SYS_link, SYS_lstat, SYS_lstat64, SYS_mkdir, SYS_mknod, SYS_mmap, SYS_mmap2,
    SYS_open, SYS_pause, SYS_pipe, SYS_poll, SYS_readlink, SYS_recv, SYS_rename, SYS_renameat,
    SYS_rmdir, SYS_send, SYS_sendfile64, SYS_set_thread_area, SYS_setrlimit, SYS_signalfd,
    SYS_sigprocmask, SYS_sigreturn, SYS_stat, SYS_stat64, SYS_statfs64, SYS_symlink,
    SYS_sync_file_range, SYS_time, SYS_truncate64, SYS_unlink, SYS_utime, SYS_utimes,
    SYS_waitpid,
    // Missing from the libc crate; numbers from the kernel's asm/unistd_o32.h.
    IO_PGETEVENTS,
    // The direct SysV IPC calls (Linux 5.1) beside ipc.
    SEMGET, SEMCTL, SHMGET, SHMCTL, SHMAT, SHMDT, MSGGET, MSGSND, MSGRCV, MSGCTL,
];

// Named by the libc crate for glibc only, not for musl; numbers from the kernel's
// syscall_o32.tbl (the same on both: they are the kernel's ABI).
#[allow(non_upper_case_globals)]
pub const SYS_pread64: c_long = 4200;
#[allow(non_upper_case_globals)]
pub const SYS_pwrite64: c_long = 4201;
#[allow(non_upper_case_globals)]
pub const SYS_rseq: c_long = 4367;
#[allow(non_upper_case_globals)]
pub const SYS__newselect: c_long = 4142;
#[allow(non_upper_case_globals)]
pub const SYS_fadvise64: c_long = 4254;
#[allow(non_upper_case_globals)]
pub const SYS_fstatat64: c_long = 4293;

/// The first syscall number of this ABI (`common::TIME64` counts from it).
pub const NR_BASE: c_long = 4000;
pub const IO_PGETEVENTS: c_long = 4368;
pub const SEMGET: c_long = 4393;
pub const SEMCTL: c_long = 4394;
pub const SHMGET: c_long = 4395;
pub const SHMCTL: c_long = 4396;
pub const SHMAT: c_long = 4397;
pub const SHMDT: c_long = 4398;
pub const MSGGET: c_long = 4399;
pub const MSGSND: c_long = 4400;
pub const MSGRCV: c_long = 4401;
pub const MSGCTL: c_long = 4402;
