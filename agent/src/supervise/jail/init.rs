//! The jail's PID 1. Cloned by the runner into fresh mount, PID, UTS, IPC and network
//! namespaces (and a user namespace, when the spec has a host id), it closes every descriptor
//! but its three pipe ends, waits for the runner's go (the veth is then in place), builds the
//! jail (mounts, hostname, addresses), forks the app and, while the app waits, confines itself
//! as much as the app will be: not dumpable (the app, of the same uid, can neither open its
//! /proc/1/mem nor ptrace it), no capabilities, no_new_privs, and a seccomp allowlist of its
//! own (wait, signal, write, exit). Only then does the app drop every privilege and exec the
//! command. The init stays as a minimal init: forwards termination signals, reaps orphans, and
//! reports the app's exit to the runner. When it exits the kernel kills whatever is left in
//! the jail.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};

use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use cpevisor_sandbox::{caps, fds};

use super::error::JailError;
use super::{mounts, netlink, seccomp, spec::JailSpec, spec::JAIL_IF};

/// Signals the init passes on to everything else in the jail.
pub const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The descriptors the runner hands to the init (raw: the init is a clone, not an exec).
pub struct InitFds {
    /// One byte when the runner has set up the host side; EOF when it gave up.
    pub go: RawFd,
    /// CLOEXEC: closed by the app's exec (success); a message on failure.
    pub error: RawFd,
    /// Two bytes for the app's end: [0, code] exited, [1, signal] killed.
    pub status: RawFd,
}

extern "C" fn forward(sig: libc::c_int) {
    // SAFETY: kill(2) is async-signal-safe; -1 from a PID namespace's init reaches every other
    // process of the namespace.
    unsafe {
        libc::kill(-1, sig);
    }
}

fn configure_network(spec: &JailSpec) -> Result<(), JailError> {
    let mut nl = netlink::Netlink::open().map_err(|e| JailError::io("netlink", e))?;
    let lo = netlink::link_index("lo").ok_or_else(|| JailError::refused("no loopback device"))?;
    nl.set_up(lo, None)
        .map_err(|e| JailError::io("bring lo up", e))?;
    let Some(net) = &spec.net else {
        return Ok(());
    };
    let eth = netlink::link_index(JAIL_IF)
        .ok_or_else(|| JailError::refused(format!("{JAIL_IF} did not arrive in the jail")))?;
    nl.add_addr(eth, net.app_ip, net.prefix_len).map_err(|e| {
        JailError::io(
            format!("address {}/{} on {JAIL_IF}", net.app_ip, net.prefix_len),
            e,
        )
    })?;
    nl.set_up(eth, None)
        .map_err(|e| JailError::io(format!("bring {JAIL_IF} up"), e))?;
    nl.add_default_route(net.gateway, eth)
        .map_err(|e| JailError::io(format!("default route via {}", net.gateway), e))?;
    Ok(())
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>, JailError> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| JailError::refused(format!("{s:?} contains NUL")))
        })
        .collect()
}

/// The app process: last privileges dropped, then exec. Returns only on failure. `error` is
/// the error pipe (CLOEXEC), the one descriptor above stderr it keeps until the exec.
fn exec_app(spec: &JailSpec, error: RawFd) -> String {
    // exec keeps ignored signals ignored: SIGPIPE (ignored by Rust's runtime in the runner)
    // and the forwarded ones go back to their defaults, as for any freshly started program.
    for sig in FORWARDED.into_iter().chain([Signal::SIGPIPE]) {
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    }
    // The runner and init are shielded from the OOM killer (-1000); the app is the one to go.
    // Set while still privileged so the app cannot lower it again.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "0") {
        return format!("jail: oom_score_adj: {e}");
    }
    let argv = match to_cstrings(&spec.command) {
        Ok(a) => a,
        Err(e) => return e.to_string(),
    };
    let env = match to_cstrings(&spec.env) {
        Ok(e) => e,
        Err(e) => return e.to_string(),
    };
    if let Err(e) = caps::set_no_new_privs() {
        return format!("jail: no_new_privs: {e}");
    }
    if let Err(e) = caps::drop_all() {
        return format!("jail: {e}");
    }
    // Nothing of the init's reaches the command: only stdin, stdout and stderr stay open.
    if let Err(e) = fds::close_from(3, &[error]) {
        return format!("jail: {e}");
    }
    if let Err(e) = seccomp::install() {
        return format!("jail: {e}");
    }
    match nix::unistd::execve(&argv[0], &argv, &env) {
        Err(e) => format!("jail: exec {}: {e}", spec.command[0]),
        Ok(never) => match never {},
    }
}

fn report_error(fd: RawFd, msg: &str) {
    // SAFETY: `fd` is the error pipe's write end, open in this process; ManuallyDrop keeps it
    // open (the caller still owns it).
    let mut f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let _ = f.write_all(msg.as_bytes());
}

