//! Admission before download: a package whose head declares more memory than its ExecEnv has
//! left, or another architecture, is refused (7227, 7225) after a single 64 KiB Range request,
//! with nothing written to flash; an update of a running app likewise, the old version running.

#[path = "common/agentd.rs"]
mod agentd;
mod common;

use std::fs;

use agentd::{App, World};
use common::Server;

/// Requests for `file` logged by `server` since the last call, as "GET /file range=...".
fn take_requests(server: &Server, file: &str) -> Vec<String> {
    let reqs = server
        .requests()
        .into_iter()
        .filter(|l| l.contains(&format!("/{file} ")))
        .collect();
    let _ = fs::write(&server.log, "");
    reqs
}

fn url(server: &Server, file: &str) -> String {
    server.url("http", "127.0.0.1", file)
}

#[test]
fn packages_that_cannot_fit_are_refused_before_download() {
    let mut w = World::new("admit");
    w.start_daemon(None);
    let server = Server::range(&w.www, &w.root.join("requests.log"), &[]);

    // 40 of the 64 MiB budget taken by a running app.
    let mut filler = App::new("filler", "1.0");
    filler.memory_mib = 40;
    w.publish(&filler, "filler.cpkg");
    w.ctl_json(&["install", &url(&server, "filler.cpkg")])
        .expect("filler installs");
    let full_get = take_requests(&server, "filler.cpkg");
    assert!(
        full_get.iter().any(|l| l.ends_with("range=-")),
        "an admitted package is downloaded in full: {full_get:?}"
    );
    let before = w.state_files();
    let list_before = w.list();

    // 32 MiB declared, 24 left: 7227 after one Range request for the head.
    let mut big = App::new("big", "1.0");
    big.memory_mib = 32;
    w.publish(&big, "big.cpkg");
    let err = w
        .ctl_json(&["install", &url(&server, "big.cpkg")])
        .unwrap_err();
    assert_eq!(err.0, 7227, "{}", err.1);
    assert!(err.1.contains("before download"), "{}", err.1);
    assert!(
        err.1.contains("32 MiB"),
        "the message names the need: {}",
        err.1
    );
    assert_eq!(
        take_requests(&server, "big.cpkg"),
        vec!["GET /big.cpkg range=bytes=0-65535".to_string()],
        "only the head was requested"
    );
    assert_eq!(w.state_files(), before, "nothing written to flash");

    // Another architecture: 7225, same way.
    let mut arm = App::new("armapp", "1.0");
    arm.arch = "aarch64".into();
    w.publish(&arm, "arm.cpkg");
    let err = w
        .ctl_json(&["install", &url(&server, "arm.cpkg")])
        .unwrap_err();
    assert_eq!(err.0, 7225, "{}", err.1);
    assert_eq!(take_requests(&server, "arm.cpkg").len(), 1);
    assert_eq!(w.state_files(), before);

    // An update of the running app to a version that needs more than the budget allows.
    let mut filler2 = App::new("filler", "2.0");
    filler2.memory_mib = 70;
    w.publish(&filler2, "filler-2.cpkg");
    let uuid = list_before["deployment_units"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let err = w
        .ctl_json(&["update", &uuid, &url(&server, "filler-2.cpkg")])
        .unwrap_err();
    assert_eq!(err.0, 7227, "{}", err.1);
    assert_eq!(take_requests(&server, "filler-2.cpkg").len(), 1);
    let du = &w.list()["deployment_units"][0];
    assert_eq!(du["version"], "1.0", "the previous version stays");
    let eu = du["execution_unit_list"][0].as_str().unwrap().to_string();
    w.wait_eu_status(&eu, "Active", 10);

    // A package that fits is still admitted through the same path.
    let mut small = App::new("small", "1.0");
    small.memory_mib = 16;
    w.publish(&small, "small.cpkg");
    w.ctl_json(&["install", &url(&server, "small.cpkg")])
        .expect("a package that fits installs");
    let reqs = take_requests(&server, "small.cpkg");
    assert_eq!(reqs.len(), 2, "head, then the download: {reqs:?}");
    w.stop_daemon();
}

/// A download cut by a power loss (SIGKILL after 8 MiB reached flash) is rolled back as an
/// install, but its `.part` stays: the operator's retry of the same URL resumes with a Range
/// request instead of starting over, and installs.
#[test]
fn a_download_cut_by_a_crash_resumes_on_retry() {
    let mut w = World::new("resume");
    w.write_config(64, 64 << 20);
    let server = Server::range(&w.www, &w.root.join("requests.log"), &[]);
    let mut app = App::new("bulky", "1.0");
    app.pad_bytes = 12 << 20;
    app.autostart = false;
    w.publish(&app, "bulky.cpkg");
    let url = url(&server, "bulky.cpkg");

    w.start_daemon(Some("fetch.part:synced#1"));
    let _ = w.ctl(&["install", &url]);
    assert!(w.wait_killed(), "the agent died at the crash point");
    w.start_daemon(None);
    let parts: Vec<String> = w
        .state_files()
        .into_iter()
        .filter(|f| f.starts_with("downloads/") && f.len() > "downloads/".len())
        .collect();
    assert_eq!(parts.len(), 2, "the .part and its .meta survive: {parts:?}");
    assert!(parts.iter().any(|f| f.ends_with(".part")), "{parts:?}");
    let events = w.du_events();
    assert_eq!(events.len(), 1, "the cut install's event, once: {events:?}");
    assert!(w.list()["deployment_units"].as_array().unwrap().is_empty());
    let _ = take_requests(&server, "bulky.cpkg");

    let du = w.ctl_json(&["install", &url]).expect("the retry installs");
    assert_eq!(du["status"], "Installed");
    let reqs = take_requests(&server, "bulky.cpkg");
    let resumed: Vec<&String> = reqs
        .iter()
        .filter(|r| r.contains("range=bytes=") && !r.ends_with("range=bytes=0-65535"))
        .collect();
    assert_eq!(resumed.len(), 1, "one resumed request: {reqs:?}");
    let from: u64 = resumed[0]
        .rsplit("range=bytes=")
        .next()
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap();
    assert!(
        from >= 8 << 20,
        "resumed from the synced 8 MiB, not 0: {from}"
    );
    assert!(
        !w.state_files()
            .iter()
            .any(|f| f.starts_with("downloads/") && f.len() > "downloads/".len()),
        "nothing left in downloads/"
    );
    w.stop_daemon();
}
