//! Output of `cpevisor-controller`: a table per command for people, one JSON document for scripts.

use std::time::Duration;

use serde_json::{json, Value};

use super::engine::{Op, Outcome, SeenEvent, Stats};
use super::roster::RosterEntry;

fn event_json(e: &SeenEvent) -> Value {
    json!({"kind": e.kind, "path": e.path, "params": e.params})
}

pub fn outcome_json(o: &Outcome) -> Value {
    json!({
        "agent": o.agent,
        "ok": o.ok,
        "fault": o.fault.as_ref().map(|f| json!({"code": f.code, "message": f.message})),
        "rows": o.rows.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "events": o.events.iter().map(event_json).collect::<Vec<_>>(),
        "events_dropped": o.events_dropped,
    })
}

/// Values rows: Get, GetInstances, GetSupportedDM print one line per row.
fn lists_rows(op: &Op) -> bool {
    matches!(
        op,
        Op::Get { .. } | Op::Instances { .. } | Op::Supported { .. } | Op::Set { .. } | Op::Probe
    )
}

fn fault_text(o: &Outcome) -> String {
    match &o.fault {
        Some(f) if f.code != 0 => format!("{} {}", f.code, f.message),
        Some(f) => f.message.clone(),
        None => String::new(),
    }
}

/// The short result of a command: its interesting outputs.
fn summary(o: &Outcome) -> String {
    if !o.ok {
        return "failed".into();
    }
    let keep = ["UUID", "DeploymentUnitRef", "Version"];
    let mut parts: Vec<String> = o
        .rows
        .iter()
        .filter(|(k, _)| keep.contains(&k.as_str()) || k.ends_with(".Status"))
        .map(|(k, v)| format!("{}={v}", k.rsplit('.').next().unwrap_or(k)))
        .collect();
    parts.insert(0, "ok".into());
    parts.join(" ")
}

fn width(items: impl Iterator<Item = usize>, min: usize) -> usize {
    items.max().unwrap_or(0).max(min)
}

pub fn print_outcomes(op: &Op, outcomes: &[Outcome], stats: Stats, took: Duration, json: bool) {
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    if json {
        let v = json!({
            "results": outcomes.iter().map(outcome_json).collect::<Vec<_>>(),
            "ok": outcomes.len() - failed,
            "failed": failed,
            "seconds": (took.as_secs_f64() * 1000.0).round() / 1000.0,
            "messages": {"sent": stats.sent, "received": stats.received, "ignored": stats.ignored},
        });
        println!("{v}");
        return;
    }
    let aw = width(outcomes.iter().map(|o| o.agent.len()), 5);
    if lists_rows(op) {
        let pw = width(
            outcomes
                .iter()
                .flat_map(|o| o.rows.iter().map(|r| r.0.len())),
            4,
        );
        println!("{:<aw$}  {:<pw$}  VALUE", "AGENT", "PATH");
        for o in outcomes {
            for (k, v) in &o.rows {
                println!("{:<aw$}  {k:<pw$}  {v}", o.agent);
            }
            if o.fault.is_some() {
                println!("{:<aw$}  {:<pw$}  error {}", o.agent, "", fault_text(o));
            }
        }
    } else {
        let sums: Vec<String> = outcomes.iter().map(summary).collect();
        let rw = width(sums.iter().map(String::len), 6);
        println!("{:<aw$}  {:<rw$}  FAULT", "AGENT", "RESULT");
        for (o, s) in outcomes.iter().zip(&sums) {
            println!("{:<aw$}  {s:<rw$}  {}", o.agent, fault_text(o));
        }
    }
    println!(
        "{} ok, {failed} failed in {:.1} s ({} messages sent, {} received)",
        outcomes.len() - failed,
        took.as_secs_f64(),
        stats.sent,
        stats.received
    );
}

pub fn print_agents(seen: &[RosterEntry], probed: &[Outcome], json: bool) {
    if json {
        let v = json!({
            "seen": seen.iter().map(|s| json!({"endpoint_id": s.endpoint_id, "topic": s.topic, "how": s.how})).collect::<Vec<_>>(),
            "probed": probed.iter().map(outcome_json).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    let aw = width(
        seen.iter()
            .map(|s| s.endpoint_id.len())
            .chain(probed.iter().map(|p| p.agent.len())),
        5,
    );
    println!("{:<aw$}  {:<16}  DETAIL", "AGENT", "SEEN");
    for s in seen {
        if probed.iter().any(|p| p.agent == s.endpoint_id) {
            continue;
        }
        println!(
            "{:<aw$}  {:<16}  {}",
            s.endpoint_id,
            s.how,
            s.topic.as_deref().unwrap_or("")
        );
    }
    for p in probed {
        let detail = if p.ok {
            let get = |name: &str| {
                p.rows
                    .iter()
                    .find(|(k, _)| k.ends_with(name))
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("")
            };
            format!(
                "{} {} {}",
                get(".ModelName"),
                get(".SoftwareVersion"),
                get(".SerialNumber")
            )
        } else {
            format!("no answer: {}", fault_text(p))
        };
        let how = if p.ok { "answered" } else { "silent" };
        println!("{:<aw$}  {how:<16}  {}", p.agent, detail.trim());
    }
}
