//! The board managed over USP: a mosquitto broker with its own PKI on the host, the agent in the
//! board connecting to it at 10.0.2.2 (QEMU user networking forwards that to the host's
//! 127.0.0.1), and the host's `cpevisor-controller` as the controller.
//!
//! Provisioning: [`UspHost::provision_flash`] builds the board's flash on the host as an ext2
//! image (`mke2fs -d`) holding `cpevisor/usp/{usp.json,ca.pem,agent.pem,agent.key}`; the
//! firmware's init mounts it as /data and, finding `/data/cpevisor/usp/usp.json`, starts the
//! agent with `--usp`. Pre-building the image is chosen over typing files on the console: it is
//! how a device would be provisioned at the factory, needs no base64 round trips over a slow
//! emulated UART, and keeps the key off the console transcript.

use crate::agent::Flash;
use crate::firmware::{timeout_scale, workspace_root};
use cpevisor_usp::broker::{TestBroker, SLIRP_HOST};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The board agent's USP endpoint ID (`os::<OUI>-<serial>`).
pub const AGENT_ENDPOINT: &str = "os::012345-qemu0001";
/// The host controller's endpoint ID, allowed FullAccess on the board.
pub const CONTROLLER_ENDPOINT: &str = "self::cpevisor-e2e";
/// Where the init looks for the agent's USP settings on the board.
pub const BOARD_USP_DIR: &str = "/data/cpevisor/usp";
/// Longest stdout accepted from one `cpevisor-controller` run.
const MAX_CTL_OUTPUT: usize = 1 << 20;

/// The broker, the controller's settings and the host `cpevisor-controller` that drives the
/// board.
pub struct UspHost {
    /// The mosquitto the board's agent and the host controller connect to.
    pub broker: TestBroker,
    /// Scratch directory: certificates, configs, logs.
    pub dir: PathBuf,
    ctl: PathBuf,
    ctl_config: PathBuf,
    roster: PathBuf,
}

/// One `cpevisor-controller --json` run: its exit code, the parsed reply, stderr and how long it took.
#[derive(Debug, Clone)]
pub struct CtlRun {
    /// The controller's exit code.
    pub code: i32,
    /// The parsed `--json` reply (`Null` when stdout was not JSON).
    pub reply: Value,
    /// What the controller wrote to stderr.
    pub stderr: String,
    /// From start to exit.
    pub took: Duration,
}

impl CtlRun {
    /// The only agent's result (we address one agent).
    pub fn result(&self) -> Result<&Value, String> {
        match self.reply["results"].as_array().map(Vec::as_slice) {
            Some([one]) => Ok(one),
            _ => Err(format!(
                "expected one result: {} {}",
                self.reply, self.stderr
            )),
        }
    }

    /// The value of the row whose path is `name` or ends with `.name`.
    pub fn row(&self, name: &str) -> Option<String> {
        row(self.result().ok()?, name)
    }

    /// The events of `kind` (`DUStateChange!`, `OperationComplete`, `ValueChange`) the
    /// controller received for this run.
    pub fn events(&self, kind: &str) -> Vec<Value> {
        self.result()
            .ok()
            .and_then(|r| r["events"].as_array())
            .map(|a| a.iter().filter(|e| e["kind"] == kind).cloned().collect())
            .unwrap_or_default()
    }

    /// Exit code 0 or an error naming the command, the fault and stderr.
    pub fn ok(self, what: &str) -> Result<CtlRun, String> {
        if self.code == 0 {
            Ok(self)
        } else {
            Err(format!(
                "cpevisor-controller {what}: exit {}: {} {}",
                self.code,
                self.reply,
                self.stderr.trim()
            ))
        }
    }
}

/// The value of the row `name` (or `*.name`) in one agent's result.
pub fn row(result: &Value, name: &str) -> Option<String> {
    let suffix = format!(".{name}");
    result["rows"]
        .as_array()?
        .iter()
        .find(|r| {
            r[0].as_str()
                .is_some_and(|k| k == name || k.ends_with(&suffix))
        })
        .and_then(|r| r[1].as_str())
        .map(str::to_string)
}

