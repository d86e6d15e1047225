//! The fleet controller at scale: a real `cpevisor-controller serve` (SQLite) rolls an app out,
//! canary then waves, to N simulated agents, each the agent's own USP stack over its own
//! MQTT 5 session with TLS to one real mosquitto on loopback (common/simfleet.rs says exactly
//! what is real and what is simulated). The rollout counts only once `rollout status` says
//! done with every target done and every agent's own store holds the new version.
//!
//! `cargo test` runs N = 50. `make bench` (tests/src/bench/fleet.rs) runs the release build with
//! `CPEVISOR_FLEET_SIZES=1000,5000,10000` and `CPEVISOR_FLEET_BENCH_DIR` set: after each N the
//! figures so far go to `fleet.json` there, and a size that fails ends the run with its reason
//! recorded (the largest completed N is the figure).

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/simfleet.rs"]
mod simfleet;
#[path = "common/usp.rs"]
mod usp_common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentd::{App, World};
use cpevisor_usp::broker::{BrokerOptions, TestBroker};
use fleet::{serve, Serve};
use serde_json::{json, Value};
use simfleet::SimFleet;

const CTL_ID: &str = "self::scale-ctl";
/// Operations in flight (serve's bound and the rollout's).
const IN_FLIGHT: usize = 128;

fn sizes() -> Vec<usize> {
    std::env::var("CPEVISOR_FLEET_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty() && v.iter().all(|n| (1..=20_000).contains(n)))
        .unwrap_or_else(|| vec![50])
}

fn bench_dir() -> Option<PathBuf> {
    std::env::var_os("CPEVISOR_FLEET_BENCH_DIR").map(PathBuf::from)
}

/// RLIMIT_NOFILE raised to its hard limit, for this process and the mosquitto it starts (a
/// socket per session on each side). Returns (soft, hard) after.
fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill, then to read.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// `cpevisor-controller ARGS --db DB --json`: its JSON, or why not.
fn ctl(db: &Path, args: &[&str]) -> Result<Value, String> {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.extend(["--db".as_ref(), db.as_os_str(), "--json".as_ref()]);
    let (code, v, err) = usp_common::run_ctl(all);
    if code != 0 {
        return Err(format!("{args:?}: exit {code}: {err}"));
    }
    Ok(v)
}

/// Polls `done` every `every` until it gives a value; an error after `secs`.
fn wait<T>(
    what: &str,
    secs: u64,
    every: Duration,
    mut done: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = done()? {
            return Ok(v);
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            return Err(format!("{what}: not within {secs} s"));
        }
        std::thread::sleep(every);
    }
}

/// A /proc/PID/status field in kB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The package server: the files of `dir` over HTTP/1.1 on loopback, a thread per connection
/// (python's http.server listens with a backlog of 5: at 128 downloads at once its refused
/// connections made agents' installs fail). Counts (requests, bytes sent).
fn package_server(dir: PathBuf) -> (u16, Arc<[AtomicU64; 2]>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let c = counts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (dir, c) = (dir.clone(), c.clone());
            std::thread::spawn(move || {
                if let Some(n) = serve_file(conn, &dir) {
                    c[0].fetch_add(1, Ordering::Relaxed);
                    c[1].fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    });
    (port, counts)
}

/// Answers one request with the whole file (a ranged request too: the agent reads what it
/// asked for of a 200); the bytes of the body sent.
fn serve_file(mut conn: TcpStream, dir: &Path) -> Option<u64> {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let name = line.split_whitespace().nth(1)?.trim_start_matches('/');
    if name.contains("..") || name.contains('/') {
        return None;
    }
    let Ok(body) = fs::read(dir.join(name)) else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return None;
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).ok()?;
    conn.write_all(&body).ok()?;
    Some(body.len() as u64)
}

/// CPU time (user + system) of process `pid` so far, in seconds (/proc/PID/stat).
fn cpu_s(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces: state
    // is the first, utime the 12th and stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    // SAFETY: sysconf reads a constant of the system; no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// The process whose command line names `dir` (the test's mosquitto: its config is there).
fn pid_of(dir: &Path) -> Option<u32> {
    let needle = dir.display().to_string();
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.starts_with("mosquitto") || cmd.contains("/mosquitto\0"))
            .then_some(())
            .filter(|_| cmd.contains(&needle))
            .map(|_| pid)
    })
}

/// The database's files (the main file, its WAL and shared memory).
fn db_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum()
}

