//! Fleet figures: a real `cpevisor-controller serve` rolling an app out (1% canary, then waves of
//! 25%, 128 operations in flight) to 1,000, 5,000 and 10,000 simulated agents, each the agent's
//! own USP stack (Agent, DataModel, Endpoint) on its own MQTT 5 session with TLS to one
//! mosquitto on loopback, all hosted in one test process on 4 epoll threads
//! (agent/tests/common/simfleet.rs says what is real and what is simulated).
//!
//! The measurement is the agent crate's test `agent/tests/usp_fleet_scale.rs`, run here as a
//! release build with `CPEVISOR_FLEET_SIZES` and `CPEVISOR_FLEET_BENCH_DIR` set; `cargo test`
//! runs the same code at 50 agents. A size's figures exist only when its rollout reached `done`
//! with every target done and every agent holding the new version. Figures: `fleet.agents` (the
//! largest size completed), `fleet.rollout_s.<N>`, `fleet.messages_per_agent`,
//! `fleet.controller_rss_kib`, `fleet.db_bytes_per_agent` (at the largest size, each with the
//! smallest size's value as its peer: the ratio is how the cost grows), and
//! `fleet.rollout_ms_per_agent.<N>` against the smallest size's.

use super::{agent_test, Figure};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The fleet sizes, smallest first.
pub const SIZES: [usize; 3] = [1_000, 5_000, 10_000];
/// Longest the release build plus the three rollouts may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Largest figures file read.
const MAX_FILE: u64 = 256 << 10;

/// Runs the fleet scale test and appends its figures; sizes completed before a failure keep
/// theirs, and the failure's reason is in `fleet.agents`' note.
pub fn figures(root: &Path, figures: &mut Vec<Figure>) -> Result<(), String> {
    let out = root.join("target/bench/fleet");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let sizes: Vec<String> = SIZES.iter().map(|n| n.to_string()).collect();
    let env = [
        ("CPEVISOR_FLEET_BENCH_DIR", out.display().to_string()),
        ("CPEVISOR_FLEET_SIZES", sizes.join(",")),
    ];
    let log = out.join("test.log");
    // Killed at the deadline or failed: the sizes it completed still count.
    let status = agent_test::run(root, "usp_fleet_scale", &[], &env, Some(&log), RUN_TIMEOUT)?;
    let v = agent_test::read_json(&out.join("fleet.json"), MAX_FILE)?;
    figures.extend(fleet_figures(&v)?);
    let test = "`cargo test --release -p cpevisor-agent --test usp_fleet_scale`";
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "{test} failed ({s}); its output is in {}",
            log.display()
        )),
        None => Err(format!(
            "{test} did not finish within {RUN_TIMEOUT:?}; its output is in {}",
            log.display()
        )),
    }
}

