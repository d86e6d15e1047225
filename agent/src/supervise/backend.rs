//! How an app's backend process is started. `kvm` runs one `cpevisor-vmm` per app; `jail` runs
//! `cpevisord jail-exec` per app (namespaces, read-only rootfs, no capabilities, seccomp; see
//! `jail/`); `process` runs the package's `command` directly on the host, a stand-in for host
//! tests that isolates nothing beyond its own process group and cgroup.

use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::sync::Arc;

use super::cgroup::{AppLimits, CpuMax};
use super::jail::{self, JailNet, JailSpec};
use super::net;
use std::net::{IpAddr, Ipv4Addr};

mod launch;
use launch::{app_addr, default_signal_mask, inherit_as};
pub use launch::{Backend, LaunchSpec};

// The microVM backend, only in builds with the microVM side (agent/build.rs): the one seam
// between them and jail-only builds, with `balloon`'s.
#[cfg(microvm)]
mod kvm;
#[cfg(microvm)]
pub use kvm::{
    vm_config_json, KvmBackend, ROOT_IMAGE_CMDLINE, VMM_EXIT_SHUTDOWN_FORCED, VMM_STOP_MARGIN,
};

/// Why this build runs no microVMs (None: it does). An ExecEnv whose runner is `vmm` is
/// refused on such a build (`AgentConfig::validate`), naming this.
#[cfg(microvm)]
pub const NO_MICROVM: Option<&str> = None;
/// Why this build runs no microVMs: it was built for a CPU without KVM (agent/build.rs).
#[cfg(not(microvm))]
pub const NO_MICROVM: Option<&str> = Some(NO_MICROVM_WHY);
#[cfg(not(microvm))]
const NO_MICROVM_WHY: &str = concat!(
    "this build has no microVM backend (",
    env!("CPEVISOR_BUILD_TARGET"),
    ": no KVM)"
);

/// The backend of an ExecEnv whose runner is `vmm`: the VMM at `vmm_path`, app links from
/// `network`; on a build without microVMs, why not.
pub fn microvm(
    vmm_path: PathBuf,
    network: Option<Ipv4Addr>,
) -> Result<Arc<dyn Backend>, &'static str> {
    #[cfg(microvm)]
    return Ok(Arc::new(KvmBackend { vmm_path, network }));
    #[cfg(not(microvm))]
    {
        let _ = (vmm_path, network);
        Err(NO_MICROVM_WHY)
    }
}

/// Runs the app's command as a host process in its own process group.
pub struct ProcessBackend;

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn overhead_mib(&self) -> u32 {
        0
    }

    fn spawn(&self, spec: &LaunchSpec, console: Stdio, console_err: Stdio) -> io::Result<Child> {
        let (prog, args) = spec.command.split_first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the package has no command")
        })?;
        fs::create_dir_all(&spec.data_dir)?;
        default_signal_mask(&mut Command::new(prog))
            .args(args)
            .current_dir(&spec.data_dir)
            .env("CPEVISOR_EU", &spec.eu_id)
            .env("CPEVISOR_APP_DIR", &spec.app_dir)
            .env("CPEVISOR_DATA_DIR", &spec.data_dir)
            .env("CPEVISOR_MEMORY_MIB", spec.memory_mib.to_string())
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            // Own process group: a stop signals the whole app (shell loops and their children).
            .process_group(0)
            .spawn()
    }

    /// The host process isolates nothing, so its probe runs as it does: on the host, in the
    /// app's data directory with the app's environment.
    fn probe_command(
        &self,
        spec: &LaunchSpec,
        _pid: u32,
        argv: &[String],
    ) -> Result<Command, String> {
        let (prog, args) = argv.split_first().ok_or("the probe has no command")?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .current_dir(&spec.data_dir)
            .env("CPEVISOR_EU", &spec.eu_id)
            .env("CPEVISOR_APP_DIR", &spec.app_dir)
            .env("CPEVISOR_DATA_DIR", &spec.data_dir);
        default_signal_mask(&mut cmd);
        Ok(cmd)
    }
}

/// Runs each app in a jail through `<runner_exe> jail-exec <run_dir>/jail.json`.
pub struct JailBackend {
    /// The binary that holds `jail-exec`: the agent's own executable (`jail_runner_exe`).
    pub runner_exe: PathBuf,
    /// `a.b.0.0` of the /16 the apps' addresses come from; None: apps get loopback only.
    pub network: Option<std::net::Ipv4Addr>,
    /// The LAN bridge the apps' veths join (created with `a.b.0.1/16` if missing).
    pub bridge: String,
    /// pids.max of each app's cgroup.
    pub pids_max: u32,
    /// Each app in its own user namespace, root inside as `jail::userns::host_id` outside.
    pub user_namespace: bool,
}

