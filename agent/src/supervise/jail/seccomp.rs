//! The jail's seccomp filter: a deny list answered with EPERM (clone3 with ENOSYS, so libcs
//! fall back to clone, whose namespace flags are checked), everything else allowed. A syscall
//! made with another ABI than the target's (x32 on x86_64, n32 on mips64) is denied too: the
//! syscall numbers below are only right for the target's own ABI.

use std::io;

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const JMP_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const JMP_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

/// struct seccomp_data: nr at 0, arch at 4, args[6] (u64 each) from 16.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const OFF_ARG0_LOW: u32 = 16;
#[cfg(target_endian = "big")]
const OFF_ARG0_LOW: u32 = 20;

/// AUDIT_ARCH_* of the target (linux/audit.h: EM_* | 64BIT 0x80000000 | LE 0x40000000).
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(all(target_arch = "arm", target_endian = "little"))]
pub const AUDIT_ARCH: u32 = 0x4000_0028;
#[cfg(all(target_arch = "mips", target_endian = "little"))]
pub const AUDIT_ARCH: u32 = 0x4000_0008;
#[cfg(all(target_arch = "mips64", target_endian = "little"))]
pub const AUDIT_ARCH: u32 = 0xC000_0008;

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

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program for `arch` (the target's AUDIT_ARCH in use; a parameter for tests).
pub fn program(arch: u32) -> Vec<libc::sock_filter> {
    let eperm = RET_ERRNO | libc::EPERM as u32;
    let mut p = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JMP_JEQ_K, arch, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 syscalls carry bit 30 in the number.
        p.push(jump(JMP_JGE_K, 0x4000_0000, 0, 1));
        p.push(stmt(RET_K, eperm));
    }
    for nr in denied() {
        p.push(jump(JMP_JEQ_K, nr as u32, 0, 1));
        p.push(stmt(RET_K, eperm));
    }
    p.push(jump(JMP_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    // clone: flags are the first argument on every target here.
    p.push(jump(JMP_JEQ_K, libc::SYS_clone as u32, 0, 3));
    p.push(stmt(LD_W_ABS, OFF_ARG0_LOW));
    p.push(jump(JMP_JSET_K, CLONE_NAMESPACES, 0, 1));
    p.push(stmt(RET_K, eperm));
    p.push(stmt(RET_K, RET_ALLOW));
    p
}

/// Installs the filter on the calling thread (no_new_privs must be set, or CAP_SYS_ADMIN held).
pub fn install() -> io::Result<()> {
    let mut filter = program(AUDIT_ARCH);
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: PR_SET_SECCOMP copies the program (`prog` points into `filter`, alive for the call).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("installing the seccomp filter: {e}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter for the instructions `program` uses, so the logic is tested without
    /// installing anything.
    fn run(p: &[libc::sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[16..24].copy_from_slice(&arg0.to_ne_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = p[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                RET_K => return i.k,
                JMP_JEQ_K | JMP_JGE_K | JMP_JSET_K => {
                    let taken = match i.code {
                        JMP_JEQ_K => acc == i.k,
                        JMP_JGE_K => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn denies_what_escapes_and_allows_the_rest() {
        let p = program(AUDIT_ARCH);
        assert!(
            p.len() < 4096,
            "BPF programs are limited to 4096 instructions"
        );
        let eperm = RET_ERRNO | libc::EPERM as u32;
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_ptrace,
        ] {
            assert_eq!(run(&p, AUDIT_ARCH, nr as u32, 0), eperm);
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_getpid,
            libc::SYS_execve,
        ] {
            assert_eq!(run(&p, AUDIT_ARCH, nr as u32, 0), RET_ALLOW);
        }
        let clone = libc::SYS_clone as u32;
        assert_eq!(run(&p, AUDIT_ARCH, clone, libc::SIGCHLD as u64), RET_ALLOW);
        assert_eq!(run(&p, AUDIT_ARCH, clone, 0x1000_0000 | 17), eperm);
        assert_eq!(
            run(&p, AUDIT_ARCH, libc::SYS_clone3 as u32, 0),
            RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            run(&p, AUDIT_ARCH ^ 1, libc::SYS_read as u32, 0),
            RET_KILL_PROCESS
        );
    }
}
