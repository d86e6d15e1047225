//! The jail's seccomp filter: a deny list answered with EPERM (clone3 with ENOSYS, so libcs
//! fall back to clone, whose namespace flags are checked), everything else allowed. A syscall
//! made with another ABI than the target's (x32 on x86_64, n32 on mips64) is denied too: the
//! syscall numbers below are only right for the target's own ABI.

use std::io;

use cpevisor_sandbox::seccomp::{Action, ArgCheck, Policy, Rule};

/// Namespace flags a jailed app may not pass to clone: no nesting of its own namespaces.
const CLONE_NAMESPACES: u32 = 0x0002_0000 // NEWNS
    | 0x0200_0000 // NEWCGROUP
    | 0x0400_0000 // NEWUTS
    | 0x0800_0000 // NEWIPC
    | 0x1000_0000 // NEWUSER
    | 0x2000_0000 // NEWPID
    | 0x4000_0000; // NEWNET

/// Target-only syscalls of the same kinds (kexec_file_load does not exist on MIPS).
#[cfg(target_arch = "x86_64")]
const ARCH_DENIED: &[libc::c_long] = &[libc::SYS_kexec_file_load, libc::SYS_iopl, libc::SYS_ioperm];
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const ARCH_DENIED: &[libc::c_long] = &[libc::SYS_kexec_file_load];
#[cfg(target_arch = "mips")]
const ARCH_DENIED: &[libc::c_long] = &[libc::SYS_umount, libc::SYS_stime];
#[cfg(target_arch = "mips64")]
const ARCH_DENIED: &[libc::c_long] = &[];

/// Syscalls that reach beyond the jail: mounts, module and kernel loading, namespace changes,
/// tracing other processes, keyrings, BPF and perf, time and host identity, swap, reboot.
fn denied() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_reboot,
        libc::SYS_kexec_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_userfaultfd,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_syslog,
        libc::SYS_lookup_dcookie,
        libc::SYS_vhangup,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_fanotify_init,
    ];
    v.extend_from_slice(ARCH_DENIED);
    v
}

const EPERM: Action = Action::Errno(libc::EPERM as u16);

/// The jail's policy: the deny list answered with EPERM, clone3 with ENOSYS (libcs fall back
/// to clone), clone with namespace flags EPERM, everything else allowed.
pub fn policy() -> Policy {
    let mut rules: Vec<Rule> = denied()
        .into_iter()
        .map(|nr| Rule::new(nr, EPERM))
        .collect();
    rules.push(Rule::new(
        libc::SYS_clone3,
        Action::Errno(libc::ENOSYS as u16),
    ));
    // clone: flags are the first argument on every target here.
    rules.push(Rule::when(
        libc::SYS_clone,
        ArgCheck::AnyBit {
            index: 0,
            mask: CLONE_NAMESPACES,
        },
        EPERM,
    ));
    Policy {
        rules,
        default: Action::Allow,
        foreign_abi: Action::KillProcess,
    }
}

/// Installs the filter on the calling thread (no_new_privs must be set, or CAP_SYS_ADMIN held).
pub fn install() -> io::Result<()> {
    policy().install_thread()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpevisor_sandbox::seccomp::{evaluate, AUDIT_ARCH};

    fn run(nr: libc::c_long, arg0: u64) -> Action {
        let p = policy().program(AUDIT_ARCH).unwrap();
        evaluate(&p, AUDIT_ARCH, nr as u32, [arg0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn denies_what_escapes_and_allows_the_rest() {
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_ptrace,
        ] {
            assert_eq!(run(nr, 0), EPERM);
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_getpid,
            libc::SYS_execve,
        ] {
            assert_eq!(run(nr, 0), Action::Allow);
        }
        assert_eq!(run(libc::SYS_clone, libc::SIGCHLD as u64), Action::Allow);
        assert_eq!(run(libc::SYS_clone, 0x1000_0000 | 17), EPERM);
        assert_eq!(run(libc::SYS_clone3, 0), Action::Errno(libc::ENOSYS as u16));
        let p = policy().program(AUDIT_ARCH).unwrap();
        assert_eq!(
            evaluate(&p, AUDIT_ARCH ^ 1, libc::SYS_read as u32, [0; 6]),
            Action::KillProcess
        );
    }
}
