//! The store against apps that write: a kvm app's data disk is its own private copy, never the
//! content-addressed blob other apps (of other vendors) share; blobs stay read-only and keep
//! matching their names; a blob modified on flash is not reused. And the rootfs of a jail app
//! is extracted at install, before any start. The real daemon runs the apps through its real
//! kvm backend, with a stand-in VMM (a script) that reports what its disk held and writes a
//! secret into it, as a guest would.

#[path = "common/agentd.rs"]
mod agentd;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentd::{eu_of, App, World};
use cpevisor_agent::store::Digest;
use serde_json::json;

/// The blank data disk both vendors ship: same bytes, so the same blob.
fn blank_disk() -> Vec<u8> {
    b"BLANK".iter().copied().cycle().take(4096).collect()
}

/// A VMM stand-in: prints what the first bytes of its disk were, then writes
/// `SECRET-<secret= on the command line>` over them and stays up like a guest would.
const FAKE_VMM: &str = r#"#!/usr/bin/env python3
import json, os, sys, time
cfg = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
disk = cfg["disks"][0]["path"]
tag = cfg["cmdline"].split("secret=")[1].split()[0]
with open(disk, "r+b") as f:
    before = f.read(12)
    f.seek(0)
    f.write(("SECRET-" + tag).encode())
    f.flush()
    os.fsync(f.fileno())
print("before=" + before.decode("latin1"), flush=True)
print("disk=" + disk, flush=True)
print("wrote", flush=True)
while True:
    time.sleep(1)
"#;

/// The kvm backend's run directory is named after the EU (`eu-1` in every test): one kvm
/// agent at a time.
static ONE_KVM_AGENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_kvm_agent() -> std::sync::MutexGuard<'static, ()> {
    ONE_KVM_AGENT.lock().unwrap_or_else(|p| p.into_inner())
}

fn kvm_world(tag: &str) -> World {
    let w = World::new(tag);
    w.use_vmm_script(FAKE_VMM, json!({}));
    w
}

/// Packs a kvm app of `vendor` with the blank disk; its "guest" writes `secret`.
fn publish_kvm(w: &World, vendor: &str, version: &str, secret: &str) -> String {
    let file = format!("{vendor}-{version}.cpkg");
    let dir = w.root.join(format!("src-{file}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Image"), format!("kernel of {vendor}")).unwrap();
    fs::write(dir.join("data.img"), blank_disk()).unwrap();
    let app = json!({
        "name": "store", "version": version, "vendor": vendor, "description": "disk test",
        "arch": "x86_64", "backends": ["kvm"], "memory_mib": 16, "vcpus": 1,
        "cmdline": format!("console=ttyS0 secret={secret}"), "command": [],
        "restart": {"enable": false, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
                    "retry_interval_multiplier": 1000, "max_retry_count": 0,
                    "reset_period_s": 60},
        "autostart": true, "run_level": 1, "kernel": "Image", "disk": "data.img",
    });
    w.pack_app(&dir, &app, &file, &w.key)
}

/// Waits for the stand-in VMM of `eu` to have written its secret; returns its log.
fn guest_log(w: &World, eu: &str) -> String {
    w.wait_log(eu, "wrote", 15)
}

fn line<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {log:?}"))
}

fn assert_blob_intact(w: &World, digest: &Digest) -> PathBuf {
    let path = w.state.join("blobs/sha256").join(digest.hex());
    let bytes = fs::read(&path).unwrap();
    assert_eq!(
        Digest::of(&bytes),
        *digest,
        "{} no longer matches its name",
        path.display()
    );
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o444, "{}: mode {mode:o}", path.display());
    path
}

