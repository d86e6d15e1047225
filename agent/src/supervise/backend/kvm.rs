//! The kvm backend: one `cpevisor-vmm` microVM per app. Only in builds with the microVM side
//! (`cfg(microvm)`, agent/build.rs).

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use cpevisor_types::vm::{
    BalloonConfig, Console, DiskConfig, JailConfig, KernelFormat, NetConfig, VmConfig,
};
use cpevisor_types::IfName;

use super::launch::{app_addr, default_signal_mask, inherit_as, Backend, LaunchSpec};
use crate::supervise::ready::AppUp;
use crate::supervise::{jail, net};
use std::net::IpAddr;

/// Runs `cpevisor-vmm --config <run_dir>/vm.json`, one microVM per app, confined by the VMM
/// itself to the app's own uid once set up (`VmConfig::jail`).
pub struct KvmBackend {
    /// The cpevisor-vmm binary.
    pub vmm_path: PathBuf,
    /// `a.b.0.0` of the /16 that app links are carved from; None: microVMs get no network.
    pub network: Option<std::net::Ipv4Addr>,
}

/// The VMM's control socket in the app's run directory.
const VMM_SOCKET: &str = "vmm.sock";

/// The descriptor number the readiness pipe gets in the VMM.
const VMM_READY_FD: i32 = 3;

/// What the agent adds to the kernel command line of a guest with a root image: the image is
/// its first disk (the agent orders the disks, so the agent, not the package, names the
/// device), an erofs file system (agent/PACKAGE.md), mounted read-only. Appended after the
/// package's words, so these win over any `root=` there.
pub const ROOT_IMAGE_CMDLINE: &str = "root=/dev/vda ro rootfstype=erofs";

/// Generates the VMM's JSON config for `spec`, with the readiness pipe at `ready_fd`.
pub fn vm_config_json(spec: &LaunchSpec, ready_fd: Option<i32>) -> io::Result<String> {
    let kernel = spec.kernel.as_deref().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the package has no kernel layer (required by the kvm backend)",
        )
    })?;
    let id = jail::userns::host_id(&spec.eu_id)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let vcpus = spec.vcpus.max(1);
    // The root image first (`/dev/vda`, read-only: every app of this image opens the same
    // blob), then the app's private data disk.
    let root = spec.root_image.iter().map(|p| DiskConfig {
        path: p.clone(),
        read_only: true,
    });
    let data = spec.disk.iter().map(|p| DiskConfig {
        path: p.clone(),
        read_only: false,
    });
    let cmdline = match spec.root_image {
        Some(_) => format!("{} {ROOT_IMAGE_CMDLINE}", spec.cmdline)
            .trim()
            .to_string(),
        None => spec.cmdline.clone(),
    };
    let cfg = VmConfig {
        kernel: kernel.to_path_buf(),
        kernel_format: KernelFormat::Auto,
        initrd: spec.initrd.clone(),
        cmdline,
        memory_mib: u64::from(spec.memory_mib),
        // The VMM refuses more than this: the admitted amount, nothing above.
        max_memory_mib: u64::from(spec.memory_mib),
        vcpus: u8::try_from(vcpus)
            .map_err(|_| invalid(format!("vcpus: {vcpus} is more than the VMM's 255")))?,
        disks: root.chain(data).collect(),
        nets: match &spec.tap {
            Some(t) => vec![NetConfig {
                tap: IfName::parse(t).map_err(|e| invalid(format!("tap {t:?}: {e}")))?,
                mac: None,
            }],
            None => Vec::new(),
        },
        // virtio-rng: guests need entropy early (TLS, ssh keys).
        rng: true,
        // Pages the guest frees go back to the host; deflates on OOM (docs/density.md).
        balloon: Some(BalloonConfig::default()),
        console: Console::Stdio,
        control_socket: Some(spec.run_dir.join(VMM_SOCKET)),
        // On SIGTERM the VMM presses the guest's power button and waits this long for the
        // guest to power off before it stops the guest itself (exit `VMM_EXIT_SHUTDOWN_FORCED`).
        shutdown_timeout_ms: u32::try_from(spec.stop_timeout.as_millis()).unwrap_or(u32::MAX),
        // Always set: the VMM drops to these ids, an empty root, no capabilities and seccomp
        // once it has opened everything (vmm/src/confine.rs). The VMM of app `eu-N` runs as
        // host uid = gid `jail::userns::host_id` (100000 + N): the id a jailed app of that EU
        // is root as, one rule for both backends.
        jail: Some(JailConfig { uid: id, gid: id }),
        // The readiness pipe's write end in the VMM (`VMM_READY_FD`): one byte on the guest's
        // boot-ready signal. Not the `boot-ready:` log line: the guest's console shares that
        // stream and could print it.
        ready_fd,
    };
    serde_json::to_string_pretty(&cfg).map_err(io::Error::other)
}

