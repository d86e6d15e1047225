//! Per-thread seccomp allowlists of a confined VMM (after Firecracker's vmm and vCPU filters).
//! Anything not listed kills the whole process with SIGSYS.
//!
//! What each thread does once the guest runs, and so all it may ask of the kernel:
//! - the main thread runs the event loop: epoll, the control socket (accept, read, write,
//!   non-blocking and send timeout on clients), serial input, tap receive, irqfd and eventfd
//!   writes, vCPU kicks (tgkill on glibc, tkill on musl), joining the vCPU threads and exiting;
//! - a vCPU thread runs KVM_RUN and the device models behind its exits: console output,
//!   disk reads/writes/flushes (lseek + read/write, fdatasync), tap send/receive, irqfd writes,
//!   kicking the other vCPUs when the guest powers off, and its own exit.
//!
//! Both allocate (malloc: brk, mmap, munmap, mremap, mprotect, madvise), lock (futex), take the
//! kick signal (rt_sigreturn) and may abort on a bug (rt_sigprocmask, getpid, gettid, and
//! tgkill or tkill with SIGABRT). A thread may signal only with the kick signal or SIGABRT:
//! glibc's pthread_kill and raise use tgkill, musl's use tkill.
//! madvise is allowed with MADV_DONTNEED only: what glibc's malloc and thread exit use, and what
//! the virtio-balloon, served on a vCPU thread, uses to give guest RAM back to the host.
//! No thread can open a file, create a socket, map a file, fork, exec, or change credentials.

use cpevisor_sandbox::seccomp::{Action, ArgCheck, Policy, Rule};

/// `KVM_RUN` = `_IO(KVMIO 0xAE, 0x80)`, the same number on aarch64 and x86_64.
pub const KVM_RUN: u32 = 0xae80;

/// Syscalls both threads make.
const COMMON: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_getrandom,
    // glibc's malloc sizes its arenas by the CPUs it may run on, on a thread's first allocation.
    libc::SYS_sched_getaffinity,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The main thread's extra syscalls: the event loop and the control socket. (`status` reads
/// the memory counters opened before confinement with pread, in COMMON.)
const MAIN: &[libc::c_long] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_setsockopt,
];

/// A vCPU thread's extra syscalls: the block device.
const VCPU: &[libc::c_long] = &[
    libc::SYS_lseek,
    libc::SYS_pwrite64,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
];

fn policy(lists: &[&[libc::c_long]], ioctls: &[u32]) -> Policy {
    let mut rules: Vec<Rule> = lists
        .iter()
        .flat_map(|l| l.iter())
        .map(|&nr| Rule::new(nr, Action::Allow))
        .collect();
    // ioctl only with the listed request numbers (the low 32 bits carry the whole request).
    for &request in ioctls {
        rules.push(Rule::when(
            libc::SYS_ioctl,
            ArgCheck::Equals {
                index: 1,
                value: request,
            },
            Action::Allow,
        ));
    }
    // Pages given back (malloc's trimming, thread stacks, the balloon's guest RAM); no other
    // advice (MADV_HWPOISON, MADV_REMOVE...) is needed.
    rules.push(Rule::when(
        libc::SYS_madvise,
        ArgCheck::Equals {
            index: 2,
            value: libc::MADV_DONTNEED as u32,
        },
        Action::Allow,
    ));
    // Signals to a thread: the vCPU kick, and abort's SIGABRT. tgkill(tgid, tid, sig) is
    // glibc's, tkill(tid, sig) musl's.
    for (nr, index) in [(libc::SYS_tgkill, 2), (libc::SYS_tkill, 1)] {
        for signal in [crate::vstate::vcpu::kick_signal(), libc::SIGABRT] {
            rules.push(Rule::when(
                nr,
                ArgCheck::Equals {
                    index,
                    value: signal as u32,
                },
                Action::Allow,
            ));
        }
    }
    // std's debug builds check that a descriptor is still open before closing it.
    rules.push(Rule::when(
        libc::SYS_fcntl,
        ArgCheck::Equals {
            index: 1,
            value: libc::F_GETFD as u32,
        },
        Action::Allow,
    ));
    Policy {
        rules,
        default: Action::KillProcess,
        foreign_abi: Action::KillProcess,
    }
}

