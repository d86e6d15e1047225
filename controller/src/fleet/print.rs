//! What the service's read and write commands print: a table, or with `--json` the value
//! `views` (or `rollout_cli`) makes, which the API answers with too.

use serde_json::{json, Value};

use super::command::FleetCmd;
use super::{rollout_cli, views};
use crate::store::Store;

/// A JSON string for a table, `-` when absent.
fn opt(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// An agent's labels for a table: `name=value,...`, `-` when none.
fn labels_text(labels: &Value) -> String {
    let l: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if l.is_empty() {
        "-".into()
    } else {
        l.join(",")
    }
}

pub(super) fn print(store: &mut Store, cmd: FleetCmd) -> Result<(), String> {
    match cmd {
        FleetCmd::Serve(..) => unreachable!("handled by run"),
        FleetCmd::Rollout(_, cmd, json) => rollout_cli::run(store, cmd, json)?,
        FleetCmd::Deploy(_, d, json) => {
            let v = views::deploy(store, &d)?;
            if json {
                println!(
                    "{}",
                    json!({"id": v["id"], "name": d.name, "version": d.version})
                );
            } else {
                println!(
                    "deployment {}: {} {} from {}",
                    v["id"], d.name, d.version, d.url
                );
            }
        }
        FleetCmd::Deployments(_, json) => {
            let all = views::deployments(store)?;
            if json {
                println!("{all}");
                return Ok(());
            }
            println!(
                "{:<4}  {:<16}  {:<10}  {:<10}  {:>9}  {:>9}  {:>6}  {:<24}  NETWORK",
                "ID", "NAME", "VERSION", "STATE", "INSTALLED", "IN FLIGHT", "FAILED", "SELECTOR"
            );
            let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("-").to_string();
            for d in all["deployments"].as_array().into_iter().flatten() {
                let sel: Vec<String> = d["selector"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                println!(
                    "{:<4}  {:<16}  {:<10}  {:<10}  {:>9}  {:>9}  {:>6}  {:<24}  {}",
                    d["id"].as_i64().unwrap_or(0),
                    s(d, "name"),
                    s(d, "version"),
                    s(d, "state"),
                    d["installed"].as_i64().unwrap_or(0),
                    d["in_flight"].as_i64().unwrap_or(0),
                    d["failed"].as_i64().unwrap_or(0),
                    // Spaces between pairs: a value may be a list with commas.
                    if sel.is_empty() {
                        "(all)".into()
                    } else {
                        sel.join(" ")
                    },
                    d.get("network").map_or("-".into(), Value::to_string)
                );
            }
        }
        FleetCmd::Agents(_, json) => {
            let mut after = String::new();
            let mut all = Vec::new();
            if !json {
                println!(
                    "{:<24}  {:<7}  {:<16}  {:<8}  {:<10}  {:<24}  APPS",
                    "AGENT", "ONLINE", "MODEL", "ARCH", "FREE KIB", "LABELS"
                );
            }
            loop {
                let (page, next) = views::agents_page(store, &after, 500)?;
                for a in page {
                    if json {
                        all.push(a);
                        continue;
                    }
                    let free: Option<i64> = a["exec_envs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e["available_kib"].as_i64())
                        .max();
                    let apps: Vec<String> = a["dus"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| format!("{}@{}", opt(&d["name"]), opt(&d["version"])))
                        .collect();
                    println!(
                        "{:<24}  {:<7}  {:<16}  {:<8}  {:<10}  {:<24}  {}",
                        opt(&a["endpoint_id"]),
                        if a["online"] == true { "yes" } else { "no" },
                        opt(&a["model"]),
                        opt(&a["arch"]),
                        free.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
                        labels_text(&a["labels"]),
                        apps.join(",")
                    );
                }
                match next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            if json {
                println!("{}", json!({ "agents": all }));
            }
        }
        FleetCmd::Label(_, agent, change, json) => {
            let v = views::label(store, &agent, &change).map_err(|r| r.message().to_string())?;
            if json {
                println!("{v}");
            } else {
                println!("{agent}: {}", labels_text(&v["labels"]));
            }
        }
        FleetCmd::Replicas(_, json) => {
            let v = views::replicas(store)?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "{:<24}  {:<11}  {:>6}  SHARDS",
                "REPLICA", "COORDINATOR", "COUNT"
            );
            for r in v["replicas"].as_array().into_iter().flatten() {
                let shards: Vec<String> = r["shards"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(Value::to_string)
                    .collect();
                println!(
                    "{:<24}  {:<11}  {:>6}  {}",
                    opt(&r["name"]),
                    if r["coordinator"] == true { "yes" } else { "" },
                    shards.len(),
                    shards.join(",")
                );
            }
            let unheld = v["unheld"].as_array().map_or(0, Vec::len);
            println!("{unheld} of {} shards held by no live replica", v["shards"]);
        }
        FleetCmd::Operations(_, limit, json) => {
            let ops = store.operations(limit)?;
            if json {
                println!("{}", json!({ "operations": views::operations_json(&ops) }));
                return Ok(());
            }
            println!(
                "{:<6}  {:<24}  {:<10}  {:<9}  {:<7}  FAULT",
                "ID", "AGENT", "DEPLOYMENT", "KIND", "STATE"
            );
            for o in &ops {
                let fault = match (&o.fault_code, &o.fault_message) {
                    (Some(c), Some(m)) => format!("{c} {m}"),
                    (None, Some(m)) => m.clone(),
                    _ => String::new(),
                };
                println!(
                    "{:<6}  {:<24}  {:<10}  {:<9}  {:<7}  {fault}",
                    o.id, o.endpoint_id, o.deployment_id, o.kind, o.state
                );
            }
        }
    }
    Ok(())
}