/// cpevisor-vmm's exit code when the guest did not power off within `shutdown_timeout_ms` of
/// the power button and the VMM stopped it (vmm/src/lib.rs `exit_code::SHUTDOWN_FORCED`).
pub const VMM_EXIT_SHUTDOWN_FORCED: i32 = 5;
/// What the agent allows the VMM beyond the guest's deadline to stop the guest and exit.
pub const VMM_STOP_MARGIN: Duration = Duration::from_secs(3);

impl Backend for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn stop_grace(&self, spec: &LaunchSpec) -> Duration {
        // The VMM enforces the app's deadline on its guest; SIGKILL only if the VMM itself hangs.
        spec.stop_timeout + VMM_STOP_MARGIN
    }

    fn forced_stop(&self, spec: &LaunchSpec, status: ExitStatus) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(VMM_EXIT_SHUTDOWN_FORCED), _) => Some(format!(
                "the guest did not power off within {} ms of the power button; the VMM stopped it",
                spec.stop_timeout.as_millis()
            )),
            // The VMM ends a stop with an exit code; a signal the stop did not send itself (its
            // SIGKILL is reported before this is asked) means the VMM died while stopping.
            (None, Some(libc::SIGSYS)) => Some(
                "the VMM was killed by its seccomp filter (SIGSYS) while stopping: it made a \
                 system call its filter forbids"
                    .to_string(),
            ),
            // The stop's SIGTERM before the VMM took over its stop signals (at its very start):
            // nothing ran yet.
            (None, Some(libc::SIGTERM)) => None,
            (None, Some(sig)) => Some(format!("the VMM was killed by signal {sig} while stopping")),
            _ => None,
        }
    }

    fn overhead_mib(&self) -> u32 {
        // Measured (docs/density.md): a VMM's pages beyond guest RAM are ~1.1 MiB and KVM's
        // own (stage-2 tables, vCPU state) ~0.4 MiB, both charged to the app's cgroup; the
        // rest of the 4 MiB is margin for virtio queues and host page cache under reclaim.
        4
    }

    fn spawn(&self, spec: &LaunchSpec, console: Stdio, console_err: Stdio) -> io::Result<Child> {
        // Without a reader the VMM's one readiness write fails with EPIPE, which it ignores.
        self.spawn_ready(spec, console, console_err).map(|(c, _)| c)
    }

    fn spawn_ready(
        &self,
        spec: &LaunchSpec,
        console: Stdio,
        console_err: Stdio,
    ) -> io::Result<(Child, AppUp)> {
        crate::supervise::rundir::fresh_eu_dir(&spec.run_dir)?;
        // Before the tap: nothing to undo if it fails.
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut spec = spec.clone();
        if let Some((tap, words)) = net::guest_link(&spec.eu_id, spec.lan.as_ref(), self.network)? {
            spec.cmdline = format!("{} {words}", spec.cmdline).trim().to_string();
            spec.tap = Some(tap);
        }
        let json = vm_config_json(&spec, Some(VMM_READY_FD))?;
        let config =
            crate::supervise::rundir::write_new(&spec.run_dir, "vm.json", json.as_bytes())?;
        let mut cmd = Command::new(&self.vmm_path);
        inherit_as(&mut cmd, ready_w.as_raw_fd(), VMM_READY_FD);
        let child = default_signal_mask(&mut cmd)
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
            })?;
        // Only the VMM may hold the write end: its exit must read as EOF.
        drop(ready_w);
        Ok((child, AppUp::Pipe(ready_r)))
    }

    fn probe_addr(&self, spec: &LaunchSpec) -> Result<IpAddr, String> {
        app_addr(self.network, spec, "kvm")
    }

    fn control_socket(&self, spec: &LaunchSpec) -> Option<PathBuf> {
        Some(spec.run_dir.join(VMM_SOCKET))
    }

    fn after_exit(&self, spec: &LaunchSpec) {
        if spec.lan.is_some() || self.network.is_some() {
            let tap = net::link_name(&spec.eu_id);
            if let Err(e) = net::delete_tap(&tap) {
                crate::log_warn!("{}: removing tap {tap}: {e}", spec.eu_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::spec;
    use super::super::ProcessBackend;
    use super::*;

    #[test]
    fn vm_config_has_what_the_vmm_needs() {
        let v: serde_json::Value =
            serde_json::from_str(&vm_config_json(&spec(), Some(3)).unwrap()).unwrap();
        assert_eq!(v["kernel"], "/apps/k/Image");
        assert_eq!(v["memory_mib"], 64);
        assert_eq!(v["vcpus"], 1);
        assert_eq!(v["nets"][0]["tap"], "tap0");
        assert_eq!(v["console"], "stdout");
        assert_eq!(v["control_socket"], "/run/eu-1/vmm.sock");
        assert_eq!(v["shutdown_timeout_ms"], 2500);
        let id = jail::userns::USERNS_ID_BASE + 1;
        assert_eq!(v["jail"], serde_json::json!({"uid": id, "gid": id}));
        assert_eq!(v["ready_fd"], 3);
    }

    #[test]
    fn kvm_stop_waits_past_the_vmm_deadline_and_reads_its_forced_exit() {
        use std::os::unix::process::ExitStatusExt;
        let kvm = KvmBackend {
            vmm_path: "/usr/bin/cpevisor-vmm".into(),
            network: None,
        };
        let s = spec();
        assert_eq!(kvm.stop_grace(&s), s.stop_timeout + VMM_STOP_MARGIN);
        assert_eq!(ProcessBackend.stop_grace(&s), s.stop_timeout);
        // Exit codes in a wait status: code << 8.
        let forced = ExitStatus::from_raw(VMM_EXIT_SHUTDOWN_FORCED << 8);
        let msg = kvm
            .forced_stop(&s, forced)
            .expect("exit 5 is a forced stop");
        assert!(msg.contains("2500 ms"), "{msg}");
        assert_eq!(kvm.forced_stop(&s, ExitStatus::from_raw(0)), None);
        assert_eq!(ProcessBackend.forced_stop(&s, forced), None);
        // A VMM that dies of a signal while stopping is not a clean stop (a raw wait status
        // below 128 is death by that signal).
        let sigsys = kvm
            .forced_stop(&s, ExitStatus::from_raw(libc::SIGSYS))
            .expect("SIGSYS is not a clean stop");
        assert!(sigsys.contains("seccomp"), "{sigsys}");
        let segv = kvm
            .forced_stop(&s, ExitStatus::from_raw(libc::SIGSEGV))
            .expect("SIGSEGV is not a clean stop");
        assert!(segv.contains("signal 11"), "{segv}");
    }

    #[test]
    fn kvm_needs_a_kernel() {
        let mut s = spec();
        s.kernel = None;
        assert!(vm_config_json(&s, None).is_err());
    }
}
