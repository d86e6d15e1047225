//! `cpevisor-controller rollout start|status|pause|resume|abort|rollback --db PATH`: the
//! operator's side of rollouts. `start` records the deployment, the rollout and its targets
//! (the agents of the inventory its selector matches, with the version each has); the other
//! commands change the rollout's state in the database, which `serve` follows on its next pass.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::refusal::Refusal;
use super::rollout::{Rollout, TargetState, TargetView};
use super::selector;
use crate::store::rollouts::{NewRollout, RolloutCommand, RolloutTarget};
use crate::store::{now_ms, NewDeployment, Store};

/// The usage of `rollout`.
pub const USAGE: &str =
    "  rollout start --db PATH NAME URL --version V [--selector KEY=VALUE ...] [--digest D]
                [--memory-mib N] [--canary N|P%] [--wave N|P%] [--max-in-flight N]
                [--max-failures P%]
                               deploy like `deploy`, in stages: a canary (default 1 agent),
                               then waves (default 25% of the agents), at most N in flight
                               (default: a wave); a wave whose failures pass P% (default
                               20%) pauses the rollout
  rollout status --db PATH [ID] [--json]     every rollout, or one with its agents
  rollout pause|resume|abort|rollback --db PATH ID [--json]
                               resume accepts the current wave's failures; rollback sends
                               the agents that took the new version back to the one they
                               had (uninstalls it where they had none)";

/// A count of agents, or a share of the rollout's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// That many agents.
    Count(i64),
    /// That percentage of the targets (rounded up, at least 1).
    Percent(i64),
}

impl Amount {
    /// Parses `N` or `P%`.
    pub fn parse(flag: &str, v: &str) -> Result<Amount, String> {
        let bad =
            || format!("{flag}: {v:?} is not a count (1..1000000) or a percentage (1%..100%)");
        match v.strip_suffix('%') {
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| (1..=100).contains(p))
                .map(Amount::Percent)
                .ok_or_else(bad),
            None => v
                .parse()
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .map(Amount::Count)
                .ok_or_else(bad),
        }
    }

    /// The count over `targets` agents.
    pub fn of(self, targets: usize) -> i64 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => ((targets as i64 * p + 99) / 100).max(1),
        }
    }
}

/// How a rollout is asked to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// `--canary`.
    pub canary: Amount,
    /// `--wave`.
    pub wave: Amount,
    /// `--max-in-flight` (default: the wave).
    pub max_in_flight: Option<i64>,
    /// `--max-failures`, percent.
    pub max_failure_pct: i64,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            canary: Amount::Count(1),
            wave: Amount::Percent(25),
            max_in_flight: None,
            max_failure_pct: 20,
        }
    }
}

/// Parses `--max-failures P%` (the `%` optional).
pub fn parse_pct(flag: &str, v: &str) -> Result<i64, String> {
    v.strip_suffix('%')
        .unwrap_or(v)
        .parse()
        .ok()
        .filter(|p| (0..=100).contains(p))
        .ok_or_else(|| format!("{flag}: {v:?} is not a percentage (0%..100%)"))
}

/// A parsed `rollout` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutCmd {
    /// `rollout start`.
    Start(NewDeployment, Plan),
    /// `rollout status [ID]`.
    Status(Option<i64>),
    /// `rollout pause|resume|abort|rollback ID`.
    Command(i64, RolloutCommand),
}

