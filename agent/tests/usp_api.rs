//! The HTTP API and dashboard of `cpevisor-controller serve` against real agents: a real
//! mosquitto with TLS, three agents hosted in this process (as in usp_serve.rs), signed
//! packages on the test world's HTTP server, the controller's binary with its SQLite
//! database and `--http`, and Debian's chromium as the dashboard's browser.
//!
//! In order: serve refuses an API without a token and a token file others can read; the API
//! refuses requests without the right token (401) and serves the dashboard's files to anyone;
//! a deployment created through the API converges on every agent, seen through the API, which
//! says what the `--db` commands say; a rollout started through the API goes through its
//! canary and waves, its progress per wave readable; hostile and wrong requests get the right
//! status with a JSON error; the dashboard, loaded in headless chromium with the token in the
//! URL fragment, shows the fleet's agents, the rollout's progress and one agent's detail
//! (screenshots kept under target/dashboard/).

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/usp.rs"]
mod usp_common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentd::World;
use fleet::{broker_for_fleet, query, serve, sleeper, start_agent, wait_for, Member, MemberSpec};
use serde_json::{json, Value};

const CTL_ID: &str = "self::api-ctl";
const TOKEN: &str = "test-token-5f0c9e2a71d84b3c";
const AGENTS: usize = 3;

/// One HTTP/1.1 request to the API on `port`: (status, JSON body).
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let (status, raw) = http_raw(port, method, path, token, body);
    (status, serde_json::from_slice(&raw).unwrap_or(Value::Null))
}

fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before taking the whole body.
    let _ = c.write_all(body);
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 4;
    (status, out[at..].to_vec())
}

fn get(port: u16, path: &str) -> Value {
    let (st, v) = http(port, "GET", path, Some(TOKEN), b"");
    assert_eq!(st, 200, "GET {path}: {v}");
    v
}

fn post(port: u16, path: &str, body: Value) -> (u16, Value) {
    http(port, "POST", path, Some(TOKEN), body.to_string().as_bytes())
}

