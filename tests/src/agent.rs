//! The agent (`cpevisord` in the firmware) driven end to end from the host: the sample app's
//! signed packages (built by `scripts/sample-app.sh`, which `make firmware` runs) served over
//! HTTP, a flash image that outlives one boot, and `cpevisorctl` run on the board's console.
//!
//! Flow (tests/tests/agent_in_board.rs, `make demo`): [`SamplePackages::find`] checks that the
//! packages and the firmware trust the same key; [`Flash::blank`] makes the board's flash;
//! [`HttpServer::serve`] serves the packages; [`wait_agent`], [`install`], [`wait_eu_status`],
//! [`app_address`] and [`fetch_status_page`] follow the app from install to its first answer;
//! rebooting is plain `reboot`, as on a router (the init stops the agent and unmounts the flash;
//! QEMU exits: boards run with -no-reboot), and a new `BoardVm` on the same flash.

use crate::board_shell::{before_board_deadline, board_deadline};
use crate::firmware::{firmware_dir, timeout_scale, workspace_root};
use crate::microvm::cache_dir;
use crate::BoardVm;
use cpevisor_usp::errors::UspError;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use crate::microvm::HttpServer;

/// Where the firmware's init starts the agent's socket (rootfs/files/init).
pub const AGENT_SOCKET: &str = "/run/cpevisord.sock";
/// The sample app's versions that `scripts/sample-app.sh` builds by default.
pub const SAMPLE_VERSIONS: [&str; 2] = ["1.0", "1.1"];
/// Longest `cpevisorctl` reply the harness accepts from the console (the JSON of a few apps).
const MAX_REPLY: usize = 256 << 10;

/// The token version `v` of the sample app shows on its page (`data=<token>`).
pub fn sample_token(version: &str) -> String {
    format!("sample-status-{version}")
}

/// The sample app's packages in `target/packages/`, checked against the board's firmware.
pub struct SamplePackages {
    /// The directory holding the `.cpkg` files.
    pub dir: PathBuf,
}

impl SamplePackages {
    /// Finds the packages and checks that `board`'s firmware trusts the key they are signed
    /// with; the error says which build step to run.
    pub fn find(board: &str) -> Result<SamplePackages, String> {
        let dir = workspace_root().join("target/packages");
        for v in SAMPLE_VERSIONS {
            let p = dir.join(package_name(v));
            if !p.is_file() {
                return Err(format!(
                    "{} is missing: build the sample app (`bash scripts/sample-app.sh`, run by \
                     `make firmware BOARDS={board}`)",
                    p.display()
                ));
            }
        }
        let key_file = cache_dir()?.join("keys/cpevisor-signing.pub");
        let key = std::fs::read_to_string(&key_file).map_err(|e| {
            format!(
                "{}: {e} (run `bash scripts/sample-app.sh`)",
                key_file.display()
            )
        })?;
        let manifest_path = firmware_dir(board).join("manifest.txt");
        let manifest = std::fs::read_to_string(&manifest_path).map_err(|e| {
            format!(
                "{}: {e} (build the firmware: `make firmware BOARDS={board}`)",
                manifest_path.display()
            )
        })?;
        let wanted = format!("public={}", key.trim());
        if !manifest
            .lines()
            .any(|l| l.starts_with("trusted_key=") && l.ends_with(&wanted))
        {
            return Err(format!(
                "the {board} firmware does not trust {} (its manifest lists no such \
                 trusted_key): rebuild it with `make firmware BOARDS={board}`",
                key_file.display()
            ));
        }
        Ok(SamplePackages { dir })
    }

    /// The package file of `version`.
    pub fn path(&self, version: &str) -> PathBuf {
        self.dir.join(package_name(version))
    }

    /// Signs the staged `version` (`target/packages/build/status-<v>/`) with a key made for
    /// this call, which no firmware trusts; returns the package inside `out`.
    pub fn signed_by_untrusted_key(&self, version: &str, out: &Path) -> Result<PathBuf, String> {
        let ctl = host_cpevisorctl()?;
        let stage = self.dir.join("build").join(format!("status-{version}"));
        let keys = out.join("untrusted-key");
        let _ = std::fs::remove_dir_all(&keys);
        let pkg = out.join(format!("status-{version}-untrusted.cpkg"));
        host_command(Command::new(&ctl).arg("keygen").arg(&keys))?;
        host_command(
            Command::new(&ctl)
                .arg("pack")
                .arg(&stage)
                .arg("--key")
                .arg(keys.join("cpevisor-signing.key"))
                .arg("--out")
                .arg(&pkg),
        )?;
        Ok(pkg)
    }
}

/// The host build of `cpevisorctl` that `scripts/sample-app.sh` made: under `CARGO_TARGET_DIR`
/// when the script ran with it, else under the workspace's `target/`.
pub fn host_cpevisorctl() -> Result<PathBuf, String> {
    host_binary("cpevisorctl")
}

