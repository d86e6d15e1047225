//! What every backend shares: the [`LaunchSpec`] of one app, the [`Backend`] trait, and the
//! helpers the backends use to set up their child process. A module of its own so that the
//! backends (`kvm` beside `backend`'s process and jail backends) take it without importing their
//! parent.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::supervise::cgroup::AppLimits;
use crate::supervise::net;
use crate::supervise::ready::{AppUp, StartPolicy};

/// What the supervisor needs to start one app.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// EUID of the app; names its run directory, cgroup and logs.
    pub eu_id: String,
    /// Argv for the process backend (the package config's `command`).
    pub command: Vec<String>,
    /// Guest kernel / initrd / disk for the kvm backend.
    pub kernel: Option<PathBuf>,
    /// Guest initrd (kvm backend).
    pub initrd: Option<PathBuf>,
    /// The guest's root file system image (kvm backend): the blob itself, shared by every app
    /// using it, attached read-only as the first disk.
    pub root_image: Option<PathBuf>,
    /// The app's data disk image (kvm backend).
    pub disk: Option<PathBuf>,
    /// Guest kernel command line (kvm backend).
    pub cmdline: String,
    /// Declared memory, MiB: the guest's RAM, and the base of the cgroup's `memory.max`.
    pub memory_mib: u32,
    /// vCPUs of the guest (kvm backend).
    pub vcpus: u32,
    /// The app's persistent data directory (cwd of the process backend).
    pub data_dir: PathBuf,
    /// Unpacked rootfs / package files of the installed version.
    pub app_dir: PathBuf,
    /// Per-run scratch directory (VMM config, control socket).
    pub run_dir: PathBuf,
    /// Optional tap device for the guest's network.
    pub tap: Option<String>,
    /// A bridged app's place on the LAN: its link joins the LAN bridge with this address,
    /// instead of the ExecEnv's app network.
    pub lan: Option<net::LanLink>,
    /// The rootfs layer (an OCI layer tar) for the jail backend.
    pub rootfs: Option<PathBuf>,
    /// The jail's root as an erofs image blob, mounted read-only instead of `rootfs`.
    pub rootfs_erofs: Option<PathBuf>,
    /// The app's cgroup, set by the supervisor when limits are enforced.
    pub cgroup: Option<PathBuf>,
    /// When the app counts as up, and by when it must be (`ready`).
    pub start: StartPolicy,
    /// The app's stop deadline: how long a stop waits for it to end by itself.
    pub stop_timeout: Duration,
}

/// A way to run an app: a microVM, a jail, or a plain process (tests).
pub trait Backend: Send + Sync {
    /// Short name for logs (`kvm`, `jail`, `process`).
    fn name(&self) -> &'static str;
    /// Memory the backend itself needs beyond the app's declared memory (cgroup limit margin).
    fn overhead_mib(&self) -> u32;
    /// What the app's cgroup enforces: by default memory.max = declared memory + overhead.
    fn limits(&self, spec: &LaunchSpec) -> AppLimits {
        AppLimits::memory_only(
            u64::from(spec.memory_mib.saturating_add(self.overhead_mib())).saturating_mul(1 << 20),
        )
    }
    /// Starts the backend with stdout+stderr going to `console` (a pipe the supervisor reads).
    fn spawn(&self, spec: &LaunchSpec, console: Stdio, console_err: Stdio) -> io::Result<Child>;
    /// Releases what `spawn` set up outside the process (a tap), once it has exited.
    fn after_exit(&self, _spec: &LaunchSpec) {}
    /// Starts the backend like `spawn`, and says how it will tell that the app is up. By
    /// default the running process is the app (a host process; a jail's runner answers only
    /// once the app's command was exec'd).
    fn spawn_ready(
        &self,
        spec: &LaunchSpec,
        console: Stdio,
        console_err: Stdio,
    ) -> io::Result<(Child, AppUp)> {
        Ok((self.spawn(spec, console, console_err)?, AppUp::Now))
    }
    /// The address tcp and http health probes reach the app at, from the agent.
    fn probe_addr(&self, _spec: &LaunchSpec) -> Result<IpAddr, String> {
        Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
    /// A command probe: `argv` made ready to run in the app's sandbox (`pid`: the backend
    /// process).
    fn probe_command(
        &self,
        _spec: &LaunchSpec,
        _pid: u32,
        _argv: &[String],
    ) -> Result<Command, String> {
        Err(format!(
            "the {} backend cannot run a command probe: use tcp or http",
            self.name()
        ))
    }
    /// How long a stop waits after SIGTERM before it SIGKILLs the backend: the app's deadline,
    /// plus whatever the backend needs to honour that deadline itself.
    fn stop_grace(&self, spec: &LaunchSpec) -> Duration {
        spec.stop_timeout
    }
    /// The VMM's control socket of a run of `spec` (microVMs only): where the agent sets the
    /// balloon's target.
    fn control_socket(&self, _spec: &LaunchSpec) -> Option<PathBuf> {
        None
    }
    /// Why a run that ended on a stop request counts as forced although the backend exited by
    /// itself (the VMM stopped a guest that ignored the power button); None: a clean stop.
    fn forced_stop(&self, _spec: &LaunchSpec, _status: ExitStatus) -> Option<String> {
        None
    }
}

/// An app's link address, for probes from the agent (None: the ExecEnv gives it no network).
pub(super) fn app_addr(
    network: Option<Ipv4Addr>,
    spec: &LaunchSpec,
    env: &str,
) -> Result<IpAddr, String> {
    if let Some(lan) = &spec.lan {
        return Ok(IpAddr::V4(lan.addr));
    }
    let base = network.ok_or_else(|| {
        format!("the app has no network address to probe (the {env} ExecEnv has no app_network): use a command probe or none")
    })?;
    Ok(IpAddr::V4(
        net::plan(base, &spec.eu_id)
            .map_err(|e| e.to_string())?
            .guest_ip,
    ))
}

/// The daemon blocks SIGTERM/SIGINT in all its threads (one thread takes them with sigwait) and
/// std lets children inherit the mask: give backends the default mask so a stop's SIGTERM
/// reaches them.
pub(super) fn default_signal_mask(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec and only calls sigemptyset
    // and pthread_sigmask, which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        })
    }
}

/// Gives the child `fd` (CLOEXEC in the parent) as descriptor `target`, open across exec.
pub(super) fn inherit_as(cmd: &mut Command, fd: i32, target: i32) {
    // SAFETY: the closure runs between fork and exec and only calls dup2/fcntl, which are
    // async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                // dup2 onto itself keeps CLOEXEC: clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
