//! `cpevisord jail-probe SPEC RUNNER_PID -- ARGV...`: a package's health-probe command, run in
//! the app's running jail and as confined as the app: it joins the app's cgroup, enters the
//! jail's namespaces (those of the jail's init, the runner's one child: user, mount, PID, UTS,
//! IPC, network), becomes the app's root (host id), and forks; the child drops every capability,
//! sets no_new_privs and the app's seccomp filter, and execs ARGV with the app's environment.
//! The parent ends the way the probe did. Started by the agent (`JailBackend::probe_command`)
//! in its own process group, which the agent kills at the probe's deadline.

use std::ffi::CString;
use std::fs::File;

use nix::sched::CloneFlags;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use cpevisor_sandbox::{caps, fds};

use super::{seccomp, spec::JailSpec};

/// The multi-call name.
pub const JAIL_PROBE: &str = "jail-probe";
/// Exit code when the probe could not be started in the jail (the message says why).
pub const PROBE_SETUP_FAILED: i32 = 125;
/// A router runs a few hundred processes; a bound on the scan all the same.
const MAX_PROCS_SCANNED: usize = 65_536;

const USAGE: &str = "usage: cpevisord jail-probe SPEC.json RUNNER_PID -- ARGV...";

/// Entry point of the multi-call binary; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let (spec_path, runner, argv) = match args {
        [spec, pid, dashes, argv @ ..] if dashes == "--" && !argv.is_empty() => {
            match pid.parse::<i32>() {
                Ok(p) if p > 1 => (spec, p, argv),
                _ => {
                    eprintln!("jail-probe: RUNNER_PID: expected a process id\n{USAGE}");
                    return 2;
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    match enter(std::path::Path::new(spec_path), runner, argv) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("jail-probe: {msg}");
            PROBE_SETUP_FAILED
        }
    }
}

fn enter(spec_path: &std::path::Path, runner: i32, argv: &[String]) -> Result<i32, String> {
    // An agent that dies takes its probes along.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| format!("parent-death signal: {e}"))?;
    let spec = JailSpec::load(spec_path).map_err(|e| format!("spec {e}"))?;
    let argv = to_cstrings(argv)?;
    let env = to_cstrings(&spec.env)?;
    let init = jail_init(runner)?;
    if let Some(cg) = &spec.cgroup {
        // First: the probe counts against the app's limits (memory, pids) like the app.
        let procs = cg.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| format!("join {}: {e}", procs.display()))?;
    }
    // All opened before the first setns: the mount namespace changes what /proc/<pid> means.
    let mut kinds = vec![
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    if spec.host_id.is_some() {
        // Last, as nsenter does: the others are entered with the host root's capabilities.
        kinds.push(("user", CloneFlags::CLONE_NEWUSER));
    }
    let mut opened = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{init}/ns/{name}");
        let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        opened.push((name, flag, f));
    }
    for (name, flag, f) in &opened {
        nix::sched::setns(f, *flag)
            .map_err(|e| format!("enter the jail's {name} namespace: {e}"))?;
    }
    drop(opened);
    if spec.host_id.is_some() {
        become_namespace_root()?;
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    // SAFETY: this process is single-threaded (a fresh exec of cpevisord), so the child may
    // allocate before it execs.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let msg = exec_probe(&argv, &env);
            eprintln!("jail-probe: {msg}");
            // SAFETY: _exit leaves the failed child without running the parent's cleanup.
            unsafe { libc::_exit(PROBE_SETUP_FAILED) }
        }
        Ok(ForkResult::Parent { child }) => Ok(wait(child)),
        Err(e) => Err(format!("fork in the jail: {e}")),
    }
}

/// The jail's init: the runner's only child (found by its parent pid: no /proc `children`
/// file is needed, which some router kernels leave out).
fn jail_init(runner: i32) -> Result<i32, String> {
    let rd = std::fs::read_dir("/proc").map_err(|e| format!("read /proc: {e}"))?;
    for entry in rd.flatten().take(MAX_PROCS_SCANNED) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(runner) {
            return Ok(pid);
        }
    }
    Err(format!("the jail of runner {runner} is not running"))
}

fn become_namespace_root() -> Result<(), String> {
    // SAFETY: setresgid/setresuid take ids by value; the process is single-threaded.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("become gid 0 of the jail's user namespace: {e}"));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("become uid 0 of the jail's user namespace: {e}"));
    }
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("parent-death signal: {e}"))
}

/// The probe process, now inside the jail's PID namespace: the app's own confinement, then
/// exec. Returns only on failure.
fn exec_probe(argv: &[CString], env: &[CString]) -> String {
    // Rust's runtime ignores SIGPIPE; a freshly started program expects the default.
    // SAFETY: restoring the default disposition installs no handler code.
    let _ = unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    if let Err(e) = caps::set_no_new_privs() {
        return format!("no_new_privs: {e}");
    }
    if let Err(e) = caps::drop_all() {
        return format!("{e}");
    }
    if let Err(e) = fds::close_from(3, &[]) {
        return format!("{e}");
    }
    if let Err(e) = seccomp::install() {
        return format!("seccomp: {e}");
    }
    match nix::unistd::execve(&argv[0], argv, env) {
        Err(e) => format!("exec {}: {e}", argv[0].to_string_lossy()),
        Ok(never) => match never {},
    }
}

/// Ends like the probe: its exit code, or 128 + the signal that killed it.
fn wait(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return PROBE_SETUP_FAILED,
        }
    }
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("{s:?} contains NUL")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_name_what_is_wrong() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(main(&s(&["spec.json", "12"])), 2);
        assert_eq!(main(&s(&["spec.json", "12", "--"])), 2);
        assert_eq!(main(&s(&["spec.json", "x", "--", "/bin/true"])), 2);
        assert_eq!(main(&s(&["spec.json", "1", "--", "/bin/true"])), 2);
    }

    #[test]
    fn the_init_is_found_by_its_parent() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let found = jail_init(me);
        let _ = child.kill();
        let _ = child.wait();
        // Other test threads may have children too; ours is one of them.
        assert!(found.is_ok(), "{found:?}");
        assert!(jail_init(i32::MAX).is_err());
    }
}