/// The versions of `app` the API's inventory says each agent of model cpe-a has.
fn api_versions(port: u16, app: &str) -> Vec<(String, String)> {
    get(port, "/api/v1/agents")["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["model"] == "cpe-a")
        .map(|a| {
            let v = a["dus"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == app)
                .map(|d| d["version"].as_str().unwrap().to_string())
                .unwrap_or_default();
            (a["endpoint_id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// The port serve's log names for its API.
fn api_port(log: &Path) -> u16 {
    let mut port = 0;
    wait_for("serve's API address", 30, log, || {
        let text = fs::read_to_string(log).unwrap_or_default();
        port = text
            .lines()
            .find_map(|l| l.split("dashboard on http://127.0.0.1:").nth(1))
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(0);
        port != 0
    });
    port
}

/// The target directory (`target/`), from this test's executable in `target/<profile>/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Debian's chromium, headless, on `url` with `args`; its stdout. No chromium is a failure.
fn chromium(profile: &Path, args: &[String], url: &str) -> String {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "chromium is not installed: the dashboard is checked in a real browser; `make setup` installs it (Debian's chromium package)"
    );
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium");
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

#[test]
fn api_and_dashboard_drive_the_fleet() {
    let world = World::new("usp-api");
    let (broker, agent_cert) = broker_for_fleet(&world, "api-agent");
    let publish =
        |version: &str| world.publish(&sleeper("svc", version, 8), &format!("svc-{version}.cpkg"));
    let (url1, url2) = (publish("1.0"), publish("2.0"));
    // Too big for the small agent's budget: its install fails with the agent's 7227.
    let url_big = world.publish(&sleeper("big", "1", 16), "big-1.cpkg");
    let cfg = usp_common::ctl_config(&broker, &world.root, CTL_ID, true, json!({}));
    let db = world.root.join("fleet.db");
    let tokens = world.root.join("api-tokens");
    fs::write(&tokens, format!("# the operators\n{TOKEN}\n")).unwrap();

    // An API without a token, or with a token file others can read, is refused at start.
    let cfg_s = cfg.to_str().unwrap();
    let db_s = db.to_str().unwrap();
    let tok_s = tokens.to_str().unwrap();
    let (code, _, err) = usp_common::run_ctl([
        "serve",
        "--config",
        cfg_s,
        "--db",
        db_s,
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--api-token-file"), "{err}");
    fs::set_permissions(&tokens, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = usp_common::run_ctl([
        "serve",
        "--config",
        cfg_s,
        "--db",
        db_s,
        "--http",
        "127.0.0.1:0",
        "--api-token-file",
        tok_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    fs::set_permissions(&tokens, fs::Permissions::from_mode(0o600)).unwrap();

    let log = world.root.join("serve.log");
    let srv = serve(
        &cfg,
        &db,
        &log,
        &["--http", "127.0.0.1:0", "--api-token-file", tok_s],
    );
    let port = api_port(&log);

    // Auth: no token, a wrong one, another scheme: 401 with a JSON error; the right one: 200.
    for token in [None, Some("wrong-token-0000000000"), Some(&TOKEN[1..])] {
        let (st, v) = http(port, "GET", "/api/v1/summary", token, b"");
        assert_eq!(st, 401, "{token:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
    }
    let (st, raw) = http_raw(port, "GET", "/api/v1/agents", None, b"");
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(get(port, "/api/v1/summary")["agents"]["total"], 0);
    // The dashboard's files need no token and hold no data.
    let (st, page) = http_raw(port, "GET", "/", None, b"");
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&page).contains("/dashboard.js"));
    assert_eq!(http_raw(port, "GET", "/dashboard.js", None, b"").0, 200);

    let fleet: Vec<Member> = (1..=AGENTS)
        .map(|i| {
            let id = format!("os::api-{i}");
            let spec = MemberSpec {
                id: &id,
                model: "cpe-a",
                budget_mib: Some(64),
            };
            start_agent(&world, &broker, &agent_cert, CTL_ID, &spec)
        })
        .collect();
    let small = MemberSpec {
        id: "os::api-small",
        model: "cpe-s",
        budget_mib: Some(8),
    };
    let _small = start_agent(&world, &broker, &agent_cert, CTL_ID, &small);
    wait_for("the fleet's inventory through the API", 60, &log, || {
        let v = get(port, "/api/v1/agents");
        let a = v["agents"].as_array().unwrap();
        a.len() == AGENTS + 1 && a.iter().all(|a| a["inventory_at"].is_number())
    });
    let one = get(port, "/api/v1/agents/os%3A%3Aapi-1");
    assert_eq!(one["endpoint_id"], "os::api-1");
    assert_eq!(one["model"], "cpe-a");
    assert_eq!(one["exec_envs"][0]["budget_kib"], 64 * 1024, "{one}");
    let page = get(port, "/api/v1/agents?limit=2");
    assert_eq!(page["agents"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "os::api-2");
    let rest = get(port, "/api/v1/agents?limit=3&after=os%3A%3Aapi-2");
    assert_eq!(rest["agents"][0]["endpoint_id"], "os::api-3");
    assert_eq!(rest["agents"][1]["endpoint_id"], "os::api-small");
    assert!(rest["next"].is_null());

    // A deployment through the API converges on every agent.
    let t0 = Instant::now();
    let (st, d) = post(
        port,
        "/api/v1/deployments",
        json!({"name": "svc", "url": url1, "version": "1.0", "selector": {"model": "cpe-a"}}),
    );
    assert_eq!(st, 201, "{d}");
    wait_for(
        "svc 1.0 on the fleet, seen through the API",
        120,
        &log,
        || api_versions(port, "svc").iter().all(|(_, v)| v == "1.0"),
    );
    let converged = t0.elapsed().as_secs_f64();
    for m in &fleet {
        let dus = m.agent.snapshot().deployment_units;
        assert_eq!(dus.len(), 1, "{}", m.id);
        assert_eq!(dus[0].version, "1.0", "{}", m.id);
    }
    // The API says what the --db commands say: one function makes both.
    let deps = get(port, "/api/v1/deployments");
    assert_eq!(deps, query(&db, "deployments"));
    assert_eq!(deps["deployments"][0]["installed"], AGENTS, "{deps}");
    let summary = get(port, "/api/v1/summary");
    assert_eq!(
        summary["agents"],
        json!({"total": AGENTS + 1, "online": AGENTS + 1})
    );
    assert_eq!(
        summary["apps"],
        json!([{"name": "svc", "version": "1.0", "agents": AGENTS, "not_installed": 0}])
    );

    // A rollout through the API: canary of 1, then waves of 1.
    let t1 = Instant::now();
    let (st, r) = post(
        port,
        "/api/v1/rollouts",
        json!({"name": "svc", "url": url2, "version": "2.0", "selector": {"model": "cpe-a"},
               "canary": 1, "wave": 1, "max_failures": "50%"}),
    );
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["targets"], AGENTS);
    let id = r["id"].as_i64().unwrap();
    let path = format!("/api/v1/rollouts/{id}");
    let mut seen_progress = Vec::new();
    wait_for("the rollout done, through the API", 180, &log, || {
        let v = get(port, &path);
        let done = v["targets"]["done"].as_i64().unwrap();
        if seen_progress.last() != Some(&done) {
            seen_progress.push(done);
        }
        v["state"] == "done"
    });
    let rolled = t1.elapsed().as_secs_f64();
    let v = get(port, &path);
    assert_eq!(v["targets"]["done"], AGENTS, "{v}");
    let waves = v["waves"].as_array().unwrap();
    assert_eq!(waves.len(), AGENTS, "canary and two waves of one: {v}");
    for (i, w) in waves.iter().enumerate() {
        assert_eq!(w["wave"], i as i64);
        assert_eq!(w["agents"], 1);
        assert_eq!(w["targets"]["done"], 1, "{w}");
    }
    assert_eq!(v["failures"], json!([]));
    assert_eq!(
        get(port, "/api/v1/rollouts")["rollouts"][0]["state"],
        "done"
    );
    wait_for("svc 2.0 everywhere, through the API", 60, &log, || {
        api_versions(port, "svc").iter().all(|(_, v)| v == "2.0")
    });
    // A done rollout cannot be paused: 409 saying why.
    let (st, e) = post(port, &format!("{path}/pause"), json!({}));
    assert_eq!(st, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("done"), "{e}");

    // A deployment the small agent's admission refuses: its fault code in the summary.
    let (st, e) = post(
        port,
        "/api/v1/deployments",
        json!({"name": "big", "url": url_big, "version": "1", "selector": {"model": "cpe-s"}}),
    );
    assert_eq!(st, 201, "{e}");
    wait_for("the small agent's refusal in the summary", 60, &log, || {
        get(port, "/api/v1/summary")["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["agent"] == "os::api-small" && f["fault_code"] == 7227)
    });

    // Wrong and hostile requests: the right status, a JSON error naming the problem.
    let big = vec![b' '; 100 * 1024];
    let (st, e) = http(port, "POST", "/api/v1/deployments", Some(TOKEN), &big);
    assert_eq!(st, 413, "{e}");
    assert!(e["error"].as_str().unwrap().contains("at most"), "{e}");
    let (st, e) = http(
        port,
        "POST",
        "/api/v1/deployments",
        Some(TOKEN),
        b"{\"name\": ",
    );
    assert_eq!(st, 400, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("malformed JSON"),
        "{e}"
    );
    let (st, e) = post(
        port,
        "/api/v1/deployments",
        json!({"name": "svc", "url": url1}),
    );
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("`version`"), "{e}");
    let (st, e) = post(
        port,
        "/api/v1/rollouts",
        json!({"name": "svc", "url": url1, "version": "3", "wave": "200%"}),
    );
    assert_eq!(st, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("`wave`"), "{e}");
    let (st, e) = http(port, "GET", "/api/v1/rollouts/999", Some(TOKEN), b"");
    assert_eq!(st, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("999"), "{e}");
    assert_eq!(post(port, "/api/v1/rollouts/999/resume", json!({})).0, 404);
    assert_eq!(http(port, "GET", "/api/v1/frob", Some(TOKEN), b"").0, 404);
    assert_eq!(http(port, "GET", "/etc/passwd", None, b"").0, 404);
    assert_eq!(
        http(port, "PUT", "/api/v1/deployments", Some(TOKEN), b"{}").0,
        405
    );
    let huge_head = format!(
        "GET /api/v1/summary?{} HTTP/1.1\r\n\r\n",
        "a".repeat(20_000)
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = c.write_all(huge_head.as_bytes());
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // Nothing of that changed the fleet's desired state.
    assert_eq!(
        get(port, "/api/v1/deployments")["deployments"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The dashboard in a real browser, the token in the fragment.
    let shots = target_dir().join("dashboard");
    fs::create_dir_all(&shots).unwrap();
    let profile = world.root.join("chromium");
    let base = format!("http://127.0.0.1:{port}/");
    let dom = chromium(
        &profile,
        &["--dump-dom".into()],
        &format!("{base}#token={TOKEN}"),
    );
    for m in &fleet {
        assert!(
            dom.contains(&format!("data-agent=\"{}\"", m.id)),
            "{} not on the dashboard:\n{dom}",
            m.id
        );
    }
    assert!(dom.contains(&format!("data-rollout=\"{id}\"")), "{dom}");
    assert!(dom.contains(&format!("{AGENTS}/{AGENTS} done")), "{dom}");
    assert!(dom.contains("data-state=\"done\""), "{dom}");
    assert!(dom.contains("canary: 1/1 done"), "{dom}");
    assert!(dom.contains("svc"), "{dom}");
    assert!(!dom.contains("The token was refused"), "{dom}");
    assert!(
        dom.contains("data-failure=\"os::api-small\"") && dom.contains("7227"),
        "the refused install with its fault code: {dom}"
    );
    let detail = chromium(
        &profile,
        &["--dump-dom".into()],
        &format!("{base}#token={TOKEN}&agent=os%3A%3Aapi-2"),
    );
    assert!(detail.contains("data-agent=\"os::api-2\""), "{detail}");
    assert!(detail.contains("2.0"), "{detail}");
    assert!(detail.contains("cpe-a"), "{detail}");
    // A wrong token: the login form, no data.
    let refused = chromium(
        &profile,
        &["--dump-dom".into()],
        &format!("{base}#token=not-the-token-00000000"),
    );
    assert!(refused.contains("The token was refused"), "{refused}");
    assert!(!refused.contains("data-agent=\"os::api-1\""), "{refused}");
    for (name, url) in [
        ("fleet.png", format!("{base}#token={TOKEN}")),
        (
            "agent.png",
            format!("{base}#token={TOKEN}&agent=os%3A%3Aapi-1"),
        ),
    ] {
        let file = shots.join(name);
        let _ = fs::remove_file(&file);
        chromium(
            &profile,
            &[
                format!("--screenshot={}", file.display()),
                "--window-size=1280,1400".into(),
                "--hide-scrollbars".into(),
            ],
            &url,
        );
        let png = fs::read(&file).unwrap_or_default();
        assert!(
            png.starts_with(b"\x89PNG"),
            "no screenshot at {}",
            file.display()
        );
    }
    println!(
        "api: deployment converged on {AGENTS} agents in {converged:.1} s, rollout done in {rolled:.1} s (done counts seen {seen_progress:?}); screenshots in {}",
        shots.display()
    );
    assert_eq!(srv.terminate(20), Some(0), "serve's exit on SIGTERM");
}
