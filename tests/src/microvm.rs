//! MicroVMs inside an emulated board: guest images built on the host, served to the board over
//! HTTP, and `cpevisor-vmm` driven through the board's console.
//!
//! Flow (see tests/tests/vmm_in_board.rs): [`GuestImages::build`] writes `Image`,
//! `initramfs.cpio.gz` and `disk.img` (the disk's data file carries a per-run token);
//! [`HttpServer::serve`] serves them from 127.0.0.1; [`fetch_images`] makes the board download
//! and checksum them from 10.0.2.2 (QEMU user networking's view of the host's loopback);
//! [`create_tap`] and [`VmmRun::start`] start the VMM in the background of the board's console
//! shell; [`VmmRun::wait_app_ready`], [`VmmRun::wait_exit`] follow it to the end.

use crate::board_shell::{before_board_deadline, board_deadline};
use crate::console::BOARD_STALLED;
use crate::firmware::{timeout_scale, workspace_root};
use crate::BoardVm;
use cpevisor_rootfs::guest::{
    build_guest, GuestArch, GuestInputs, GuestKernel, GuestRoot, GuestSpec,
};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the board keeps the fetched images and the VMM's logs (the board's /tmp is a tmpfs).
pub const BOARD_DIR: &str = "/tmp/guest";
/// The guest's address on the tap link; the board side is [`HOST_TAP_ADDR`].
pub const GUEST_ADDR: &str = "172.16.0.2";
/// The host end of the test tap.
pub const HOST_TAP_ADDR: &str = "172.16.0.1";
/// Line the sample app's init prints on the guest console once HTTP is up.
pub const APP_READY: &str = "APP-READY";
/// Said by [`VmmRun::wait_app_ready`] when the guest did not get ready in its time while its VMM
/// still ran: under nested virtualization emulated by TCG a guest that boots in seconds can hang
/// in the emulation (the same guest booting seconds before in the same board). Tests that
/// retry a stalled board may retry this too.
pub const GUEST_STALLED: &str = "the guest stalled";
/// The images, as the board sees them in [`BOARD_DIR`].
pub const IMAGE_FILES: [&str; 3] = ["Image", "initramfs.cpio.gz", "disk.img"];

/// The `make setup` cache, as the Makefile passes it (`CPEVISOR_CACHE`) or its default.
pub fn cache_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CPEVISOR_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/cpevisor"))
        .ok_or_else(|| "neither CPEVISOR_CACHE nor HOME is set".to_string())
}

/// Guest images built for one test run; the directory is removed on drop.
pub struct GuestImages {
    /// The directory holding the images.
    pub dir: PathBuf,
    /// The token written into the disk's data file.
    pub token: String,
    /// sha256 of each of [`IMAGE_FILES`], to check the copies in the board.
    pub sha256: Vec<(String, String)>,
    /// Which guest kernel the images carry.
    pub kernel: GuestKernel,
}

