//! 32-bit ARM (EABI): the 32-bit variants (_llseek, mmap2, fstat64, fcntl64, the *32 id
//! calls) and the ARM private calls; its *_time64 calls are `common::TIME64`.

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
    IO_PGETEVENTS,
    // glibc sets the thread pointer with set_tls at start-up: without it nothing runs.
    ARM_BREAKPOINT, ARM_CACHEFLUSH, ARM_SET_TLS,
];

// Named by the libc crate for glibc only, not for musl; numbers from the kernel's
// arch/arm/tools/syscall.tbl (the same on both: they are the kernel's ABI).
#[allow(non_upper_case_globals)]
pub const SYS_rseq: c_long = 398;
#[allow(non_upper_case_globals)]
pub const SYS_arm_fadvise64_64: c_long = 270;
#[allow(non_upper_case_globals)]
pub const SYS_arm_sync_file_range: c_long = 341;

/// The first syscall number of this ABI (`common::TIME64` counts from it).
pub const NR_BASE: c_long = 0;
pub const IO_PGETEVENTS: c_long = 399;
pub const ARM_BREAKPOINT: c_long = 0x0f_0001;
pub const ARM_CACHEFLUSH: c_long = 0x0f_0002;
pub const ARM_SET_TLS: c_long = 0x0f_0005;
