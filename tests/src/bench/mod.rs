//! Benchmark figures: printed as a table and written to `target/bench.json` as a JSON list of
//! `{name, value, unit[, peer, peer_value, ratio]}` where `ratio = value / peer_value` for a peer
//! measured on the same work in the same run.

use serde_json::{json, Value};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub peer: Option<(String, f64)>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            peer: None,
        }
    }

    pub fn with_peer(mut self, peer: impl Into<String>, peer_value: f64) -> Figure {
        self.peer = Some((peer.into(), peer_value));
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.peer
            .as_ref()
            .filter(|(_, v)| *v != 0.0)
            .map(|(_, v)| self.value / v)
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "value": self.value, "unit": self.unit});
        if let Some((peer, pv)) = &self.peer {
            v["peer"] = json!(peer);
            v["peer_value"] = json!(pv);
            if let Some(r) = self.ratio() {
                v["ratio"] = json!((r * 1000.0).round() / 1000.0);
            }
        }
        v
    }
}

/// The table people read.
pub fn table(figures: &[Figure]) -> String {
    let mut out = format!(
        "{:<48} {:>12} {:<6} {:<28} {:>12} {:>8}\n",
        "figure", "value", "unit", "peer", "peer value", "ratio"
    );
    for f in figures {
        let (peer, pv) = match &f.peer {
            Some((p, v)) => (p.clone(), format!("{v:.1}")),
            None => (String::new(), String::new()),
        };
        let ratio = f.ratio().map(|r| format!("{r:.3}")).unwrap_or_default();
        out.push_str(&format!(
            "{:<48} {:>12.1} {:<6} {:<28} {:>12} {:>8}\n",
            f.name, f.value, f.unit, peer, pv, ratio
        ));
    }
    out
}

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
    }
}
