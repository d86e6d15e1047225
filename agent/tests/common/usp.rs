//! Shared by the USP tests: controller config files and `cpevisorctl usp` runs with their JSON.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cpevisor_usp::broker::TestBroker;
use serde_json::{json, Value};

use crate::agentd::CTL;

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

/// Runs `cpevisorctl ARGS`: (exit code, parsed stdout, stderr).
pub fn run_ctl<I, S>(args: I) -> (i32, Value, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(CTL).args(args).output().expect("cpevisorctl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), v, stderr)
}

/// Runs `cpevisorctl usp --config CFG --json ARGS`.
pub fn usp(cfg: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all: Vec<&OsStr> = vec!["usp".as_ref(), "--config".as_ref(), cfg.as_os_str()];
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
