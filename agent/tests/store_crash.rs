//! Crash injection on the store's own persistence steps: a child process (this test binary,
//! re-run with `CPEVISOR_CRASH_AT`) is SIGKILLed at a named step, and the parent checks that
//! what is on disk is one of the two states the step separates, and that reopening tidies up.

mod common;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use common::{list_files, Scratch};
use cpevisor_agent::store::{atomic_write, persist_point, Digest, Store};

/// What the child does, chosen by `CHILD_SCENARIO`; `CHILD_DIR` is the state dir.
#[test]
fn crash_child() {
    let (Ok(scenario), Ok(dir)) = (std::env::var("CHILD_SCENARIO"), std::env::var("CHILD_DIR"))
    else {
        return;
    };
    let dir = Path::new(&dir);
    match scenario.as_str() {
        "writes" => {
            for v in ["1", "2", "3"] {
                atomic_write(&dir.join("state.json"), v.as_bytes()).unwrap();
            }
        }
        "blob" => {
            let store = Store::open(dir).unwrap();
            store.put_blob_bytes(b"a kernel image").unwrap();
        }
        "app" => {
            let store = Store::open(dir).unwrap();
            store.create_app_dir("app-1").unwrap();
            fs::write(dir.join("apps/app-1/data.img"), b"data").unwrap();
            store.remove_app_dir("app-1").unwrap();
        }
        "custom" => {
            persist_point("lifecycle.step");
            persist_point("lifecycle.step");
        }
        other => panic!("unknown scenario {other}"),
    }
    // Reaching the end means the crash point was never hit.
    std::process::exit(42);
}

/// Runs a scenario in a child with the given env; returns the signal that ended it, if any.
fn run_child(scenario: &str, dir: &Path, env: &[(&str, &str)]) -> Option<i32> {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("CHILD_SCENARIO", scenario)
        .env("CHILD_DIR", dir)
        .env_remove("CPEVISOR_CRASH_AT")
        .env_remove("CPEVISOR_CRASH_TRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().unwrap();
    if status.signal().is_none() {
        assert_eq!(status.code(), Some(42), "child failed: {status:?}");
    }
    status.signal()
}

#[test]
fn atomic_write_leaves_old_or_new_content() {
    let tmp = Scratch::new("crash-writes");
    let dir = tmp.path();
    let sig = run_child(
        "writes",
        dir,
        &[("CPEVISOR_CRASH_AT", "atomic_write:state.json:synced#2")],
    );
    assert_eq!(sig, Some(9));
    assert_eq!(fs::read(dir.join("state.json")).unwrap(), b"1");

    let sig = run_child(
        "writes",
        dir,
        &[("CPEVISOR_CRASH_AT", "atomic_write:state.json:renamed#2")],
    );
    assert_eq!(sig, Some(9));
    assert_eq!(fs::read(dir.join("state.json")).unwrap(), b"2");

    // Not reached: the third write has no fourth hit.
    assert_eq!(
        run_child(
            "writes",
            dir,
            &[("CPEVISOR_CRASH_AT", "atomic_write:state.json:renamed#4")]
        ),
        None
    );
    assert_eq!(fs::read(dir.join("state.json")).unwrap(), b"3");
    assert_eq!(list_files(dir), vec!["state.json".to_string()]);
}

#[test]
fn trace_records_every_step_with_its_hit_number() {
    let tmp = Scratch::new("crash-trace");
    let trace = tmp.path().join("trace");
    let state = tmp.path().join("state");
    fs::create_dir_all(&state).unwrap();
    assert_eq!(
        run_child(
            "writes",
            &state,
            &[("CPEVISOR_CRASH_TRACE", trace.to_str().unwrap())]
        ),
        None
    );
    let lines: Vec<String> = fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0], "atomic_write:state.json:synced#1");
    assert_eq!(lines[5], "atomic_write:state.json:renamed#3");
    // Steps outside the store (the lifecycle's) work the same way.
    assert_eq!(
        run_child(
            "custom",
            &state,
            &[("CPEVISOR_CRASH_AT", "lifecycle.step#2")]
        ),
        Some(9)
    );
    assert_eq!(
        run_child(
            "custom",
            &state,
            &[("CPEVISOR_CRASH_AT", "lifecycle.step#3")]
        ),
        None
    );
}

#[test]
fn blob_write_is_all_or_nothing() {
    let tmp = Scratch::new("crash-blob");
    let digest = Digest::of(b"a kernel image");
    let dir = tmp.path().join("s1");
    assert_eq!(
        run_child("blob", &dir, &[("CPEVISOR_CRASH_AT", "store.blob:synced")]),
        Some(9)
    );
    let store = Store::open(&dir).unwrap();
    assert!(!store.has_blob(&digest));
    assert!(list_files(&dir).is_empty(), "{:?}", list_files(&dir));

    let dir = tmp.path().join("s2");
    assert_eq!(
        run_child("blob", &dir, &[("CPEVISOR_CRASH_AT", "store.blob:renamed")]),
        Some(9)
    );
    let store = Store::open(&dir).unwrap();
    assert_eq!(
        Digest::of(&fs::read(store.blob_path(&digest)).unwrap()),
        digest
    );
}

#[test]
fn app_removal_is_atomic() {
    let tmp = Scratch::new("crash-app");
    let dir = tmp.path().join("s");
    assert_eq!(
        run_child("app", &dir, &[("CPEVISOR_CRASH_AT", "store.app:detached")]),
        Some(9)
    );
    let store = Store::open(&dir).unwrap();
    assert!(store.list_apps().unwrap().is_empty());
    assert!(list_files(&dir).is_empty(), "{:?}", list_files(&dir));
}