/// The host build of `cpevisor-controller`, the operator's USP controller, that
/// `scripts/sample-app.sh` made, found as [`host_cpevisorctl`] is.
pub fn host_controller() -> Result<PathBuf, String> {
    host_binary("cpevisor-controller")
}

fn host_binary(name: &str) -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("debug").join(name))
        .into_iter()
        .collect();
    candidates.push(workspace_root().join("target/debug").join(name));
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no host {name} at {candidates:?}: run `bash scripts/sample-app.sh` \
                 (make firmware does)"
            )
        })
}

fn package_name(version: &str) -> String {
    format!("status-{version}.cpkg")
}

fn host_command(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A sparse file standing for the board's flash, removed on drop. Blank, so the firmware's init
/// formats it on first boot and mounts it on every later boot.
pub struct Flash {
    /// The flash image file.
    pub path: PathBuf,
}

impl Flash {
    /// A new sparse, unformatted flash of `size_mib` under `target/e2e-flash/`.
    pub fn blank(name: &str, size_mib: u64) -> Result<Flash, String> {
        let dir = workspace_root().join("target/e2e-flash");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{name}-{}.img", std::process::id()));
        let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.set_len(size_mib << 20)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Flash { path })
    }
}

impl Drop for Flash {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Board-side poll: up to `secs` (scaled) on the board's clock until the shell condition `cond`
/// holds; the command fails if it never does.
fn poll_until(cond: &str, secs: u64) -> String {
    poll_for(cond, secs as f64 * timeout_scale())
}

/// `poll_until` for exactly `secs`.
fn poll_for(cond: &str, secs: f64) -> String {
    format!(
        "{}; until {cond}; do {} || break; sleep 1; done; {cond}",
        board_deadline(secs),
        before_board_deadline()
    )
}

/// Waits until the agent answers on its socket; returns its `list`.
pub fn wait_agent(vm: &mut BoardVm, timeout: Duration) -> Result<Value, String> {
    let cond = format!("[ -S {AGENT_SOCKET} ] && cpevisorctl list >/dev/null 2>&1");
    if let Err(e) = vm.run_ok(&poll_until(&cond, timeout.as_secs()), timeout * 2) {
        let log = vm
            .run_ok("cat /run/cpevisord.log", Duration::from_secs(30))
            .unwrap_or_default();
        return Err(format!("the agent never answered: {e}\nagent log:\n{log}"));
    }
    ctl_json(vm, "list", Duration::from_secs(60))
}

/// The JSON line in a `cpevisorctl --json` reply. Kernel messages may interleave with the
/// console output, so the reply is the last line that parses as a JSON object.
pub fn parse_reply(out: &str) -> Result<Value, String> {
    if out.len() > MAX_REPLY {
        return Err(format!(
            "cpevisorctl reply of {} bytes, over {MAX_REPLY}",
            out.len()
        ));
    }
    // A kernel message may also land on the reply's own line, right after the JSON (seen:
    // "...}[   30.59] IPv6: ADDRCONF(NETDEV_CHANGE): cpv-eu-5: link becomes ready") or inside
    // it: those are cut out first, and the reply is the JSON value its line starts with.
    without_kernel_messages(out)
        .lines()
        .rev()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .find_map(|l| {
            serde_json::Deserializer::from_str(l)
                .into_iter::<Value>()
                .next()?
                .ok()
                .filter(Value::is_object)
        })
        .ok_or_else(|| format!("no JSON object in cpevisorctl's reply:\n{out}"))
}

/// Runs `cpevisorctl --json ARGS` on the board; a fault or a failed command is an error with the
/// fault's code and message.
pub fn ctl_json(vm: &mut BoardVm, args: &str, timeout: Duration) -> Result<Value, String> {
    let (status, out) = vm.run(&format!("cpevisorctl --json {args}"), timeout)?;
    let reply = parse_reply(&out)?;
    if status != 0 || reply.get("fault").is_some() {
        return Err(format!(
            "cpevisorctl {args}: exit {status}, fault {}",
            reply["fault"]
        ));
    }
    Ok(reply)
}

/// What an install on the board gave: the DeploymentUnit or a fault, and how long it took.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The DeploymentUnit's JSON, or the fault the agent reported (TR-181 / USP code, message).
    pub outcome: Result<Value, UspError>,
    /// From the command to its reply.
    pub took: Duration,
}

/// `cpevisorctl install URL` on the board. A fault is an outcome, not an error: errors are the harness's own failures.
pub fn install(vm: &mut BoardVm, url: &str, timeout: Duration) -> Result<Installed, String> {
    run_du_operation(vm, &format!("install {url}"), timeout)
}

