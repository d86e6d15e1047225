//! Which agents a deployment is for: `key=value` pairs over the inventory, all of which must
//! match. Keys: `arch`, `board`, `model`, `manufacturer`, `software_version`, `endpoint_id`,
//! `label.NAME` (the operator's labels, `store::labels`) and `percent`. A value may be a list,
//! `a,b,c`, any one of which matches (so a value cannot hold a comma). A key the agent has not
//! reported does not match (an agent is never guessed into a deployment).
//!
//! `percent=N` keeps a stable N% of the agents the other pairs match: those whose bucket
//! ([`bucket`]: a fixed hash of the deployment's name and the agent's endpoint ID, 0..99) is
//! below N. The same on every replica and after a restart; raising N only adds agents; a new
//! version of the app (same name) keeps the same agents; another app draws its own.
//!
//! Deployments keep their selector as the operator gave it (key to text); [`Selector`] is it
//! read once for matching many agents.

use std::collections::{BTreeMap, HashSet};

use crate::store::labels::{self, cut};
use crate::store::{fnv1a, AgentView};

/// The grammar, for `--help` (after the commands that take `--selector`).
pub const USAGE: &str =
    "selectors (deploy and rollout start --selector KEY=VALUE, repeatable; the API's
\"selector\": {\"KEY\": \"VALUE\"}): an agent must match every pair
  arch=A  board=B  model=M  manufacturer=F  software_version=V  endpoint_id=EP
                               the agent's inventory (arch: its own or any ExecEnv's); a
                               value the agent has not reported matches nothing
  label.NAME=VALUE             an operator's label (`label`); label.NAME= : an empty one
  KEY=V1,V2,...                a list: any one of its values matches (at most 1000 values
                               of 256 bytes each, 64 KiB a selector; so no value holds a
                               comma)
  percent=N                    a stable N% (1..100) of the agents the other pairs match:
                               by a fixed hash of the app's name and the endpoint ID, so
                               the same on every replica and after a restart, only growing
                               as N grows, drawn apart for each app, and the same agents
                               for a new version of the app
  e.g. --selector model=cpe-a,cpe-b --selector label.site=paris --selector percent=10
";

/// The inventory keys a selector may use (besides `label.NAME` and `percent`).
pub const KEYS: &[&str] = &[
    "arch",
    "board",
    "model",
    "manufacturer",
    "software_version",
    "endpoint_id",
];
/// The prefix of a label key: `label.site=paris`.
pub const LABEL: &str = "label.";
/// The key of the share of agents.
pub const PERCENT: &str = "percent";
/// Values in one key's list at most.
pub const MAX_VALUES: usize = 1000;
/// Bytes of one value at most.
pub const MAX_VALUE_BYTES: usize = 256;
/// Bytes of a whole selector at most (its `key=value` words); an API body is as large.
pub const MAX_BYTES: usize = 64 * 1024;

/// What one key reads of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// An inventory key of [`KEYS`].
    Fact(&'static str),
    /// `label.NAME`.
    Label(String),
    /// `percent`.
    Percent,
}

/// The key `k` of a `k=v` word.
fn key(k: &str) -> Result<Key, String> {
    if let Some(name) = k.strip_prefix(LABEL) {
        labels::check_name(name)?;
        return Ok(Key::Label(name.to_string()));
    }
    if k == PERCENT {
        return Ok(Key::Percent);
    }
    KEYS.iter()
        .find(|&&x| x == k)
        .map(|&x| Key::Fact(x))
        .ok_or_else(|| {
            format!(
                "unknown key {:?} (keys: {}, {LABEL}NAME, {PERCENT})",
                cut(k),
                KEYS.join(", ")
            )
        })
}

/// `percent`'s value: 1..100.
fn percent(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=100).contains(n) && v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{:?} is not a whole percentage in 1..100", cut(v)))
}

/// The values a `key=v` word accepts: `v` split at commas, each checked.
fn values<'v>(key: &Key, v: &'v str) -> Result<Vec<&'v str>, String> {
    // `label.x=` asks for an empty label value; no other key has empty values.
    if v.is_empty() && !matches!(key, Key::Label(_)) {
        return Err(format!("the value must be 1..{MAX_VALUE_BYTES} bytes"));
    }
    let items: Vec<&str> = v.split(',').collect();
    if items.len() > MAX_VALUES {
        return Err(format!(
            "{} values; at most {MAX_VALUES} in a list",
            items.len()
        ));
    }
    for item in &items {
        if item.is_empty() && items.len() > 1 {
            return Err("an empty value in the list (two commas, or one at an end)".into());
        }
        match key {
            Key::Label(_) => labels::check_value(item)?,
            Key::Percent if items.len() > 1 => return Err("takes one number, not a list".into()),
            Key::Percent => {
                percent(item)?;
            }
            Key::Fact(_) if item.len() > MAX_VALUE_BYTES => {
                return Err(format!(
                    "value {:?}: {} bytes; at most {MAX_VALUE_BYTES}",
                    cut(item),
                    item.len()
                ))
            }
            Key::Fact(_) => {}
        }
    }
    Ok(items)
}