/// The bridge app veths join when the ExecEnv names none.
pub const DEFAULT_LAN_BRIDGE: &str = "br-lan";
/// Default pids.max of a jailed app: enough for a shell with its pipelines, not a fork bomb.
pub const DEFAULT_JAIL_PIDS_MAX: u32 = 256;
/// How long the agent waits for the jail runner to say the app's command was exec'd.
const JAIL_READY_TIMEOUT_MS: i32 = 10_000;
/// The descriptor number the ready pipe gets in the runner.
const READY_FD: i32 = 3;

impl JailBackend {
    /// The runner's spec for `spec`.
    pub fn jail_spec(&self, spec: &LaunchSpec, rootfs: PathBuf) -> io::Result<JailSpec> {
        let mut env = vec![
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            "HOME=/data".to_string(),
            format!("CPEVISOR_EU={}", spec.eu_id),
            "CPEVISOR_DATA_DIR=/data".to_string(),
            format!("CPEVISOR_MEMORY_MIB={}", spec.memory_mib),
        ];
        let net = match (&spec.lan, self.network) {
            // Bridged: the veth joins the LAN bridge, which the firmware made and addressed.
            (Some(lan), _) => {
                env.push(format!("CPEVISOR_IP={}/{}", lan.addr, lan.prefix));
                env.push(format!("CPEVISOR_GW={}", lan.gateway));
                Some(JailNet {
                    bridge: lan.bridge.clone(),
                    gateway: lan.gateway,
                    prefix_len: lan.prefix,
                    host_if: net::link_name(&spec.eu_id),
                    app_ip: lan.addr,
                    on_lan: true,
                })
            }
            (None, Some(base)) => {
                let link = net::plan(base, &spec.eu_id)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let gateway = std::net::Ipv4Addr::from(u32::from(base) + 1);
                env.push(format!("CPEVISOR_IP={}/16", link.guest_ip));
                env.push(format!("CPEVISOR_GW={gateway}"));
                Some(JailNet {
                    bridge: self.bridge.clone(),
                    gateway,
                    prefix_len: 16,
                    host_if: link.tap,
                    app_ip: link.guest_ip,
                    on_lan: false,
                })
            }
            (None, None) => None,
        };
        let js = JailSpec {
            eu_id: spec.eu_id.clone(),
            rootfs,
            root_image: spec.rootfs_erofs.clone(),
            data_dir: spec.data_dir.clone(),
            // A jail app's data disk is its capped data volume.
            data_volume: spec.disk.clone(),
            command: spec.command.clone(),
            env,
            tmp_size_mib: spec.memory_mib.clamp(1, 4096),
            cgroup: spec.cgroup.clone(),
            net,
            host_id: match self.user_namespace {
                true => Some(
                    jail::userns::host_id(&spec.eu_id)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                ),
                false => None,
            },
        };
        js.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(js)
    }
}

/// Reads the runner's answer on the ready pipe: Ok once it wrote "ok", else its error.
fn await_ready(ready: OwnedFd) -> Result<(), String> {
    let mut pfd = libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(JAIL_READY_TIMEOUT_MS as u64);
    let mut answer = Vec::new();
    let mut file = fs::File::from(ready);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!(
                "the jail was not ready within {} s",
                JAIL_READY_TIMEOUT_MS / 1000
            ));
        }
        // SAFETY: poll reads and writes one pollfd valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("waiting for the jail: {e}"));
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 1024];
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                answer.extend_from_slice(&buf[..k]);
                if answer.len() > 4096 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("waiting for the jail: {e}")),
        }
    }
    match answer.as_slice() {
        b"ok" => Ok(()),
        [] => Err("the jail runner exited before the app started".into()),
        other => Err(String::from_utf8_lossy(other).trim().to_string()),
    }
}

