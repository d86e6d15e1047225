//! The agent's figures taken on this host (x86_64): idle memory of `cpevisord` and the speed of
//! `cpevisorctl install` against a plain download plus `sha256sum` of the same file.
//!
//! It runs the static release binaries that `make cross` puts in
//! `target/cross/x86_64-unknown-linux-musl/` (`CPEVISOR_BENCH_AGENT_DIR` names another directory
//! holding `cpevisord` and `cpevisorctl`). The aarch64 board would give other absolute numbers;
//! the notes say so. Everything lives in a temporary directory; the daemon and the HTTP server
//! are killed by guards, whatever fails.

use super::stats::{median, round_to};
use super::Figure;
use crate::firmware::timeout_scale;
use crate::microvm::HttpServer;
use serde_json::json;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The build measured: the host's own target, from `make cross`.
pub const HOST_TARGET: &str = "x86_64-unknown-linux-musl";
/// Overrides the directory holding `cpevisord` and `cpevisorctl`.
pub const BIN_DIR_ENV: &str = "CPEVISOR_BENCH_AGENT_DIR";
/// Runs behind each median.
const RUNS: usize = 3;
/// Size of the random rootfs layer of the installed package (the package is a little larger).
const PAYLOAD_MIB: usize = 64;
/// How long the daemon sits idle before its memory is read.
const IDLE: Duration = Duration::from_secs(2);
/// Longest time the daemon may take to answer `list` after being started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest time one install or one download may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest time a short command (`keygen`, `pack`, `list`, `uninstall`, `sha256sum`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes read back from a command's output or the daemon's log.
const MAX_OUTPUT: u64 = 64 << 10;
/// Longest `/proc` file read.
const MAX_PROC_FILE: u64 = 64 << 10;

/// `agent.idle_rss_kib`, `agent.idle_pss_kib` and `agent.install_mib_per_s` (peer: a plain
/// download plus `sha256sum`). Figures measured before a failure are kept.
pub fn figures(root: &Path, figures: &mut Vec<Figure>) -> Result<(), String> {
    let bins = Binaries::find(root)?;
    let work = TempDir::new("cpevisor-agent-bench")?;
    let setup = Setup::prepare(&work.0)?;

    let (rss, pss) = idle_memory(&bins, &setup)?;
    let shown_dir = bins.dir.strip_prefix(root).unwrap_or(&bins.dir);
    let origin = format!(
        "the static {HOST_TARGET} release build ({}) run on this host, not the aarch64 board",
        shown_dir.display()
    );
    figures.push(
        Figure::new("agent.idle_rss_kib.x86_64_host", median_or(&rss)?, "KiB")
            .with_note(format!(
                "VmRSS of cpevisord with one empty jail ExecEnv, {}s after it first answered \
                 `list`, median of {RUNS} reads; {origin}",
                IDLE.as_secs()
            ))
            .with_samples(rss, Vec::new()),
    );
    figures.push(
        Figure::new("agent.idle_pss_kib.x86_64_host", median_or(&pss)?, "KiB")
            .with_note(format!(
                "Pss from /proc/<pid>/smaps_rollup at the same moments as agent.idle_rss_kib.x86_64_host; \
                 {origin}"
            ))
            .with_samples(pss, Vec::new()),
    );

    let install = install_throughput(&bins, &setup)?;
    let mib = setup.package_bytes as f64 / (1024.0 * 1024.0);
    figures.push(
        Figure::new(
            "agent.install_mib_per_s",
            round_to(median_or(&install.agent)?, 1),
            "MiB/s",
        )
        .with_peer(
            install.peer_name.clone(),
            round_to(median_or(&install.peer)?, 1),
        )
        .with_note(format!(
            "a signed {mib:.1} MiB package (random rootfs layer) from python3 -m http.server on \
             127.0.0.1: `cpevisorctl install URL` until Installed (download, digest and \
             signature checks, unpack into the store with fsync) against `{}` of the same \
             file, median of {RUNS} alternating runs; {origin}",
            install.peer_command
        ))
        .with_samples(install.agent, install.peer),
    );
    Ok(())
}

pub(super) fn median_or(samples: &[f64]) -> Result<f64, String> {
    median(samples).ok_or_else(|| "no samples".to_string())
}