/// One rollout to `n` agents; its figures.
fn run(n: usize) -> Result<Value, String> {
    let world = World::new(&format!("fleet-scale-{n}"));
    // Many agents ask one loopback server at once on a busy 2-core machine: the head probe's
    // 15 s default (a bound against hostile servers) is not what is measured here.
    world.write_config_patched(json!({
        "download_limits": {"deadline_ms": 300_000, "deadline_ms_per_mib": 30_000,
                            "min_rate_bytes_per_s": 1024, "rate_window_ms": 30_000,
                            "probe_deadline_ms": 60_000},
    }));
    let broker = TestBroker::start_with(
        &world.root.join("broker"),
        &BrokerOptions {
            // The fleet, the controller and the CLI's own sessions.
            max_connections: n as i64 + 64,
            max_inflight: 100,
            ..BrokerOptions::default()
        },
    )
    .map_err(|e| format!("mosquitto: {e}"))?;
    let broker_pid = pid_of(&world.root.join("broker"));
    let agent_cert = broker.identity("fleet-agent").map_err(|e| e.to_string())?;
    let app = App {
        autostart: false,
        ..App::new("svc", "1.0")
    };
    world.publish(&app, "svc-1.0.cpkg");
    let (http_port, served) = package_server(world.www.clone());
    let url = format!("http://127.0.0.1:{http_port}/svc-1.0.cpkg");
    let cfg = usp_common::ctl_config(&broker, &world.root, CTL_ID, true, json!({}));
    let db = world.root.join("fleet.db");
    let log = world.root.join("serve.log");
    let in_flight = IN_FLIGHT.to_string();
    let srv: Serve = serve(&cfg, &db, &log, &["--max-in-flight", &in_flight]);
    let serve_pid = srv.0.id();
    let log_tail = || {
        let text = fs::read_to_string(&log).unwrap_or_default();
        // Operations sent and done are one line each per agent: the rest is what tells.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.ends_with(" sent") && !l.ends_with(" done"))
            .collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };

    let ids: Vec<String> = (0..n).map(|i| format!("os::sim-{i:05}")).collect();
    let t_open = Instant::now();
    let fleet = SimFleet::start(
        &world.root,
        &world.config,
        &broker,
        &agent_cert,
        CTL_ID,
        &ids,
    )?;
    let open_s = t_open.elapsed().as_secs_f64();
    let t_conn = Instant::now();
    wait(
        "every session up",
        60 + n as u64 / 20,
        Duration::from_millis(100),
        || Ok((fleet.up() == n as u64).then_some(())),
    )
    .map_err(|e| {
        format!(
            "{e}: {} of {n} up, {} connection errors, last: {:?}; broker: {}",
            fleet.up(),
            fleet.stats.errors.load(Ordering::Relaxed),
            fleet.stats.last_error.lock().unwrap(),
            broker.log_tail()
        )
    })?;
    let connect_s = t_conn.elapsed().as_secs_f64();
    let t_inv = Instant::now();
    wait(
        "the controller's inventory of the fleet",
        120 + n as u64 / 10,
        Duration::from_secs(1),
        || {
            let v = ctl(&db, &["agents"])?;
            let a = v["agents"].as_array().cloned().unwrap_or_default();
            Ok((a.len() == n && a.iter().all(|a| a["inventory_at"].is_number())).then_some(()))
        },
    )
    .map_err(|e| format!("{e}; serve's log:\n{}", log_tail()))?;
    let inventory_s = t_inv.elapsed().as_secs_f64();
    let errors0 = fleet.stats.errors.load(Ordering::Relaxed);

    // The rollout: 1% canary, then waves of 25%, IN_FLIGHT operations at most.
    let (sent0, recv0) = fleet.messages();
    let me = std::process::id();
    let cpu0 = [Some(serve_pid), broker_pid, Some(me)].map(|p| p.map_or(0.0, cpu_s));
    let t0 = Instant::now();
    let started = ctl(
        &db,
        &[
            "rollout",
            "start",
            "svc",
            &url,
            "--version",
            "1.0",
            "--canary",
            "1%",
            "--wave",
            "25%",
            "--max-in-flight",
            &in_flight,
            "--max-failures",
            "5%",
        ],
    )?;
    if started["targets"] != n {
        return Err(format!("the rollout targets {} of {n}", started["targets"]));
    }
    let id = started["id"].as_i64().ok_or("no rollout id")?.to_string();
    let status = wait(
        "the rollout done",
        300 + n as u64 / 5,
        Duration::from_secs(1),
        || {
            let s = ctl(&db, &["rollout", "status", &id])?;
            match s["state"].as_str() {
                Some("done") => Ok(Some(s)),
                Some("running") => Ok(None),
                _ => Err(format!(
                    "the rollout stopped: {} {}",
                    s["state"], s["reason"]
                )),
            }
        },
    )
    .map_err(|e| format!("{e}; serve's log:\n{}", log_tail()))?;
    let rollout_s = t0.elapsed().as_secs_f64();
    let cpu1 = [Some(serve_pid), broker_pid, Some(me)].map(|p| p.map_or(0.0, cpu_s));
    // Its last notifications (the ValueChanges after the install) still on their way.
    std::thread::sleep(Duration::from_secs(2));
    let (sent1, recv1) = fleet.messages();

    // Done means done: every target, every agent's own store, the controller's inventory.
    let targets = status["agents"].as_array().cloned().unwrap_or_default();
    let not_done: Vec<&Value> = targets.iter().filter(|t| t["state"] != "done").collect();
    if targets.len() != n || !not_done.is_empty() {
        return Err(format!(
            "{} of {} targets done ({}); not done: {:?}; serve's log:\n{}",
            targets.len() - not_done.len(),
            targets.len(),
            status["reason"],
            &not_done[..not_done.len().min(5)],
            log_tail()
        ));
    }
    for (id, agent) in &fleet.agents {
        let dus = agent.snapshot().deployment_units;
        if dus.len() != 1 || dus[0].name != "svc" || dus[0].version != "1.0" {
            return Err(format!("{id}: the agent holds {dus:?}"));
        }
    }
    let deps = ctl(&db, &["deployments"])?;
    if deps["deployments"][0]["installed"] != n {
        return Err(format!("the controller counts installs: {deps}"));
    }
    // At rest: the rollout done, nothing changing. A whole reconciliation pass comes every
    // 30 s (`pass_plan::FULL_PASS_EVERY`), so one window of that length holds one.
    // Measured for the bench only (`cargo test` runs this at 50 agents and need not wait).
    let idle_cpu_ms_per_s = bench_dir().map(|_| {
        let rest = Duration::from_secs(30);
        let idle0 = cpu_s(serve_pid);
        std::thread::sleep(rest);
        (cpu_s(serve_pid) - idle0) * 1000.0 / rest.as_secs_f64()
    });
    let rss_kib = proc_kib(serve_pid, "VmHWM:");
    let broker_rss_kib = broker_pid.map(|p| proc_kib(p, "VmHWM:")).unwrap_or(0);
    let sim_rss_kib = proc_kib(std::process::id(), "VmHWM:");
    let threads = proc_kib(std::process::id(), "Threads:");
    drop(srv);
    let db_total = db_bytes(&db);
    let messages = (sent1 - sent0) + (recv1 - recv0);
    let v = json!({
        "agents": n,
        "rollout_s": rollout_s,
        "open_s": open_s, "connect_s": connect_s, "inventory_s": inventory_s,
        "messages": messages, "messages_per_agent": messages as f64 / n as f64,
        "agents_sent": sent1 - sent0, "agents_received": recv1 - recv0,
        "controller_rss_kib": rss_kib, "broker_rss_kib": broker_rss_kib,
        "fleet_process_rss_kib": sim_rss_kib, "fleet_process_threads": threads,
        "package_requests": served[0].load(Ordering::Relaxed),
        "package_bytes_sent": served[1].load(Ordering::Relaxed),
        "db_bytes": db_total, "db_main_bytes": fs::metadata(&db).map(|m| m.len()).unwrap_or(0), "db_bytes_per_agent": db_total as f64 / n as f64,
        "connection_errors": fleet.stats.errors.load(Ordering::Relaxed),
        "connection_errors_during_rollout": fleet.stats.errors.load(Ordering::Relaxed) - errors0,
        // CPU seconds spent during the rollout by serve, mosquitto and the fleet's process.
        "controller_cpu_s": cpu1[0] - cpu0[0], "broker_cpu_s": cpu1[1] - cpu0[1],
        "fleet_cpu_s": cpu1[2] - cpu0[2],
        // serve's CPU at rest afterwards, ms per second.
        "controller_idle_cpu_ms_per_s": idle_cpu_ms_per_s,
        "in_flight": IN_FLIGHT, "workers": simfleet::WORKERS,
    });
    println!("fleet scale: {v}");
    fleet.stop();
    drop(broker);
    Ok(v)
}

