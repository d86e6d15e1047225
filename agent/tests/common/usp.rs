//! Shared by the USP tests: controller config files and `cpevisor-controller` runs with their
//! JSON.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use cpevisor_usp::broker::TestBroker;
use serde_json::{json, Value};

/// The operator's `cpevisor-controller` binary. It belongs to another package, so cargo gives
/// these tests no `CARGO_BIN_EXE_` for it: it is looked for beside this test's own target
/// directory (`target/<profile>/`, the parent of `deps/` holding the test executable), where
/// `cargo test --workspace` or `cargo build` put it. Absent, or older than a source file of
/// the controller or usp crates, it is built once per test process with `$CARGO build -p
/// cpevisor-controller` into that same target directory; concurrent test processes are
/// serialized by cargo's own lock on the build directory.
pub fn controller() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable in <target>/<profile>/deps/")
            .to_path_buf();
        let bin = profile_dir.join("cpevisor-controller");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sources = [root.join("controller"), root.join("usp/src")];
        let built = fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_some_and(|b| sources.iter().all(|d| newest(d) <= b)) {
            return bin;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "cpevisor-controller"])
            .arg("--bin")
            .arg("cpevisor-controller")
            .arg("--manifest-path")
            .arg(root.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("target dir"));
        if profile_dir.file_name() == Some(OsStr::new("release")) {
            cmd.arg("--release");
        }
        let st = cmd
            .status()
            .expect("run cargo to build cpevisor-controller");
        assert!(st.success(), "cargo build -p cpevisor-controller: {st}");
        assert!(bin.exists(), "no {} after building it", bin.display());
        bin
    })
}

/// The newest modification time of the files under `dir` (the epoch when there are none).
fn newest(dir: &Path) -> SystemTime {
    let mut latest = SystemTime::UNIX_EPOCH;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                todo.push(e.path());
            } else if let Ok(t) = m.modified() {
                latest = latest.max(t);
            }
        }
    }
    latest
}

/// Writes a controller's `--config` file for `broker` (with its certificate from the broker's
/// PKI when `cert`), plus the fields of `extra`.
pub fn ctl_config(broker: &TestBroker, dir: &Path, id: &str, cert: bool, extra: Value) -> PathBuf {
    let ident = broker.identity(id).unwrap();
    let mut v = json!({
        "broker_host": broker.host(), "broker_port": broker.port(),
        "ca_file": broker.ca(), "endpoint_id": id,
    });
    if cert {
        v["cert_file"] = json!(ident.cert);
        v["key_file"] = json!(ident.key);
    }
    for (k, x) in extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    let path = dir.join(format!("ctl-{}.json", id.replace(':', "_")));
    fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    path
}

/// Runs `cpevisor-controller ARGS`: (exit code, parsed stdout, stderr).
pub fn run_ctl<I, S>(args: I) -> (i32, Value, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(controller())
        .args(args)
        .output()
        .expect("cpevisor-controller");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v, stderr)
}

/// Runs `cpevisor-controller --config CFG --json ARGS`.
pub fn usp(cfg: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all: Vec<&OsStr> = vec!["--config".as_ref(), cfg.as_os_str()];
    all.push("--json".as_ref());
    all.extend(args.iter().map(|a| OsStr::new(*a)));
    run_ctl(all)
}

/// The one agent's result of a run.
pub fn only(v: &Value) -> &Value {
    let r = v["results"].as_array().expect("results");
    assert_eq!(r.len(), 1, "{v}");
    &r[0]
}

/// The value of parameter `name` (full path or last component) in a result's rows.
pub fn row<'a>(result: &'a Value, name: &str) -> Option<&'a str> {
    result["rows"]
        .as_array()?
        .iter()
        .find(|r| {
            r[0].as_str()
                .is_some_and(|k| k == name || k.ends_with(&format!(".{name}")))
        })
        .and_then(|r| r[1].as_str())
}

/// The notifications of `kind` a result followed.
pub fn events<'a>(result: &'a Value, kind: &str) -> Vec<&'a Value> {
    result["events"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["kind"] == kind).collect())
        .unwrap_or_default()
}