/// `cpevisord` and `cpevisorctl` to measure.
pub(super) struct Binaries {
    pub(super) dir: PathBuf,
    pub(super) daemon: PathBuf,
    pub(super) ctl: PathBuf,
}

impl Binaries {
    pub(super) fn find(root: &Path) -> Result<Binaries, String> {
        let dir = match std::env::var_os(BIN_DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None => root.join("target/cross").join(HOST_TARGET),
        };
        let daemon = dir.join("cpevisord");
        let ctl = dir.join("cpevisorctl");
        for b in [&daemon, &ctl] {
            if !b.is_file() {
                return Err(format!(
                    "{} missing (run `bash scripts/cross.sh {HOST_TARGET}`, or set {BIN_DIR_ENV})",
                    b.display()
                ));
            }
        }
        Ok(Binaries { dir, daemon, ctl })
    }
}

/// A directory removed with everything in it when dropped.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(prefix: &str) -> Result<TempDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos:09}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The signed package in `www/`, the daemon's config trusting its key, and the places the
/// daemon keeps its state and socket.
struct Setup {
    work: PathBuf,
    www: PathBuf,
    package_name: String,
    package_bytes: u64,
    /// `sha256sum`'s hex digest of the package, to check the peer's result against.
    package_sha256: String,
    config: PathBuf,
}

impl Setup {
    fn prepare(work: &Path) -> Result<Setup, String> {
        let mkdir = |p: &Path| {
            fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
        };
        let keys = work.join("keys");
        let trusted = work.join("trusted");
        let app = work.join("app");
        let www = work.join("www");
        for d in [&trusted, &app, &www] {
            mkdir(d)?;
        }
        // keygen and pack are the operator's (feature operator-tools, left out of the device
        // build this bench measures): the host build that scripts/sample-app.sh made runs them.
        let operator_ctl = crate::agent::host_cpevisorctl()?;
        let operator = |args: &[&std::ffi::OsStr]| {
            let mut c = Command::new(&operator_ctl);
            c.args(args);
            run_bounded(c, work, COMMAND_TIMEOUT)
        };
        operator(&["keygen".as_ref(), keys.as_os_str()])?.success("cpevisorctl keygen")?;
        let public = keys.join("cpevisor-signing.pub");
        fs::copy(&public, trusted.join("bench.pub"))
            .map_err(|e| format!("cannot copy {}: {e}", public.display()))?;

        write_random(&app.join("rootfs.tar"), PAYLOAD_MIB << 20)?;
        let app_json = json!({
            "name": "bench-install", "version": "1.0", "vendor": "cpevisor bench",
            "description": "random payload for make bench", "arch": "x86_64",
            "backends": ["jail"], "memory_mib": 8, "vcpus": 1, "autostart": false,
            "command": ["/bin/true"], "rootfs": "rootfs.tar"
        });
        write_file(&app.join("app.json"), app_json.to_string().as_bytes())?;
        let package_name = "bench.cpkg".to_string();
        let package = www.join(&package_name);
        let key = keys.join("cpevisor-signing.key");
        operator(&[
            "pack".as_ref(),
            app.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--out".as_ref(),
            package.as_os_str(),
        ])?
        .success("cpevisorctl pack")?;
        // The app directory is no longer needed: keep only one copy of the payload on disk.
        let _ = fs::remove_dir_all(&app);
        let package_bytes = fs::metadata(&package)
            .map_err(|e| format!("{}: {e}", package.display()))?
            .len();
        let package_sha256 = sha256sum(&package, work)?;

        let config = work.join("agent.json");
        let config_json = json!({
            "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                           "memory_budget_mib": 64, "runner": "process"}],
            "trusted_keys_dir": trusted,
            "download_cap_bytes": package_bytes * 2,
        });
        write_file(&config, config_json.to_string().as_bytes())?;
        Ok(Setup {
            work: work.to_path_buf(),
            www,
            package_name,
            package_bytes,
            package_sha256,
            config,
        })
    }
}

