//! Binary sizes: our stripped static release binaries from `make cross` (`target/cross/<rust
//! target>/`), beside what QEMU needs on flash to run (its binary plus shared-library closure),
//! as `scripts/bench-overlay.sh` measured it into `target/bench/peer-sizes.env`.

use super::Figure;
use std::collections::BTreeMap;
use std::path::Path;

/// Longest peer-sizes file read (it holds a handful of `key=value` lines).
const MAX_PEER_FILE: u64 = 16 * 1024;

/// `key=value` lines; blank lines and `#` comments skipped, anything else is an error.
pub fn parse_peer_sizes(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: {line:?} is not key=value", i + 1))?;
        let v = v
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("line {}: {k}={v:?} is not a byte count", i + 1))?;
        out.insert(k.trim().to_string(), v);
    }
    Ok(out)
}

/// The peer for a target's VMM binary: (peer name, KiB, note), when the overlay script measured it.
fn peer_for(target: &str, peers: &BTreeMap<String, u64>) -> Option<(String, f64, String)> {
    let arch = target.split('-').next()?;
    let (deb_arch, qemu, how) = match arch {
        "aarch64" => (
            "arm64",
            "qemu-system-aarch64",
            "the overlay's copy, NEEDED followed with readelf",
        ),
        "x86_64" => (
            "amd64",
            "qemu-system-x86_64",
            "this host's, as ldd resolves it",
        ),
        _ => return None,
    };
    let total = *peers.get(&format!("qemu_{deb_arch}_total_bytes"))?;
    let binary = peers.get(&format!("qemu_{deb_arch}_binary_bytes")).copied();
    let files = peers.get(&format!("qemu_{deb_arch}_files")).copied();
    let note = format!(
        "ours: stripped, static (+crt-static); peer: Debian's {qemu} ({deb_arch}, stripped, dynamic) plus its shared-library closure ({how}: {} files; the binary alone {} KiB)",
        files.map_or("?".into(), |n| n.to_string()),
        binary.map_or("?".into(), |b| (b / 1024).to_string())
    );
    Some((
        format!("{qemu} + libs"),
        (total as f64 / 1024.0).round(),
        note,
    ))
}

/// `vmm.binary_kib.<target>` (with the QEMU peer where measured) and `agent.binary_kib.<target>`.
pub fn binary_sizes(root: &Path, figures: &mut Vec<Figure>) {
    let dir = root.join("target/cross");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "bench: {} missing (run make cross): no binary sizes",
            dir.display()
        );
        return;
    };
    let peer_file = root.join("target/bench/peer-sizes.env");
    let peers = match std::fs::metadata(&peer_file) {
        Ok(md) if md.len() > MAX_PEER_FILE => {
            eprintln!(
                "bench: {} is {} bytes, at most {MAX_PEER_FILE}: ignored",
                peer_file.display(),
                md.len()
            );
            BTreeMap::new()
        }
        Ok(_) => std::fs::read_to_string(&peer_file)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_peer_sizes(&t))
            .unwrap_or_else(|e| {
                eprintln!("bench: {}: {e}: no QEMU size peers", peer_file.display());
                BTreeMap::new()
            }),
        Err(_) => {
            eprintln!(
                "bench: {} missing (scripts/bench-overlay.sh writes it): no QEMU size peers",
                peer_file.display()
            );
            BTreeMap::new()
        }
    };
    let mut targets: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    targets.sort();
    for t in targets {
        let t = t.to_string_lossy().to_string();
        for (bin, group) in [("cpevisor-vmm", "vmm"), ("cpevisord", "agent")] {
            let Ok(md) = std::fs::metadata(dir.join(&t).join(bin)) else {
                continue;
            };
            let mut f = Figure::new(
                format!("{group}.binary_kib.{t}"),
                (md.len() as f64 / 1024.0).round(),
                "KiB",
            );
            if group == "vmm" {
                if let Some((peer, kib, note)) = peer_for(&t, &peers) {
                    f = f.with_peer(peer, kib).with_note(note);
                }
            }
            figures.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_file_parses_and_rejects_garbage() {
        let p = parse_peer_sizes("# sizes\nqemu_arm64_total_bytes=2048\n\nqemu_arm64_files=52\n")
            .unwrap();
        assert_eq!(p["qemu_arm64_total_bytes"], 2048);
        assert!(parse_peer_sizes("oops").unwrap_err().contains("line 1"));
        assert!(parse_peer_sizes("a=b").unwrap_err().contains("byte count"));
    }

    #[test]
    fn peer_only_for_targets_with_a_measured_qemu() {
        let p = parse_peer_sizes("qemu_arm64_total_bytes=55574528\nqemu_arm64_binary_bytes=20971520\nqemu_arm64_files=52\n").unwrap();
        let (name, kib, note) = peer_for("aarch64-unknown-linux-gnu", &p).unwrap();
        assert_eq!(name, "qemu-system-aarch64 + libs");
        assert_eq!(kib, 54272.0);
        assert!(
            note.contains("52 files") && note.contains("20480 KiB"),
            "{note}"
        );
        assert!(peer_for("x86_64-unknown-linux-gnu", &p).is_none());
        assert!(peer_for("mipsel-unknown-linux-gnu", &p).is_none());
    }
}
