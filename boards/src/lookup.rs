//! Reading profile fields by dotted path (`memory.ram_mib`, `kernel.modules.0`), for scripts
//! and the Makefile, which should not parse TOML themselves.

use crate::profile::Board;
use serde_json::Value;

impl Board {
    /// The profile as JSON, with the same field names as the TOML file.
    pub fn to_json(&self) -> Value {
        // Serializing plain structs, strings, integers and unit enums into a JSON value has
        // no failure path; fall back to null rather than panic if serde ever changes that.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The profile as a board carries it ([`INSTALLED_PROFILE`](crate::INSTALLED_PROFILE)): [`Board::to_json`] as
    /// indented text, which [`Board::from_json_str`] reads back to the same board.
    pub fn to_json_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The value at a dotted path; list items are addressed by index (`kernel.modules.1`).
    /// `None` if there is no such field (or an optional section is absent).
    pub fn get(&self, path: &str) -> Option<Value> {
        let mut value = self.to_json();
        for key in path.split('.') {
            value = match value {
                Value::Object(mut map) => map.remove(key)?,
                Value::Array(mut items) => {
                    let index: usize = key.parse().ok()?;
                    if index >= items.len() {
                        return None;
                    }
                    items.swap_remove(index)
                }
                _ => return None,
            };
        }
        Some(value)
    }

    /// Every leaf field as `(dotted path, plain value)`, sorted by path; lists are one
    /// space-separated value.
    pub fn flatten(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        flatten_into(&self.to_json(), String::new(), &mut out);
        out
    }
}

fn flatten_into(value: &Value, prefix: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_into(child, path, out);
            }
        }
        other => out.push((prefix, plain_value(other))),
    }
}

/// A value as a shell script wants it: strings without quotes, lists space-separated,
/// tables as JSON.
pub fn plain_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(plain_value).collect::<Vec<_>>().join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
