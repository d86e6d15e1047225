//! What the operator sees of the fleet, as JSON: the `--json` commands print these values, the
//! tables are made from them, and the HTTP API answers with them, so one function says what an
//! agent, a deployment or the fleet's summary is, whoever asks.

use serde_json::{json, Value};

use super::refusal::Refusal;
use crate::store::labels::{LabelChange, LabelOutcome, MAX_LABELS};
use crate::store::{now_ms, AgentView, Eu, NewDeployment, Operation, Store};

/// A deployment's name, URL or version: 1..1024 printable bytes.
pub fn check_text(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
        return Err(format!("{what} must be 1..1024 printable bytes"));
    }
    Ok(())
}

/// An agent with its ExecEnvs, DUs and EUs (faults included).
pub fn agent_json(a: &AgentView, eus: &[Eu]) -> Value {
    let f = &a.facts;
    json!({
        "endpoint_id": a.endpoint_id, "online": a.online, "first_seen": a.first_seen,
        "last_seen": a.last_seen, "inventory_at": a.inventory_at,
        "manufacturer": f.manufacturer, "model": f.model, "software_version": f.software_version,
        "serial": f.serial, "board": f.board, "arch": f.arch, "labels": a.labels,
        "exec_envs": a.exec_envs.iter().map(|e| json!({
            "path": e.path, "name": e.name, "type": e.env_type, "status": e.status,
            "arch": e.arch, "budget_kib": e.budget_kib, "available_kib": e.available_kib,
        })).collect::<Vec<_>>(),
        "dus": a.dus.iter().map(|d| json!({
            "path": d.path, "uuid": d.uuid, "name": d.name, "version": d.version, "url": d.url,
            "status": d.status, "exec_env": d.exec_env,
        })).collect::<Vec<_>>(),
        "eus": eus.iter().map(|u| json!({
            "path": u.path, "euid": u.euid, "name": u.name, "status": u.status,
            "fault_code": u.fault_code, "fault_message": u.fault_message,
        })).collect::<Vec<_>>(),
    })
}

/// Up to `limit` agents after `after` (endpoint ID order) as JSON, and the ID to ask for the
/// next page after (None: this was the last).
pub fn agents_page(
    store: &Store,
    after: &str,
    limit: usize,
) -> Result<(Vec<Value>, Option<String>), String> {
    let page = store.agents_page(after, limit, false)?;
    let (Some(first), Some(last)) = (page.first(), page.last()) else {
        return Ok((Vec::new(), None));
    };
    let mut eus = store.eus_between(&first.endpoint_id, &last.endpoint_id)?;
    let next = (page.len() == limit).then(|| last.endpoint_id.clone());
    let out = page
        .iter()
        .map(|a| agent_json(a, &eus.remove(&a.endpoint_id).unwrap_or_default()))
        .collect();
    Ok((out, next))
}

/// One agent with its last `ops` journal lines; None when unknown.
pub fn agent_detail(store: &Store, id: &str, ops: usize) -> Result<Option<Value>, String> {
    let Some(a) = store.agent(id)? else {
        return Ok(None);
    };
    let eus = store.eus_between(id, id)?.remove(id).unwrap_or_default();
    let mut v = agent_json(&a, &eus);
    v["operations"] = operations_json(&store.operations_of(Some(id), false, ops)?);
    Ok(Some(v))
}

/// Applies `change` to agent `id`'s labels (none: only reads them); its labels after.
pub fn label(store: &mut Store, id: &str, change: &LabelChange) -> Result<Value, Refusal> {
    let unknown = || Refusal::NotFound(format!("no agent {id:?} in the inventory"));
    let labels = if change.is_empty() {
        store.agent(id)?.ok_or_else(unknown)?.labels
    } else {
        match store.change_labels(id, change)? {
            LabelOutcome::Labels(l) => l,
            LabelOutcome::UnknownAgent => return Err(unknown()),
            LabelOutcome::TooMany(n) => {
                return Err(Refusal::Conflict(format!(
                    "agent {id:?} would carry {n} labels; at most {MAX_LABELS} (nothing changed)"
                )))
            }
        }
    };
    Ok(json!({"endpoint_id": id, "labels": labels}))
}

