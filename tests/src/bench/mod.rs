//! Benchmark figures: printed as a table and written to `target/bench.json` as a JSON list of
//! `{name, value, unit[, peer, peer_value, ratio][, note][, samples, peer_samples]}` where
//! `ratio = value / peer_value` for a peer measured on the same work in the same run.

pub mod agent;
pub mod agent_test;
pub mod board;
pub mod density;
pub mod flash;
pub mod fleet;
pub mod graceful;
pub mod jail;
pub mod net;
pub mod ready;
pub mod sizes;
pub mod stats;
pub mod usp;
pub mod wear;

use serde_json::{json, Value};
use std::path::Path;

/// One figure of `make bench`, with its peer where it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Dotted name (`vmm.boot_ms`), the key in `target/bench.json`.
    pub name: String,
    /// The measured value (a median where there are samples).
    pub value: f64,
    /// `ms`, `KiB`, `bytes`, `ratio`, ...
    pub unit: String,
    /// The peer's name and its value on the same work.
    pub peer: Option<(String, f64)>,
    /// How the figure was taken, or why its peer is absent.
    pub note: Option<String>,
    /// The individual runs behind a median (value's, then the peer's).
    pub samples: Vec<f64>,
    /// The peer's individual runs.
    pub peer_samples: Vec<f64>,
}

impl Figure {
    /// A figure without a peer.
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            peer: None,
            note: None,
            samples: Vec::new(),
            peer_samples: Vec::new(),
        }
    }

    /// Says how the figure was taken, or why it has no peer.
    pub fn with_note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }

    /// Keeps the individual runs behind the value and the peer's.
    pub fn with_samples(mut self, samples: Vec<f64>, peer_samples: Vec<f64>) -> Figure {
        self.samples = samples;
        self.peer_samples = peer_samples;
        self
    }

    /// Sets the peer and its value on the same work.
    pub fn with_peer(mut self, peer: impl Into<String>, peer_value: f64) -> Figure {
        self.peer = Some((peer.into(), peer_value));
        self
    }

    /// value / peer value (`None` without a peer, or a peer of 0).
    pub fn ratio(&self) -> Option<f64> {
        self.peer
            .as_ref()
            .filter(|(_, v)| *v != 0.0)
            .map(|(_, v)| self.value / v)
    }

    /// The figure as `target/bench.json` stores it.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "value": self.value, "unit": self.unit});
        if let Some((peer, pv)) = &self.peer {
            v["peer"] = json!(peer);
            v["peer_value"] = json!(pv);
            if let Some(r) = self.ratio() {
                v["ratio"] = json!((r * 1000.0).round() / 1000.0);
            }
        }
        if let Some(note) = &self.note {
            v["note"] = json!(note);
        }
        if !self.samples.is_empty() {
            v["samples"] = json!(self.samples);
        }
        if !self.peer_samples.is_empty() {
            v["peer_samples"] = json!(self.peer_samples);
        }
        v
    }
}

/// The table people read; notes follow it, numbered from the figures that carry them.
pub fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<48} {:>12} {:<6} {:<28} {:>12} {:>8}\n",
        "figure", "value", "unit", "peer", "peer value", "ratio"
    );
    let mut notes = Vec::new();
    for f in figures {
        let name = match &f.note {
            Some(note) => {
                notes.push(note.as_str());
                format!("{} [{}]", f.name, notes.len())
            }
            None => f.name.clone(),
        };
        let (peer, pv) = match &f.peer {
            Some((p, v)) => (p.clone(), format!("{v:.1}")),
            None => (String::new(), String::new()),
        };
        let ratio = f.ratio().map(|r| format!("{r:.3}")).unwrap_or_default();
        out.push_str(&format!(
            "{:<48} {:>12.1} {:<6} {:<28} {:>12} {:>8}\n",
            name, f.value, f.unit, peer, pv, ratio
        ));
    }
    for (i, note) in notes.iter().enumerate() {
        out.push_str(&format!("[{}] {note}\n", i + 1));
    }
    out
}

/// Writes every figure to `path` as one JSON array.
pub fn write_json(figures: &[Figure], path: &Path) -> std::io::Result<()> {
    let list: Vec<Value> = figures.iter().map(Figure::to_json).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&list)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_json_shape() {
        let f = Figure::new("vmm.overhead_rss_kib", 1500.0, "KiB").with_peer("qemu", 30000.0);
        let v = f.to_json();
        assert_eq!(v["ratio"], json!(0.05));
        assert_eq!(v["peer"], json!("qemu"));
        let plain = Figure::new("x", 1.0, "ms").to_json();
        assert!(plain.get("ratio").is_none() && plain.get("peer").is_none());
        assert!(Figure::new("z", 1.0, "ms")
            .with_peer("p", 0.0)
            .ratio()
            .is_none());
        assert!(plain.get("note").is_none() && plain.get("samples").is_none());
    }

    #[test]
    fn notes_and_samples_reach_json_and_table() {
        let f = Figure::new("vmm.start_to_ready_ms", 900.0, "ms")
            .with_peer("qemu", 3000.0)
            .with_note("watcher on the board")
            .with_samples(vec![890.0, 900.0, 950.0], vec![3000.0, 2900.0, 3100.0]);
        let v = f.to_json();
        assert_eq!(v["note"], json!("watcher on the board"));
        assert_eq!(v["samples"], json!([890.0, 900.0, 950.0]));
        assert_eq!(v["peer_samples"][2], json!(3100.0));
        assert_eq!(v["ratio"], json!(0.3));
        let t = table(&[f, Figure::new("x", 1.0, "KiB")]);
        assert!(t.contains("vmm.start_to_ready_ms [1]"), "{t}");
        assert!(t.ends_with("[1] watcher on the board\n"), "{t}");
    }
}