/// Parses the words after `rollout`; `start` takes the deployment `d` built from the flags.
pub fn parse(
    words: &[String],
    d: impl FnOnce(&[String]) -> Result<NewDeployment, String>,
    plan: Plan,
) -> Result<RolloutCmd, String> {
    let Some((sub, rest)) = words.split_first() else {
        return Err("rollout: start, status, pause, resume, abort or rollback".into());
    };
    let id = |rest: &[String]| -> Result<i64, String> {
        match rest {
            [id] => id
                .parse()
                .map_err(|_| format!("rollout {sub}: {id:?} is not a rollout number")),
            _ => Err(format!("rollout {sub}: ID (the rollout's number)")),
        }
    };
    let cmd = |c| Ok(RolloutCmd::Command(id(rest)?, c));
    match sub.as_str() {
        "start" => Ok(RolloutCmd::Start(d(rest)?, plan)),
        "status" if rest.is_empty() => Ok(RolloutCmd::Status(None)),
        "status" => Ok(RolloutCmd::Status(Some(id(rest)?))),
        "pause" => cmd(RolloutCommand::Pause),
        "resume" => cmd(RolloutCommand::Resume),
        "abort" => cmd(RolloutCommand::Abort),
        "rollback" => cmd(RolloutCommand::Rollback),
        other => Err(format!(
            "rollout {other}: not one of start, status, pause, resume, abort, rollback"
        )),
    }
}

/// Starts a rollout of `d` following `plan` over the agents of the inventory its selector
/// matches; what was recorded, as JSON.
pub fn start(store: &mut Store, d: &NewDeployment, plan: Plan) -> Result<Value, Refusal> {
    let targets = targets_of(store, d)?;
    if targets.is_empty() {
        return Err(Refusal::Conflict(format!(
            "rollout start: no agent in the inventory matches the selector of {}",
            d.name
        )));
    }
    let wave_size = plan.wave.of(targets.len());
    let r = NewRollout {
        canary: plan.canary.of(targets.len()),
        wave_size,
        max_in_flight: plan.max_in_flight.unwrap_or(wave_size),
        max_failure_pct: plan.max_failure_pct,
    };
    let (dep, id) = store.add_rollout(d, &r, &targets, now_ms())?;
    Ok(
        json!({"id": id, "deployment": dep, "name": d.name, "version": d.version,
              "targets": targets.len(), "canary": r.canary,
              "wave_size": r.wave_size, "max_in_flight": r.max_in_flight,
              "max_failure_pct": r.max_failure_pct}),
    )
}

/// Every rollout (only those still going when `live_only`), newest first, with its targets
/// counted by state.
pub fn list(store: &Store, live_only: bool) -> Result<Value, String> {
    let mut out = Vec::new();
    for r in &store.rollouts(live_only)? {
        let (name, version, targets) = load(store, r)?;
        out.push(rollout_json(r, &name, &version, &counts(&targets), None));
    }
    Ok(json!({ "rollouts": out }))
}

/// Rollout `id` with its agents, its progress per wave and its failures with their faults;
/// None when there is no such rollout.
pub fn one(store: &Store, id: i64) -> Result<Option<Value>, String> {
    let Some(r) = store.rollout(id)? else {
        return Ok(None);
    };
    let (name, version, targets) = load(store, &r)?;
    let faults = store.rollout_faults(id)?;
    let t: Vec<Value> = targets
        .iter()
        .map(|t| {
            let f = faults.get(&t.endpoint_id);
            json!({"agent": t.endpoint_id, "wave": t.wave, "state": t.state.as_str(),
                   "online": t.online, "has_new": t.has_new,
                   "prev_version": t.prev_version,
                   "fault_code": f.map(|f| f.0), "fault_message": f.map(|f| &f.1)})
        })
        .collect();
    let failures: Vec<Value> = t
        .iter()
        .filter(|a| !a["fault_code"].is_null())
        .cloned()
        .collect();
    let mut waves: BTreeMap<i64, Vec<TargetView>> = BTreeMap::new();
    for x in targets.iter().filter(|x| x.wave.is_some()) {
        waves
            .entry(x.wave.unwrap_or(-1))
            .or_default()
            .push(x.clone());
    }
    let waves: Vec<Value> = waves
        .iter()
        .map(|(w, ts)| json!({"wave": w, "agents": ts.len(), "targets": counts(ts)}))
        .collect();
    let mut v = rollout_json(&r, &name, &version, &counts(&targets), Some(t));
    v["waves"] = Value::Array(waves);
    v["failures"] = Value::Array(failures);
    Ok(Some(v))
}

