//! What the device's binary is built from: `scripts/cross.sh` builds `cpevisor` without default
//! features, and that build must carry no TOML parser (a board reads the JSON profile its
//! firmware installs; the toml crates were ~180 KiB of mipsel code, docs/flash.md section 8),
//! no second ed25519 (ring, linked for TLS, verifies package signatures; section 11), and on
//! the boards without KVM no VMM.

use std::process::Command;

/// Names of the crates in the agent's normal (not dev, not build) dependency tree, for `target`
/// (`all`: every target), with or without default features.
fn agent_dependencies(target: &str, default_features: bool) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["tree", "--manifest-path", manifest, "--locked", "--offline"])
        .args(["-p", "cpevisor-agent", "-e", "normal", "--target", target])
        .args(["--prefix", "none", "--format", "{p}"]);
    if !default_features {
        cmd.arg("--no-default-features");
    }
    let out = cmd.output().expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn toml_crates(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.starts_with("toml")).collect()
}

#[test]
fn the_device_build_has_no_toml_parser() {
    let device = agent_dependencies("all", false);
    assert!(device.iter().any(|n| n == "cpevisor-boards"), "{device:?}");
    assert!(device.iter().any(|n| n == "serde_json"), "{device:?}");
    assert_eq!(toml_crates(&device), Vec::<&String>::new());
    // The check sees toml where it is: the host build reads boards/*.toml.
    let host = agent_dependencies("all", true);
    assert!(toml_crates(&host).iter().any(|n| *n == "toml"), "{host:?}");
}

#[test]
fn the_device_build_verifies_ed25519_with_ring_alone() {
    let device = agent_dependencies("all", false);
    assert!(device.iter().any(|n| n == "ring"), "{device:?}");
    let dalek: Vec<_> = device.iter().filter(|n| n.contains("dalek")).collect();
    assert_eq!(dalek, Vec::<&String>::new());
}

#[test]
fn the_vmm_is_in_the_kvm_boards_builds_only() {
    let has_vmm = |target| agent_dependencies(target, false).contains(&"cpevisor-vmm".into());
    assert!(has_vmm("aarch64-unknown-linux-musl"));
    assert!(!has_vmm("mipsel-unknown-linux-musl"));
    assert!(!has_vmm("armv7-unknown-linux-musleabihf"));
}