impl UspHost {
    /// Starts the broker (PKI in `target/e2e-usp/<name>-<pid>/`) and opens the controller's
    /// persistent session, so the agent's first announcements wait at the broker for us.
    pub fn start(name: &str) -> Result<UspHost, String> {
        let ctl = host_controller()?;
        let dir = workspace_root()
            .join("target/e2e-usp")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let broker = TestBroker::start(&dir.join("broker"))
            .map_err(|e| format!("cannot start the test broker (mosquitto): {e}"))?;
        let id = broker
            .identity(CONTROLLER_ENDPOINT)
            .map_err(|e| format!("controller certificate: {e}"))?;
        let ctl_config = dir.join("controller.json");
        let config = json!({
            "broker_host": broker.host(), "broker_port": broker.port(),
            "ca_file": broker.ca(), "cert_file": id.cert, "key_file": id.key,
            "endpoint_id": CONTROLLER_ENDPOINT,
            // Announcements made while no run is connected are kept for the next one.
            "session_expiry_s": 3600,
        });
        write_json(&ctl_config, &config)?;
        let host = UspHost {
            broker,
            roster: dir.join("roster.json"),
            dir,
            ctl,
            ctl_config,
        };
        host.ctl(&["--listen", "0.2", "agents"])?.ok("agents")?;
        Ok(host)
    }

    /// A flash image of `size_mib` MiB for `board`, ext2, with the agent's USP settings, CA,
    /// certificate and key in `cpevisor/usp/` (the board mounts it as /data).
    pub fn provision_flash(&self, board: &str, name: &str, size_mib: u64) -> Result<Flash, String> {
        provision_flash(&self.broker, &self.dir, board, name, size_mib)
    }

