//! aarch64: the asm-generic table (no open, stat, fork: only the *at forms and clone).

use libc::*;

#[rustfmt::skip]
pub const ARCH: &[c_long] = &[
    SYS_fadvise64, SYS_mmap, SYS_mseal, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd,
    SYS_newfstatat, SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop, SYS_shmat, SYS_shmctl,
    SYS_shmdt, SYS_shmget,
    // Missing from the libc crate, present on arm64 (asm/unistd.h wants RENAMEAT and
    // SET_GET_RLIMIT); numbers from asm-generic/unistd.h.
    RENAMEAT, GETRLIMIT, SETRLIMIT, IO_PGETEVENTS,
];

const RENAMEAT: c_long = 38;
const GETRLIMIT: c_long = 163;
const SETRLIMIT: c_long = 164;
const IO_PGETEVENTS: c_long = 292;
