//! The API's routes under `/api/v1/`: each reads or changes the store through the same
//! functions as the `--db` commands (`fleet::views`, `fleet::rollout_cli`), and JSON bodies are
//! checked field by field, so an error names the field.

use serde_json::{json, Map, Value};

use super::server::{Request, Response};
use crate::fleet::refusal::Refusal;
use crate::fleet::rollout_cli::{self, Amount, Plan};
use crate::fleet::selector;
use crate::fleet::views;
use crate::network;
use crate::store::labels::LabelChange;
use crate::store::rollouts::RolloutCommand;
use crate::store::{NewDeployment, Store};

/// Agents per page of `GET /api/v1/agents` at most (and by default).
pub const MAX_PAGE: usize = 500;
/// Journal lines in an agent's detail.
const AGENT_OPS: usize = 50;

/// Answers an authenticated API request (`path` is below `/api/v1`).
pub fn api(store: &mut Store, req: &Request, path: &str) -> Response {
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let result = match (m, parts.as_slice()) {
        ("GET", ["summary"]) => views::summary(store).map_err(Refusal::from).map(ok),
        ("GET", ["agents"]) => agents(store, &req.query).map(ok),
        ("GET", ["agents", id]) => {
            found(views::agent_detail(store, id, AGENT_OPS), "agent", id).map(ok)
        }
        ("GET", ["agents", id, "labels"]) => {
            views::label(store, id, &LabelChange::default()).map(ok)
        }
        ("POST", ["agents", id, "labels"]) => body(req)
            .and_then(|b| label_change(&b))
            .and_then(|c| views::label(store, id, &c))
            .map(ok),
        ("GET", ["deployments"]) => views::deployments(store).map_err(Refusal::from).map(ok),
        ("POST", ["deployments"]) => body(req)
            .and_then(|b| deployment(&b, &[]))
            .and_then(|d| views::deploy(store, &d).map_err(Refusal::from))
            .map(created),
        ("GET", ["rollouts"]) => rollout_cli::list(store, false)
            .map_err(Refusal::from)
            .map(ok),
        ("GET", ["rollouts", id]) => rollout_id(id)
            .and_then(|n| found(rollout_cli::one(store, n), "rollout", id))
            .map(ok),
        ("POST", ["rollouts"]) => body(req)
            .and_then(|b| Ok((deployment(&b, PLAN_FIELDS)?, plan(&b)?)))
            .and_then(|(d, p)| rollout_cli::start(store, &d, p))
            .map(created),
        ("POST", ["rollouts", id, cmd]) => {
            let c = match *cmd {
                "pause" => Ok(RolloutCommand::Pause),
                "resume" => Ok(RolloutCommand::Resume),
                "abort" => Ok(RolloutCommand::Abort),
                "rollback" => Ok(RolloutCommand::Rollback),
                other => Err(Refusal::NotFound(format!(
                    "no rollout command {other:?} (pause, resume, abort, rollback)"
                ))),
            };
            c.and_then(|c| rollout_cli::command(store, rollout_id(id)?, c))
                .map(ok)
        }
        (_, ["summary" | "agents" | "deployments" | "rollouts", ..]) if known(&parts) => {
            return Response::error(405, &format!("{m} is not allowed on {}", req.path));
        }
        _ => Err(Refusal::NotFound(format!("no such API path {}", req.path))),
    };
    match result {
        Ok((status, v)) => Response::json(status, &v),
        Err(Refusal::Invalid(e)) => Response::error(400, &e),
        Err(Refusal::NotFound(e)) => Response::error(404, &e),
        Err(Refusal::Conflict(e)) => Response::error(409, &e),
        Err(Refusal::Failed(e)) => {
            eprintln!("cpevisor-controller serve: API {} {}: {e}", m, req.path);
            Response::error(500, "the database failed; see the controller's log")
        }
    }
}

/// Whether `parts` name a resource that exists for some method (a wrong method is 405).
fn known(parts: &[&str]) -> bool {
    matches!(
        parts,
        ["summary"]
            | ["agents"]
            | ["agents", _]
            | ["agents", _, "labels"]
            | ["deployments"]
            | ["rollouts"]
            | ["rollouts", _]
            | ["rollouts", _, _]
    )
}

