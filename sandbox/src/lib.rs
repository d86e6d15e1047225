//! Confinement building blocks that the jail backend (agent/src/supervise/jail) and the VMM
//! (vmm/) share, so that one rule lives in one place:
//!
//! - `seccomp`: a small compiler from an ordered rule list to a classic BPF program, and its
//!   installation on the calling thread (or all threads).
//! - `caps`: no_new_privs, dumpable, and dropping every capability for good.
//! - `fds`: closing or marking close-on-exec every descriptor above stderr.
//! - `files`: reading a file handed over by path only if it is a regular one of ours.
//! - `jailer`: an empty read-only root in new mount/IPC/UTS namespaces, and an unprivileged
//!   uid/gid with no capabilities, for a process that opened what it needs beforehand.
//!
//! Only libc: the VMM links this too and stays small.

pub mod caps;
pub mod fds;
pub mod files;
pub mod jailer;
pub mod seccomp;