/// VmRSS and Pss samples (KiB) of a daemon that has just come up and sits idle.
fn idle_memory(bins: &Binaries, setup: &Setup) -> Result<(Vec<f64>, Vec<f64>), String> {
    let mut daemon = Daemon::start(bins, setup, "idle")?;
    std::thread::sleep(IDLE);
    let (mut rss, mut pss) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let proc_dir = PathBuf::from(format!("/proc/{}", daemon.pid()));
        let status = read_bounded(&proc_dir.join("status"), MAX_PROC_FILE)?;
        rss.push(proc_kib(&status, "VmRSS")? as f64);
        let rollup = read_bounded(&proc_dir.join("smaps_rollup"), MAX_PROC_FILE)?;
        pss.push(proc_kib(&rollup, "Pss")? as f64);
    }
    daemon.check_alive()?;
    Ok((rss, pss))
}

struct InstallRuns {
    agent: Vec<f64>,
    peer: Vec<f64>,
    peer_name: String,
    peer_command: String,
}

/// MiB/s of `cpevisorctl install` and of the plain download + `sha256sum`, alternating, so a
/// slow moment of the host weighs on both.
fn install_throughput(bins: &Binaries, setup: &Setup) -> Result<InstallRuns, String> {
    let downloader = Downloader::find()?;
    let server = HttpServer::serve(&setup.www)?;
    let url = format!("http://127.0.0.1:{}/{}", server.port, setup.package_name);
    let mut daemon = Daemon::start(bins, setup, "install")?;
    let mib = setup.package_bytes as f64 / (1024.0 * 1024.0);
    let copy = setup.work.join("download.cpkg");
    let (mut agent, mut peer) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let out = daemon.ctl(&["install", &url], TRANSFER_TIMEOUT)?;
        let took = started.elapsed();
        out.success("cpevisorctl install")?;
        let uuid = installed_uuid(&out.stdout)?;
        agent.push(round_to(mib / took.as_secs_f64(), 1));
        // Uninstalled outside the timing: the same app installs again in the next run.
        daemon
            .ctl(&["uninstall", &uuid], COMMAND_TIMEOUT)?
            .success("cpevisorctl uninstall")?;

        let _ = fs::remove_file(&copy);
        let started = Instant::now();
        run_bounded(
            downloader.command(&url, &copy),
            &setup.work,
            TRANSFER_TIMEOUT,
        )?
        .success(&downloader.name)?;
        let digest = sha256sum(&copy, &setup.work)?;
        let took = started.elapsed();
        let got = fs::metadata(&copy).map(|m| m.len()).unwrap_or(0);
        if got != setup.package_bytes || digest != setup.package_sha256 {
            return Err(format!(
                "{} fetched {got} bytes with sha256 {digest}, expected {} bytes with {}",
                downloader.name, setup.package_bytes, setup.package_sha256
            ));
        }
        peer.push(round_to(mib / took.as_secs_f64(), 1));
    }
    let _ = fs::remove_file(&copy);
    daemon.check_alive()?;
    drop(server);
    Ok(InstallRuns {
        agent,
        peer,
        peer_name: format!("{} + sha256sum", downloader.name),
        peer_command: format!("{} F URL && sha256sum F", downloader.usage),
    })
}

/// The UUID in `Installed NAME VERSION (UUID)`, the first line `cpevisorctl install` prints on
/// success (the EUs follow on the next).
pub fn installed_uuid(stdout: &str) -> Result<String, String> {
    let line = stdout.lines().next().unwrap_or("").trim();
    let uuid = line
        .strip_prefix("Installed ")
        .and_then(|rest| rest.rsplit_once('('))
        .and_then(|(_, tail)| tail.strip_suffix(')'))
        .filter(|u| u.len() == 36 && u.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    uuid.map(str::to_string).ok_or_else(|| {
        format!("cpevisorctl install printed {line:?}, not `Installed NAME VERSION (UUID)`")
    })
}

/// The plain download the install is compared with: curl when present, else busybox wget.
struct Downloader {
    name: String,
    usage: String,
    program: String,
    args: Vec<String>,
}

impl Downloader {
    fn find() -> Result<Downloader, String> {
        let works = |program: &str, arg: &str| {
            Command::new(program)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if works("curl", "--version") {
            return Ok(Downloader {
                name: "curl".into(),
                usage: "curl -s -f -o".into(),
                program: "curl".into(),
                args: vec!["-s".into(), "-f".into(), "-o".into()],
            });
        }
        if works("busybox", "--help") {
            return Ok(Downloader {
                name: "busybox wget".into(),
                usage: "busybox wget -q -O".into(),
                program: "busybox".into(),
                args: vec!["wget".into(), "-q".into(), "-O".into()],
            });
        }
        Err("neither curl nor busybox is installed: no plain-download peer".into())
    }

    fn command(&self, url: &str, out: &Path) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).arg(out).arg(url);
        c
    }
}

