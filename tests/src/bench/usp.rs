//! USP figures: the fleet install (one `cpevisor-controller` installing a signed app on 200 agents
//! hosted in one process, each with its own MQTT session over TLS to mosquitto on loopback)
//! and the idle memory of `cpevisord` with its USP connection up.
//!
//! The measurement is the agent crate's own test `agent/tests/usp_fleet.rs`, run here as a
//! release build with `CPEVISOR_USP_BENCH_DIR` set: it writes `fleet.json` and `idle.json`,
//! which become `usp.fleet_200_install_s`, `usp.messages_per_agent` and
//! `usp.agent_idle_rss_kib`. The same code is what `cargo test` checks, so a figure can only
//! come from a run where every agent reported success.

use super::{agent_test, Figure};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Agents in the fleet figure (its name says 200).
pub const FLEET_AGENTS: usize = 200;
/// Longest the release build plus both tests may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(1200);
/// Largest figures file read.
const MAX_FILE: u64 = 64 << 10;

/// Runs the USP bench test and appends its figures; figures read before a failure are kept.
pub fn figures(root: &Path, figures: &mut Vec<Figure>) -> Result<(), String> {
    let out = root.join("target/bench/usp");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let env = [
        ("CPEVISOR_USP_BENCH_DIR", out.display().to_string()),
        ("CPEVISOR_USP_FLEET_AGENTS", FLEET_AGENTS.to_string()),
    ];
    let Some(status) = agent_test::run(
        root,
        "usp_fleet",
        &["--test-threads=1"],
        &env,
        None,
        RUN_TIMEOUT,
    )?
    else {
        return Err(format!("usp_fleet did not finish within {RUN_TIMEOUT:?}"));
    };
    let fleet = agent_test::read_json(&out.join("fleet.json"), MAX_FILE);
    let idle = agent_test::read_json(&out.join("idle.json"), MAX_FILE);
    if let Ok(f) = &fleet {
        figures.extend(fleet_figures(f)?);
    }
    if let Ok(i) = &idle {
        figures.push(idle_figure(i)?);
    }
    if !status.success() {
        return Err(format!(
            "`cargo test --release -p cpevisor-agent --test usp_fleet` failed ({status}); \
             rerun it to see why"
        ));
    }
    fleet?;
    idle?;
    Ok(())
}

fn number(v: &Value, key: &str) -> Result<f64, String> {
    v[key]
        .as_f64()
        .ok_or_else(|| format!("usp bench output has no number {key:?}: {v}"))
}

/// `usp.fleet_200_install_s` and `usp.messages_per_agent` from the fleet test's output.
pub fn fleet_figures(f: &Value) -> Result<Vec<Figure>, String> {
    let agents = number(f, "agents")?;
    if agents as usize != FLEET_AGENTS {
        return Err(format!("the fleet had {agents} agents, not {FLEET_AGENTS}"));
    }
    let install = number(f, "install_s")?;
    let per_agent = number(f, "messages_per_agent")?;
    let total = number(f, "messages")?;
    Ok(vec![
        Figure::new(
            format!("usp.fleet_{FLEET_AGENTS}_install_s"),
            (install * 100.0).round() / 100.0,
            "s",
        )
        .with_note(format!(
            "one `cpevisor-controller install URL` to {FLEET_AGENTS} agents hosted in one process \
             (each its own Agent, state dir, USP endpoint and MQTT 5 session over TLS to \
             mosquitto on 127.0.0.1, process runner), from the first request to the last \
             OperationComplete + DUStateChange!; package from python3 -m http.server on \
             loopback; release build on this x86_64 host; the agents connected in {:.1} s \
             before. No peer measured.",
            number(f, "connect_s")?
        )),
        Figure::new(
            "usp.messages_per_agent",
            (per_agent * 10.0).round() / 10.0,
            "msgs",
        )
        .with_note(format!(
            "USP Records published during that install, controller and agents together \
                 ({total} for {FLEET_AGENTS} agents: controller {} sent, agents {} sent): \
                 subscription Add + AddResp, Operate + OperateResp, DUStateChange!, \
                 OperationComplete and the ValueChanges of the started app",
            number(f, "controller_sent")?,
            number(f, "agents_sent")?
        )),
    ])
}

/// `usp.agent_idle_rss_kib` from the idle test's output.
pub fn idle_figure(i: &Value) -> Result<Figure, String> {
    let rss = number(i, "rss_kib")?;
    let pss = number(i, "pss_kib")?;
    let anon = number(i, "anon_kib")?;
    let build = i["build"].as_str().unwrap_or("?");
    let samples: Vec<f64> = i["samples_kib"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    Ok(Figure::new("usp.agent_idle_rss_kib", rss, "KiB")
        .with_note(format!(
            "Rss from /proc/<pid>/smaps_rollup of cpevisord ({build} build for this x86_64 host, \
             glibc, dynamically linked: the cargo test binary, not the static cross build) \
             with one empty jail ExecEnv and its USP MQTT 5 session over TLS up, 2 s after it \
             answered a Get through mosquitto; median of {} reads; Pss {pss} KiB, of which \
             {anon} KiB anonymous (the rest is the binary's and libc's pages)",
            samples.len()
        ))
        .with_samples(samples, Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn figures_from_the_test_output() {
        let f = json!({"agents": 200, "install_s": 18.678, "wall_s": 18.8, "connect_s": 2.1,
                       "messages": 1600, "messages_per_agent": 8.0, "controller_sent": 400,
                       "controller_received": 1200, "agents_sent": 1200, "agents_received": 400});
        let figs = fleet_figures(&f).unwrap();
        assert_eq!(figs[0].name, "usp.fleet_200_install_s");
        assert_eq!(figs[0].value, 18.68);
        assert_eq!(figs[1].name, "usp.messages_per_agent");
        assert_eq!(figs[1].value, 8.0);
        let small = json!({"agents": 20, "install_s": 1.0, "messages_per_agent": 8.0});
        assert!(fleet_figures(&small).unwrap_err().contains("not 200"));
        assert!(fleet_figures(&json!({"agents": 200}))
            .unwrap_err()
            .contains("install_s"));
        let i = json!({"rss_kib": 3000, "pss_kib": 2500, "anon_kib": 600,
                       "samples_kib": [2990, 3000, 3010],
                       "build": "release"});
        let fig = idle_figure(&i).unwrap();
        assert_eq!(fig.name, "usp.agent_idle_rss_kib");
        assert_eq!(fig.value, 3000.0);
        assert_eq!(fig.samples.len(), 3);
    }
}