/// Journal lines as JSON.
pub fn operations_json(ops: &[Operation]) -> Value {
    ops.iter()
        .map(|o| {
            json!({
                "id": o.id, "agent": o.endpoint_id, "deployment": o.deployment_id,
                "kind": o.kind, "state": o.state, "fault_code": o.fault_code,
                "fault_message": o.fault_message, "created": o.created,
                "finished": o.finished, "purpose": o.purpose, "replica": o.replica,
            })
        })
        .collect()
}

/// Every deployment, newest first, with how many agents have it, have it in flight, failed.
pub fn deployments(store: &Store) -> Result<Value, String> {
    let list = store.deployments(false)?;
    let counts = store.deployment_counts()?;
    let count = |id: i64, k: &str| counts.get(&id).and_then(|c| c.get(k)).copied().unwrap_or(0);
    let v: Vec<Value> = list
        .iter()
        .map(|d| {
            let mut v = json!({
                "id": d.id, "name": d.name, "url": d.url, "digest": d.digest,
                "version": d.version, "selector": d.selector,
                "memory_mib": d.memory_mib, "created": d.created, "state": d.state,
                "installed": count(d.id, "installed"), "in_flight": count(d.id, "sent"),
                "failed": count(d.id, "failed") + count(d.id, "lost"),
            });
            if let Some(n) = &d.network {
                v["network"] = network_json(n);
            }
            v
        })
        .collect();
    Ok(json!({ "deployments": v }))
}

/// A deployment's network override as JSON (an object, or null: the package's own section);
/// a deployment without one has no `network` key, so the two are told apart.
pub fn network_json(text: &str) -> Value {
    // Stored only after `network::check`; anything else is shown as the text it is.
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Records deployment `d` (it supersedes the active one of the same app).
pub fn deploy(store: &mut Store, d: &NewDeployment) -> Result<Value, String> {
    let id = store.add_deployment(d, now_ms())?;
    Ok(json!({"id": id, "name": d.name, "version": d.version, "url": d.url}))
}

/// The fleet at a glance: agents online of all, each app's versions with their agents, the
/// rollouts still going (with their progress) and the latest failures with their faults.
pub fn summary(store: &Store) -> Result<Value, String> {
    let t = store.fleet_totals()?;
    let apps: Vec<Value> = t
        .apps
        .iter()
        .map(|(name, version, agents, not_installed)| {
            json!({"name": name, "version": version, "agents": agents,
                   "not_installed": not_installed})
        })
        .collect();
    let rollouts = super::rollout_cli::list(store, true)?;
    Ok(json!({
        "agents": {"total": t.agents, "online": t.online},
        "apps": apps,
        "rollouts_active": rollouts["rollouts"].as_array().map_or(0, Vec::len),
        "rollouts": rollouts["rollouts"],
        "failures": operations_json(&store.operations_of(None, true, 20)?),
    }))
}

/// The live `serve` replicas, the shards each holds, the coordinator, and the shards no live
/// replica holds (between a replica's death and the others' taking its shards).
pub fn replicas(store: &Store) -> Result<Value, String> {
    use crate::store::shards::SHARDS;
    let now = crate::store::now_ms();
    let coordinator = store
        .lease(crate::store::leases::SERVE)?
        .filter(|l| l.expires >= now)
        .map(|l| l.holder);
    let all = store.replicas(now)?;
    let mut held = std::collections::BTreeSet::new();
    let list: Vec<Value> = all
        .iter()
        .map(|r| {
            held.extend(r.shards.iter().copied());
            json!({
                "name": r.name, "expires": r.expires, "shards": r.shards,
                "coordinator": coordinator.as_deref() == Some(r.name.as_str()),
            })
        })
        .collect();
    let unheld: Vec<u32> = (0..SHARDS).filter(|n| !held.contains(n)).collect();
    Ok(json!({
        "shards": SHARDS, "replicas": list, "coordinator": coordinator, "unheld": unheld,
    }))
}