/// Everything before the app starts; Err carries the message for the runner.
fn build(spec: &JailSpec, fds: &InitFds) -> Result<(), JailError> {
    // The jail dies with its runner (a SIGKILLed runner leaves nothing behind).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| JailError::errno("parent-death signal", e))?;
    // SAFETY: `go` is the read end of the go pipe, owned by this process from here on.
    let mut go = unsafe { File::from_raw_fd(fds.go) };
    let mut byte = [0u8; 1];
    match go.read(&mut byte) {
        Ok(1) => {}
        _ => {
            return Err(JailError::refused(
                "the runner gave up before the jail was built",
            ))
        }
    }
    drop(go);
    // Still host root by id (with capabilities only in the jail's namespaces) until the
    // mounts switch: the host directories on the way to the rootfs and data volume may be
    // root's alone.
    mounts::enter_rootfs(spec, || match spec.host_id {
        Some(_) => become_namespace_root(),
        None => Ok(()),
    })?;
    nix::unistd::sethostname(&spec.eu_id)
        .map_err(|e| JailError::errno(format!("hostname {}", spec.eu_id), e))?;
    configure_network(spec)?;
    Ok(())
}

/// Switches to uid/gid 0 of the jail's user namespace (the runner has mapped it to the app's
/// host id), keeping the namespace's capabilities for the app's own drop.
fn become_namespace_root() -> Result<(), JailError> {
    // SAFETY: setresgid/setresuid take ids by value; the process is single-threaded.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(JailError::io("become gid 0 of the user namespace", e));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(JailError::io("become uid 0 of the user namespace", e));
    }
    // A change of ids clears both: the parent-death signal, and dumpable, which would leave
    // /proc/self owned by host root and out of the app's reach.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| JailError::errno("parent-death signal", e))?;
    nix::sys::prctl::set_dumpable(true).map_err(|e| JailError::errno("dumpable", e))?;
    Ok(())
}

/// Entry of the cloned child. Never returns to the runner's code: the value is its exit code.
pub fn main(spec: &JailSpec, fds: InitFds) -> isize {
    // First thing: the runner's other descriptors (its netlink socket, its own pipe ends, the
    // agent's ready pipe, whatever cpevisord inherited) stay out of the jail.
    if let Err(e) = fds::close_from(3, &[fds.go, fds.error, fds.status]) {
        report_error(fds.error, &format!("jail: {e}"));
        return 125;
    }
    if let Err(e) = build(spec, &fds) {
        report_error(fds.error, &e.to_string());
        return 125;
    }
    for sig in FORWARDED {
        // SAFETY: `forward` only calls kill(2), which is async-signal-safe.
        let _ = unsafe { signal::signal(sig, SigHandler::Handler(forward)) };
    }
    // The app waits on this pipe until the init is confined: the app's command must never run
    // beside an init it could still take over.
    let (hold_r, hold_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            report_error(fds.error, &format!("jail: pipe: {e}"));
            return 125;
        }
    };
    // SAFETY: this process is single-threaded (a clone of the single-threaded runner), so the
    // forked child may allocate and run ordinary code before it execs.
    let app = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(hold_w);
            let mut go = [0u8; 1];
            // Its own statement: the pipe is closed before exec_app closes what is left.
            let got = File::from(hold_r).read(&mut go);
            let msg = match got {
                Ok(1) => exec_app(spec, fds.error),
                // The init failed to confine itself (and said why) or is gone.
                _ => String::new(),
            };
            report_error(fds.error, &msg);
            // SAFETY: _exit leaves the failed app child without unwinding into the init's code.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            report_error(fds.error, &format!("jail: fork the app: {e}"));
            return 125;
        }
    };
    drop(hold_r);
    if let Err(e) = confine() {
        report_error(fds.error, &e.to_string());
        let _ = signal::kill(app, Signal::SIGKILL);
        return 125;
    }
    // SAFETY: the init's copy of the error pipe; the app holds its own until exec.
    unsafe { libc::close(fds.error) };
    // An app already gone (killed from outside) is reaped and reported below all the same.
    let _ = File::from(hold_w).write_all(b"g");
    let outcome = reap_until(app);
    // SAFETY: `status` is the status pipe's write end, owned by this process.
    let mut status = unsafe { File::from_raw_fd(fds.status) };
    let _ = status.write_all(&outcome);
    0
}

/// The init, once the jail is built, as confined as the app: not dumpable (set after the last
/// change of ids, which resets it: /proc/1/mem and ptrace need CAP_SYS_PTRACE, which nobody in
/// the jail has), no capabilities, no_new_privs, and its own seccomp allowlist.
fn confine() -> Result<(), JailError> {
    let init = |e| JailError::io("init", e);
    caps::set_not_dumpable().map_err(init)?;
    caps::set_no_new_privs().map_err(init)?;
    caps::drop_all().map_err(init)?;
    seccomp::install_init().map_err(init)
}

/// Reaps every child (orphans are re-parented here) until `app` ends; its end as 2 bytes.
fn reap_until(app: Pid) -> [u8; 2] {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == app => return [0, code as u8],
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == app => return [1, sig as i32 as u8],
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            // ECHILD: nothing left to wait for (cannot happen while the app lives).
            Err(_) => return [0, 125],
        }
    }
}
