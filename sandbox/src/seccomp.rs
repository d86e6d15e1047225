//! Seccomp filters as data: an ordered list of rules, compiled to classic BPF.
//!
//! A program first checks the audit architecture (a syscall made through another ABI than the
//! target's, x32 on x86_64 or n32 on mips64, would be numbered differently: it gets
//! `Policy::foreign_abi`), then tries the rules in order; the first whose syscall number (and
//! argument check, if any) matches decides. Nothing matched: `Policy::default`.
//!
//! Syscall numbers come from `libc::SYS_*`, which are the target's own: the same policy source
//! compiles to the right numbers on every architecture we build for.

use std::io;

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const JMP_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const JMP_JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

/// The kernel refuses longer programs (BPF_MAXINSNS).
pub const MAX_INSTRUCTIONS: usize = 4096;

/// struct seccomp_data: nr at 0, arch at 4, instruction pointer at 8, args[6] (u64 each) from 16.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;
/// The low 32 bits of an argument sit first on little-endian targets, second on big-endian.
#[cfg(target_endian = "little")]
const LOW_WORD: u32 = 0;
#[cfg(target_endian = "big")]
const LOW_WORD: u32 = 4;

// AUDIT_ARCH_* of the target (linux/audit.h: EM_* | 64BIT 0x80000000 | LE 0x40000000).
/// The AUDIT_ARCH_* value a filter checks the syscall ABI against.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xC000_003E;
/// The AUDIT_ARCH_* value a filter checks the syscall ABI against.
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xC000_00B7;
/// The AUDIT_ARCH_* value a filter checks the syscall ABI against.
#[cfg(all(target_arch = "arm", target_endian = "little"))]
pub const AUDIT_ARCH: u32 = 0x4000_0028;
/// The AUDIT_ARCH_* value a filter checks the syscall ABI against.
#[cfg(all(target_arch = "mips", target_endian = "little"))]
pub const AUDIT_ARCH: u32 = 0x4000_0008;
/// The AUDIT_ARCH_* value a filter checks the syscall ABI against.
#[cfg(all(target_arch = "mips64", target_endian = "little"))]
pub const AUDIT_ARCH: u32 = 0xC000_0008;

/// What the kernel does with a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The syscall runs.
    Allow,
    /// Fails with this errno; the process goes on.
    Errno(u16),
    /// SIGSYS to the thread, which dumps core by default: shows the offending syscall.
    Trap,
    /// Allowed, and logged by the kernel's audit.
    Log,
    /// The whole process dies with SIGSYS.
    KillProcess,
    /// Only the calling thread dies.
    KillThread,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Errno(e) => RET_ERRNO | u32::from(e),
            Action::Trap => RET_TRAP,
            Action::Log => RET_LOG,
            Action::KillProcess => RET_KILL_PROCESS,
            Action::KillThread => RET_KILL_THREAD,
        }
    }
}

/// A test on the low 32 bits of one syscall argument (flags and small integers fit there; the
/// rules here never need the high word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgCheck {
    /// Argument `index` has any bit of `mask` set.
    AnyBit {
        /// Which argument, 0 to 5.
        index: u8,
        /// The bits tested.
        mask: u32,
    },
    /// Argument `index` equals `value`.
    Equals {
        /// Which argument, 0 to 5.
        index: u8,
        /// The value it must have.
        value: u32,
    },
}

/// One line of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The syscall number.
    pub nr: libc::c_long,
    /// The argument test the rule applies under (None: always).
    pub when: Option<ArgCheck>,
    /// What happens when the rule matches.
    pub action: Action,
}

impl Rule {
    /// `nr` gets `action`, whatever its arguments.
    pub const fn new(nr: libc::c_long, action: Action) -> Self {
        Rule {
            nr,
            when: None,
            action,
        }
    }

    /// `nr` gets `action` when `check` holds; otherwise the next rules decide.
    pub const fn when(nr: libc::c_long, check: ArgCheck, action: Action) -> Self {
        Rule {
            nr,
            when: Some(check),
            action,
        }
    }
}

/// An ordered rule list with the fallbacks around it.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Tried in order; the first match decides.
    pub rules: Vec<Rule>,
    /// For syscalls no rule matched.
    pub default: Action,
    /// For syscalls made through another ABI than the target's own.
    pub foreign_abi: Action,
}