/// One `key=value` pair, checked: the one rule for a new selector and a stored one.
fn pair(k: &str, v: &str) -> Result<(Key, Vec<String>), String> {
    let key = key(k)?;
    let items = values(&key, v)?;
    Ok((key, items.into_iter().map(String::from).collect()))
}

/// Parses `key=value` words into a selector; an unknown key, a bad value or list, a key given
/// twice and a selector over [`MAX_BYTES`] are refused, the error naming which.
pub fn parse(words: &[String]) -> Result<BTreeMap<String, String>, String> {
    let total: usize = words.iter().map(String::len).sum();
    if total > MAX_BYTES {
        return Err(format!(
            "--selector: {total} bytes in all; at most {MAX_BYTES}"
        ));
    }
    let mut out = BTreeMap::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("--selector {:?}: not key=value", cut(w)))?;
        pair(k, v).map_err(|e| format!("--selector {}: {e}", cut(k)))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("--selector: {} given twice", cut(k)));
        }
    }
    Ok(out)
}

/// A deployment's selector read for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Each key with the values any of which matches.
    terms: Vec<(Key, HashSet<String>)>,
    /// `percent`'s N and the deployment's name it draws with.
    percent: Option<(u32, String)>,
    /// A stored pair that no longer reads (another build's, or damaged): matches no agent.
    broken: bool,
}

impl Selector {
    /// The stored `selector` of deployment `name`.
    pub fn new(selector: &BTreeMap<String, String>, name: &str) -> Selector {
        let mut s = Selector {
            terms: Vec::new(),
            percent: None,
            broken: false,
        };
        for (k, v) in selector {
            match pair(k, v) {
                Ok((Key::Percent, items)) => {
                    s.percent = items
                        .first()
                        .and_then(|p| percent(p).ok())
                        .map(|n| (n, name.to_string()))
                }
                Ok((key, items)) => s.terms.push((key, items.into_iter().collect())),
                Err(_) => s.broken = true,
            }
        }
        s
    }

    /// Whether `agent` matches every pair (an empty selector matches every agent).
    pub fn matches(&self, agent: &AgentView) -> bool {
        !self.broken
            && self.terms.iter().all(|(k, set)| {
                let mut has = agent_values(agent, k);
                has.any(|v| set.contains(v))
            })
            && self
                .percent
                .as_ref()
                .is_none_or(|(n, name)| bucket(name, &agent.endpoint_id) < *n)
    }
}

/// Whether `agent` matches deployment `name`'s `selector` (one agent; many: [`Selector`]).
pub fn matches(selector: &BTreeMap<String, String>, name: &str, agent: &AgentView) -> bool {
    Selector::new(selector, name).matches(agent)
}

/// The agent's values for `key`: its architecture is its own or any of its ExecEnvs'.
fn agent_values<'a>(agent: &'a AgentView, key: &Key) -> Box<dyn Iterator<Item = &'a str> + 'a> {
    let f = &agent.facts;
    let one =
        |v: &'a Option<String>| Box::new(v.as_deref().into_iter()) as Box<dyn Iterator<Item = _>>;
    match key {
        Key::Fact("endpoint_id") => Box::new(std::iter::once(agent.endpoint_id.as_str())),
        Key::Fact("model") => one(&f.model),
        Key::Fact("manufacturer") => one(&f.manufacturer),
        Key::Fact("software_version") => one(&f.software_version),
        Key::Fact("board") => one(&f.board),
        Key::Fact("arch") => Box::new(
            f.arch
                .as_deref()
                .into_iter()
                .chain(agent.exec_envs.iter().filter_map(|e| e.arch.as_deref())),
        ),
        Key::Label(n) => Box::new(agent.labels.get(n).map(String::as_str).into_iter()),
        Key::Fact(_) | Key::Percent => Box::new(std::iter::empty()),
    }
}

/// The agent's bucket for deployment `name`, 0..99: `percent=N` takes the buckets below N.
///
/// FNV-1a (`store::fnv1a`, the shards' hash) of name, a 0 byte, endpoint ID, then a 64-bit
/// finalizer (MurmurHash3's fmix64): FNV-1a's low bits mix poorly, and its value mod 100 left
/// some pairs of apps' shares far from independent (measured: at 10%, apps `app` and `a`
/// shared no agent of 20,000, where 200 were due; with the finalizer all pairs tried were within
/// noise). Fixed: every replica and build must draw the same agents.
pub fn bucket(name: &str, endpoint_id: &str) -> u32 {
    let bytes = name
        .bytes()
        .chain(std::iter::once(0))
        .chain(endpoint_id.bytes());
    let mut h = fnv1a(bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % 100) as u32
}

#[cfg(test)]
mod tests;
