//! Confinement of a VMM that parses guest-controlled data (virtio rings, MMIO): the jailer
//! steps of Firecracker, done by the VMM itself once everything is open.
//!
//! With `"jail": {"uid": U, "gid": G}` in the VM description, `main` closes every descriptor it
//! inherited, the builder opens everything the VM will ever use (/dev/kvm and the VM, guest
//! memory, kernel and initrd (read into guest memory), disks, tap, console, control socket, this
//! process's memory counters), and then, still single-threaded:
//! 1. new mount, IPC and UTS namespaces whose root is an empty read-only tmpfs (the host's
//!    files are out of reach: only the descriptors held work);
//! 2. uid U, gid G, no supplementary groups, no capabilities, no_new_privs;
//! 3. not dumpable (no ptrace, no /proc/<pid>/mem for a process of the same uid);
//! 4. each vCPU thread installs its seccomp filter (`seccomp::vcpu_thread`) and waits at a
//!    gate; the main thread installs its own (`seccomp::main_thread`), then opens the gate. No
//!    guest instruction runs before every filter is in place.

use std::sync::{Condvar, Mutex};

use crate::config::ConfigError;
/// Who the VMM becomes (the VM description's `jail`).
pub use crate::config::JailConfig;

/// Root is refused: uid 0 in the host namespace would undo the point of it.
pub fn check_jail(jail: &JailConfig) -> Result<(), ConfigError> {
    if jail.uid == 0 || jail.gid == 0 {
        return Err(ConfigError::invalid(
            "jail",
            format!(
                "uid {} / gid {}: the VMM must not stay root",
                jail.uid, jail.gid
            ),
        ));
    }
    Ok(())
}

/// One malloc arena for every thread, set before any thread starts. glibc gives each new thread
/// an arena of its own, and the first time such an arena trims its heap glibc opens
/// /proc/sys/vm/overcommit_memory (`check_may_shrink_heap`): under the filters, which forbid
/// openat, that killed a jailed VMM with SIGSYS when a vCPU thread freed the buffers of the
/// guest's last disk writes at a graceful stop. The main arena trims with brk, which the
/// filters allow. One arena also keeps the VMM's own memory smaller (no per-thread heaps); the
/// vCPU threads' hot paths do not allocate, so they do not contend on it.
/// Other C libraries (musl) have no per-thread arenas: nothing to do there.
pub fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Closes every descriptor above stderr that the VMM inherited but `keep` (the readiness pipe):
/// called first, before the VMM opens anything of its own.
pub fn close_inherited(keep: &[i32]) -> std::io::Result<()> {
    cpevisor_sandbox::fds::close_from(3, keep)
}

/// Steps 1 to 3 above. The caller must be single-threaded and must have opened everything.
pub fn enter(jail: &JailConfig) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("jail: the VMM must be started as root to confine itself".into());
    }
    cpevisor_sandbox::jailer::enter_empty_root().map_err(|e| format!("jail: {e}"))?;
    cpevisor_sandbox::jailer::become_user(jail.uid, jail.gid).map_err(|e| format!("jail: {e}"))?;
    cpevisor_sandbox::caps::set_not_dumpable().map_err(|e| format!("jail: {e}"))
}

/// Holds the vCPU threads between their filter and their first KVM_RUN until the main thread
/// has its own filter: `open(true)` lets them run, `open(false)` sends them home.
#[derive(Default)]
pub struct StartGate {
    go: Mutex<Option<bool>>,
    changed: Condvar,
}

impl StartGate {
    /// Lets the waiting vCPU threads run (`go`) or sends them home.
    pub fn open(&self, go: bool) {
        *self.go.lock().unwrap_or_else(|p| p.into_inner()) = Some(go);
        self.changed.notify_all();
    }

    /// Blocks until `open`; true: run the guest.
    pub fn wait(&self) -> bool {
        let mut g = self.go.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(go) = *g {
                return go;
            }
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Test-only (feature `test-hooks`, debug builds): a syscall no VMM thread needs, made on
/// request so tests can watch the filter kill the VMM. Creating an IPv4 socket stands for what
/// an attacker in the VMM would try first; unconfined, the socket is closed again at once.
#[cfg(all(feature = "test-hooks", debug_assertions))]
pub fn forbidden_syscall() -> i64 {
    // SAFETY: socket(2) takes integers; the descriptor, if any, is closed right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: closing the descriptor just created.
        unsafe { libc::close(fd) };
    }
    i64::from(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{VmConfig, VmConfigExt};

    #[test]
    fn jail_is_optional_and_root_is_refused() {
        let c = VmConfig::from_json(r#"{"kernel":"/k"}"#).unwrap();
        assert_eq!(c.jail, None);
        let c =
            VmConfig::from_json(r#"{"kernel":"/k","jail":{"uid":100007,"gid":100007}}"#).unwrap();
        let jail = c.jail.unwrap();
        assert_eq!((jail.uid, jail.gid), (100007, 100007));
        check_jail(&jail).unwrap();
        let e = check_jail(&JailConfig { uid: 0, gid: 5 }).unwrap_err();
        assert_eq!(e.what, "jail");
        assert!(VmConfig::from_json(r#"{"kernel":"/k","jail":{"uid":1}}"#).is_err());
        assert!(VmConfig::from_json(r#"{"kernel":"/k","jail":{"uid":1,"gid":1,"x":1}}"#).is_err());
    }

    #[test]
    fn the_gate_holds_until_opened() {
        let gate = std::sync::Arc::new(StartGate::default());
        let g = gate.clone();
        let t = std::thread::spawn(move || g.wait());
        gate.open(false);
        assert!(!t.join().unwrap());
        gate.open(true);
        assert!(gate.wait());
    }
}
