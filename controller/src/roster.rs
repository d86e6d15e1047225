//! The roster: the agents a controller has heard from (announcements, answers), kept in a
//! JSON file that `--all --roster FILE` addresses.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{check_endpoint, read_bounded};

/// One line of the roster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    /// The agent's endpoint ID.
    pub endpoint_id: String,
    /// Its topic, when it announced one.
    #[serde(default)]
    pub topic: Option<String>,
    /// How it was seen: `Boot!`, `OnBoardRequest` or `Response`.
    #[serde(default)]
    pub how: String,
}

/// Reads the roster file (JSON list); an absent file is an empty roster.
pub fn load_roster(path: &Path) -> Result<Vec<RosterEntry>, String> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let list: Vec<RosterEntry> = serde_json::from_str(&read_bounded(path, "roster")?)
        .map_err(|e| format!("roster {}: {e}", path.display()))?;
    if list.len() > super::engine::MAX_AGENTS {
        return Err(format!(
            "roster {}: more than {} agents",
            path.display(),
            super::engine::MAX_AGENTS
        ));
    }
    for e in &list {
        check_endpoint(&e.endpoint_id).map_err(|m| format!("roster {}: {m}", path.display()))?;
    }
    Ok(list)
}

/// Adds `seen` to the roster (write to a temporary file, then rename: never half a file).
pub(super) fn save_roster(path: &Path, seen: &[RosterEntry]) -> Result<(), String> {
    let mut list = load_roster(path)?;
    for s in seen {
        match list.iter().position(|e| e.endpoint_id == s.endpoint_id) {
            Some(i) => list[i] = s.clone(),
            None if list.len() < super::engine::MAX_AGENTS => list.push(s.clone()),
            None => {}
        }
    }
    list.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| format!("roster {}: {e}", path.display()))
}
