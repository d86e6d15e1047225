//! The jail's seccomp filters, both allowlists answered with EPERM for anything else.
//!
//! - The app's (`app_policy`): modelled on Docker's default profile (moby
//!   profiles/seccomp/default.json): the syscalls it allows unconditionally, `personality` only
//!   with the personas it allows, `socket` only for its address families (so not AF_VSOCK),
//!   `clone` without namespace flags, `clone3` ENOSYS (libcs fall back to clone, whose flags a
//!   filter can see). Less than Docker's on top: no `memfd_secret`, `name_to_handle_at`,
//!   `adjtimex`/`clock_adjtime`, `socketcall` (its arguments are out of a filter's reach: it
//!   would reopen socket(AF_VSOCK) on MIPS o32, where libcs use the direct calls anyway). Not
//!   allowed either, as in Docker without capabilities: mount and the new mount API, unshare,
//!   setns, ptrace, process_vm_*, pidfd_getfd, kcmp, io_uring_*, bpf, perf_event_open,
//!   keyrings, module and kexec loading, reboot, swap, time setting, syslog.
//! - The init's (`init_policy`): what a PID 1 that only waits, forwards signals and reports
//!   needs.
//!
//! The syscall set differs per architecture (aarch64 has no open/stat/fork; armv7 and MIPS o32
//! have the 32-bit and *_time64 variants): a table per target beside the common one, which
//! also holds the *_time64 list the 32-bit targets share. A syscall made through another ABI
//! than the target's (x32 on x86_64, n32 on mips64) kills the process: the numbers here are
//! only right for the target's own ABI.
//!
//! Matching is linear (one comparison per allowed syscall, the frequent ones first): the app's
//! program has about 800 instructions on x86_64
//! (`tests::tables_have_no_duplicates_and_programs_fit`), well under the kernel's 4096.

use std::io;

use cpevisor_sandbox::seccomp::{Action, ArgCheck, Policy, Rule};

mod common;

#[cfg(target_arch = "aarch64")]
#[path = "aarch64.rs"]
mod arch;
#[cfg(target_arch = "arm")]
#[path = "arm.rs"]
mod arch;
#[cfg(target_arch = "mips")]
#[path = "mips.rs"]
mod arch;
#[cfg(target_arch = "mips64")]
#[path = "mips64.rs"]
mod arch;
#[cfg(target_arch = "x86_64")]
#[path = "x86_64.rs"]
mod arch;

const EPERM: Action = Action::Errno(libc::EPERM as u16);

/// Namespace flags a jailed app may not pass to clone: no nesting of its own namespaces.
const CLONE_NAMESPACES: u32 = 0x0002_0000 // NEWNS
    | 0x0200_0000 // NEWCGROUP
    | 0x0400_0000 // NEWUTS
    | 0x0800_0000 // NEWIPC
    | 0x1000_0000 // NEWUSER
    | 0x2000_0000 // NEWPID
    | 0x4000_0000; // NEWNET

/// Personas Docker allows: PER_LINUX, PER_LINUX32, each also with UNAME26, and the query.
/// Not ADDR_NO_RANDOMIZE (0x0040000) and the like: they weaken the app's own ASLR for what it
/// executes next, and READ_IMPLIES_EXEC makes every mapping executable.
const PERSONAS: [u32; 5] = [
    0x0000_0000,
    0x0000_0008,
    0x0002_0000,
    0x0002_0008,
    0xffff_ffff,
];

/// Address families Docker allows for socket(2), the common ones first. Not AF_VSOCK (40:
/// sockets to the host's VMs and hypervisor), nor the others Docker leaves out (12, 19, 20,
/// 23, 25, 34, 37, 38, and anything from 46 on).
const SOCKET_FAMILIES: [u32; 37] = [
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_UNIX as u32,
    libc::AF_NETLINK as u32,
    0,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    11,
    13,
    14,
    15,
    17,
    18,
    21,
    22,
    24,
    26,
    27,
    28,
    29,
    30,
    31,
    32,
    33,
    35,
    36,
    39,
    41,
    42,
    43,
    44,
    45,
];

/// Every syscall the app may make whatever its arguments, on this target.
pub fn app_allowed() -> impl Iterator<Item = libc::c_long> {
    common::COMMON
        .iter()
        .chain(arch::ARCH)
        .chain(common::TIME64)
        .copied()
}

/// The app's policy (see the module comment).
pub fn app_policy() -> Policy {
    let mut rules = Vec::new();
    // The frequent calls first, the conditional ones after them (each costs 5 instructions
    // for its syscall, 1 for the others).
    rules.extend(
        common::COMMON
            .iter()
            .map(|&nr| Rule::new(nr, Action::Allow)),
    );
    rules.push(Rule::when(
        libc::SYS_clone,
        ArgCheck::AnyBit {
            index: 0, // flags are the first argument on every target here
            mask: CLONE_NAMESPACES,
        },
        EPERM,
    ));
    rules.push(Rule::new(libc::SYS_clone, Action::Allow));
    rules.push(Rule::new(
        libc::SYS_clone3,
        Action::Errno(libc::ENOSYS as u16),
    ));
    rules.extend(SOCKET_FAMILIES.iter().map(|&family| {
        Rule::when(
            libc::SYS_socket,
            ArgCheck::Equals {
                index: 0,
                value: family,
            },
            Action::Allow,
        )
    }));
    rules.extend(PERSONAS.iter().map(|&persona| {
        Rule::when(
            libc::SYS_personality,
            ArgCheck::Equals {
                index: 0,
                value: persona,
            },
            Action::Allow,
        )
    }));
    rules.extend(
        arch::ARCH
            .iter()
            .chain(common::TIME64)
            .map(|&nr| Rule::new(nr, Action::Allow)),
    );
    Policy {
        rules,
        default: EPERM,
        foreign_abi: Action::KillProcess,
    }
}

/// What the jail's init does once the app is started: wait for children, forward signals to
/// them (kill, and the return from its handler), write the app's end to the runner, close,
/// exit; memory for the odd message, and what abort() needs should it ever panic.
fn init_allowed() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_kill,
        libc::SYS_rt_sigreturn,
        libc::SYS_restart_syscall,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_brk,
        libc::SYS_munmap,
        libc::SYS_madvise,
        libc::SYS_rt_sigprocmask,
        libc::SYS_getpid,
        libc::SYS_gettid,
        // abort's raise: tgkill on glibc, tkill on musl.
        libc::SYS_tgkill,
        libc::SYS_tkill,
    ];
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "mips64"
    ))]
    v.push(libc::SYS_mmap);
    #[cfg(any(target_arch = "arm", target_arch = "mips"))]
    v.extend([libc::SYS_mmap2, libc::SYS_sigreturn]);
    // glibc's waitpid is the waitpid syscall where the target has one.
    #[cfg(target_arch = "mips")]
    v.push(libc::SYS_waitpid);
    v
}

/// The init's policy: `init_allowed`, EPERM for anything else.
pub fn init_policy() -> Policy {
    Policy::allow_list(&init_allowed(), EPERM)
}

/// Installs the app's filter on the calling thread (no_new_privs must be set, or
/// CAP_SYS_ADMIN held).
pub fn install() -> io::Result<()> {
    app_policy().install_thread()
}

/// Installs the init's filter on the calling thread (same precondition).
pub fn install_init() -> io::Result<()> {
    init_policy().install_thread()
}

#[cfg(test)]
mod tests;