/// The main (event loop) thread's filter. Its only ioctl is FIONBIO (std's set_nonblocking on
/// a control client).
pub fn main_thread() -> Policy {
    policy(&[COMMON, MAIN], &[libc::FIONBIO as u32])
}

/// A vCPU thread's filter. Its only ioctl is KVM_RUN.
pub fn vcpu_thread() -> Policy {
    policy(&[COMMON, VCPU], &[KVM_RUN])
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpevisor_sandbox::seccomp::{evaluate, AUDIT_ARCH};

    fn action(p: &Policy, nr: libc::c_long, args: [u64; 6]) -> Action {
        evaluate(&p.program(AUDIT_ARCH).unwrap(), AUDIT_ARCH, nr as u32, args)
    }

    #[test]
    fn each_thread_gets_what_it_needs_and_nothing_else() {
        let (main, vcpu) = (main_thread(), vcpu_thread());
        let ioctl = |p: &Policy, req: u32| action(p, libc::SYS_ioctl, [9, req as u64, 0, 0, 0, 0]);
        assert_eq!(ioctl(&vcpu, KVM_RUN), Action::Allow);
        assert_eq!(
            ioctl(&main, KVM_RUN),
            Action::KillProcess,
            "main never runs a vCPU"
        );
        assert_eq!(ioctl(&main, libc::FIONBIO as u32), Action::Allow);
        // KVM_CREATE_VM, KVM_SET_USER_MEMORY_REGION: the VM's shape is fixed before the guest.
        for req in [0xae01u32, 0x4020_ae46] {
            assert_eq!(ioctl(&vcpu, req), Action::KillProcess, "{req:#x}");
            assert_eq!(ioctl(&main, req), Action::KillProcess, "{req:#x}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_futex,
            libc::SYS_exit,
        ] {
            assert_eq!(action(&main, nr, [0; 6]), Action::Allow);
            assert_eq!(action(&vcpu, nr, [0; 6]), Action::Allow);
        }
        assert_eq!(action(&main, libc::SYS_accept4, [0; 6]), Action::Allow);
        assert_eq!(
            action(&vcpu, libc::SYS_accept4, [0; 6]),
            Action::KillProcess
        );
        assert_eq!(action(&vcpu, libc::SYS_fdatasync, [0; 6]), Action::Allow);
        // Thread signals: the kick and SIGABRT, by glibc's tgkill or musl's tkill; no other
        // signal (a confined VMM must not SIGKILL or SIGSTOP anything).
        let kick = crate::vstate::vcpu::kick_signal();
        for p in [&main, &vcpu] {
            for signal in [kick, libc::SIGABRT] {
                let tgkill = action(p, libc::SYS_tgkill, [7, 8, signal as u64, 0, 0, 0]);
                let tkill = action(p, libc::SYS_tkill, [8, signal as u64, 0, 0, 0, 0]);
                assert_eq!(tgkill, Action::Allow, "tgkill {signal}");
                assert_eq!(tkill, Action::Allow, "tkill {signal}");
            }
            for signal in [libc::SIGKILL, libc::SIGSTOP, libc::SIGTERM] {
                let tgkill = action(p, libc::SYS_tgkill, [7, 8, signal as u64, 0, 0, 0]);
                let tkill = action(p, libc::SYS_tkill, [8, signal as u64, 0, 0, 0, 0]);
                assert_eq!(tgkill, Action::KillProcess, "tgkill {signal}");
                assert_eq!(tkill, Action::KillProcess, "tkill {signal}");
            }
        }
        // madvise: MADV_DONTNEED only (malloc, the balloon on the vCPU thread).
        let madvise = |p: &Policy, advice: i32| {
            action(
                p,
                libc::SYS_madvise,
                [0x1000, 0x1000, advice as u64, 0, 0, 0],
            )
        };
        for p in [&main, &vcpu] {
            assert_eq!(madvise(p, libc::MADV_DONTNEED), Action::Allow);
            for advice in [libc::MADV_REMOVE, libc::MADV_HWPOISON, libc::MADV_DONTFORK] {
                assert_eq!(madvise(p, advice), Action::KillProcess, "{advice}");
            }
        }
        for nr in [
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_ptrace,
            libc::SYS_setuid,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_process_vm_writev,
        ] {
            assert_eq!(action(&main, nr, [0; 6]), Action::KillProcess, "{nr}");
            assert_eq!(action(&vcpu, nr, [0; 6]), Action::KillProcess, "{nr}");
        }
    }
}
