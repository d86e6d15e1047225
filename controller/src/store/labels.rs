//! Operator-assigned labels on agents (`site=paris`, `tier=beta`): what they may be, and their
//! table. A selector's `label.NAME=VALUE` reads them (`fleet::selector`); the `label` command
//! and the API change them, through [`LabelChange`], which only a checked change can be.

use std::collections::{BTreeMap, BTreeSet};

use super::db::p;
use super::Store;

/// Labels one agent may carry at most.
pub const MAX_LABELS: usize = 64;
/// Longest label name and value, bytes (Kubernetes' bound).
pub const MAX_LEN: usize = 63;

/// Whether `s` is made of `[A-Za-z0-9._-]` and begins and ends with a letter or digit.
fn label_chars(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && edge(s.chars().next())
        && edge(s.chars().last())
}

/// A label name: 1..63 bytes of `[A-Za-z0-9._-]`, beginning and ending with a letter or digit.
pub fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > MAX_LEN || !label_chars(n) {
        return Err(format!(
            "label name {:?}: 1..{MAX_LEN} of A-Z a-z 0-9 . _ -, beginning and ending with a \
             letter or digit",
            cut(n)
        ));
    }
    Ok(())
}

/// A label value: empty, or as a name.
pub fn check_value(v: &str) -> Result<(), String> {
    if !v.is_empty() && (v.len() > MAX_LEN || !label_chars(v)) {
        return Err(format!(
            "label value {:?}: 0..{MAX_LEN} of A-Z a-z 0-9 . _ -, beginning and ending with a \
             letter or digit",
            cut(v)
        ));
    }
    Ok(())
}

/// At most 80 bytes of `s`, for an error message (hostile input is not echoed whole).
pub fn cut(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Labels to set and names to remove on one agent, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelChange {
    set: BTreeMap<String, String>,
    remove: BTreeSet<String>,
}

impl LabelChange {
    /// A change from `NAME=VALUE` words and names to remove; a bad name or value, a name given
    /// twice (or both set and removed) and more than [`MAX_LABELS`] of either are refused.
    pub fn new(set: &[String], remove: &[String]) -> Result<LabelChange, String> {
        if set.len() > MAX_LABELS || remove.len() > MAX_LABELS {
            return Err(format!("at most {MAX_LABELS} labels at once"));
        }
        let mut c = LabelChange::default();
        for w in set {
            let (n, v) = w
                .split_once('=')
                .ok_or_else(|| format!("label {:?}: not NAME=VALUE", cut(w)))?;
            check_name(n)?;
            check_value(v)?;
            if c.set.insert(n.to_string(), v.to_string()).is_some() {
                return Err(format!("label {n}: given twice"));
            }
        }
        for n in remove {
            check_name(n)?;
            if c.set.contains_key(n) || !c.remove.insert(n.clone()) {
                return Err(format!("label {n}: given twice"));
            }
        }
        Ok(c)
    }

    /// Whether it changes nothing (the command then shows the labels).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// A label of an agent: (endpoint ID, (name, value)).
pub(super) type AgentLabel = (String, (String, String));

/// What became of a label change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOutcome {
    /// Made: the agent's labels now.
    Labels(BTreeMap<String, String>),
    /// The agent is not in the inventory.
    UnknownAgent,
    /// Not made: the agent would carry this many labels, over [`MAX_LABELS`].
    TooMany(usize),
}

impl Store {
    /// Applies `change` to `agent`'s labels, all or nothing.
    pub fn change_labels(
        &mut self,
        agent: &str,
        change: &LabelChange,
    ) -> Result<LabelOutcome, String> {
        let tx = self.db.begin_write()?;
        // Touching the agent's row locks it to the end (PostgreSQL; SQLite's write lock is
        // whole), so two changes of one agent's labels cannot both pass the bound below.
        if tx.execute(
            "UPDATE agents SET last_seen = last_seen WHERE endpoint_id = ?1",
            &p![agent],
        )? == 0
        {
            return Ok(LabelOutcome::UnknownAgent);
        }
        for n in &change.remove {
            tx.execute(
                "DELETE FROM agent_labels WHERE endpoint_id = ?1 AND name = ?2",
                &p![agent, n],
            )?;
        }
        for (n, v) in &change.set {
            tx.execute(
                "INSERT INTO agent_labels (endpoint_id, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (endpoint_id, name) DO UPDATE SET value = ?3",
                &p![agent, n, v],
            )?;
        }
        let labels = labels_of(&tx, agent)?;
        if labels.len() > MAX_LABELS {
            return Ok(LabelOutcome::TooMany(labels.len()));
        }
        tx.commit()?;
        Ok(LabelOutcome::Labels(labels))
    }

    /// The labels of the agents from `first` to `last` (endpoint ID order), as (agent,
    /// (name, value)): a page's.
    pub(super) fn labels_between(
        &self,
        first: &str,
        last: &str,
    ) -> Result<Vec<AgentLabel>, String> {
        self.rows_by_agent(
            "SELECT endpoint_id, name, value FROM agent_labels
             WHERE endpoint_id BETWEEN ?1 AND ?2 ORDER BY endpoint_id, name",
            (first, last),
            |r| Ok((r.get(1)?, r.get(2)?)),
        )
    }
}

fn labels_of(db: &super::db::Db, agent: &str) -> Result<BTreeMap<String, String>, String> {
    db.query(
        "SELECT name, value FROM agent_labels WHERE endpoint_id = ?1",
        &p![agent],
    )?
    .iter()
    .map(|r| Ok((r.get(0)?, r.get(1)?)))
    .collect()
}