impl Policy {
    /// Every syscall in `allowed` allowed, everything else `default`. The foreign ABI kills.
    pub fn allow_list(allowed: &[libc::c_long], default: Action) -> Self {
        Policy {
            rules: allowed
                .iter()
                .map(|&nr| Rule::new(nr, Action::Allow))
                .collect(),
            default,
            foreign_abi: Action::KillProcess,
        }
    }

    /// The BPF program for the audit architecture `arch` (the target's `AUDIT_ARCH` when
    /// installed; a parameter so tests can check the foreign-ABI path).
    pub fn program(&self, arch: u32) -> io::Result<Vec<libc::sock_filter>> {
        let mut p = vec![
            stmt(LD_W_ABS, OFF_ARCH),
            jump(JMP_JEQ_K, arch, 1, 0),
            stmt(RET_K, self.foreign_abi.ret()),
            stmt(LD_W_ABS, OFF_NR),
        ];
        if cfg!(target_arch = "x86_64") {
            // x32 syscalls share AUDIT_ARCH_X86_64 and carry bit 30 in the number.
            p.push(jump(JMP_JGE_K, 0x4000_0000, 0, 1));
            p.push(stmt(RET_K, self.foreign_abi.ret()));
        }
        for rule in &self.rules {
            let nr = u32::try_from(rule.nr).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("seccomp: syscall number {} out of range", rule.nr),
                )
            })?;
            match rule.when {
                None => {
                    p.push(jump(JMP_JEQ_K, nr, 0, 1));
                    p.push(stmt(RET_K, rule.action.ret()));
                }
                Some(check) => {
                    let (index, op, k) = match check {
                        ArgCheck::AnyBit { index, mask } => (index, JMP_JSET_K, mask),
                        ArgCheck::Equals { index, value } => (index, JMP_JEQ_K, value),
                    };
                    if index > 5 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("seccomp: syscall {nr} has no argument {index}"),
                        ));
                    }
                    // nr differs: skip the 4 instructions of the check (the accumulator still
                    // holds nr). Otherwise load the argument, test it, and reload nr for the
                    // rules after this one when the test fails.
                    p.push(jump(JMP_JEQ_K, nr, 0, 4));
                    p.push(stmt(LD_W_ABS, OFF_ARGS + 8 * u32::from(index) + LOW_WORD));
                    p.push(jump(op, k, 0, 1));
                    p.push(stmt(RET_K, rule.action.ret()));
                    p.push(stmt(LD_W_ABS, OFF_NR));
                }
            }
        }
        p.push(stmt(RET_K, self.default.ret()));
        if p.len() > MAX_INSTRUCTIONS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "seccomp: the program has {} instructions, the kernel takes {MAX_INSTRUCTIONS}",
                    p.len()
                ),
            ));
        }
        Ok(p)
    }

    /// Installs the filter on the calling thread only (threads started later inherit it).
    /// The caller must have set no_new_privs (or hold CAP_SYS_ADMIN).
    pub fn install_thread(&self) -> io::Result<()> {
        self.install(0)
    }

    /// Installs the filter on every thread of the process at once (SECCOMP_FILTER_FLAG_TSYNC).
    pub fn install_all_threads(&self) -> io::Result<()> {
        self.install(libc::SECCOMP_FILTER_FLAG_TSYNC as libc::c_ulong)
    }

    fn install(&self, flags: libc::c_ulong) -> io::Result<()> {
        let mut filter = self.program(AUDIT_ARCH)?;
        let prog = libc::sock_fprog {
            len: filter.len() as libc::c_ushort,
            filter: filter.as_mut_ptr(),
        };
        // SAFETY: seccomp(2) copies the program; `prog` points into `filter`, alive for the
        // call. With TSYNC a positive return is the id of a thread that could not be synced.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        match rc {
            0 => Ok(()),
            rc if rc > 0 => Err(io::Error::other(format!(
                "installing the seccomp filter: thread {rc} could not be synchronized"
            ))),
            _ => {
                let e = io::Error::last_os_error();
                Err(io::Error::new(
                    e.kind(),
                    format!("installing the seccomp filter: {e}"),
                ))
            }
        }
    }
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

