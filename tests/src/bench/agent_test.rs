//! One of the agent crate's integration tests run as a release build for a bench group: the
//! test measures and writes its figures as JSON into a directory the group names (so a figure
//! only comes from code `cargo test` also checks), under a deadline.

use crate::firmware::timeout_scale;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cargo test --release -p cpevisor-agent --test <test> -- <args> --nocapture` in `root`
/// with `env`, its output into `log` (or nowhere). Returns its exit status, or None when it was
/// still running at `timeout` (scaled by `CPEVISOR_TIMEOUT_SCALE`) and was killed.
pub fn run(
    root: &Path,
    test: &str,
    args: &[&str],
    env: &[(&str, String)],
    log: Option<&Path>,
    timeout: Duration,
) -> Result<Option<ExitStatus>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (stdout, stderr) = match log {
        Some(path) => {
            let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            (
                Stdio::from(f.try_clone().map_err(|e| e.to_string())?),
                Stdio::from(f),
            )
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let mut child = Command::new(&cargo)
        .current_dir(root)
        .args([
            "test",
            "--release",
            "-q",
            "-p",
            "cpevisor-agent",
            "--test",
            test,
            "--",
        ])
        .args(args)
        .arg("--nocapture")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    let deadline = Instant::now() + timeout.mul_f64(timeout_scale());
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The JSON file a test wrote, at most `max` bytes of it.
pub fn read_json(path: &Path, max: u64) -> Result<Value, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}