/// `sha256sum FILE`'s hex digest.
fn sha256sum(file: &Path, work: &Path) -> Result<String, String> {
    let mut c = Command::new("sha256sum");
    c.arg(file);
    let out = run_bounded(c, work, COMMAND_TIMEOUT)?;
    out.success("sha256sum")?;
    out.stdout
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
        .ok_or_else(|| format!("sha256sum printed {:?}", out.stdout))
}

/// A running `cpevisord` on a fresh state directory; SIGTERM, then SIGKILL, when dropped.
pub(super) struct Daemon {
    child: Child,
    pub(super) socket: PathBuf,
    log: PathBuf,
    ctl: PathBuf,
    work: PathBuf,
}

impl Daemon {
    /// Starts it and waits until `cpevisorctl list` answers.
    fn start(bins: &Binaries, setup: &Setup, name: &str) -> Result<Daemon, String> {
        Daemon::start_in(bins, &setup.work, &setup.config, name)
    }

    /// `start` with its work directory and config given.
    pub(super) fn start_in(
        bins: &Binaries,
        work: &Path,
        config: &Path,
        name: &str,
    ) -> Result<Daemon, String> {
        let state = work.join(format!("state-{name}"));
        let socket = work.join(format!("{name}.sock"));
        let log = work.join(format!("cpevisord-{name}.log"));
        let log_file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let child = Command::new(&bins.daemon)
            .arg("--state-dir")
            .arg(&state)
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(&socket)
            .args(["--log-level", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bins.daemon.display()))?;
        let mut daemon = Daemon {
            child,
            socket,
            log,
            ctl: bins.ctl.clone(),
            work: work.to_path_buf(),
        };
        let deadline = Instant::now() + READY_TIMEOUT.mul_f64(timeout_scale());
        loop {
            daemon.check_alive()?;
            if daemon.ctl(&["list"], COMMAND_TIMEOUT)?.status_ok {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "cpevisord did not answer `list` within {:?}; its log: {}",
                    READY_TIMEOUT.mul_f64(timeout_scale()),
                    daemon.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "cpevisord exited ({status}); its log: {}",
                self.log_tail()
            )),
            Err(e) => Err(format!("cannot check on cpevisord: {e}")),
        }
    }

    pub(super) fn log_tail(&self) -> String {
        read_tail(&self.log, 2048)
    }

    pub(super) fn ctl(&self, args: &[&str], timeout: Duration) -> Result<Finished, String> {
        let mut c = Command::new(&self.ctl);
        c.arg("--socket").arg(&self.socket).args(args);
        run_bounded(c, &self.work, timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM lets it remove its socket and stop apps; SIGKILL if it lingers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command's exit and what it printed (each stream cut to [`MAX_OUTPUT`]).
pub(super) struct Finished {
    what: String,
    pub(super) status_ok: bool,
    status: String,
    pub(super) stdout: String,
    stderr: String,
}

impl Finished {
    pub(super) fn success(&self, name: &str) -> Result<&Finished, String> {
        if self.status_ok {
            Ok(self)
        } else {
            Err(format!(
                "{name} ({}) failed: {}; stderr: {}",
                self.what,
                self.status,
                self.stderr.trim()
            ))
        }
    }
}

/// Runs `cmd` with its output in files under `work` (no pipe to fill up), killing it after
/// `timeout` (scaled by `CPEVISOR_TIMEOUT_SCALE`).
pub(super) fn run_bounded(
    mut cmd: Command,
    work: &Path,
    timeout: Duration,
) -> Result<Finished, String> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let what = format!("{cmd:?}");
    let out_path = work.join(format!("cmd-{n}.out"));
    let err_path = work.join(format!("cmd-{n}.err"));
    let open =
        |p: &Path| File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(open(&out_path)?)
        .stderr(open(&err_path)?)
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let timeout = timeout.mul_f64(timeout_scale());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} took longer than {timeout:?}: killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for {what}: {e}")),
        }
    };
    let stdout = read_bounded(&out_path, MAX_OUTPUT).unwrap_or_default();
    let stderr = read_bounded(&err_path, MAX_OUTPUT).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    Ok(Finished {
        what,
        status_ok: status.success(),
        status: status.to_string(),
        stdout,
        stderr,
    })
}