fn number(v: &Value, key: &str) -> Result<f64, String> {
    v[key]
        .as_f64()
        .ok_or_else(|| format!("fleet bench output has no number {key:?}: {v}"))
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

/// The figures of the test's `fleet.json`: `{runs: [...], failure, rlimit_nofile, ...}`.
pub fn fleet_figures(v: &Value) -> Result<Vec<Figure>, String> {
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    let failure = v["failure"].as_object().map(|f| {
        format!(
            "{} agents failed: {}",
            f.get("agents").and_then(Value::as_u64).unwrap_or(0),
            f.get("error").and_then(Value::as_str).unwrap_or("?")
        )
    });
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return Err(failure.unwrap_or_else(|| "no fleet size completed".into()));
    };
    let machine = format!(
        "{} build on this x86_64 host ({} CPUs as the test saw them, MemTotal {} KiB, \
         RLIMIT_NOFILE raised to {}, pid_max {})",
        v["build"].as_str().unwrap_or("?"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        v["mem_total_kib"].as_str().unwrap_or("?"),
        v["rlimit_nofile"][0],
        v["pid_max"].as_str().unwrap_or("?"),
    );
    let n_first = number(first, "agents")?;
    let n_last = number(last, "agents")?;
    let peer = |key: &str| format!("{key} at {n_first} agents");
    let mut out =
        vec![
            Figure::new("fleet.agents", n_last, "agents").with_note(format!(
        "the largest fleet whose rollout completed: one `cpevisor-controller serve` (SQLite) \
         rolls an app out (1% canary, waves of 25%, {} operations in flight) to simulated \
         agents, each the agent's own Agent (real download, signature check and unpack into \
         its own store; the app not started), USP DataModel and Endpoint on its own MQTT 5 \
         session with TLS to one mosquitto on 127.0.0.1, {} epoll threads carrying them all \
         in one process; {machine}. {}",
        last["in_flight"],
        last["workers"],
        failure.as_deref().unwrap_or("Every size asked for completed.")
    )),
        ];
    for r in &runs {
        let n = number(r, "agents")?;
        out.push(
            Figure::new(
                format!("fleet.rollout_s.{n}"),
                round(number(r, "rollout_s")?, 2),
                "s",
            )
            .with_note(format!(
                "from `rollout start` to `rollout status` done with all {n} targets done (each \
                 agent's store then checked for the new version); before it, the fleet's \
                 sessions connected in {:.1} s and serve had read every agent's inventory \
                 {:.1} s later; fleet process peak RSS {} KiB, {} threads; mosquitto peak RSS \
                 {} KiB; {} connections lost during the rollout; CPU during the rollout: serve \
                 {:.1} s, mosquitto {:.1} s, the fleet's process {:.1} s (all on the same cores)",
                number(r, "connect_s")?,
                number(r, "inventory_s")?,
                r["fleet_process_rss_kib"],
                r["fleet_process_threads"],
                r["broker_rss_kib"],
                r["connection_errors_during_rollout"],
                r["controller_cpu_s"].as_f64().unwrap_or(f64::NAN),
                r["broker_cpu_s"].as_f64().unwrap_or(f64::NAN),
                r["fleet_cpu_s"].as_f64().unwrap_or(f64::NAN),
            )),
        );
    }
    let per_agent_ms = |r: &Value| -> Result<f64, String> {
        Ok(number(r, "rollout_s")? * 1000.0 / number(r, "agents")?)
    };
    for r in runs.iter().skip(1) {
        let n = number(r, "agents")?;
        out.push(
            Figure::new(
                format!("fleet.rollout_ms_per_agent.{n}"),
                round(per_agent_ms(r)?, 2),
                "ms",
            )
            .with_peer(peer("rollout_ms_per_agent"), round(per_agent_ms(first)?, 2))
            .with_note(
                "rollout time / agents: a ratio above 1 is cost growing faster than the fleet",
            ),
        );
    }
    let with_growth = |f: Figure, key: &str, places: i32| -> Result<Figure, String> {
        Ok(if runs.len() > 1 {
            f.with_peer(peer(key), round(number(first, key)?, places))
        } else {
            f
        })
    };
    out.push(with_growth(
        Figure::new(
            "fleet.messages_per_agent",
            round(number(last, "messages_per_agent")?, 1),
            "msgs",
        )
        .with_note(format!(
            "USP Records over the broker during the rollout of {n_last} agents, both ways \
             ({} published by the agents, {} received by them), per agent",
            last["agents_sent"], last["agents_received"]
        )),
        "messages_per_agent",
        1,
    )?);
    out.push(with_growth(
        Figure::new(
            "fleet.controller_rss_kib",
            number(last, "controller_rss_kib")?,
            "KiB",
        )
        .with_note(format!(
            "VmHWM of the serve process (/proc/PID/status) after the inventory and rollout of \
             {n_last} agents"
        )),
        "controller_rss_kib",
        0,
    )?);
    out.push(with_growth(
        Figure::new(
            "fleet.db_bytes_per_agent",
            round(number(last, "db_bytes_per_agent")?, 0),
            "bytes",
        )
        .with_note(format!(
            "the controller's SQLite files (main {} bytes, with its WAL and shared memory {} \
             bytes) / {n_last} agents, after the rollout: inventory, deployment, rollout \
             targets and the operation journal",
            last["db_main_bytes"], last["db_bytes"]
        )),
        "db_bytes_per_agent",
        0,
    )?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(n: u64, s: f64) -> Value {
        json!({"agents": n, "rollout_s": s, "connect_s": 1.0, "inventory_s": 2.0,
               "messages_per_agent": 8.0, "agents_sent": 5 * n, "agents_received": 3 * n,
               "controller_rss_kib": 10_000 + n, "db_bytes_per_agent": 900.0,
               "db_bytes": 900 * n, "db_main_bytes": 800 * n, "in_flight": 128, "workers": 4,
               "fleet_process_rss_kib": 1, "fleet_process_threads": 5, "broker_rss_kib": 2,
               "connection_errors_during_rollout": 0})
    }

    #[test]
    fn figures_and_growth_ratios() {
        let v = json!({"runs": [run(1000, 10.0), run(10000, 200.0)], "failure": null,
                       "rlimit_nofile": [20000, 20000], "pid_max": "32768",
                       "mem_total_kib": "100", "build": "release"});
        let f = fleet_figures(&v).unwrap();
        let get = |name: &str| f.iter().find(|x| x.name == name).unwrap().clone();
        assert_eq!(get("fleet.agents").value, 10000.0);
        assert_eq!(get("fleet.rollout_s.1000").value, 10.0);
        assert_eq!(get("fleet.rollout_s.10000").value, 200.0);
        let per = get("fleet.rollout_ms_per_agent.10000");
        assert_eq!(per.value, 20.0);
        assert_eq!(per.ratio(), Some(2.0));
        assert_eq!(get("fleet.controller_rss_kib").value, 20000.0);
        assert_eq!(get("fleet.controller_rss_kib").peer.unwrap().1, 11000.0);
        assert_eq!(get("fleet.messages_per_agent").value, 8.0);
        assert_eq!(get("fleet.db_bytes_per_agent").value, 900.0);
    }

    #[test]
    fn a_failed_size_is_named_and_none_completed_is_an_error() {
        let v = json!({"runs": [run(1000, 10.0)],
                       "failure": {"agents": 5000, "error": "every session up: not within 310 s"},
                       "rlimit_nofile": [20000, 20000], "pid_max": "32768",
                       "mem_total_kib": "100", "build": "release"});
        let f = fleet_figures(&v).unwrap();
        assert_eq!(f[0].value, 1000.0);
        assert!(f[0]
            .note
            .as_ref()
            .unwrap()
            .contains("5000 agents failed: every session"));
        assert!(f.iter().all(|x| x.peer.is_none()));
        let none = json!({"runs": [], "failure": {"agents": 1000, "error": "mosquitto"}});
        assert!(fleet_figures(&none).unwrap_err().contains("mosquitto"));
    }
}