fn ok(v: Value) -> (u16, Value) {
    (200, v)
}

fn created(v: Value) -> (u16, Value) {
    (201, v)
}

fn found(v: Result<Option<Value>, String>, what: &str, id: &str) -> Result<Value, Refusal> {
    v?.ok_or_else(|| Refusal::NotFound(format!("no {what} {id:?}")))
}

fn rollout_id(id: &str) -> Result<i64, Refusal> {
    id.parse()
        .map_err(|_| Refusal::NotFound(format!("no rollout {id:?} (rollouts are numbers)")))
}

/// `GET /api/v1/agents?after=ID&limit=N`: a page, and `next` to ask for the one after it.
fn agents(store: &Store, query: &str) -> Result<Value, Refusal> {
    let mut after = String::new();
    let mut limit = MAX_PAGE;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "after" => after = percent_decode(v),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        Refusal::Invalid(format!("limit: {v:?} is not in 1..{MAX_PAGE}"))
                    })?
            }
            other => {
                return Err(Refusal::Invalid(format!(
                    "unknown query parameter {other:?} (after, limit)"
                )))
            }
        }
    }
    let (page, next) = views::agents_page(store, &after, limit)?;
    Ok(json!({ "agents": page, "next": next }))
}

/// The body as a JSON object.
fn body(req: &Request) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Refusal::Invalid("the body must be a JSON object".into())),
        Err(e) => Err(Refusal::Invalid(format!("malformed JSON: {e}"))),
    }
}

fn bad(field: &str, why: impl std::fmt::Display) -> Refusal {
    Refusal::Invalid(format!("field `{field}`: {why}"))
}

fn string(b: &Map<String, Value>, field: &str) -> Result<Option<String>, Refusal> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(field, "expected a string")),
    }
}

/// A count or percentage field: `3`, `"3"` or `"25%"`, as its flag takes it.
fn amount_text(b: &Map<String, Value>, field: &str) -> Result<Option<String>, Refusal> {
    match b.get(field) {
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => string(b, field).map_err(|_| bad(field, "expected a number or a string like \"25%\"")),
    }
}

const DEPLOYMENT_FIELDS: &[&str] = &[
    "name",
    "url",
    "version",
    "digest",
    "selector",
    "memory_mib",
    "network",
];
const PLAN_FIELDS: &[&str] = &["canary", "wave", "max_in_flight", "max_failures"];

/// A deployment from a body with the fields of `deploy` (and `more`, the rollout's).
fn deployment(b: &Map<String, Value>, more: &[&str]) -> Result<NewDeployment, Refusal> {
    if let Some(k) = b
        .keys()
        .find(|k| !DEPLOYMENT_FIELDS.contains(&k.as_str()) && !more.contains(&k.as_str()))
    {
        let all: Vec<&str> = DEPLOYMENT_FIELDS.iter().chain(more).copied().collect();
        return Err(bad(k, format!("unknown (fields: {})", all.join(", "))));
    }
    let text = |f: &str| -> Result<String, Refusal> {
        let v = string(b, f)?.ok_or_else(|| bad(f, "missing"))?;
        views::check_text(f, &v).map_err(|e| bad(f, e))?;
        Ok(v)
    };
    let (name, url, version) = (text("name")?, text("url")?, text("version")?);
    let words: Vec<String> = match b.get("selector") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| selector_value(k, v).map(|v| format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("selector", "expected an object of key: value")),
    };
    let memory_mib = match b.get("memory_mib") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("memory_mib", "expected a positive number of MiB"))?,
        ),
    };
    // An object; absent or null: none (as every field here; `deploy --network null`'s
    // dropping of an override is the command line's).
    let network = match b.get("network") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => {
            Some(network::check(&v.to_string()).map_err(|e| bad("network", e))?)
        }
        Some(_) => return Err(bad("network", "expected an object (a network section)")),
    };
    Ok(NewDeployment {
        name,
        url,
        digest: string(b, "digest")?,
        version,
        selector: selector::parse(&words).map_err(|e| bad("selector", e))?,
        memory_mib,
        network,
    })
}