#[test]
fn data_disks_are_private_copies_and_blobs_stay_intact() {
    let _turn = one_kvm_agent();
    let mut w = kvm_world("disks");
    let alpha = publish_kvm(&w, "alpha", "1.0", "alpha");
    let alpha2 = publish_kvm(&w, "alpha", "2.0", "alpha2");
    let beta = publish_kvm(&w, "beta", "1.0", "beta");
    let gamma = publish_kvm(&w, "gamma", "1.0", "gamma");
    let blob = Digest::of(&blank_disk());
    w.start_daemon(None);

    // A's guest writes its secret into its disk.
    let a = w.ctl_json(&["install", &alpha]).expect("install alpha");
    let a_eu = eu_of(&a);
    let a_log = guest_log(&w, &a_eu);
    assert_eq!(line(&a_log, "before="), "BLANKBLANKBL", "{a_log}");
    let a_disk = line(&a_log, "disk=").to_string();

    // B, of another vendor, ships the same blank disk: it gets a blank disk, not A's.
    let b = w.ctl_json(&["install", &beta]).expect("install beta");
    let b_log = guest_log(&w, &eu_of(&b));
    assert_eq!(
        line(&b_log, "before="),
        "BLANKBLANKBL",
        "B saw A's data: {b_log}"
    );
    let b_disk = line(&b_log, "disk=").to_string();
    assert_ne!(a_disk, b_disk);
    for d in [&a_disk, &b_disk] {
        assert!(!d.contains("/blobs/"), "a disk is a shared blob: {d}");
        assert!(d.contains("_data/"), "not in the DU's data area: {d}");
    }
    assert!(fs::read(&a_disk).unwrap().starts_with(b"SECRET-alpha"));
    assert!(fs::read(&b_disk).unwrap().starts_with(b"SECRET-beta"));
    let blob_path = assert_blob_intact(&w, &blob);

    // An update keeps the DU's data (TR-181: persistent data survives an update).
    let uuid = a["uuid"].as_str().unwrap().to_string();
    w.ctl_json(&["update", &uuid, &alpha2])
        .expect("update alpha");
    let mut up_log = guest_log(&w, &a_eu);
    let deadline = Instant::now() + Duration::from_secs(15);
    while up_log.matches("wrote").count() < 2 {
        assert!(Instant::now() < deadline, "no second start: {up_log}");
        std::thread::sleep(Duration::from_millis(50));
        up_log = guest_log(&w, &a_eu);
    }
    let second = up_log.rsplit("before=").next().unwrap();
    assert!(
        second.starts_with("SECRET-alpha"),
        "update lost the data: {up_log}"
    );

    // Uninstall removes the disk; a reinstall starts from a fresh one.
    w.ctl_json(&["uninstall", &uuid]).expect("uninstall alpha");
    assert!(!Path::new(&a_disk).exists(), "the disk outlived its DU");
    let a = w.ctl_json(&["install", &alpha]).expect("reinstall alpha");
    let a_log = guest_log(&w, &eu_of(&a));
    assert_eq!(
        line(&a_log, "before="),
        "BLANKBLANKBL",
        "the reinstall got a used disk: {a_log}"
    );
    assert_blob_intact(&w, &blob);

    // The blob modified on flash (same size): not reused, replaced by the verified bytes.
    fs::set_permissions(&blob_path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&blob_path).unwrap();
    bytes[..5].copy_from_slice(b"EVIL!");
    fs::write(&blob_path, &bytes).unwrap();
    let g = w.ctl_json(&["install", &gamma]).expect("install gamma");
    let g_log = guest_log(&w, &eu_of(&g));
    assert_eq!(
        line(&g_log, "before="),
        "BLANKBLANKBL",
        "a modified blob was reused: {g_log}"
    );
    assert_blob_intact(&w, &blob);
    assert!(
        w.daemon_log().contains("modified on flash"),
        "{}",
        w.daemon_log()
    );
}

/// A jail app's rootfs is unpacked by the install itself: nothing is extracted at start.
#[test]
fn the_rootfs_is_extracted_at_install() {
    let mut w = World::new("extract");
    w.write_config_patched(json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "runner": "jail"}],
    }));
    let mut app = App::new("unpacked", "1.0");
    app.autostart = false;
    let url = w.publish(&app, "unpacked.cpkg");
    w.start_daemon(None);
    let du = w.ctl_json(&["install", &url]).expect("install");
    let eu = eu_of(&du);
    assert_eq!(w.eu(&eu)["status"], "Idle");
    let hello = w
        .state_files()
        .into_iter()
        .find(|f| f.ends_with("/rootfs/hello"))
        .unwrap_or_else(|| panic!("rootfs not extracted at install: {:?}", w.state_files()));
    assert_eq!(
        fs::read_to_string(w.state.join(hello)).unwrap(),
        "unpacked 1.0\n"
    );
    assert!(!w.daemon_log().contains("auto-start"), "{}", w.daemon_log());
}

/// A DU an older agent installed used the blob itself as its disk: at open it gets a private
/// copy holding what its app wrote, and the blob, no longer matching its name, is not reused.
#[test]
fn a_legacy_shared_disk_is_migrated_to_a_private_copy() {
    let _turn = one_kvm_agent();
    let mut w = kvm_world("legacy");
    let alpha = publish_kvm(&w, "alpha", "1.0", "alpha");
    let beta = publish_kvm(&w, "beta", "1.0", "beta");
    let blob = Digest::of(&blank_disk());
    w.start_daemon(None);
    w.ctl_json(&["install", &alpha]).expect("install alpha");
    assert_eq!(w.stop_daemon(), Some(0));
    // What an older agent left: the record's disk is the blob, and the app wrote into it;
    // no private copy.
    let blob_path = w.state.join("blobs/sha256").join(blob.hex());
    let mut state = w.state_json().unwrap();
    fs::remove_file(state["dus"][0]["files"]["disk"].as_str().unwrap()).unwrap();
    state["dus"][0]["files"]["disk"] = json!(blob_path);
    fs::write(
        w.state.join("state.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();
    fs::set_permissions(&blob_path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&blob_path).unwrap();
    bytes[..12].copy_from_slice(b"LEGACY-DATA!");
    fs::write(&blob_path, &bytes).unwrap();

    w.start_daemon(None);
    let eu = eu_of(&w.list()["deployment_units"][0]);
    let log = guest_log(&w, &eu);
    assert_eq!(line(&log, "before="), "LEGACY-DATA!", "{log}");
    assert!(line(&log, "disk=").contains("_data/"), "{log}");
    let disk = w.state_json().unwrap()["dus"][0]["files"]["disk"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(disk.ends_with("_data/disk.img"), "{disk}");
    let b = w.ctl_json(&["install", &beta]).expect("install beta");
    let b_log = guest_log(&w, &eu_of(&b));
    assert_eq!(line(&b_log, "before="), "BLANKBLANKBL", "{b_log}");
    assert_blob_intact(&w, &blob);
}