#[test]
fn controller_rolls_out_to_a_simulated_fleet() {
    // Built (if stale) before any agent starts: a build under way starves the fleet.
    usp_common::controller();
    cpevisor_agent::LOG_LEVEL.store(0, Ordering::Relaxed);
    let (soft, hard) = raise_nofile();
    let mut runs = Vec::new();
    let mut failure = None;
    for n in sizes() {
        match run(n) {
            Ok(v) => runs.push(v),
            Err(e) => {
                failure = Some(json!({"agents": n, "error": e}));
                break;
            }
        }
        if let Some(dir) = bench_dir() {
            write_out(&dir, &runs, &failure, (soft, hard));
        }
    }
    if let Some(dir) = bench_dir() {
        write_out(&dir, &runs, &failure, (soft, hard));
    }
    assert!(failure.is_none(), "{failure:?}");
}

fn write_out(dir: &Path, runs: &[Value], failure: &Option<Value>, nofile: (u64, u64)) {
    fs::create_dir_all(dir).unwrap();
    let v = json!({
        "runs": runs, "failure": failure,
        "rlimit_nofile": [nofile.0, nofile.1],
        "pid_max": fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default().trim(),
        "mem_total_kib": fs::read_to_string("/proc/meminfo").unwrap_or_default()
            .lines().next().unwrap_or("").split_whitespace().nth(1).unwrap_or("0"),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
    });
    fs::write(
        dir.join("fleet.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
}
