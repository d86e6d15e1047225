//! How an app's backend process is started. `kvm` runs one `cpevisor-vmm` per app; `process`
//! runs the package's `command` directly on the host. `process` is a stand-in for host tests
//! (this host's KVM cannot boot Linux, see shared/PLATFORM.md) and for jail ExecEnvs until the
//! jail backend lands: it isolates nothing beyond its own process group and cgroup.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::Serialize;

use super::net;

/// What the supervisor needs to start one app.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub eu_id: String,
    /// Argv for the process backend (the package config's `command`).
    pub command: Vec<String>,
    /// Guest kernel / initrd / disk for the kvm backend.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub disk: Option<PathBuf>,
    pub cmdline: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The app's persistent data directory (cwd of the process backend).
    pub data_dir: PathBuf,
    /// Unpacked rootfs / package files of the installed version.
    pub app_dir: PathBuf,
    /// Per-run scratch directory (VMM config, control socket).
    pub run_dir: PathBuf,
    /// Optional tap device for the guest's network.
    pub tap: Option<String>,
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Memory the backend itself needs beyond the app's declared memory (cgroup limit margin).
    fn overhead_mib(&self) -> u32;
    /// Starts the backend with stdout+stderr going to `console` (a pipe the supervisor reads).
    fn spawn(&self, spec: &LaunchSpec, console: Stdio, console_err: Stdio) -> io::Result<Child>;
    /// Releases what `spawn` set up outside the process (a tap), once it has exited.
    fn after_exit(&self, _spec: &LaunchSpec) {}
}

/// The daemon blocks SIGTERM/SIGINT in all its threads (one thread takes them with sigwait) and
/// std lets children inherit the mask: give backends the default mask so a stop's SIGTERM
/// reaches them.
fn default_signal_mask(cmd: &mut Command) -> &mut Command {
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
}

/// Runs `cpevisor-vmm --config <run_dir>/vm.json`, one microVM per app.
pub struct KvmBackend {
    pub vmm_path: PathBuf,
    /// `a.b.0.0` of the /16 that app links are carved from; None: microVMs get no network.
    pub network: Option<std::net::Ipv4Addr>,
}

/// The VM description `cpevisor-vmm --config` reads (vmm/src/config.rs).
#[derive(Serialize)]
struct VmConfig<'a> {
    kernel: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    initrd: Option<&'a Path>,
    cmdline: &'a str,
    memory_mib: u32,
    /// The VMM refuses more than this: the admitted amount, nothing above.
    max_memory_mib: u32,
    vcpus: u32,
    disks: Vec<VmDisk<'a>>,
    nets: Vec<VmNet<'a>>,
    /// virtio-rng: guests need entropy early (TLS, ssh keys).
    rng: bool,
    console: &'static str,
    control_socket: PathBuf,
}

#[derive(Serialize)]
struct VmDisk<'a> {
    path: &'a Path,
    read_only: bool,
}

#[derive(Serialize)]
struct VmNet<'a> {
    tap: &'a str,
}

/// Generates the VMM's JSON config for `spec`.
pub fn vm_config_json(spec: &LaunchSpec) -> io::Result<String> {
    let kernel = spec.kernel.as_deref().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the package has no kernel layer (required by the kvm backend)",
        )
    })?;
    let cfg = VmConfig {
        kernel,
        initrd: spec.initrd.as_deref(),
        cmdline: &spec.cmdline,
        memory_mib: spec.memory_mib,
        max_memory_mib: spec.memory_mib,
        vcpus: spec.vcpus.max(1),
        disks: spec
            .disk
            .as_deref()
            .map(|p| VmDisk {
                path: p,
                read_only: false,
            })
            .into_iter()
            .collect(),
        nets: spec
            .tap
            .as_deref()
            .map(|t| VmNet { tap: t })
            .into_iter()
            .collect(),
        rng: true,
        console: "stdout",
        control_socket: spec.run_dir.join("vmm.sock"),
    };
    serde_json::to_string_pretty(&cfg).map_err(io::Error::other)
}

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn overhead_mib(&self) -> u32 {
        // DESIGN.md: VMM overhead under 2 MiB; the margin covers page tables and virtio queues.
        8
    }

    fn spawn(&self, spec: &LaunchSpec, console: Stdio, console_err: Stdio) -> io::Result<Child> {
        fs::create_dir_all(&spec.run_dir)?;
        let mut spec = spec.clone();
        if let Some(base) = self.network {
            let link = net::plan(base, &spec.eu_id)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            net::create_tap(&link).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create tap {}: {e}", link.tap))
            })?;
            spec.cmdline = format!("{} {}", spec.cmdline, net::guest_cmdline(&link))
                .trim()
                .to_string();
            spec.tap = Some(link.tap);
        }
        let config = spec.run_dir.join("vm.json");
        fs::write(&config, vm_config_json(&spec)?)?;
        default_signal_mask(&mut Command::new(&self.vmm_path))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .process_group(0)
            .spawn()
            .map_err(|e| {
                self.after_exit(&spec);
                io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", self.vmm_path.display()),
                )
            })
    }

    fn after_exit(&self, spec: &LaunchSpec) {
        if let Some(base) = self.network {
            if let Ok(link) = net::plan(base, &spec.eu_id) {
                if let Err(e) = net::delete_tap(&link.tap) {
                    crate::log_warn!("{}: removing tap {}: {e}", spec.eu_id, link.tap);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            eu_id: "eu-1".into(),
            command: vec![],
            kernel: Some("/apps/k/Image".into()),
            initrd: Some("/apps/k/initrd".into()),
            disk: None,
            cmdline: "console=ttyS0".into(),
            memory_mib: 64,
            vcpus: 0,
            data_dir: "/data/x".into(),
            app_dir: "/apps/k".into(),
            run_dir: "/run/eu-1".into(),
            tap: Some("tap0".into()),
        }
    }

    #[test]
    fn vm_config_has_what_the_vmm_needs() {
        let v: serde_json::Value = serde_json::from_str(&vm_config_json(&spec()).unwrap()).unwrap();
        assert_eq!(v["kernel"], "/apps/k/Image");
        assert_eq!(v["memory_mib"], 64);
        assert_eq!(v["vcpus"], 1);
        assert_eq!(v["nets"][0]["tap"], "tap0");
        assert_eq!(v["console"], "stdout");
        assert_eq!(v["control_socket"], "/run/eu-1/vmm.sock");
    }

    #[test]
    fn kvm_needs_a_kernel_and_process_needs_a_command() {
        let mut s = spec();
        s.kernel = None;
        assert!(vm_config_json(&s).is_err());
        let err = ProcessBackend
            .spawn(&s, Stdio::null(), Stdio::null())
            .unwrap_err();
        assert!(err.to_string().contains("no command"));
    }
}