impl Backend for JailBackend {
    fn name(&self) -> &'static str {
        "jail"
    }

    fn probe_addr(&self, spec: &LaunchSpec) -> Result<IpAddr, String> {
        app_addr(self.network, spec, "jail")
    }

    /// `cpevisord jail-probe`: the command in the running jail, confined as the app is.
    fn probe_command(
        &self,
        spec: &LaunchSpec,
        pid: u32,
        argv: &[String],
    ) -> Result<Command, String> {
        let mut cmd = Command::new(&self.runner_exe);
        cmd.arg(jail::JAIL_PROBE)
            .arg(spec.run_dir.join("jail.json"))
            .arg(pid.to_string())
            .arg("--")
            .args(argv);
        default_signal_mask(&mut cmd);
        Ok(cmd)
    }

    fn overhead_mib(&self) -> u32 {
        // The runner and the jail's init: two copies of cpevisord that touch little of it.
        4
    }

    fn limits(&self, spec: &LaunchSpec) -> AppLimits {
        let memory = u64::from(spec.memory_mib.saturating_add(self.overhead_mib())) << 20;
        AppLimits {
            memory_max_bytes: memory,
            pids_max: Some(self.pids_max),
            // As many CPUs' worth of time as the package declares vCPUs.
            cpu_max: Some(CpuMax {
                quota_us: u64::from(spec.vcpus.max(1)) * 100_000,
                period_us: 100_000,
            }),
        }
    }

    fn spawn(&self, spec: &LaunchSpec, console: Stdio, console_err: Stdio) -> io::Result<Child> {
        if spec.command.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the package has no command",
            ));
        }
        let rootfs = jail::root::prepare(
            &spec.app_dir,
            spec.rootfs.as_deref(),
            spec.rootfs_erofs.as_deref(),
        )?;
        fs::create_dir_all(&spec.data_dir)?;
        super::rundir::fresh_eu_dir(&spec.run_dir)?;
        let js = self.jail_spec(spec, rootfs)?;
        let spec_file = super::rundir::write_new(
            &spec.run_dir,
            "jail.json",
            &serde_json::to_vec_pretty(&js).map_err(io::Error::other)?,
        )?;
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut cmd = Command::new(&self.runner_exe);
        cmd.arg(jail::JAIL_EXEC)
            .arg(&spec_file)
            .arg("--ready-fd")
            .arg(READY_FD.to_string());
        inherit_as(&mut cmd, ready_w.as_raw_fd(), READY_FD);
        let mut child = default_signal_mask(&mut cmd)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", self.runner_exe.display()),
                )
            })?;
        // Our copy of the write end must go, or the runner's exit would never read as EOF.
        drop(ready_w);
        match await_ready(ready_r) {
            Ok(()) => Ok(child),
            Err(msg) => {
                let pgid = child.id() as i32;
                if pgid > 1 {
                    // SAFETY: kill(2) on the runner's own process group; no memory involved.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                let _ = child.wait();
                Err(io::Error::other(msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::ready::StartPolicy;
    use std::time::Duration;

    pub(super) fn spec() -> LaunchSpec {
        LaunchSpec {
            eu_id: "eu-1".into(),
            command: vec![],
            kernel: Some("/apps/k/Image".into()),
            initrd: Some("/apps/k/initrd".into()),
            root_image: None,
            disk: None,
            cmdline: "console=ttyS0".into(),
            memory_mib: 64,
            vcpus: 0,
            data_dir: "/data/x".into(),
            app_dir: "/apps/k".into(),
            run_dir: "/run/eu-1".into(),
            tap: Some("tap0".into()),
            lan: None,
            rootfs: None,
            rootfs_erofs: None,
            cgroup: None,
            start: StartPolicy::default(),
            stop_timeout: Duration::from_millis(2500),
        }
    }

    #[test]
    fn process_needs_a_command() {
        let mut s = spec();
        s.kernel = None;
        let err = ProcessBackend
            .spawn(&s, Stdio::null(), Stdio::null())
            .unwrap_err();
        assert!(err.to_string().contains("no command"));
    }

    #[test]
    fn jail_spec_plans_the_link_and_limits() {
        let jail = JailBackend {
            runner_exe: "/usr/bin/cpevisord".into(),
            network: Some(std::net::Ipv4Addr::new(10, 100, 0, 0)),
            bridge: DEFAULT_LAN_BRIDGE.into(),
            pids_max: 64,
            user_namespace: true,
        };
        let mut s = spec();
        s.command = vec!["/bin/app".into()];
        s.eu_id = "eu-2".into();
        let js = jail.jail_spec(&s, "/apps/k/rootfs".into()).unwrap();
        assert_eq!(js.host_id, Some(jail::userns::USERNS_ID_BASE + 2));
        let net = js.net.unwrap();
        assert_eq!(net.host_if, "cpv-eu-2");
        assert_eq!(net.app_ip, std::net::Ipv4Addr::new(10, 100, 0, 10));
        assert_eq!(net.gateway, std::net::Ipv4Addr::new(10, 100, 0, 1));
        assert!(js.env.contains(&"CPEVISOR_IP=10.100.0.10/16".to_string()));
        let limits = jail.limits(&s);
        assert_eq!(limits.memory_max_bytes, (64 + 4) << 20);
        assert_eq!(limits.pids_max, Some(64));
        assert_eq!(limits.cpu_max.unwrap().quota_us, 100_000);
        s.command.clear();
        let err = jail.spawn(&s, Stdio::null(), Stdio::null()).unwrap_err();
        assert!(err.to_string().contains("no command"));
        s.command = vec!["/bin/app".into()];
        let err = jail.spawn(&s, Stdio::null(), Stdio::null()).unwrap_err();
        assert!(err.to_string().contains("no rootfs layer"), "{err}");
    }
}
