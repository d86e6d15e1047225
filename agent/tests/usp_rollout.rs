//! Rollouts of `cpevisor-controller serve` against real agents: a real mosquitto with TLS,
//! eight agents hosted in this process (each its own `Agent`, state dir, MQTT session and
//! EndpointID, as in usp_serve.rs), signed packages on a loopback HTTP server of this test's
//! own, which can serve a corrupted copy of a package to chosen downloads, and the
//! controller's binary with its SQLite database.
//!
//! One fleet on svc 1.0, then in order: (a) a rollout of 2.0 with a canary of 1 and waves of 3,
//! the second and third download of 2.0 corrupted: the canary takes it, the first wave fails
//! on two of its three agents (the agents' own verification refuses the package), which passes
//! the 50% threshold and pauses the rollout by itself, with the other four agents untouched;
//! (b) rollback: the two agents that took 2.0 go back to 1.0, nobody else gets an operation,
//! the 1.0 deployment is the active one again; (c) a rollout of 3.0 whose `serve` is killed
//! while its first wave's three agents are downloading, paused while it is down, started again
//! (still paused, no new wave), resumed: it completes with one operation per agent and one
//! download each.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/usp.rs"]
mod usp_common;

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentd::World;
use fleet::{broker_for_fleet, serve, sleeper, start_agent, wait_for, Member, MemberSpec};
use serde_json::{json, Value};

const CTL_ID: &str = "self::rollout-ctl";
const AGENTS: usize = 8;
/// serve's flags: an operation journaled by a killed serve and never sent ends as lost this
/// soon.
const OP_TIMEOUT: &[&str] = &["--op-timeout", "10"];

/// What the package server does: whole downloads (GETs without `Range`) of `path` are
/// counted, and those whose number is in `corrupt` get a copy with one byte changed.
#[derive(Default)]
struct Rule {
    counts: std::collections::HashMap<String, u32>,
    corrupt: Option<(String, HashSet<u32>)>,
    /// Whole downloads of this path answer only after this long.
    delay: Option<(String, Duration)>,
}

/// A loopback HTTP/1.1 server of the files in `dir`, following `rule`.
fn package_server(dir: PathBuf, rule: Arc<Mutex<Rule>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (dir, rule) = (dir.clone(), rule.clone());
            std::thread::spawn(move || serve_one(conn, &dir, &rule));
        }
    });
    port
}

fn serve_one(mut conn: TcpStream, dir: &Path, rule: &Mutex<Rule>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut ranged = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        ranged |= h.to_ascii_lowercase().starts_with("range:");
    }
    let Ok(mut body) = fs::read(dir.join(&path)) else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let mut wait = None;
    if !ranged {
        let mut rule = rule.lock().unwrap();
        if let Some((p, d)) = &rule.delay {
            wait = (*p == path).then_some(*d);
        }
        let n = {
            let c = rule.counts.entry(path.clone()).or_insert(0);
            *c += 1;
            *c
        };
        if let Some((p, which)) = &rule.corrupt {
            if *p == path && which.contains(&n) {
                let mid = body.len() / 2;
                body[mid] ^= 0xff;
            }
        }
    }
    if let Some(d) = wait {
        std::thread::sleep(d);
    }
    // A ranged request (the agent's probe of the package head) gets the whole file: the
    // agent reads what it asked for of a 200.
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
}

/// `cpevisor-controller ARGS --db DB --json`, which must succeed.
fn ctl(db: &Path, args: &[&str]) -> Value {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.extend(["--db".as_ref(), db.as_os_str(), "--json".as_ref()]);
    let (code, v, err) = usp_common::run_ctl(all);
    assert_eq!(code, 0, "{args:?}: {err}");
    v
}

fn status(db: &Path, id: &str) -> Value {
    ctl(db, &["rollout", "status", id])
}

/// The version of svc each agent runs, by the agents' own state.
fn versions(fleet: &[Member]) -> Vec<(String, String)> {
    fleet
        .iter()
        .map(|m| {
            let dus = m.agent.snapshot().deployment_units;
            assert!(dus.len() <= 1, "{}: {} DUs", m.id, dus.len());
            let v = dus.first().map(|d| d.version.clone()).unwrap_or_default();
            (m.id.clone(), v)
        })
        .collect()
}

fn on(fleet: &[Member], version: &str) -> Vec<String> {
    versions(fleet)
        .into_iter()
        .filter(|(_, v)| v == version)
        .map(|(id, _)| id)
        .collect()
}