/// A selector's value as `--selector` takes it: a string, a number (`"percent": 10`), or an
/// array of strings (a list; an item cannot hold the list's comma).
fn selector_value(k: &str, v: &Value) -> Result<String, Refusal> {
    let k = crate::store::labels::cut(k);
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                match i {
                    Value::String(s) if !s.contains(',') => out.push(s.as_str()),
                    _ => {
                        return Err(bad(
                            "selector",
                            format!("{k}: expected strings without ','"),
                        ))
                    }
                }
            }
            Ok(out.join(","))
        }
        _ => Err(bad(
            "selector",
            format!("{k}: expected a string, a number or an array of strings"),
        )),
    }
}

/// `{"set": {"NAME": "VALUE", ...}, "remove": ["NAME", ...]}`, both optional, as `label`
/// takes them.
fn label_change(b: &Map<String, Value>) -> Result<LabelChange, Refusal> {
    if let Some(k) = b.keys().find(|k| *k != "set" && *k != "remove") {
        return Err(bad(k, "unknown (fields: set, remove)"));
    }
    let set: Vec<String> = match b.get("set") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(format!("{k}={s}")),
                _ => Err(bad(
                    "set",
                    format!("{}: expected a string", crate::store::labels::cut(k)),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("set", "expected an object of name: value")),
    };
    let remove: Vec<String> = match b.get("remove") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad("remove", "expected names"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("remove", "expected an array of names")),
    };
    // Which field a refusal is about: a name being set, or one being removed.
    LabelChange::new(&set, &[]).map_err(|e| bad("set", e))?;
    LabelChange::new(&[], &remove).map_err(|e| bad("remove", e))?;
    LabelChange::new(&set, &remove).map_err(Refusal::Invalid)
}

/// A rollout's plan from a body: the defaults of `rollout start` where a field is absent.
fn plan(b: &Map<String, Value>) -> Result<Plan, Refusal> {
    let mut p = Plan::default();
    if let Some(v) = amount_text(b, "canary")? {
        p.canary = Amount::parse("canary", &v).map_err(|e| bad("canary", e))?;
    }
    if let Some(v) = amount_text(b, "wave")? {
        p.wave = Amount::parse("wave", &v).map_err(|e| bad("wave", e))?;
    }
    if let Some(v) = amount_text(b, "max_failures")? {
        p.max_failure_pct =
            rollout_cli::parse_pct("max_failures", &v).map_err(|e| bad("max_failures", e))?;
    }
    match b.get("max_in_flight") {
        None | Some(Value::Null) => {}
        Some(v) => {
            p.max_in_flight = Some(
                v.as_i64()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| bad("max_in_flight", "expected a number in 1..10000"))?,
            )
        }
    }
    Ok(p)
}

