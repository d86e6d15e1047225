//! `cpevisord jail-exec SPEC [--ready-fd N]`: the host side of one jailed app. Dies with its
//! parent (the agent's supervisor thread) and the jail with it. Joins the app's
//! cgroup, prepares the bridge, clones the jail's init into new namespaces, moves its veth peer
//! in, lets it go, then waits: forwards termination signals, and ends the way the app ended
//! (same exit code, or killed by the same signal). It stays in the app's cgroup, so memory.max
//! covers it; it is a copy of cpevisord with almost nothing touched.
//!
//! `--ready-fd N` (the agent's pipe): "ok" once the app's command has been exec'd, or the
//! error that stopped the jail from starting; then closed.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sched::CloneFlags;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::init::{self, InitFds, FORWARDED};
use super::netlink::{self, Netlink};
use super::spec::{JailNet, JailSpec, JAIL_IF};

/// Exit code of the runner when the jail could not be built (the message says why).
pub const SETUP_FAILED: i32 = 125;
/// The init's stack: it runs the jail setup (netlink, mounts, formatting) before it forks.
const INIT_STACK: usize = 256 * 1024;
/// Longest error message passed on from the jail.
const MAX_ERROR: u64 = 4096;

static INIT_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_to_init(sig: libc::c_int) {
    let pid = INIT_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; the init has handlers for these signals.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

const USAGE: &str = "usage: cpevisord jail-exec SPEC.json [--ready-fd N]";

/// Entry point of the multi-call binary; returns the process exit code (or does not return,
/// when it mirrors the app's death by a signal).
pub fn main(args: &[String]) -> i32 {
    let (spec_path, ready_fd) = match args {
        [spec] => (spec, None),
        [spec, flag, fd] if flag == "--ready-fd" => match fd.parse::<RawFd>() {
            Ok(fd) if fd > 2 => (spec, Some(fd)),
            _ => {
                eprintln!("jail-exec: --ready-fd: expected a descriptor number above 2\n{USAGE}");
                return 2;
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return 2;
        }
    };
    // An agent that dies (crash, power-cut test) takes its jails along: the restarted agent
    // starts them again, and a leftover jail would run the app twice on one data volume.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        eprintln!("jail: parent-death signal: {e}");
        return SETUP_FAILED;
    }
    if ready_fd.is_some() && nix::unistd::getppid().as_raw() == 1 {
        eprintln!("jail: the agent is gone");
        return SETUP_FAILED;
    }
    let mut ready = ready_fd.map(|fd| {
        // Jail processes must not inherit it: the agent waits for it to close.
        // SAFETY: F_SETFD on a descriptor number only changes its flags.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: the agent passed this descriptor for us alone; we own it from here on.
        unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    });
    let fail = |ready: &mut Option<File>, msg: String| -> i32 {
        eprintln!("{msg}");
        if let Some(mut f) = ready.take() {
            let _ = f.write_all(msg.as_bytes());
        }
        SETUP_FAILED
    };
    let spec = match JailSpec::load(std::path::Path::new(spec_path)) {
        Ok(s) => s,
        Err(e) => return fail(&mut ready, format!("jail: spec {e}")),
    };
    match start(&spec) {
        Err(msg) => fail(&mut ready, msg),
        Ok(jail) => {
            if let Some(mut f) = ready.take() {
                let _ = f.write_all(b"ok");
            }
            wait(jail)
        }
    }
}

struct Started {
    init: Pid,
    status: File,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("jail: pipe: {e}"))
}

fn prepare_bridge(nl: &mut Netlink, net: &JailNet) -> Result<u32, String> {
    let bridge = match netlink::link_index(&net.bridge) {
        Some(i) => i,
        None if net.on_lan => {
            return Err(format!(
                "jail: the LAN bridge {} does not exist (a bridged app joins the router's LAN)",
                net.bridge
            ))
        }
        None => {
            nl.create_bridge(&net.bridge)
                .map_err(|e| format!("jail: create bridge {}: {e}", net.bridge))?;
            netlink::link_index(&net.bridge)
                .ok_or_else(|| format!("jail: bridge {} vanished", net.bridge))?
        }
    };
    // The app's gateway; an existing LAN bridge keeps its own addresses beside it. On the LAN
    // the gateway is the router's own address there, the firmware's to set.
    if !net.on_lan {
        nl.add_addr(bridge, net.gateway, net.prefix_len)
            .map_err(|e| format!("jail: address {} on {}: {e}", net.gateway, net.bridge))?;
    }
    nl.set_up(bridge, None)
        .map_err(|e| format!("jail: bring {} up: {e}", net.bridge))?;
    // A host end left by an earlier run of this app (its jail still dying) is replaced.
    if let Some(stale) = netlink::link_index(&net.host_if) {
        let _ = nl.delete_link(stale);
    }
    Ok(bridge)
}