/// `cpevisorctl update UUID URL` on the board.
pub fn update(
    vm: &mut BoardVm,
    uuid: &str,
    url: &str,
    timeout: Duration,
) -> Result<Installed, String> {
    run_du_operation(vm, &format!("update {uuid} {url}"), timeout)
}

fn run_du_operation(vm: &mut BoardVm, args: &str, timeout: Duration) -> Result<Installed, String> {
    let started = Instant::now();
    let (status, out) = vm.run(&format!("cpevisorctl --json {args}"), timeout)?;
    let took = started.elapsed();
    let reply = parse_reply(&out)?;
    let outcome = match reply.get("fault") {
        Some(f) => Err(UspError::new(
            f["code"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(|| format!("fault without a code: {reply}"))?,
            f["message"].as_str().unwrap_or_default(),
        )),
        None if status == 0 => Ok(reply),
        None => {
            return Err(format!(
                "`cpevisorctl {args}` exited {status} without a fault:\n{out}"
            ))
        }
    };
    Ok(Installed { outcome, took })
}

/// The execution unit of the app named `name` in a `list` reply.
pub fn eu_of(list: &Value, name: &str) -> Option<Value> {
    list["execution_units"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

/// The deployment units in a `list` reply.
pub fn deployment_units(list: &Value) -> Vec<Value> {
    list["deployment_units"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `cpevisorctl status EUID` on the board until the EU's status is `want`; returns the EU.
/// A fault on the EU (e.g. FailureOnStart) ends the wait early with the fault in the error.
pub fn wait_eu_status(
    vm: &mut BoardVm,
    eu_id: &str,
    want: &str,
    timeout: Duration,
) -> Result<Value, String> {
    let deadline = Instant::now() + BoardVm::scaled(timeout);
    loop {
        let reply = ctl_json(vm, &format!("status {eu_id}"), Duration::from_secs(60))?;
        let eu = reply
            .get("execution_unit")
            .or_else(|| reply["execution_units"].get(0))
            .cloned()
            .unwrap_or(reply.clone());
        if eu["status"] == want {
            return Ok(eu);
        }
        let fault = &eu["execution_fault_code"];
        if !fault.is_null() && fault != "NoFault" && eu["status"] == "Idle" {
            return Err(format!(
                "{eu_id} is Idle with {fault}: {}",
                eu["execution_fault_message"]
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{eu_id} not {want} after {timeout:?}; last status: {eu}"
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The agent's run directory on the boards (agent/src/lifecycle/config.rs, run_dir as root).
pub const RUN_DIR: &str = "/run/cpevisor";

/// The app's address on its tap link: what the agent gave the guest as `cpevisor.ip=` in the
/// VM description it wrote for the VMM (`<run_dir>/<eu>/vm.json`; the firmware's agent runs as
/// root, so its run directory is `/run/cpevisor`).
pub fn app_address(vm: &mut BoardVm, eu_id: &str) -> Result<String, String> {
    let out = vm.run_ok(
        &format!("sed -n 's/.*cpevisor\\.ip=\\([0-9.]*\\)\\/.*/\\1/p' {RUN_DIR}/{eu_id}/vm.json"),
        Duration::from_secs(30),
    )?;
    // The board's kernel may print to the console in the middle of the command's output (seen:
    // "eth0: link becomes ready" right after a reboot): take the line that is an address.
    out.lines()
        .rev()
        .find_map(|l| l.trim().parse::<std::net::Ipv4Addr>().ok())
        .map(|a| a.to_string())
        .ok_or_else(|| format!("no cpevisor.ip= in {RUN_DIR}/{eu_id}/vm.json: {out:?}"))
}

/// Fetches `http://ADDR/status` from the board until the app answers; returns the page.
pub fn fetch_status_page(
    vm: &mut BoardVm,
    addr: &str,
    timeout: Duration,
) -> Result<String, String> {
    // Not `wget -T`: busybox 1.35's wget segfaults with it on the /status redirect (see
    // rootfs/files/guest/README.md); `timeout` bounds each try instead.
    let get = format!("timeout 10 wget -q -O /tmp/status.page http://{addr}/status");
    vm.run_ok(
        &format!(
            "rm -f /tmp/status.page; {}",
            poll_until(&get, timeout.as_secs())
        ),
        timeout * 2,
    )
    .map_err(|e| format!("the app at {addr} never answered: {e}"))?;
    let page = vm.run_ok("cat /tmp/status.page", Duration::from_secs(30))?;
    Ok(without_kernel_messages(&page))
}

/// `text` read from the board's console without the kernel messages printed into it: each
/// message cut from its timestamp (`[   11.725121] `) through its newline, so the text it
/// interrupted joins up again; blank lines dropped. Seen: an app's OOM report landed in the
/// middle of a page (`backend=jail[   11.725121] 5fa0: ...`), and a board's
/// `IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready` in the middle of a JSON reply.
pub fn without_kernel_messages(text: &str) -> String {
    let mut joined = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = kernel_timestamp_at(rest) {
        joined.push_str(&rest[..i]);
        rest = rest[i..].split_once('\n').map_or("", |(_, after)| after);
    }
    joined.push_str(rest);
    let mut out = String::with_capacity(joined.len());
    for line in joined.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Where `[ <seconds>.<fraction>]` starts in `line`, if anywhere.
fn kernel_timestamp_at(line: &str) -> Option<usize> {
    line.match_indices('[').map(|(i, _)| i).find(|&i| {
        let Some(end) = line[i..].find(']') else {
            return false;
        };
        let inner = line[i + 1..i + end].trim_start();
        let Some((secs, frac)) = inner.split_once('.') else {
            return false;
        };
        !secs.is_empty()
            && !frac.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The app's console as the agent keeps it (`cpevisorctl logs`), for failure messages.
pub fn app_logs(vm: &mut BoardVm, eu_id: &str) -> String {
    vm.run_ok(
        &format!("cpevisorctl logs {eu_id} | tail -c 4000; tail -c 3000 /run/cpevisord.log"),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| format!("(no logs: {e})"))
}

/// Reboots the board as a router is rebooted, with plain `reboot`: the init stops the agent
/// (which stops its apps), syncs and unmounts the flash; QEMU exits (boards run with
/// -no-reboot). Returns the board's whole console transcript.
pub fn reboot(mut vm: BoardVm) -> Result<String, String> {
    vm.shut_down("reboot", Duration::from_secs(180))?;
    Ok(vm.transcript())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reply_is_the_last_json_line_among_console_noise() {
        let out = "cpevisorctl --json list\n[  12.3] cpv-eu-1: entered promiscuous mode\n\
                   {\"execution_units\":[{\"eu_id\":\"eu-1\",\"name\":\"status\"}]}\n";
        let v = parse_reply(out).unwrap();
        assert_eq!(eu_of(&v, "status").unwrap()["eu_id"], "eu-1");
        assert!(eu_of(&v, "other").is_none());
        assert!(deployment_units(&v).is_empty());
        let err = parse_reply("error 7036: untrusted\n{not json\n").unwrap_err();
        assert!(err.contains("no JSON object"), "{err}");
        assert!(parse_reply(&"x".repeat(MAX_REPLY + 1)).is_err());
        // A kernel message glued to the end of the reply's line.
        let glued = "{\"name\":\"dens04\"}[   30.590429] IPv6: cpv-eu-5: link becomes ready\n";
        assert_eq!(parse_reply(glued).unwrap()["name"], "dens04");
        // One printed inside the reply (seen in CI after a board's reboot).
        let inside = "{\"status\":\"Installed\",\"[    2.596077] IPv6: ADDRCONF(NETDEV_CHANGE): \
                      eth0: link becomes ready\nmemory_in_use\":1528}\n";
        assert_eq!(parse_reply(inside).unwrap()["memory_in_use"], 1528);
    }

    #[test]
    fn kernel_messages_are_cut_out_of_a_page() {
        let page = "app=status\nbackend=jail[   11.725121] 5fa0: b3f0b00e 001498dc\n\n\
                    hostname=eu-1\n[   11.7] memhog invoked oom-killer\nuptime_s=11.64\n\
                    data=a[1]b\n";
        assert_eq!(
            without_kernel_messages(page),
            "app=status\nbackend=jail\nhostname=eu-1\nuptime_s=11.64\ndata=a[1]b\n"
        );
    }

    #[test]
    fn polls_end_by_the_clock_and_with_the_condition() {
        let cmd = poll_until("[ -S /run/x ]", 30);
        assert!(cmd.ends_with("; [ -S /run/x ]"), "{cmd}");
        // A slow condition (2 s, as on a busy emulated board) against a 2 s bound: one round
        // and the final check, where a count of two rounds ran three checks in 7 s.
        let dir = std::env::temp_dir().join(format!("poll-until-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rounds = dir.join("rounds");
        let cond = format!("{{ echo r >>{}; sleep 2; false; }}", rounds.display());
        let status = Command::new("sh")
            .arg("-c")
            .arg(poll_for(&cond, 2.0))
            .status()
            .unwrap();
        let counted = std::fs::read_to_string(&rounds).unwrap().lines().count();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            !status.success(),
            "a condition that never holds fails the poll"
        );
        assert_eq!(counted, 2, "checks made");
    }

    #[test]
    fn a_blank_flash_is_sparse_and_removed_on_drop() {
        let f = Flash::blank("unit", 256).unwrap();
        let meta = std::fs::metadata(&f.path).unwrap();
        assert_eq!(meta.len(), 256 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() < 64, "not sparse: {} blocks", meta.blocks());
        let p = f.path.clone();
        drop(f);
        assert!(!p.exists());
    }
}
