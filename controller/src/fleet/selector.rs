//! Which agents a deployment is for: `key=value` pairs over the inventory, all of which must
//! match. Keys: `arch`, `model`, `manufacturer`, `software_version`, `endpoint_id`. A key the
//! agent has not reported does not match (an agent is never guessed into a deployment).

use std::collections::BTreeMap;

use crate::store::AgentView;

/// The keys a selector may use.
pub const KEYS: &[&str] = &[
    "arch",
    "model",
    "manufacturer",
    "software_version",
    "endpoint_id",
];

/// Parses `key=value` words into a selector; unknown keys, empty values and a key given twice
/// are refused.
pub fn parse(words: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("--selector {w:?}: not key=value"))?;
        if !KEYS.contains(&k) {
            return Err(format!(
                "--selector {w:?}: unknown key {k:?} (keys: {})",
                KEYS.join(", ")
            ));
        }
        if v.is_empty() || v.len() > 256 {
            return Err(format!("--selector {w:?}: the value must be 1..256 bytes"));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("--selector: {k} given twice"));
        }
    }
    Ok(out)
}

/// The agent's value for `key`: its architecture is its own or any of its ExecEnvs'.
fn values<'a>(agent: &'a AgentView, key: &str) -> Vec<&'a str> {
    let f = &agent.facts;
    let one = |v: &'a Option<String>| v.as_deref().into_iter().collect::<Vec<_>>();
    match key {
        "endpoint_id" => vec![agent.endpoint_id.as_str()],
        "model" => one(&f.model),
        "manufacturer" => one(&f.manufacturer),
        "software_version" => one(&f.software_version),
        "arch" => f
            .arch
            .as_deref()
            .into_iter()
            .chain(agent.exec_envs.iter().filter_map(|e| e.arch.as_deref()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `agent` matches every pair of `selector` (an empty selector matches every agent).
pub fn matches(selector: &BTreeMap<String, String>, agent: &AgentView) -> bool {
    selector
        .iter()
        .all(|(k, v)| values(agent, k).contains(&v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeviceFacts, ExecEnv};

    fn agent(model: Option<&str>, arch: Option<&str>, env_arch: Option<&str>) -> AgentView {
        AgentView {
            endpoint_id: "os::a".into(),
            facts: DeviceFacts {
                model: model.map(String::from),
                arch: arch.map(String::from),
                manufacturer: Some("acme".into()),
                ..DeviceFacts::default()
            },
            exec_envs: vec![ExecEnv {
                arch: env_arch.map(String::from),
                ..ExecEnv::default()
            }],
            ..AgentView::default()
        }
    }

    fn sel(words: &[&str]) -> BTreeMap<String, String> {
        parse(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn every_key_must_match() {
        let a = agent(Some("cpe-a"), Some("x86_64"), None);
        assert!(matches(&sel(&[]), &a));
        assert!(matches(&sel(&["model=cpe-a"]), &a));
        assert!(matches(
            &sel(&["model=cpe-a", "arch=x86_64", "manufacturer=acme"]),
            &a
        ));
        assert!(matches(&sel(&["endpoint_id=os::a"]), &a));
        assert!(!matches(&sel(&["model=cpe-a", "arch=aarch64"]), &a));
        assert!(!matches(&sel(&["model=cpe-b"]), &a));
        assert!(!matches(&sel(&["endpoint_id=os::b"]), &a));
    }

    #[test]
    fn an_unreported_value_does_not_match_and_exec_envs_give_the_arch() {
        let a = agent(None, None, None);
        assert!(!matches(&sel(&["model=cpe-a"]), &a));
        assert!(!matches(&sel(&["arch=x86_64"]), &a));
        assert!(!matches(&sel(&["software_version=0.1.0"]), &a));
        let a = agent(None, None, Some("aarch64"));
        assert!(matches(&sel(&["arch=aarch64"]), &a));
        assert!(!matches(&sel(&["arch=x86_64"]), &a));
    }

    #[test]
    fn bad_selectors_are_refused() {
        let e =
            |w: &[&str]| parse(&w.iter().map(|w| w.to_string()).collect::<Vec<_>>()).unwrap_err();
        assert!(e(&["board"]).contains("not key=value"));
        assert!(e(&["colour=red"]).contains("unknown key"));
        assert!(e(&["arch="]).contains("1..256"));
        assert!(e(&["arch=a", "arch=b"]).contains("twice"));
    }
}