/// The operator's command `c` on rollout `id`; the rollout's new state as JSON.
pub fn command(store: &mut Store, id: i64, c: RolloutCommand) -> Result<Value, Refusal> {
    if store.rollout(id)?.is_none() {
        return Err(Refusal::NotFound(format!("no rollout {id}")));
    }
    // The rollout exists: what the store refuses now is its state's word.
    let r = store
        .rollout_command(id, c, now_ms())
        .map_err(Refusal::Conflict)?;
    Ok(json!({"id": id, "state": r.state.as_str(), "wave": r.wave}))
}

/// Runs a `rollout` command against the store, printing a table or JSON.
pub fn run(store: &mut Store, cmd: RolloutCmd, json: bool) -> Result<(), String> {
    let n = |v: &Value, k: &str| v["targets"][k].as_i64().unwrap_or(0);
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let wave = |v: &Value| wave_word(v["wave"].as_i64().unwrap_or(-1));
    match cmd {
        RolloutCmd::Start(d, plan) => {
            let v = start(store, &d, plan).map_err(|e| e.message().to_string())?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "rollout {}: {} {} (deployment {}) to {} agents: canary {}, waves of {}, {} in flight, pause over {}% failed",
                    v["id"], d.name, d.version, v["deployment"], v["targets"], v["canary"],
                    v["wave_size"], v["max_in_flight"], v["max_failure_pct"]
                );
            }
        }
        RolloutCmd::Status(None) => {
            let all = list(store, false)?;
            if json {
                println!("{all}");
                return Ok(());
            }
            println!(
                "{:<4}  {:<16}  {:<10}  {:<12}  {:>4}  {:>5}  {:>6}  {:>9}  {:>7}  REASON",
                "ID", "NAME", "VERSION", "STATE", "WAVE", "DONE", "FAILED", "IN FLIGHT", "PENDING"
            );
            for r in all["rollouts"].as_array().into_iter().flatten() {
                println!(
                    "{:<4}  {:<16}  {:<10}  {:<12}  {:>4}  {:>5}  {:>6}  {:>9}  {:>7}  {}",
                    r["id"].as_i64().unwrap_or(0),
                    s(r, "name"),
                    s(r, "version"),
                    s(r, "state"),
                    wave(r),
                    n(r, "done"),
                    n(r, "failed"),
                    n(r, "active"),
                    n(r, "pending") + n(r, "queued"),
                    s(r, "reason")
                );
            }
        }
        RolloutCmd::Status(Some(id)) => {
            let v = one(store, id)?.ok_or_else(|| format!("no rollout {id}"))?;
            if json {
                println!("{v}");
                return Ok(());
            }
            let reason = s(&v, "reason");
            println!(
                "rollout {id}: {} {} (deployment {}), {} at wave {}{}",
                s(&v, "name"),
                s(&v, "version"),
                v["deployment"],
                s(&v, "state"),
                wave(&v),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            );
            println!(
                "canary {}, waves of {}, {} in flight, pause over {}% failed",
                v["canary"], v["wave_size"], v["max_in_flight"], v["max_failure_pct"]
            );
            println!(
                "{:<24}  {:>4}  {:<15}  {:<10}  FAULT",
                "AGENT", "WAVE", "STATE", "BEFORE"
            );
            for t in v["agents"].as_array().into_iter().flatten() {
                let fault = match t["fault_code"].as_i64() {
                    Some(c) => format!("{c} {}", s(t, "fault_message")),
                    None => String::new(),
                };
                println!(
                    "{:<24}  {:>4}  {:<15}  {:<10}  {fault}",
                    s(t, "agent"),
                    t["wave"]
                        .as_i64()
                        .map(|w| w.to_string())
                        .unwrap_or_else(|| "-".into()),
                    s(t, "state"),
                    t["prev_version"].as_str().unwrap_or("-"),
                );
            }
        }
        RolloutCmd::Command(id, c) => {
            let v = command(store, id, c).map_err(|e| e.message().to_string())?;
            if json {
                println!("{v}");
            } else {
                println!("rollout {id}: {} (wave {})", s(&v, "state"), wave(&v));
            }
        }
    }
    Ok(())
}