    /// Runs `cpevisor-controller --config CFG --json ARGS` on the host.
    pub fn ctl(&self, args: &[&str]) -> Result<CtlRun, String> {
        let started = Instant::now();
        let out = Command::new(&self.ctl)
            .arg("--config")
            .arg(&self.ctl_config)
            .arg("--json")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.ctl.display()))?;
        if out.stdout.len() > MAX_CTL_OUTPUT {
            return Err(format!(
                "cpevisor-controller {args:?}: {} bytes of output, over {MAX_CTL_OUTPUT}",
                out.stdout.len()
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(CtlRun {
            code: out.status.code().unwrap_or(-1),
            reply: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        })
    }

    /// Starts `cpevisor-controller serve` on `db` with this host's settings (the same endpoint
    /// and broker session as [`UspHost::ctl`]: run no one-shot command while it serves), its
    /// output in `dir/serve.log`. Stopped with SIGTERM (and waited for) when the handle drops.
    pub fn serve(&self, db: &Path) -> Result<Serving, String> {
        let log_path = self.dir.join("serve.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(&self.ctl)
            .arg("serve")
            .arg("--config")
            .arg(&self.ctl_config)
            .arg("--db")
            .arg(db)
            .args(["--sweep", "2"])
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {} serve: {e}", self.ctl.display()))?;
        Ok(Serving {
            child,
            log: log_path,
        })
    }

    /// Runs a service command on `db` (`cpevisor-controller ARGS --db DB --json`): deploy,
    /// agents, deployments, operations.
    pub fn fleet(&self, db: &Path, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(&self.ctl)
            .args(args)
            .arg("--db")
            .arg(db)
            .arg("--json")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.ctl.display()))?;
        if !out.status.success() {
            return Err(format!(
                "cpevisor-controller {args:?} --db: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("cpevisor-controller {args:?}: not JSON ({e})"))
    }

    /// The board's agent ([`AGENT_ENDPOINT`]) as the controller's database `db` has it
    /// (`agents --db`), if it has it.
    pub fn fleet_board_agent(&self, db: &Path) -> Result<Option<Value>, String> {
        let agents = self.fleet(db, &["agents"])?;
        Ok(agents["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["endpoint_id"] == AGENT_ENDPOINT)
            .cloned())
    }

    /// Runs a command on the board's agent (`--agent AGENT_ENDPOINT --timeout T ARGS`).
    pub fn on_agent(&self, timeout: Duration, args: &[&str]) -> Result<CtlRun, String> {
        let secs = format!("{}", scaled(timeout).as_secs().max(1));
        let mut all = vec!["--agent", AGENT_ENDPOINT, "--timeout", &secs];
        all.extend_from_slice(args);
        self.ctl(&all)
    }

    /// Listens (`agents`) until the board's agent announces itself with one of `hows`
    /// (`Boot!`, `OnBoardRequest`); returns what it was seen as.
    pub fn wait_announced(&self, hows: &[&str], timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + scaled(timeout);
        let roster = self.roster.to_string_lossy().into_owned();
        loop {
            let run = self
                .ctl(&["--listen", "5", "--roster", &roster, "agents"])?
                .ok("agents")?;
            let seen = run.reply["seen"].as_array().cloned().unwrap_or_default();
            if let Some(s) = seen.iter().find(|s| {
                s["endpoint_id"] == AGENT_ENDPOINT
                    && s["how"].as_str().is_some_and(|h| hows.contains(&h))
            }) {
                return Ok(s["how"].as_str().unwrap_or_default().to_string());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{AGENT_ENDPOINT} did not announce itself ({hows:?}) within {timeout:?}; \
                     last: {}\nbroker log:\n{}",
                    run.reply,
                    self.broker.log_tail()
                ));
            }
        }
    }

    /// `get PATH` until the agent answers (it connects in the background); returns the run.
    pub fn wait_answering(&self, path: &str, timeout: Duration) -> Result<CtlRun, String> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let run = self.on_agent(Duration::from_secs(5), &["get", path])?;
            if run.code == 0 {
                return Ok(run);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{AGENT_ENDPOINT} never answered `get {path}`: {} {}\nbroker log:\n{}",
                    run.reply,
                    run.stderr.trim(),
                    self.broker.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The EUID and Status of the execution unit named `name`, if the agent lists one.
    pub fn eu_status(&self, name: &str) -> Result<Option<(String, String)>, String> {
        let run = self
            .on_agent(
                Duration::from_secs(30),
                &["get", "Device.SoftwareModules.ExecutionUnit."],
            )?
            .ok("get Device.SoftwareModules.ExecutionUnit.")?;
        let result = run.result()?;
        let rows = result["rows"].as_array().cloned().unwrap_or_default();
        let value_of = |path: &str| {
            rows.iter()
                .find(|r| r[0] == path)
                .and_then(|r| r[1].as_str())
                .map(str::to_string)
        };
        for r in &rows {
            let Some(path) = r[0].as_str() else { continue };
            if path.ends_with(".Name") && r[1] == name {
                let base = path.trim_end_matches("Name");
                let eu_id = value_of(&format!("{base}EUID")).unwrap_or_default();
                let status = value_of(&format!("{base}Status")).unwrap_or_default();
                return Ok(Some((eu_id, status)));
            }
        }
        Ok(None)
    }

    /// Polls until the EU named `name` has Status `want`; returns its EUID.
    pub fn wait_eu_status(
        &self,
        name: &str,
        want: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let now = self.eu_status(name)?;
            if let Some((eu_id, status)) = &now {
                if status == want {
                    return Ok(eu_id.clone());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "EU {name} not {want} after {timeout:?}; last: {now:?}"
                ));
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// A flash image of `size_mib` MiB, ext2, staged in `dir`: the agent's `usp.json` (broker at
/// [`SLIRP_HOST`], [`CONTROLLER_ENDPOINT`] allowed FullAccess, DeviceInfo.ModelName `board`),
/// the broker's CA, and the agent's certificate and key from `broker`'s PKI, all in
/// `cpevisor/usp/`.
pub fn provision_flash(
    broker: &TestBroker,
    dir: &Path,
    board: &str,
    name: &str,
    size_mib: u64,
) -> Result<Flash, String> {
    let stage = dir.join(format!("{name}-flash"));
    let usp = stage.join("cpevisor/usp");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&usp).map_err(|e| format!("{}: {e}", usp.display()))?;
    let id = broker
        .identity(AGENT_ENDPOINT)
        .map_err(|e| format!("agent certificate: {e}"))?;
    copy(&broker.ca(), &usp.join("ca.pem"))?;
    copy(&id.cert, &usp.join("agent.pem"))?;
    copy(&id.key, &usp.join("agent.key"))?;
    set_mode(&usp.join("agent.key"), 0o600)?;
    let on_board = |f: &str| format!("{BOARD_USP_DIR}/{f}");
    let config = json!({
        "broker_host": SLIRP_HOST, "broker_port": broker.port(),
        "ca_file": on_board("ca.pem"), "cert_file": on_board("agent.pem"),
        "key_file": on_board("agent.key"),
        "endpoint_id": AGENT_ENDPOINT,
        "controllers": [{"endpoint_id": CONTROLLER_ENDPOINT, "role": "FullAccess"}],
        "device_info": {"manufacturer": "cpevisor", "manufacturer_oui": "012345",
                        "model_name": board, "product_class": "HomeGateway",
                        "serial_number": "qemu0001"},
        "keep_alive_s": 30,
    });
    write_json(&usp.join("usp.json"), &config)?;
    let image = workspace_root()
        .join("target/e2e-flash")
        .join(format!("{name}-usp-{}.img", std::process::id()));
    if let Some(parent) = image.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let _ = std::fs::remove_file(&image);
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext2", "-L", "cpevisor-data", "-d"])
        .arg(&stage)
        .arg(&image)
        .arg(format!("{size_mib}M"))
        .output()
        .map_err(|e| format!("cannot run mke2fs (e2fsprogs): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mke2fs -d {} failed: {}",
            stage.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(Flash { path: image })
}

impl Drop for UspHost {
    fn drop(&mut self) {
        // Kept after a failure: the broker's log and the PKI explain it.
        if !std::thread::panicking() {
            self.broker.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Scales a timeout by `CPEVISOR_TIMEOUT_SCALE`.
fn scaled(d: Duration) -> Duration {
    d.mul_f64(timeout_scale())
}

fn write_json(path: &Path, v: &Value) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(v).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The host `cpevisor-controller`: under `CARGO_TARGET_DIR` when set, else the workspace's
/// `target/debug/` (`scripts/sample-app.sh`, run by `make firmware`, builds it).
fn host_controller() -> Result<PathBuf, String> {
    let hint = "build it: `cargo build -p cpevisor-controller`";
    let ctl = crate::agent::host_controller().map_err(|e| format!("{e}; or {hint}"))?;
    // Something else under that name would fail later on its usage text: say so now.
    let out = Command::new(&ctl)
        .arg("--help")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ctl.display()))?;
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    if !text.contains("InstallDU") {
        return Err(format!(
            "{} is not the USP controller: {hint}",
            ctl.display()
        ));
    }
    Ok(ctl)
}

/// A running `cpevisor-controller serve` ([`UspHost::serve`]).
pub struct Serving {
    child: std::process::Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Serving {
    /// The last `bytes` of its log, for failure messages.
    pub fn log_tail(&self, bytes: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut cut = text.len().saturating_sub(bytes);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text[cut..].to_string()
    }

    /// SIGTERM, then its exit status (it finishes the operations in flight first; killed when
    /// it takes longer than `timeout`).
    pub fn stop(mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        self.terminate();
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!("serve still running {timeout:?} after SIGTERM"));
                }
                Err(e) => return Err(format!("serve: {e}")),
            }
        }
    }

    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
            std::thread::sleep(Duration::from_secs(1));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file `path` inside the ext2 image, read back with e2fsprogs' debugfs.
    fn read_from_image(image: &Path, path: &str) -> String {
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(image)
            .output()
            .expect("debugfs (e2fsprogs)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn the_flash_carries_the_agents_usp_settings_and_identity() {
        let dir = std::env::temp_dir().join(format!("e2e-usp-flash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let broker = TestBroker::start(&dir.join("broker")).expect("mosquitto");
        let flash = provision_flash(&broker, &dir, "qemu-virt-a53", "unit", 8).unwrap();
        assert_eq!(std::fs::metadata(&flash.path).unwrap().len(), 8 << 20);
        let text = read_from_image(&flash.path, "/cpevisor/usp/usp.json");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert_eq!(v["broker_host"], SLIRP_HOST);
        assert_eq!(v["broker_port"], broker.port());
        assert_eq!(v["endpoint_id"], AGENT_ENDPOINT);
        assert_eq!(v["controllers"][0]["endpoint_id"], CONTROLLER_ENDPOINT);
        assert_eq!(v["device_info"]["model_name"], "qemu-virt-a53");
        for (key, file) in [
            ("ca_file", "ca.pem"),
            ("cert_file", "agent.pem"),
            ("key_file", "agent.key"),
        ] {
            assert_eq!(v[key], format!("{BOARD_USP_DIR}/{file}"));
            let pem = read_from_image(&flash.path, &format!("/cpevisor/usp/{file}"));
            assert!(pem.starts_with("-----BEGIN "), "{file}: {pem:?}");
        }
        let ca = std::fs::read_to_string(broker.ca()).unwrap();
        assert_eq!(read_from_image(&flash.path, "/cpevisor/usp/ca.pem"), ca);
        let path = flash.path.clone();
        drop(flash);
        assert!(!path.exists(), "the image outlived its Flash");
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rows_match_by_full_path_or_last_segment() {
        let result = json!({"rows": [["Device.DeviceInfo.ModelName", "b"],
                                     ["Device.SoftwareModules.ExecEnv.1.Name", "kvm0"]]});
        assert_eq!(row(&result, "ModelName").as_deref(), Some("b"));
        assert_eq!(row(&result, "ExecEnv.1.Name").as_deref(), Some("kvm0"));
        assert_eq!(row(&result, "Name").as_deref(), Some("kvm0"));
        assert_eq!(row(&result, "elName"), None);
        assert_eq!(row(&json!({}), "ModelName"), None);
        let run = CtlRun {
            code: 1,
            reply: json!({"results": []}),
            stderr: "boom".into(),
            took: Duration::ZERO,
        };
        assert!(run.result().is_err());
        assert!(run.events("ValueChange").is_empty());
        let err = run.ok("get X").unwrap_err();
        assert!(err.contains("exit 1") && err.contains("boom"), "{err}");
    }
}