/// The jail's copy of the runner closes every descriptor but its pipe ends first thing
/// (`init::main`): the netlink socket, the agent's ready pipe (only the runner answers the
/// agent) and whatever cpevisord inherited stay out of the jail.
fn start(spec: &JailSpec) -> Result<Started, String> {
    if let Some(cg) = &spec.cgroup {
        // Before anything is created: every jail process then starts inside the limits.
        let procs = cg.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| format!("jail: join {}: {e}", procs.display()))?;
    }
    // The jail starts with an ordinary OOM score whose floor (set by a privileged write) is
    // that score: an app in a user namespace has no host CAP_SYS_RESOURCE, so it can never
    // lower it. The runner and the init are shielded below, each on its own.
    let _ = std::fs::write("/proc/self/oom_score_adj", "0");
    if spec.root_image.is_some() || spec.data_volume.is_some() {
        super::volume::own_mount_namespace()?;
    }
    if let Some(image) = &spec.root_image {
        super::root::mount_root_image(image, &spec.rootfs)?;
    }
    if let Some(image) = &spec.data_volume {
        // Before /data is given to the app: then the volume's root is what it gets.
        super::volume::mount_volume(image, &spec.data_dir)?;
    }
    // The app's root is `host_id` on the host (host root without a user namespace): /data
    // must be its own, also after the setting changed.
    super::userns::own_data(&spec.data_dir, spec.host_id.unwrap_or(0))?;
    // Host root's supplementary groups would follow the app into its user namespace (where
    // setgroups is denied) and still open group-accessible host files.
    // SAFETY: setgroups with a count of 0 reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("jail: drop supplementary groups: {e}"));
    }
    for sig in FORWARDED {
        // SAFETY: `forward_to_init` only reads an atomic and calls kill(2).
        let _ = unsafe { signal::signal(sig, SigHandler::Handler(forward_to_init)) };
    }
    let mut nl = match &spec.net {
        Some(_) => Some(Netlink::open().map_err(|e| format!("jail: netlink: {e}"))?),
        None => None,
    };
    let bridge = match (&mut nl, &spec.net) {
        (Some(nl), Some(net)) => Some(prepare_bridge(nl, net)?),
        _ => None,
    };
    let (go_r, go_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let fds = InitFds {
        go: go_r.as_raw_fd(),
        error: err_w.as_raw_fd(),
        status: status_w.as_raw_fd(),
    };
    let mut stack = vec![0u8; INIT_STACK];
    let mut flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    if spec.host_id.is_some() {
        // In one clone: the other namespaces are then owned by the new user namespace, so the
        // init may mount /proc for its PID namespace and configure its network.
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let child_spec = spec.clone();
    let mut fds = Some(fds);
    let callback = Box::new(move || {
        // The runner's pipe ends are closed there with everything else: EOF works.
        match fds.take() {
            Some(fds) => init::main(&child_spec, fds),
            None => 125,
        }
    });
    // SAFETY: the runner is single-threaded, so the clone (without CLONE_VM: a copy of this
    // process, like fork) may run ordinary Rust; the stack outlives the call in the parent and
    // is the child's own copy, sized for the init's setup.
    let init = unsafe { nix::sched::clone(callback, &mut stack, flags, Some(libc::SIGCHLD)) }
        .map_err(|e| format!("jail: clone into new namespaces: {e}"))?;
    drop(stack);
    INIT_PID.store(init.as_raw(), Ordering::Relaxed);
    // Shield the runner from the memory cgroup's OOM killer, so the app is what gets killed and
    // the runner lives to report it (only its own score: the init already has its copy).
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    drop(go_r);
    drop(err_w);
    drop(status_w);
    let abort = |msg: String| -> Result<Started, String> {
        let _ = signal::kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        Err(msg)
    };
    if let Some(id) = spec.host_id {
        // Before the go: the init becomes the namespace's root only once this is written.
        if let Err(msg) = super::userns::write_maps(init.as_raw(), id) {
            return abort(msg);
        }
    }
    if let (Some(nl), Some(net), Some(bridge)) = (&mut nl, &spec.net, bridge) {
        let linked = nl
            .create_veth(&net.host_if, JAIL_IF, net.app_mac(), init.as_raw() as u32)
            .map_err(|e| format!("jail: veth {}: {e}", net.host_if))
            .and_then(|()| {
                let host = netlink::link_index(&net.host_if)
                    .ok_or_else(|| format!("jail: veth {} vanished", net.host_if))?;
                nl.set_up(host, Some(bridge))
                    .map_err(|e| format!("jail: attach {} to {}: {e}", net.host_if, net.bridge))
            });
        if let Err(msg) = linked {
            return abort(msg);
        }
    }
    let mut go = File::from(go_w);
    if let Err(e) = go.write_all(b"g") {
        return abort(format!("jail: the init is gone: {e}"));
    }
    drop(go);
    // EOF with nothing read: the app's exec closed the last copy of the error pipe.
    let mut error = String::new();
    let _ = File::from(err_r).take(MAX_ERROR).read_to_string(&mut error);
    if !error.is_empty() {
        let _ = waitpid(init, None);
        return Err(error);
    }
    // The app runs with its own copy of the score; now the init may be shielded too.
    let init_score = format!("/proc/{}/oom_score_adj", init.as_raw());
    let _ = std::fs::write(init_score, "-1000");
    Ok(Started {
        init,
        status: File::from(status_r),
    })
}

/// Waits for the init and ends like the app did.
fn wait(mut jail: Started) -> i32 {
    let init_status = loop {
        match waitpid(jail.init, None) {
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break s,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("jail: waiting for the init: {e}");
                return SETUP_FAILED;
            }
        }
    };
    let mut end = [0u8; 2];
    let app_end = match jail.status.read_exact(&mut end) {
        Ok(()) => end,
        // The init itself was killed (SIGKILL from a stop, or the OOM killer after all).
        Err(_) => match init_status {
            WaitStatus::Signaled(_, sig, _) => [1, sig as i32 as u8],
            WaitStatus::Exited(_, code) => [0, code as u8],
            _ => [0, SETUP_FAILED as u8],
        },
    };
    match app_end {
        [1, sig] => die_by(i32::from(sig)),
        [_, code] => i32::from(code),
    }
}

/// Ends the runner by `sig`, so the supervisor sees "killed by signal N" as for the app.
fn die_by(sig: i32) -> i32 {
    if let Ok(s) = Signal::try_from(sig) {
        // SAFETY: restoring the default action installs no handler code.
        let _ = unsafe { signal::signal(s, SigHandler::SigDfl) };
        let _ = signal::raise(s);
    }
    128 + sig
}