/// At most `max` bytes of a text file.
fn read_bounded(path: &Path, max: u64) -> Result<String, String> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(max).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text)
}

/// The last `max` bytes of a log, for error messages.
fn read_tail(path: &Path, max: usize) -> String {
    match read_bounded(path, MAX_OUTPUT) {
        Ok(t) if t.len() > max => {
            let mut cut = t.len() - max;
            while !t.is_char_boundary(cut) {
                cut += 1;
            }
            t[cut..].to_string()
        }
        Ok(t) => t,
        Err(e) => e,
    }
}

/// The value of a `Key:   123 kB` line of `/proc/<pid>/status` or `smaps_rollup`, in KiB.
pub fn proc_kib(text: &str, key: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find(|l| l.split_once(':').is_some_and(|(k, _)| k.trim() == key))
        .ok_or_else(|| format!("no {key} line"))?;
    let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
    let number = value
        .strip_suffix("kB")
        .ok_or_else(|| format!("{key}: {value:?} is not in kB"))?;
    number
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{key}: {value:?} is not a number of kB"))
}

/// Writes `bytes` random bytes (from /dev/urandom), so nothing on the way can compress them.
fn write_random(path: &Path, bytes: usize) -> Result<(), String> {
    let mut src =
        File::open("/dev/urandom").map_err(|e| format!("cannot open /dev/urandom: {e}"))?;
    let mut dst =
        File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        src.read_exact(&mut buf[..n])
            .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
        dst.write_all(&buf[..n])
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        left -= n;
    }
    Ok(())
}

pub(super) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_parse_and_errors_name_the_key() {
        let status = "Name:\tcpevisord\nVmPeak:\t  9000 kB\nVmRSS:\t    2224 kB\nThreads:\t2\n";
        assert_eq!(proc_kib(status, "VmRSS"), Ok(2224));
        let rollup = "5555-6666 ---p 00000000 00:00 0  [rollup]\nRss:  2300 kB\nPss:  1990 kB\nPss_Anon:  800 kB\n";
        assert_eq!(proc_kib(rollup, "Pss"), Ok(1990));
        assert!(proc_kib(status, "Pss").unwrap_err().contains("no Pss line"));
        assert!(proc_kib("VmRSS: 12 MB\n", "VmRSS")
            .unwrap_err()
            .contains("not in kB"));
        assert!(proc_kib("VmRSS: x kB\n", "VmRSS")
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn installed_line_gives_the_uuid() {
        let u = "3f0c1a2b-1111-5222-8333-444455556666";
        assert_eq!(
            installed_uuid(&format!(
                "Installed bench-install 1.0 ({u})\nexecution units: eu-1\n"
            )),
            Ok(u.to_string())
        );
        assert!(installed_uuid("error 7226: duplicate").is_err());
        assert!(installed_uuid("Installed x 1 (not-a-uuid)").is_err());
    }

    /// The whole measurement against the built binaries (`make cross`, or
    /// `CPEVISOR_BENCH_AGENT_DIR`): `cargo test -p cpevisor-e2e --lib -- --ignored agent_figures`.
    #[test]
    #[ignore = "needs the agent's release binaries and python3; takes ~30 s"]
    fn agent_figures_are_measured() {
        let mut out = Vec::new();
        figures(&crate::workspace_root(), &mut out).unwrap();
        print!("{}", super::super::table(&out));
        let names: Vec<&str> = out.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "agent.idle_rss_kib.x86_64_host",
                "agent.idle_pss_kib.x86_64_host",
                "agent.install_mib_per_s"
            ]
        );
        // An idle agent weighs something, and less than the 4 MiB budget allows with margin.
        assert!(out[0].value > 256.0 && out[0].value < 16384.0);
        assert!(out[1].value > 0.0 && out[1].value <= out[0].value);
        assert!(out[2].value > 0.0 && out[2].ratio().is_some());
        assert_eq!(out[2].samples.len(), RUNS);
    }
}