impl GuestImages {
    /// Builds the `status` app for `arch` with `kernel`, its disk carrying `token`. Fails with
    /// the builder's message (which names the missing file and the make target to run).
    pub fn build(arch: GuestArch, kernel: GuestKernel, token: &str) -> Result<GuestImages, String> {
        let dir = workspace_root().join("target/e2e-guest").join(format!(
            "{}-{}-{token}",
            kernel.name(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let spec = GuestSpec {
            arch,
            app: "status".into(),
            kernel: kernel.clone(),
            // These runs boot the VMM by hand with `--initrd` (vmm_in_board): the initramfs
            // root, whichever kernel. The agent's packages use the erofs root
            // (scripts/sample-app.sh).
            root: GuestRoot::Initramfs,
            data: Some(format!("{token}\n").into_bytes()),
        };
        let inputs = GuestInputs {
            cache: cache_dir()?,
            mtime: 0,
        };
        let m = build_guest(&spec, &inputs, &dir)
            .map_err(|e| format!("building the {} guest images: {e}", kernel.name()))?;
        let sha256 = vec![
            ("Image".to_string(), m.image_sha256),
            ("initramfs.cpio.gz".to_string(), m.root_sha256),
            ("disk.img".to_string(), m.disk_sha256),
        ];
        Ok(GuestImages {
            dir,
            token: token.to_string(),
            sha256,
            kernel,
        })
    }
}

impl Drop for GuestImages {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `python3 -m http.server` serving one directory on 127.0.0.1; killed on drop.
pub struct HttpServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

impl HttpServer {
    /// Starts the server and waits until it accepts connections.
    pub fn serve(dir: &Path) -> Result<HttpServer, String> {
        let port = free_port()?;
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start python3 -m http.server: {e}"))?;
        let mut server = HttpServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(20).mul_f64(timeout_scale());
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("python3 -m http.server exited at once: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("HTTP server on 127.0.0.1:{port} did not start"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Downloads the images into [`BOARD_DIR`] from the host's server and checks their sha256.
pub fn fetch_images(
    vm: &mut BoardVm,
    images: &GuestImages,
    server: &HttpServer,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut cmd = format!("rm -rf {BOARD_DIR} && mkdir -p {BOARD_DIR} && cd {BOARD_DIR}");
    for f in IMAGE_FILES {
        cmd += &format!(" && wget -q http://10.0.2.2:{}/{f}", server.port);
    }
    cmd += " && sha256sum ";
    cmd += &IMAGE_FILES.join(" ");
    cmd += "; cd /";
    let out = vm.run_ok(&cmd, Duration::from_secs(300))?;
    for (file, sha) in &images.sha256 {
        if !out.contains(&format!("{sha}  {file}")) {
            return Err(format!(
                "{file} in the board does not match the host's sha256 {sha}:\n{out}"
            ));
        }
    }
    Ok(started.elapsed())
}

/// Creates `tap` with [`HOST_TAP_ADDR`]/24 and brings it up.
pub fn create_tap(vm: &mut BoardVm, tap: &str) -> Result<(), String> {
    vm.run_ok(
        &format!(
            "(ip tuntap add dev {tap} mode tap 2>/dev/null || tunctl -t {tap} >/dev/null) \
             && ip addr add {HOST_TAP_ADDR}/24 dev {tap} && ip link set {tap} up"
        ),
        Duration::from_secs(30),
    )
    .map(|_| ())
}

/// How to start the VMM for the sample app.
#[derive(Debug, Clone)]
pub struct VmmLaunch {
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// The tap the VMM's virtio-net uses.
    pub tap: String,
    /// Appended to the guest's command line.
    pub extra_cmdline: String,
    /// `--shutdown-timeout MS` (the VMM's default when `None`).
    pub shutdown_timeout_ms: Option<u32>,
}

impl Default for VmmLaunch {
    fn default() -> Self {
        VmmLaunch {
            memory_mib: 64,
            vcpus: 2,
            tap: "tap0".into(),
            extra_cmdline: String::new(),
            shutdown_timeout_ms: None,
        }
    }
}

impl VmmLaunch {
    /// The `cpevisor-vmm` command line over the images in [`BOARD_DIR`]. The guest console goes
    /// to a file (the board's own console is slow and carries the test's commands).
    pub fn command(&self) -> String {
        let d = BOARD_DIR;
        format!(
            "cpevisor-vmm --kernel {d}/Image --initrd {d}/initramfs.cpio.gz \
             --cmdline 'console=ttyS0 quiet panic=-1 cpevisor.ip={GUEST_ADDR}/24 {extra}' \
             --memory {mem} --vcpus {cpus} --disk {d}/disk.img,ro --net {tap} --rng \
             --console file:{d}/console.log --control-socket {d}/vmm.sock{stop}",
            extra = self.extra_cmdline,
            stop = self
                .shutdown_timeout_ms
                .map_or(String::new(), |ms| format!(" --shutdown-timeout {ms}")),
            mem = self.memory_mib,
            cpus = self.vcpus,
            tap = self.tap,
        )
    }
}

/// Figures the VMM logged, in milliseconds since its process started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmmFigures {
    /// The first vCPU entry into the guest.
    pub first_instruction_ms: f64,
    /// `None` when the guest said it could not send the signal (`APP-READY ... signal=unavailable`:
    /// an x86 kernel without /dev/port).
    pub boot_ready_ms: Option<f64>,
}

/// Reads `... at <ms> ms` and `boot-ready: <ms> ms since VMM start` out of the VMM's log (and
/// the guest console after it). The boot-ready line is required unless the guest's `APP-READY`
/// line says `signal=unavailable`.
pub fn parse_figures(log: &str) -> Result<VmmFigures, String> {
    let number_before_ms = |line: &str, after: &str| -> Option<f64> {
        let rest = &line[line.find(after)? + after.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let first = log
        .lines()
        .find(|l| l.contains("first instruction:"))
        .and_then(|l| number_before_ms(l, " at "));
    let ready = log
        .lines()
        .find(|l| l.starts_with("boot-ready:"))
        .and_then(|l| number_before_ms(l, "boot-ready:"));
    let unsignalled = log
        .lines()
        .any(|l| l.starts_with(APP_READY) && l.contains(" signal=unavailable"));
    match (first, ready) {
        (Some(first_instruction_ms), Some(ms)) => Ok(VmmFigures {
            first_instruction_ms,
            boot_ready_ms: Some(ms),
        }),
        (Some(first_instruction_ms), None) if unsignalled => Ok(VmmFigures {
            first_instruction_ms,
            boot_ready_ms: None,
        }),
        _ => Err(format!(
            "VMM log lacks the first-instruction or boot-ready line:\n{log}"
        )),
    }
}

/// `VMM-EXIT=<code> STOP-TIME <t0> <t1>` (seconds of /proc/uptime) -> (code, ms).
fn parse_stop_time(out: &str) -> Option<(i32, f64)> {
    let rest = out.split("VMM-EXIT=").nth(1)?;
    let mut words = rest.split_whitespace();
    let code = words.next()?.parse().ok()?;
    if words.next()? != "STOP-TIME" {
        return None;
    }
    let t0: f64 = words.next()?.parse().ok()?;
    let t1: f64 = words.next()?.parse().ok()?;
    (t1 >= t0).then(|| (code, ((t1 - t0) * 1000.0).round()))
}

/// The VMM's own graceful-stop figure: `shutdown: guest powered off after <ms> ms`.
pub fn parse_graceful_stop_ms(log: &str) -> Option<f64> {
    log.lines()
        .find_map(|l| l.split("shutdown: guest powered off after ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A `cpevisor-vmm` started in the background of the board's console shell.
pub struct VmmRun {
    /// The shell variable holding its PID (the console shell keeps it between commands).
    pid_var: &'static str,
}

/// The board-side poll loop: up to `secs` seconds until `cond` holds or the VMM is gone.
fn poll(cond: &str, pid_var: &str, secs: f64) -> String {
    format!(
        "{}; until {cond}; do kill -0 ${pid_var} 2>/dev/null || break; \
         {} || break; usleep 250000; done",
        board_deadline(secs),
        before_board_deadline()
    )
}

impl VmmRun {
    /// Starts the VMM; its stderr goes to `BOARD_DIR/vmm.log`.
    pub fn start(vm: &mut BoardVm, launch: &VmmLaunch) -> Result<VmmRun, String> {
        let pid_var = "vmm_pid";
        vm.run_ok(
            &format!(
                "rm -f {BOARD_DIR}/vmm.log {BOARD_DIR}/console.log; \
                 {} </dev/null >{BOARD_DIR}/vmm.log 2>&1 & {pid_var}=$!",
                launch.command()
            ),
            Duration::from_secs(30),
        )?;
        Ok(VmmRun { pid_var })
    }

    /// Waits (board side) until the guest console shows [`APP_READY`] and the VMM logged
    /// boot-ready (unless the guest reported it could not signal); returns the VMM's figures.
    /// On failure the error carries both logs.
    pub fn wait_app_ready(
        &self,
        vm: &mut BoardVm,
        timeout: Duration,
    ) -> Result<VmmFigures, String> {
        let secs = timeout.mul_f64(timeout_scale()).as_secs_f64();
        let cond = format!(
            "grep -q {APP_READY} {BOARD_DIR}/console.log 2>/dev/null && \
             (grep -q boot-ready: {BOARD_DIR}/vmm.log || \
              grep -q 'signal=unavailable' {BOARD_DIR}/console.log)"
        );
        let wait = poll(&cond, self.pid_var, secs);
        if let Err(e) = vm.run_ok(&wait, timeout + Duration::from_secs(60)) {
            // On a board that still answers, what the VMM and the guest said is the diagnosis.
            let logs = match e.contains(BOARD_STALLED) {
                true => String::new(),
                false => self.logs(vm).unwrap_or_default(),
            };
            return Err(format!("{e}\n{logs}"));
        }
        let logs = self.logs(vm)?;
        if !logs.contains(APP_READY) {
            let running = vm.run_ok(
                &format!(
                    "kill -0 ${} 2>/dev/null && echo VMM-RUNNING || true",
                    self.pid_var
                ),
                Duration::from_secs(30),
            )?;
            let why = match running.contains("VMM-RUNNING") {
                true => format!("{GUEST_STALLED}: its VMM still runs"),
                false => "its VMM exited".to_string(),
            };
            return Err(format!(
                "the guest never printed {APP_READY} in {secs:.0} s ({why}):\n{logs}"
            ));
        }
        parse_figures(&logs).map_err(|e| format!("{e}\n{logs}"))
    }

    /// The VMM's log and the guest console, for reports and failures.
    pub fn logs(&self, vm: &mut BoardVm) -> Result<String, String> {
        vm.run_ok(
            &format!(
                "echo '--- vmm.log'; cat {BOARD_DIR}/vmm.log; \
                 echo '--- console.log (tail)'; tail -c 3000 {BOARD_DIR}/console.log"
            ),
            Duration::from_secs(30),
        )
    }

    /// Whether the guest console holds a line containing `text` (no quotes in `text`); the
    /// whole console, where [`VmmRun::logs`] shows its tail.
    pub fn console_has(&self, vm: &mut BoardVm, text: &str) -> Result<bool, String> {
        let out = vm.run_ok(
            &format!("grep -c '{text}' {BOARD_DIR}/console.log || true"),
            Duration::from_secs(30),
        )?;
        Ok(out
            .lines()
            .any(|l| l.trim().parse::<u32>().is_ok_and(|n| n > 0)))
    }

    /// Sends SIGTERM and waits (board side) until the VMM is gone, up to `timeout`; returns its
    /// exit status and the board-clock time from the signal to the exit in milliseconds
    /// (/proc/uptime: 10 ms resolution, plus the 10 ms poll).
    pub fn terminate_and_time(
        &self,
        vm: &mut BoardVm,
        timeout: Duration,
    ) -> Result<(i32, f64), String> {
        let v = self.pid_var;
        let secs = timeout.mul_f64(timeout_scale()).as_secs_f64();
        let cmd = format!(
            "t0=$(cut -d' ' -f1 /proc/uptime); kill -TERM ${v}; {}; \
             while kill -0 ${v} 2>/dev/null && {}; do usleep 10000; done; \
             t1=$(cut -d' ' -f1 /proc/uptime); \
             if kill -0 ${v} 2>/dev/null; then kill -9 ${v}; wait ${v}; echo VMM-STILL-RUNNING; \
             else wait ${v}; echo VMM-EXIT=$? STOP-TIME $t0 $t1; fi",
            board_deadline(secs),
            before_board_deadline()
        );
        let out = vm.run_ok(&cmd, timeout + Duration::from_secs(60))?;
        if out.contains("VMM-STILL-RUNNING") {
            return Err(format!(
                "cpevisor-vmm still running {timeout:?} after SIGTERM"
            ));
        }
        parse_stop_time(&out).ok_or_else(|| format!("no VMM exit status and stop time in:\n{out}"))
    }

    /// Asks the VMM to stop with SIGTERM: the guest's power button, then exit 0 when the guest
    /// powers off (5 if it does not within the VMM's shutdown timeout).
    pub fn terminate(&self, vm: &mut BoardVm) -> Result<(), String> {
        vm.run_ok(
            &format!("kill -TERM ${}", self.pid_var),
            Duration::from_secs(30),
        )
        .map(|_| ())
    }

    /// Waits for the VMM to exit by itself and returns its exit status; an error if it is still
    /// running after `timeout` (it is then killed so the board can be powered off).
    pub fn wait_exit(&self, vm: &mut BoardVm, timeout: Duration) -> Result<i32, String> {
        let secs = timeout.mul_f64(timeout_scale()).as_secs_f64();
        let v = self.pid_var;
        let gone = format!("! kill -0 ${v} 2>/dev/null");
        let cmd = format!(
            "{}; if kill -0 ${v} 2>/dev/null; then kill -9 ${v}; wait ${v}; echo VMM-STILL-RUNNING; \
             else wait ${v}; echo VMM-EXIT=$?; fi",
            poll(&gone, v, secs)
        );
        let out = vm.run_ok(&cmd, timeout + Duration::from_secs(60))?;
        if out.contains("VMM-STILL-RUNNING") {
            return Err(format!("cpevisor-vmm still running after {timeout:?}"));
        }
        out.split("VMM-EXIT=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no VMM exit status in:\n{out}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The board-side wait ends by the board's clock, however long each round takes: a round of
    /// 1 s against a 1 s deadline is the only round (counting rounds, the loop ran 4).
    #[test]
    fn a_board_side_wait_ends_by_the_clock_not_by_rounds() {
        let dir = std::env::temp_dir().join(format!("poll-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rounds = dir.join("rounds");
        let cond = format!("{{ echo r >>{}; sleep 1; false; }}", rounds.display());
        let script = format!("vmm_pid=$$; {}", poll(&cond, "vmm_pid", 1.0));
        let status = Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(status.success(), "{script}");
        let counted = std::fs::read_to_string(&rounds).unwrap().lines().count();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(counted, 1, "{script}");
    }

    #[test]
    fn figures_are_read_from_the_vmm_log() {
        let log = "cpevisor-vmm: vGIC: v3\n\
                   cpevisor-vmm: first instruction: vcpu 0 entering KVM_RUN at 3.412 ms\n\
                   boot-ready: 812.345 ms since VMM start\n";
        let f = parse_figures(log).unwrap();
        assert_eq!(f.first_instruction_ms, 3.412);
        assert_eq!(f.boot_ready_ms, Some(812.345));
        // No boot-ready line: fine only when the guest said it could not signal.
        let first = "cpevisor-vmm: first instruction: vcpu 0 entering KVM_RUN at 1.5 ms\n";
        assert!(parse_figures(&format!(
            "{first}APP-READY app=status signal=sent uptime=1\n"
        ))
        .is_err());
        let f = parse_figures(&format!(
            "{first}APP-READY app=status signal=unavailable uptime=1\n"
        ))
        .unwrap();
        assert_eq!((f.first_instruction_ms, f.boot_ready_ms), (1.5, None));
        let err = parse_figures("cpevisor-vmm: error: tap0: no such device\n").unwrap_err();
        assert!(err.contains("lacks"), "{err}");
        assert!(parse_figures("boot-ready: soon ms\nfirst instruction: at x ms").is_err());
    }

    #[test]
    fn stop_times_are_read_from_the_board_and_the_vmm_log() {
        assert_eq!(
            parse_stop_time("noise\nVMM-EXIT=0 STOP-TIME 12.34 12.87\n"),
            Some((0, 530.0))
        );
        assert_eq!(
            parse_stop_time("VMM-EXIT=5 STOP-TIME 1.00 1.00"),
            Some((5, 0.0))
        );
        assert_eq!(parse_stop_time("VMM-EXIT=0 STOP-TIME 2.0 1.0"), None);
        assert_eq!(parse_stop_time("VMM-EXIT=0"), None);
        assert_eq!(
            parse_graceful_stop_ms("cpevisor-vmm: shutdown: guest powered off after 412 ms\n"),
            Some(412.0)
        );
        assert_eq!(
            parse_graceful_stop_ms(
                "cpevisor-vmm: shutdown: guest did not power off within 3000 ms"
            ),
            None
        );
    }

    #[test]
    fn the_vmm_command_names_every_image_and_the_tap() {
        let cmd = VmmLaunch {
            tap: "tapX".into(),
            ..Default::default()
        }
        .command();
        for f in IMAGE_FILES {
            assert!(cmd.contains(&format!("{BOARD_DIR}/{f}")), "{cmd}");
        }
        assert!(
            cmd.contains("--net tapX") && cmd.contains("--memory 64"),
            "{cmd}"
        );
        assert!(cmd.contains(",ro") && cmd.contains("--rng"), "{cmd}");
        assert!(!cmd.contains("--shutdown-timeout"), "{cmd}");
        let cmd = VmmLaunch {
            shutdown_timeout_ms: Some(3000),
            ..Default::default()
        }
        .command();
        assert!(cmd.ends_with(" --shutdown-timeout 3000"), "{cmd}");
    }

    #[test]
    fn the_http_server_serves_the_directory_and_dies_with_its_handle() {
        let dir = std::env::temp_dir().join(format!("cpevisor-httpd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hello.txt"), "hello board\n").unwrap();
        let server = HttpServer::serve(&dir).unwrap();
        let port = server.port;
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::{Read, Write};
        s.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.contains("hello board"), "{reply}");
        drop(server);
        std::thread::sleep(Duration::from_millis(200));
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
