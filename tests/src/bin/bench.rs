//! `make bench`: collects the figures the build and the boards can give, prints a table and
//! writes `target/bench.json`. Each figure group says why it is absent when it cannot be taken.

use cpevisor_e2e::bench::{table, write_json, Figure};
use cpevisor_e2e::workspace_root;

fn main() {
    let root = workspace_root();
    let mut figures = Vec::new();
    binary_sizes(&root, &mut figures);
    print!("{}", table(&figures));
    let out = root.join("target/bench.json");
    if let Err(e) = write_json(&figures, &out) {
        eprintln!("bench: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
}

/// Stripped static release binaries from `make cross` (`target/cross/<rust target>/`).
fn binary_sizes(root: &std::path::Path, figures: &mut Vec<Figure>) {
    let dir = root.join("target/cross");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "bench: {} missing (run make cross): no binary sizes",
            dir.display()
        );
        return;
    };
    let mut targets: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    targets.sort();
    for t in targets {
        let t = t.to_string_lossy().to_string();
        for (bin, group) in [("cpevisor-vmm", "vmm"), ("cpevisord", "agent")] {
            if let Ok(md) = std::fs::metadata(dir.join(&t).join(bin)) {
                figures.push(Figure::new(
                    format!("{group}.binary_kib.{t}"),
                    (md.len() as f64 / 1024.0).round(),
                    "KiB",
                ));
            }
        }
    }
}