/// Runs `program` on one syscall without the kernel: for tests of policies (here and in the
/// crates that define them). `args` are the six syscall arguments.
pub fn evaluate(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> Action {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = program[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().expect("4 bytes"));
            }
            RET_K => return decode(i.k),
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

fn decode(ret: u32) -> Action {
    match ret & 0xffff_0000 {
        RET_ALLOW => Action::Allow,
        RET_ERRNO => Action::Errno((ret & 0xffff) as u16),
        RET_TRAP => Action::Trap,
        RET_LOG => Action::Log,
        RET_KILL_PROCESS => Action::KillProcess,
        _ => Action::KillThread,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPERM: Action = Action::Errno(libc::EPERM as u16);

    fn run(p: &Policy, nr: libc::c_long, arg0: u64) -> Action {
        let prog = p.program(AUDIT_ARCH).unwrap();
        evaluate(&prog, AUDIT_ARCH, nr as u32, [arg0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn first_matching_rule_decides_and_argument_checks_fall_through() {
        let p = Policy {
            rules: vec![
                Rule::when(
                    libc::SYS_clone,
                    ArgCheck::AnyBit {
                        index: 0,
                        mask: 0x1000_0000,
                    },
                    EPERM,
                ),
                Rule::new(libc::SYS_clone, Action::Allow),
                Rule::when(
                    libc::SYS_socket,
                    ArgCheck::Equals {
                        index: 0,
                        value: libc::AF_UNIX as u32,
                    },
                    Action::Allow,
                ),
                Rule::new(libc::SYS_read, Action::Allow),
            ],
            default: Action::KillProcess,
            foreign_abi: Action::KillThread,
        };
        assert_eq!(run(&p, libc::SYS_clone, 0x1000_0011), EPERM);
        assert_eq!(run(&p, libc::SYS_clone, 0x11), Action::Allow);
        assert_eq!(
            run(&p, libc::SYS_socket, libc::AF_UNIX as u64),
            Action::Allow
        );
        assert_eq!(
            run(&p, libc::SYS_socket, libc::AF_INET as u64),
            Action::KillProcess
        );
        assert_eq!(run(&p, libc::SYS_read, 0), Action::Allow);
        assert_eq!(run(&p, libc::SYS_write, 0), Action::KillProcess);
        let prog = p.program(AUDIT_ARCH).unwrap();
        assert_eq!(
            evaluate(&prog, AUDIT_ARCH ^ 1, libc::SYS_read as u32, [0; 6]),
            Action::KillThread
        );
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                evaluate(&prog, AUDIT_ARCH, 0x4000_0000, [0; 6]),
                Action::KillThread,
                "x32 numbers are a foreign ABI"
            );
        }
    }

    #[test]
    fn too_long_programs_and_bad_arguments_are_refused() {
        let long = Policy::allow_list(&[libc::SYS_read; 3000], Action::KillProcess);
        assert!(long.program(AUDIT_ARCH).is_err());
        let bad = Policy {
            rules: vec![Rule::when(
                libc::SYS_read,
                ArgCheck::Equals { index: 6, value: 0 },
                Action::Allow,
            )],
            default: Action::Allow,
            foreign_abi: Action::KillProcess,
        };
        assert!(bad.program(AUDIT_ARCH).is_err());
    }

    #[test]
    fn an_installed_filter_applies_to_the_thread() {
        // In a thread of its own: the filter cannot be removed once installed.
        std::thread::spawn(|| {
            crate::caps::set_no_new_privs().unwrap();
            let p = Policy {
                rules: vec![Rule::new(
                    libc::SYS_getppid,
                    Action::Errno(libc::EACCES as u16),
                )],
                default: Action::Allow,
                foreign_abi: Action::KillProcess,
            };
            p.install_thread().unwrap();
            // SAFETY: getppid takes no arguments.
            let rc = unsafe { libc::syscall(libc::SYS_getppid) };
            assert_eq!(rc, -1);
            assert_eq!(
                io::Error::last_os_error().raw_os_error(),
                Some(libc::EACCES)
            );
        })
        .join()
        .unwrap();
        // SAFETY: as above; this thread has no filter.
        assert!(unsafe { libc::syscall(libc::SYS_getppid) } > 0);
    }
}
