//! 64-bit MIPS (n64, numbers from 5000): the legacy calls beside the *at forms,
//! set_thread_area (the TLS pointer, set by glibc at start-up) and cacheflush.

use libc::*;

#[rustfmt::skip]
pub const ARCH: &[c_long] = &[
    SYS__newselect, SYS_access, SYS_alarm, SYS_cacheflush, SYS_chmod, SYS_chown, SYS_creat,
    SYS_dup2, SYS_epoll_create, SYS_epoll_wait, SYS_eventfd, SYS_fadvise64, SYS_fork,
    SYS_futimesat, SYS_getdents, SYS_getpgrp, SYS_getrlimit, SYS_inotify_init, SYS_lchown,
    SYS_link, SYS_lstat, SYS_mkdir, SYS_mknod, SYS_mmap, SYS_msgctl, SYS_msgget, SYS_msgrcv,
    SYS_msgsnd, SYS_newfstatat, SYS_open, SYS_pause, SYS_pipe, SYS_poll, SYS_readlink,
    SYS_rename, SYS_renameat, SYS_rmdir, SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop,
    SYS_set_thread_area, SYS_setrlimit, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_shmget,
    SYS_signalfd, SYS_stat, SYS_symlink, SYS_sync_file_range, SYS_unlink, SYS_utime, SYS_utimes,
    // Missing from the libc crate; number from the kernel's asm/unistd_n64.h.
    IO_PGETEVENTS,
];

const IO_PGETEVENTS: c_long = 5328;
/// Named by the libc crate for glibc only, not for musl; the kernel's syscall_n64.tbl.
#[allow(non_upper_case_globals)]
pub const SYS_rseq: c_long = 5327;