/// `%XX` sequences decoded (an endpoint ID's `:` arrives as `%3A`); invalid ones kept as is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    fn call(store: &mut Store, method: &str, path: &str, body: &str) -> (u16, Value) {
        let r = api(
            store,
            &req(method, path, body),
            path.trim_start_matches("/api/v1"),
        );
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn deployments_and_errors_name_the_field() {
        let mut s = Store::open_in_memory().unwrap();
        let (st, v) = call(
            &mut s,
            "POST",
            "/api/v1/deployments",
            r#"{"name":"svc","url":"http://h/s.cpkg","version":"1.0",
                "selector":{"arch":"x86_64"},"memory_mib":16}"#,
        );
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["name"], "svc");
        let (st, v) = call(&mut s, "GET", "/api/v1/deployments", "");
        assert_eq!(st, 200);
        assert_eq!(v["deployments"][0]["selector"]["arch"], "x86_64");
        assert_eq!(v["deployments"][0]["memory_mib"], 16);
        assert!(
            v["deployments"][0].get("network").is_none(),
            "none given: {v}"
        );
        let (st, v) = call(
            &mut s,
            "POST",
            "/api/v1/deployments",
            r#"{"name":"web","url":"http://h/w.cpkg","version":"1.0",
                "network":{"mode":"none"}}"#,
        );
        assert_eq!(st, 201, "{v}");
        let (_, v) = call(&mut s, "GET", "/api/v1/deployments", "");
        assert_eq!(
            v["deployments"][0]["network"],
            json!({"mode": "none"}),
            "{v}"
        );
        let err = |body: &str| {
            let (st, v) = call(
                &mut Store::open_in_memory().unwrap(),
                "POST",
                "/api/v1/deployments",
                body,
            );
            assert_eq!(st, 400, "{body}: {v}");
            v["error"].as_str().unwrap().to_string()
        };
        assert!(err("{").contains("malformed JSON"));
        assert!(err("[1]").contains("JSON object"));
        assert!(err(r#"{"url":"u","version":"1"}"#).contains("`name`: missing"));
        assert!(err(r#"{"name":1,"url":"u","version":"1"}"#).contains("`name`: expected a string"));
        assert!(err(r#"{"name":"a","url":"u","version":"1","colour":"red"}"#).contains("`colour`"));
        assert!(
            err(r#"{"name":"a","url":"u","version":"1","selector":{"colour":"red"}}"#)
                .contains("`selector`")
        );
        assert!(
            err(r#"{"name":"a","url":"u","version":"1","memory_mib":0}"#).contains("`memory_mib`")
        );
        assert!(err(r#"{"name":"","url":"u","version":"1"}"#).contains("`name`"));
        assert!(
            err(r#"{"name":"a","url":"u","version":"1","network":"{}"}"#)
                .contains("`network`: expected an object")
        );
        let big = format!(
            r#"{{"name":"a","url":"u","version":"1","network":{{"x":"{}"}}}}"#,
            "a".repeat(network::MAX_BYTES)
        );
        assert!(err(&big).contains("`network`"), "{}", err(&big));
        assert!(err(r#"{"name":"a","url":"u","version":"1","canary":1}"#).contains("`canary`"));
    }

    #[test]
    fn rollouts_paths_and_methods() {
        let mut s = Store::open_in_memory().unwrap();
        let body = r#"{"name":"a","url":"u","version":"1","canary":"0"}"#;
        let (st, v) = call(&mut s, "POST", "/api/v1/rollouts", body);
        assert_eq!(st, 400);
        assert!(v["error"].as_str().unwrap().contains("`canary`"), "{v}");
        let (st, v) = call(
            &mut s,
            "POST",
            "/api/v1/rollouts",
            r#"{"name":"a","url":"u","version":"1","wave":"25%","max_failures":"30%"}"#,
        );
        assert_eq!(st, 409, "no agent matches: {v}");
        assert_eq!(call(&mut s, "GET", "/api/v1/rollouts/7", "").0, 404);
        assert_eq!(call(&mut s, "GET", "/api/v1/rollouts/x", "").0, 404);
        assert_eq!(call(&mut s, "POST", "/api/v1/rollouts/7/pause", "").0, 404);
        assert_eq!(call(&mut s, "POST", "/api/v1/rollouts/7/frob", "").0, 404);
        assert_eq!(call(&mut s, "DELETE", "/api/v1/rollouts/7", "").0, 405);
        assert_eq!(call(&mut s, "GET", "/api/v1/nothing", "").0, 404);
        assert_eq!(call(&mut s, "GET", "/api/v1/agents/os%3A%3Aa", "").0, 404);
        let (st, v) = call(&mut s, "GET", "/api/v1/rollouts", "");
        assert_eq!((st, v), (200, json!({"rollouts": []})));
        let (st, v) = call(&mut s, "GET", "/api/v1/summary", "");
        assert_eq!(st, 200);
        assert_eq!(v["agents"], json!({"total": 0, "online": 0}));
        let r = api(
            &mut s,
            &Request {
                method: "GET".into(),
                path: "/api/v1/agents".into(),
                query: "limit=0".into(),
                ..Request::default()
            },
            "/agents",
        );
        assert_eq!(r.status, 400);
    }

    #[test]
    fn labels_are_set_removed_and_shown_and_bad_ones_refused() {
        let mut s = Store::open_in_memory().unwrap();
        s.save_inventory("os::a", &crate::store::Inventory::default(), 1)
            .unwrap();
        let path = "/api/v1/agents/os%3A%3Aa/labels";
        let (st, v) = call(&mut s, "GET", path, "");
        assert_eq!(
            (st, v),
            (200, json!({"endpoint_id": "os::a", "labels": {}}))
        );
        let (st, v) = call(
            &mut s,
            "POST",
            path,
            r#"{"set": {"site": "paris", "tier": "beta"}}"#,
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["labels"], json!({"site": "paris", "tier": "beta"}));
        let (st, v) = call(
            &mut s,
            "POST",
            path,
            r#"{"set": {"site": "lyon"}, "remove": ["tier"]}"#,
        );
        assert_eq!((st, &v["labels"]), (200, &json!({"site": "lyon"})));
        // The agent's views show them.
        let (_, v) = call(&mut s, "GET", "/api/v1/agents/os%3A%3Aa", "");
        assert_eq!(v["labels"], json!({"site": "lyon"}));
        let (_, v) = call(&mut s, "GET", "/api/v1/agents", "");
        assert_eq!(v["agents"][0]["labels"], json!({"site": "lyon"}));
        let mut err = |body: &str| {
            let (st, v) = call(&mut s, "POST", path, body);
            (st, v["error"].as_str().unwrap_or_default().to_string())
        };
        let (st, e) = err(r#"{"set": {"si te": "x"}}"#);
        assert!(
            st == 400 && e.contains("`set`") && e.contains("label name"),
            "{e}"
        );
        let (st, e) = err(r#"{"set": {"site": "a/b"}}"#);
        assert!(st == 400 && e.contains("label value"), "{e}");
        let (st, e) = err(r#"{"remove": ["-x"]}"#);
        assert!(st == 400 && e.contains("`remove`"), "{e}");
        let (st, e) = err(r#"{"set": {"site": 1}}"#);
        assert!(st == 400 && e.contains("expected a string"), "{e}");
        let (st, e) = err(r#"{"sets": {}}"#);
        assert!(st == 400 && e.contains("`sets`"), "{e}");
        let (st, e) = err(r#"{"set": {"a": "1"}, "remove": ["a"]}"#);
        assert!(st == 400 && e.contains("given twice"), "{e}");
        // Over the bound per agent: 409, and nothing of that change is kept.
        let many: Map<String, Value> = (0..64).map(|i| (format!("k{i}"), json!("v"))).collect();
        let (st, e) = err(&json!({ "set": many }).to_string());
        assert!(st == 409 && e.contains("65 labels; at most 64"), "{e}");
        let (_, v) = call(&mut s, "GET", path, "");
        assert_eq!(v["labels"], json!({"site": "lyon"}), "nothing changed");
        let (st, _) = call(
            &mut s,
            "POST",
            "/api/v1/agents/os%3A%3Ab/labels",
            r#"{"set": {"a": "1"}}"#,
        );
        assert_eq!(st, 404, "an agent not in the inventory");
        assert_eq!(
            call(&mut s, "GET", "/api/v1/agents/os%3A%3Ab/labels", "").0,
            404
        );
        assert_eq!(call(&mut s, "DELETE", path, "").0, 405);
    }

    #[test]
    fn a_selector_takes_lists_as_arrays_and_percent_as_a_number() {
        let mut s = Store::open_in_memory().unwrap();
        let (st, v) = call(
            &mut s,
            "POST",
            "/api/v1/deployments",
            r#"{"name":"a","url":"u","version":"1","selector":
                {"endpoint_id":["os::a","os::b"],"percent":10,"label.site":"paris,lyon"}}"#,
        );
        assert_eq!(st, 201, "{v}");
        let (_, v) = call(&mut s, "GET", "/api/v1/deployments", "");
        assert_eq!(
            v["deployments"][0]["selector"],
            json!({"endpoint_id": "os::a,os::b", "percent": "10", "label.site": "paris,lyon"})
        );
        for (sel, want) in [
            (r#"{"endpoint_id":["os::a,os::b"]}"#, "without ','"),
            (r#"{"endpoint_id":[1]}"#, "without ','"),
            (r#"{"model":true}"#, "expected a string, a number"),
            (r#"{"percent":0}"#, "percentage"),
            (r#"{"label.s!":"x"}"#, "label name"),
        ] {
            let body = format!(r#"{{"name":"a","url":"u","version":"1","selector":{sel}}}"#);
            let (st, v) = call(&mut s, "POST", "/api/v1/deployments", &body);
            let e = v["error"].as_str().unwrap();
            assert!(
                st == 400 && e.contains("`selector`") && e.contains(want),
                "{sel}: {e}"
            );
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("os%3A%3Aa"), "os::a");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("a%zz%41"), "a%zzA");
        assert_eq!(percent_decode("%"), "%");
    }
}