/// A wave's number for people: `-` before the first (the store's -1).
fn wave_word(w: i64) -> String {
    if w < 0 {
        "-".into()
    } else {
        w.to_string()
    }
}

/// The agents of the inventory the selector of `d` matches, with their version of the app:
/// the URL to go back to is the one their DU came from, else the active deployment's when it
/// is of that version.
fn targets_of(store: &Store, d: &NewDeployment) -> Result<Vec<RolloutTarget>, String> {
    let active = store
        .deployments(true)?
        .into_iter()
        .find(|x| x.name == d.name);
    let sel = selector::Selector::new(&d.selector, &d.name);
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.agents_page(&after, 500, false)?;
        let Some(last) = page.last() else { break };
        after = last.endpoint_id.clone();
        for a in page {
            if a.inventory_at.is_none() || !sel.matches(&a) {
                continue;
            }
            let du = a.dus.iter().find(|u| u.name == d.name);
            let prev_url = du.and_then(|u| {
                u.url.clone().or_else(|| {
                    active
                        .as_ref()
                        .filter(|x| x.version == u.version)
                        .map(|x| x.url.clone())
                })
            });
            out.push(RolloutTarget {
                endpoint_id: a.endpoint_id.clone(),
                prev_version: du.map(|u| u.version.clone()),
                prev_url,
            });
        }
    }
    Ok(out)
}

fn load(store: &Store, r: &Rollout) -> Result<(String, String, Vec<TargetView>), String> {
    let d = store
        .deployments(false)?
        .into_iter()
        .find(|d| d.id == r.deployment_id)
        .ok_or_else(|| format!("rollout {}: no deployment {}", r.id, r.deployment_id))?;
    let targets = store.rollout_targets(r, &d.name, &d.version)?;
    Ok((d.name, d.version, targets))
}

fn counts(targets: &[TargetView]) -> BTreeMap<&'static str, i64> {
    let mut c = BTreeMap::new();
    for t in targets {
        *c.entry(t.state.as_str()).or_insert(0) += 1;
    }
    // Every state is named, with 0 where none is in it.
    for s in [
        TargetState::Pending,
        TargetState::Queued,
        TargetState::Active,
        TargetState::Done,
        TargetState::Failed,
        TargetState::Rollback,
        TargetState::RolledBack,
        TargetState::RollbackFailed,
    ] {
        c.entry(s.as_str()).or_insert(0);
    }
    c
}

fn rollout_json(
    r: &Rollout,
    name: &str,
    version: &str,
    counts: &BTreeMap<&'static str, i64>,
    targets: Option<Vec<Value>>,
) -> Value {
    let mut v = json!({
        "id": r.id, "deployment": r.deployment_id, "previous": r.previous_id, "name": name,
        "version": version, "state": r.state.as_str(), "wave": r.wave, "canary": r.canary,
        "wave_size": r.wave_size, "max_in_flight": r.max_in_flight,
        "max_failure_pct": r.max_failure_pct, "accepted_wave": r.accepted_wave,
        "reason": r.reason, "created": r.created, "updated": r.updated, "targets": counts,
    });
    if let Some(t) = targets {
        v["agents"] = Value::Array(t);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_counts_or_shares_of_the_targets() {
        assert_eq!(Amount::parse("--canary", "3"), Ok(Amount::Count(3)));
        assert_eq!(Amount::parse("--wave", "25%"), Ok(Amount::Percent(25)));
        for bad in ["0", "0%", "101%", "-1", "x", "%"] {
            assert!(Amount::parse("--wave", bad).is_err(), "{bad}");
        }
        assert_eq!(Amount::Percent(25).of(8), 2);
        assert_eq!(Amount::Percent(25).of(9), 3, "rounded up");
        assert_eq!(Amount::Percent(1).of(3), 1, "at least one");
        assert_eq!(Amount::Count(5).of(2), 5);
        assert_eq!(parse_pct("--max-failures", "30%"), Ok(30));
        assert_eq!(parse_pct("--max-failures", "0"), Ok(0));
        assert!(parse_pct("--max-failures", "101").is_err());
    }
}
