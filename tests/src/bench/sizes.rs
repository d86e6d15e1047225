//! Binary sizes: our stripped static release binaries from `make cross` (`target/cross/<rust
//! target>/`), beside what QEMU needs on flash to run (its binary plus shared-library closure),
//! as `scripts/bench-overlay.sh` measured it into `target/bench/peer-sizes.env`; and what the
//! device carries from us in all (`flash.device_binaries_kib.<target>`, docs/flash.md), and what
//! that takes in a compressed root file system as router firmware stores it
//! (`flash.device_binaries_squashfs_kib.<target>`).

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

/// What the device carries from us for one target: each binary file in `dir` (a `make cross`
/// output directory) with its size, sorted by name. Symlinks (the multi-call binary's applet
/// names) are not followed: the firmware installs them as links, nothing on flash but a name.
pub fn device_binaries(dir: &Path) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let md = std::fs::symlink_metadata(entry.path())?;
        if md.is_file() {
            out.push((entry.file_name().to_string_lossy().into_owned(), md.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// `flash.device_binaries_kib.<target>`: everything from us the device carries for `target`
/// (the multi-call `cpevisor`, plus `cpevisor-vmm` where it is separate), from `make cross`'s
/// directory for it; `None` when that directory has no binaries.
pub fn device_binaries_figure(cross: &Path, target: &str) -> Option<Figure> {
    let files = device_binaries(&cross.join(target)).ok()?;
    if files.is_empty() {
        return None;
    }
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = files
        .iter()
        .map(|(name, n)| format!("{name} {} KiB", (n + 512) / 1024))
        .collect();
    Some(
        Figure::new(
            format!("flash.device_binaries_kib.{target}"),
            (total as f64 / 1024.0).round(),
            "KiB",
        )
        .with_note(format!(
            "static (musl) stripped release binaries from make cross, each on flash once ({};              cpevisord and cpevisorctl are symlinks to the multi-call cpevisor)",
            parts.join(" + ")
        )),
    )
}

/// Block size of the squashfs image: OpenWrt's default for its root file systems.
const SQUASHFS_BLOCK: &str = "256K";

/// `flash.device_binaries_squashfs_kib.<target>`: the bytes of a squashfs image (xz, 256 KiB
/// blocks, made by Debian's mksquashfs) holding `make cross`'s directory for `target`, links
/// included. Router firmware (OpenWrt's squashfs root) stores the binaries this way, so this is
/// what they take on flash there; the file size (`flash.device_binaries_kib`) is what they take
/// uncompressed (a writable overlay without compression, RAM when run). `None` (with a message)
/// when the directory is empty or missing or mksquashfs fails.
pub fn squashfs_figure(cross: &Path, target: &str) -> Option<Figure> {
    let dir = cross.join(target);
    if device_binaries(&dir).ok()?.is_empty() {
        return None;
    }
    let image = std::env::temp_dir().join(format!(
        "cpevisor-bench-{}-{target}.squashfs",
        std::process::id()
    ));
    let made = std::process::Command::new("mksquashfs")
        .arg(&dir)
        .arg(&image)
        .args(["-comp", "xz", "-b", SQUASHFS_BLOCK])
        .args([
            "-noappend",
            "-all-root",
            "-no-xattrs",
            "-quiet",
            "-no-progress",
        ])
        .stdout(std::process::Stdio::null())
        .output();
    let size = std::fs::metadata(&image).map(|m| m.len());
    let _ = std::fs::remove_file(&image);
    match (made, size) {
        (Ok(out), Ok(bytes)) if out.status.success() => Some(
            Figure::new(
                format!("flash.device_binaries_squashfs_kib.{target}"),
                (bytes as f64 / 1024.0).round(),
                "KiB",
            )
            .with_note(format!(
                "make cross's binaries in a squashfs image as router firmware stores them \
                 (mksquashfs, xz, {SQUASHFS_BLOCK} blocks, padded to 4 KiB)"
            )),
        ),
        (Ok(out), _) => {
            eprintln!(
                "bench: mksquashfs for {target} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        (Err(e), _) => {
            eprintln!("bench: mksquashfs (make setup installs it): {e}: no squashfs figure");
            None
        }
    }
}

/// `vmm.binary_kib.<target>` (with the QEMU peer where measured; only where the VMM is a binary
/// of its own), `agent.binary_kib.<target>` (the multi-call binary) and
/// `flash.device_binaries_kib.<target>`.
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
        for (bin, group) in [("cpevisor-vmm", "vmm"), ("cpevisor", "agent")] {
            // A VMM folded into the multi-call binary is a link to it: no binary of its own.
            let Ok(md) = std::fs::symlink_metadata(dir.join(&t).join(bin)) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
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
        figures.extend(device_binaries_figure(&dir, &t));
        figures.extend(squashfs_figure(&dir, &t));
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
    fn device_binaries_count_each_file_once_and_no_links() {
        let cross = std::env::temp_dir().join(format!("sizes-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cross);
        let t = "aarch64-unknown-linux-musl";
        let dir = cross.join(t);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpevisor"), vec![0u8; 3 * 1024]).unwrap();
        std::fs::write(dir.join("cpevisor-vmm"), vec![0u8; 2 * 1024 + 100]).unwrap();
        for applet in ["cpevisord", "cpevisorctl"] {
            std::os::unix::fs::symlink("cpevisor", dir.join(applet)).unwrap();
        }
        std::fs::create_dir_all(cross.join("mipsel-unknown-linux-musl")).unwrap();
        let files = device_binaries(&dir).unwrap();
        let f = device_binaries_figure(&cross, t);
        let empty = device_binaries_figure(&cross, "mipsel-unknown-linux-musl");
        let missing = device_binaries_figure(&cross, "armv7-unknown-linux-musleabihf");
        let _ = std::fs::remove_dir_all(&cross);
        assert_eq!(
            files,
            [
                ("cpevisor".to_string(), 3072),
                ("cpevisor-vmm".to_string(), 2148)
            ]
        );
        let f = f.unwrap();
        assert_eq!(
            f.name,
            "flash.device_binaries_kib.aarch64-unknown-linux-musl"
        );
        // (3072 + 2148) / 1024 = 5.10: the links add nothing.
        assert_eq!(f.value, 5.0);
        let note = f.note.as_deref().unwrap_or_default();
        assert!(
            note.contains("cpevisor 3 KiB + cpevisor-vmm 2 KiB"),
            "{note}"
        );
        assert!(empty.is_none() && missing.is_none());
    }

    #[test]
    fn a_folded_vmm_has_no_binary_figure_of_its_own() {
        let root = std::env::temp_dir().join(format!("sizes-fold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("target/cross/aarch64-unknown-linux-musl");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpevisor"), vec![0u8; 2048]).unwrap();
        for applet in ["cpevisord", "cpevisorctl", "cpevisor-vmm"] {
            std::os::unix::fs::symlink("cpevisor", dir.join(applet)).unwrap();
        }
        let mut figures = Vec::new();
        binary_sizes(&root, &mut figures);
        let _ = std::fs::remove_dir_all(&root);
        let names: Vec<(&str, f64)> = figures.iter().map(|f| (f.name.as_str(), f.value)).collect();
        assert_eq!(
            names,
            [
                ("agent.binary_kib.aarch64-unknown-linux-musl", 2.0),
                ("flash.device_binaries_kib.aarch64-unknown-linux-musl", 2.0),
                // 2 KiB of zeros and three links: one padded 4 KiB block of squashfs.
                (
                    "flash.device_binaries_squashfs_kib.aarch64-unknown-linux-musl",
                    4.0
                )
            ]
        );
    }

    #[test]
    fn peer_only_for_targets_with_a_measured_qemu() {
        let p = parse_peer_sizes("qemu_arm64_total_bytes=55574528\nqemu_arm64_binary_bytes=20971520\nqemu_arm64_files=52\n").unwrap();
        let (name, kib, note) = peer_for("aarch64-unknown-linux-musl", &p).unwrap();
        assert_eq!(name, "qemu-system-aarch64 + libs");
        assert_eq!(kib, 54272.0);
        assert!(
            note.contains("52 files") && note.contains("20480 KiB"),
            "{note}"
        );
        assert!(peer_for("x86_64-unknown-linux-musl", &p).is_none());
        assert!(peer_for("mipsel-unknown-linux-musl", &p).is_none());
    }

    /// The squashfs figure is the real compressed image: compressible code shrinks, random bytes
    /// do not, and links cost nothing.
    #[test]
    fn squashfs_figure_is_the_compressed_image() {
        let cross = std::env::temp_dir().join(format!("sizes-squash-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cross);
        let (zeros, random) = ("x86_64-unknown-linux-musl", "mipsel-unknown-linux-musl");
        for t in [zeros, random] {
            std::fs::create_dir_all(cross.join(t)).unwrap();
            std::os::unix::fs::symlink("cpevisor", cross.join(t).join("cpevisord")).unwrap();
        }
        std::fs::write(cross.join(zeros).join("cpevisor"), vec![0u8; 512 * 1024]).unwrap();
        // xorshift: incompressible, and the same on every run.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..512 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(cross.join(random).join("cpevisor"), noise).unwrap();
        let small = squashfs_figure(&cross, zeros);
        let large = squashfs_figure(&cross, random);
        let none = squashfs_figure(&cross, "armv7-unknown-linux-musleabihf");
        let _ = std::fs::remove_dir_all(&cross);
        let (small, large) = (
            small.expect("mksquashfs ran"),
            large.expect("mksquashfs ran"),
        );
        assert_eq!(
            small.name,
            "flash.device_binaries_squashfs_kib.x86_64-unknown-linux-musl"
        );
        assert!(small.value <= 8.0, "512 KiB of zeros: {}", small.value);
        assert!(
            (512.0..=540.0).contains(&large.value),
            "512 KiB of noise: {}",
            large.value
        );
        assert!(none.is_none());
    }
}