/// The journal's operations for `deployment`.
fn ops(db: &Path, deployment: i64) -> Vec<Value> {
    ctl(db, &["operations", "--limit", "1000"])["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["deployment"] == deployment)
        .cloned()
        .collect()
}

fn agents_in(status: &Value, state: &str) -> Vec<String> {
    status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == state)
        .map(|a| a["agent"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn rollout_canary_waves_pause_rollback_and_restart() {
    let world = World::new("usp-rollout");
    let (broker, agent_cert) = broker_for_fleet(&world, "rollout-agent");
    let rule = Arc::new(Mutex::new(Rule::default()));
    let port = package_server(world.www.clone(), rule.clone());
    let publish = |version: &str| {
        let file = format!("svc-{version}.cpkg");
        world.publish(&sleeper("svc", version, 8), &file);
        (format!("http://127.0.0.1:{port}/{file}"), file)
    };
    let (url1, _) = publish("1.0");
    let (url2, file2) = publish("2.0");
    let (url3, file3) = publish("3.0");
    let cfg = usp_common::ctl_config(&broker, &world.root, CTL_ID, true, json!({}));
    let db = world.root.join("fleet.db");
    let log = world.root.join("serve.log");
    let mut srv = serve(&cfg, &db, &log, OP_TIMEOUT);
    let fleet: Vec<Member> = (1..=AGENTS)
        .map(|i| {
            let id = format!("os::r-{i}");
            let spec = MemberSpec {
                id: &id,
                model: "cpe-a",
                budget_mib: None,
            };
            start_agent(&world, &broker, &agent_cert, CTL_ID, &spec)
        })
        .collect();
    wait_for("inventory of the fleet", 60, &log, || {
        let v = ctl(&db, &["agents"]);
        let a = v["agents"].as_array().unwrap();
        a.len() == AGENTS && a.iter().all(|a| a["inventory_at"].is_number())
    });
    // Everyone on 1.0 the plain way first.
    let d1 = ctl(&db, &["deploy", "svc", &url1, "--version", "1.0"])["id"]
        .as_i64()
        .unwrap();
    wait_for("svc 1.0 everywhere", 120, &log, || {
        on(&fleet, "1.0").len() == AGENTS
    });
    // The inventory has caught up with the agents (the rollout's targets record 1.0).
    wait_for("the inventory of 1.0", 60, &log, || {
        ctl(&db, &["deployments"])["deployments"][0]["installed"] == AGENTS
    });

    // (a) 2.0: the 2nd and 3rd whole downloads are corrupted.
    rule.lock().unwrap().corrupt = Some((file2.clone(), HashSet::from([2, 3])));
    let t0 = Instant::now();
    let started = ctl(
        &db,
        &[
            "rollout",
            "start",
            "svc",
            &url2,
            "--version",
            "2.0",
            "--canary",
            "1",
            "--wave",
            "3",
            "--max-in-flight",
            "3",
            "--max-failures",
            "50%",
        ],
    );
    assert_eq!(started["targets"], AGENTS, "{started}");
    assert_eq!(started["canary"], 1, "{started}");
    let id = started["id"].as_i64().unwrap().to_string();
    let d2 = started["deployment"].as_i64().unwrap();
    wait_for("the rollout pausing itself", 120, &log, || {
        let s = status(&db, &id);
        s["state"] == "paused" && s["targets"]["active"] == 0
    });
    let paused_after = t0.elapsed().as_secs_f64();
    // Nothing more goes out while it is paused.
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&db, &id);
    println!(
        "usp rollout: paused by itself {paused_after:.1} s after the start: {}",
        s["reason"]
    );
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(s["wave"], 1, "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .starts_with("wave 1: 2 of 3 failed"),
        "{s}"
    );
    let done = agents_in(&s, "done");
    let failed = agents_in(&s, "failed");
    let pending = agents_in(&s, "pending");
    assert_eq!((done.len(), failed.len(), pending.len()), (2, 2, 4), "{s}");
    for a in s["agents"].as_array().unwrap() {
        if a["state"] == "failed" {
            assert!(
                a["fault_code"].as_i64().unwrap() > 0,
                "the agent's fault: {a}"
            );
            println!(
                "usp rollout: {} failed: {} {}",
                a["agent"], a["fault_code"], a["fault_message"]
            );
        }
    }
    let mut took = on(&fleet, "2.0");
    took.sort();
    assert_eq!(took, done, "the agents that report done run 2.0");
    assert_eq!(on(&fleet, "1.0").len(), AGENTS - 2);
    let o2 = ops(&db, d2);
    assert_eq!(
        o2.len(),
        4,
        "the canary and one wave of 3, nobody else: {o2:?}"
    );
    assert!(o2
        .iter()
        .all(|o| !pending.contains(&o["agent"].as_str().unwrap().to_string())));
    assert_eq!(
        rule.lock().unwrap().counts[&file2],
        4,
        "one download per agent"
    );

    // (b) rollback: the two on 2.0 go back to 1.0; nobody else gets an operation.
    let t1 = Instant::now();
    ctl(&db, &["rollout", "rollback", &id]);
    wait_for("the rollback", 120, &log, || {
        status(&db, &id)["state"] == "rolled_back"
    });
    let rolled_back_in = t1.elapsed().as_secs_f64();
    println!("usp rollout: rolled back in {rolled_back_in:.1} s");
    assert_eq!(on(&fleet, "1.0").len(), AGENTS, "{:?}", versions(&fleet));
    let s = status(&db, &id);
    assert_eq!(agents_in(&s, "rolled_back"), done, "{s}");
    assert_eq!(agents_in(&s, "failed"), failed, "{s}");
    assert_eq!(agents_in(&s, "pending"), pending, "{s}");
    let o2 = ops(&db, d2);
    let rollbacks: Vec<&Value> = o2.iter().filter(|o| o["purpose"] == "rollback").collect();
    assert_eq!(rollbacks.len(), 2, "{o2:?}");
    for o in &rollbacks {
        assert_eq!(o["kind"], "update", "{o}");
        assert_eq!(o["state"], "done", "{o}");
        assert!(
            done.contains(&o["agent"].as_str().unwrap().to_string()),
            "{o}"
        );
    }
    let deps = ctl(&db, &["deployments"]);
    let state_of = |id: i64| {
        deps["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of(d1), "active", "{deps}");
    assert_eq!(state_of(d2), "removed", "{deps}");

    // (c) 3.0, its serve killed while the first wave is in flight: the package server holds
    // each download of 3.0 for 3 s, and serve is killed once the wave's three agents are
    // waiting for theirs.
    {
        let mut r = rule.lock().unwrap();
        r.corrupt = None;
        r.delay = Some((file3.clone(), Duration::from_secs(3)));
    }
    let started = ctl(
        &db,
        &[
            "rollout",
            "start",
            "svc",
            &url3,
            "--version",
            "3.0",
            "--canary",
            "1",
            "--wave",
            "3",
            "--max-in-flight",
            "3",
            "--max-failures",
            "50%",
        ],
    );
    let id3 = started["id"].as_i64().unwrap().to_string();
    let d3 = started["deployment"].as_i64().unwrap();
    assert_eq!(started["targets"], AGENTS, "{started}");
    wait_for("the first wave's downloads", 120, &log, || {
        rule.lock()
            .unwrap()
            .counts
            .get(&file3)
            .copied()
            .unwrap_or(0)
            == 4
    });
    drop(srv);
    let paused = ctl(&db, &["rollout", "pause", &id3]);
    assert_eq!(paused["state"], "paused", "{paused}");
    let in_flight_at_kill = ops(&db, d3).iter().filter(|o| o["state"] == "sent").count();
    assert_eq!(
        in_flight_at_kill, 3,
        "the wave's operations were out when serve was killed"
    );
    srv = serve(&cfg, &db, &log, OP_TIMEOUT);
    // The restarted serve reads every agent again and settles what the first one sent; the
    // rollout stays paused: no second wave.
    let restarted = usp_common_now();
    wait_for("the restarted serve's first sweep", 60, &log, || {
        ctl(&db, &["agents"])["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["inventory_at"].as_i64().unwrap_or(0) > restarted)
    });
    std::thread::sleep(Duration::from_secs(3));
    let s = status(&db, &id3);
    assert_eq!(s["state"], "paused", "{s}");
    assert_eq!(s["wave"], 1, "{s}");
    assert!(
        s["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["wave"].as_i64().unwrap_or(-1) <= 1),
        "no target in a later wave: {s}"
    );
    let resumed = ctl(&db, &["rollout", "resume", &id3]);
    assert_eq!(resumed["state"], "running", "{resumed}");
    let t2 = Instant::now();
    wait_for("the resumed rollout done", 120, &log, || {
        status(&db, &id3)["state"] == "done"
    });
    println!(
        "usp rollout: serve killed with {in_flight_at_kill} operation(s) in flight; resumed and done {:.1} s later",
        t2.elapsed().as_secs_f64()
    );
    assert_eq!(on(&fleet, "3.0").len(), AGENTS, "{:?}", versions(&fleet));
    // Each agent: one operation done; any other one is an operation the killed serve
    // journaled but never got out (lost, then sent again), never a second one the agent ran.
    let o3 = ops(&db, d3);
    let mut resent = 0;
    for m in &fleet {
        let mine: Vec<&Value> = o3.iter().filter(|o| o["agent"] == m.id.as_str()).collect();
        let done: Vec<&&Value> = mine.iter().filter(|o| o["state"] == "done").collect();
        assert_eq!(done.len(), 1, "{}: one operation done: {mine:?}", m.id);
        for o in mine.iter().filter(|o| o["state"] != "done") {
            assert_eq!(o["state"], "lost", "{}: {o}", m.id);
            resent += 1;
        }
    }
    println!(
        "usp rollout: {resent} operation(s) journaled by the killed serve were not out; sent again"
    );
    assert_eq!(
        rule.lock().unwrap().counts[&file3],
        AGENTS as u32,
        "one download per agent: no agent was sent the update twice"
    );
    let s = status(&db, &id3);
    assert_eq!(agents_in(&s, "done").len(), AGENTS, "{s}");
    let size = fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
        + fs::metadata(format!("{}-wal", db.display()))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("usp rollout: database and WAL {size} bytes for {AGENTS} agents and 3 rollouts");
    drop(srv);
    for m in fleet {
        m.session.stop();
        m.agent.shutdown();
    }
}

fn usp_common_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
