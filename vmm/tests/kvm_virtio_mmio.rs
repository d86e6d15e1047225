//! virtio-mmio devices wired by the builder, seen from a raw guest: MMIO exits reach the right
//! transport through the bus, at the addresses the x86 command line announces.
#![cfg(target_arch = "x86_64")]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

fn probe(s: &Scratch, extra: &[&str]) -> std::process::Output {
    let k = s.file("probe.bin", VIRTIO_PROBE);
    let mut args = vec![
        "--kernel",
        k.to_str().unwrap(),
        "--kernel-format=raw-x86-64",
        "--memory=16",
    ];
    args.extend_from_slice(extra);
    run(&args, T)
}

#[test]
fn block_and_rng_answer_at_their_slots() {
    let s = Scratch::new("virtio");
    let disk = s.file("disk.img", &vec![0u8; 1 << 20]);
    let disk_ro = format!("{},ro", disk.display());
    let o = probe(&s, &["--disk", &disk_ro, "--rng"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // "virt" magic, device 0 = block (id 2), device 1 = entropy (id 4).
    assert_eq!(stdout(&o), "virt24\n");
}

#[test]
fn net_on_an_existing_tap() {
    let s = Scratch::new("vnet");
    let tap = format!("cpvt{}", std::process::id() % 100_000);
    let created = Command::new("ip")
        .args(["tuntap", "add", &tap, "mode", "tap"])
        .status()
        .map(|st| st.success())
        .unwrap_or(false);
    if !created {
        eprintln!("skipped: cannot create tap device {tap} (needs root and /dev/net/tun)");
        return;
    }
    let net = format!("{tap},mac=02:00:00:00:00:07");
    let o = probe(&s, &["--net", &net, "--rng"]);
    let _ = Command::new("ip")
        .args(["tuntap", "del", &tap, "mode", "tap"])
        .status();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // device 0 = net (id 1), device 1 = entropy (id 4).
    assert_eq!(stdout(&o), "virt14\n");
}
