//! Flash as a budget like memory, through the real daemon and the jail backend (root,
//! busybox-static, mke2fs, loop devices). A package whose head declares more flash than its
//! ExecEnv has left is refused (7227) after the one 64 KiB Range request for its head, with
//! nothing written; one that fits installs and AvailableDiskSpace drops by what it declared;
//! an app that fills its data volume gets ENOSPC at the cap while another app keeps writing
//! to its own and the agent keeps working.

#[path = "common/agentd.rs"]
mod agentd;
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use agentd::{busybox_rootfs, eu_of, loop_devices_on, tar_dir, World, BUSYBOX};
use common::Server;
use serde_json::{json, Value};

/// The ExecEnv's flash budget, MiB.
const BUDGET_MIB: u64 = 30;
/// What each small app declares, MiB (a ~2 MiB busybox package twice: blob and extracted
/// rootfs, the rest its data volume).
const APP_MIB: u64 = 12;

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mke2fs = Command::new("mke2fs").arg("-V").output().is_ok();
    root && mke2fs && Path::new(BUSYBOX).exists() && Path::new("/dev/loop-control").exists()
}

/// A world whose one jail ExecEnv has [`BUDGET_MIB`] of flash, and its package server.
fn world(tag: &str) -> (World, Server) {
    let w = World::new(tag);
    w.write_config_patched(json!({
        "exec_envs": [{"name": "jail0", "type": "jail", "arch": "x86_64",
                       "memory_budget_mib": 64, "disk_budget_mib": BUDGET_MIB,
                       "runner": "jail"}],
        "download_cap_bytes": 16 << 20,
    }));
    let server = Server::range(&w.www, &w.root.join("requests.log"), &[]);
    (w, server)
}

/// Packs a busybox jail app `name` running `script` that declares `disk_mib`.
fn publish(w: &World, name: &str, script: &str, disk_mib: u64) -> String {
    let dir = w.root.join(format!("src-{name}"));
    let _ = fs::remove_dir_all(&dir);
    busybox_rootfs(&dir.join("rootfs"));
    std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin/dd")).unwrap();
    tar_dir(&dir.join("rootfs"), &dir.join("rootfs.tar"));
    let app = json!({
        "name": name, "version": "1.0", "vendor": "acme", "description": "disk test app",
        "arch": "x86_64", "backends": ["jail"], "memory_mib": 16, "vcpus": 1,
        "command": ["/bin/sh", "-c", script], "autostart": true, "run_level": 1,
        "restart": {"enable": false, "retry_min_wait_s": 1, "retry_max_wait_s": 1,
                    "retry_interval_multiplier": 1000, "max_retry_count": 0,
                    "reset_period_s": 60},
        "rootfs": "rootfs.tar", "disk_mib": disk_mib,
    });
    let file = format!("{name}.cpkg");
    w.pack_app(&dir, &app, &file, &w.key);
    file
}

fn requests_for(server: &Server, file: &str) -> Vec<String> {
    let reqs = server
        .requests()
        .into_iter()
        .filter(|l| l.contains(&format!("/{file} ")))
        .collect();
    let _ = fs::write(&server.log, "");
    reqs
}

fn available_kib(w: &World) -> u64 {
    w.list()["exec_envs"][0]["available_disk_kib"]
        .as_u64()
        .expect("available_disk_kib")
}

fn refused_before_download(w: &World, server: &Server, file: &str, need_mib: u64) {
    let before = w.state_files();
    let err = w
        .ctl_json(&["install", &server.url("http", "127.0.0.1", file)])
        .unwrap_err();
    assert_eq!(err.0, 7227, "{}", err.1);
    assert!(err.1.contains("before download"), "{}", err.1);
    assert!(
        err.1.contains(&format!("{} KiB of flash", need_mib * 1024)),
        "the message names the need: {}",
        err.1
    );
    assert_eq!(
        requests_for(server, file),
        vec![format!("GET /{file} range=bytes=0-65535")],
        "only the head was requested, never the package"
    );
    assert_eq!(w.state_files(), before, "nothing written to the store");
}

#[test]
fn flash_is_admitted_like_memory_and_a_data_volume_is_capped() {
    if !can_run() {
        eprintln!("skipped: needs root, {BUSYBOX} (busybox-static), mke2fs and loop devices");
        return;
    }
    let (mut w, server) = world("diskbudget");
    // Writes 64 KiB to its volume every 0.2 s and says whether it could.
    let keeper = publish(
        &w,
        "keeper",
        "echo keeper up; [ -e /data/chunk ] && echo keeper had data; \
         i=0; while true; do i=$((i+1)); \
         if dd if=/dev/zero of=/data/chunk bs=64k count=1 2>/dev/null; \
         then echo ok $i; else echo WRITE FAILED $i; fi; sleep 0.2; done",
        APP_MIB,
    );
    // Writes until its volume is full.
    let filler = publish(
        &w,
        "filler",
        "echo filler up; dd if=/dev/zero of=/data/big bs=1M count=64; \
         echo dd exit $?; while true; do sleep 1; done",
        APP_MIB,
    );
    let huge = publish(&w, "huge", "sleep 1000", BUDGET_MIB + 10);
    let keeper2 = publish(&w, "keeper2", "sleep 1000", BUDGET_MIB);
    // Version 2.0 of keeper that asks for the whole budget (the other app holds 12 MiB).
    let mut v2: Value =
        serde_json::from_slice(&fs::read(w.root.join("src-keeper2/app.json")).unwrap()).unwrap();
    v2["name"] = json!("keeper");
    v2["version"] = json!("2.0");
    w.pack_app(&w.root.join("src-keeper2"), &v2, &keeper2, &w.key);
    let second = publish(&w, "second", "sleep 1000", 20);
    w.start_daemon(None);

    // More than the whole budget: refused before download.
    let empty = available_kib(&w);
    assert_eq!(empty, BUDGET_MIB * 1024, "an empty ExecEnv has its budget");
    refused_before_download(&w, &server, &huge, BUDGET_MIB + 10);

    // One that fits installs, and what is left drops by its declaration (its volume is
    // sparse: what it may still write counts).
    let du = w
        .ctl_json(&["install", &server.url("http", "127.0.0.1", &keeper)])
        .expect("keeper installs");
    let eu_k = eu_of(&du);
    let after = available_kib(&w);
    assert_eq!(empty - after, APP_MIB * 1024, "{empty} -> {after} KiB");
    let eu = w.eu(&eu_k);
    assert_eq!(eu["allocated_disk_kib"], APP_MIB * 1024, "{eu}");
    let used = eu["disk_in_use"].as_u64().unwrap();
    assert!(
        (2 * 1024..APP_MIB * 1024).contains(&used),
        "the package's files, measured: {used} KiB"
    );
    eprintln!("available {empty} -> {after} KiB; keeper's files {used} KiB");
    w.wait_log(&eu_k, "ok 3", 20);
    // cpevisorctl shows the same: the ExecEnv's budget and what is left (and each EU's use).
    let text = String::from_utf8(w.ctl(&["list"]).stdout).unwrap();
    assert!(
        text.contains("DISK_KIB") && text.contains("DISK_FREE_KIB"),
        "{text}"
    );
    assert!(text.contains(&format!("30720     {after}")), "{text}");

    // 20 MiB declared, 18 left: refused before download too.
    refused_before_download(&w, &server, &second, 20);

    // The second 12 MiB app fits, fills its volume and hits its cap.
    let eu_f = eu_of(
        &w.ctl_json(&["install", &server.url("http", "127.0.0.1", &filler)])
            .expect("filler installs"),
    );
    let log = w.wait_log(&eu_f, "dd exit", 30);
    assert!(log.contains("No space left on device"), "{log}");
    assert!(log.contains("dd exit 1"), "{log}");
    let volume = w
        .state
        .join("apps")
        .join(format!("{}_data", w.eu(&eu_f)["du_uuid"].as_str().unwrap()))
        .join("disk.img");
    let len = fs::metadata(&volume).unwrap().len();
    assert!(
        len < APP_MIB << 20,
        "the volume is what the declaration leaves: {len} bytes"
    );
    let filled = w.eu(&eu_f)["disk_in_use"].as_u64().unwrap();
    assert!(
        (APP_MIB * 1024 - 2048..=APP_MIB * 1024 + 256).contains(&filled),
        "DiskSpaceInUse of the full app is about its declaration: {filled} KiB"
    );
    eprintln!("filler: volume {len} bytes, DiskSpaceInUse {filled} KiB");
    assert_eq!(w.eu(&eu_f)["status"], "Active", "ENOSPC is the app's own");

    // The other app keeps writing to its own volume, and the agent keeps working.
    let last_ok = |log: &str| -> u64 {
        log.lines()
            .filter_map(|l| l.trim().strip_prefix("ok "))
            .filter_map(|n| n.trim().parse().ok())
            .max()
            .unwrap_or(0)
    };
    let then = last_ok(&w.logs(&eu_k));
    w.poll(20, || {
        let log = w.logs(&eu_k);
        match last_ok(&log) > then + 3 {
            true => Ok(()),
            false => Err(format!("keeper stalled at ok {then}: {log}")),
        }
    });
    assert!(!w.logs(&eu_k).contains("WRITE FAILED"), "{}", w.logs(&eu_k));

    // An update is admitted the same way, its own DU's flash counted as free: 30 MiB asked,
    // 30 - 12 (filler) left: refused before download, the running version kept.
    let uuid_k = w.eu(&eu_k)["du_uuid"].as_str().unwrap().to_string();
    let before = w.state_files();
    let err = w
        .ctl_json(&[
            "update",
            &uuid_k,
            &server.url("http", "127.0.0.1", &keeper2),
        ])
        .unwrap_err();
    assert_eq!(err.0, 7227, "{}", err.1);
    assert!(err.1.contains("has 18432 KiB left"), "{}", err.1);
    assert_eq!(requests_for(&server, &keeper2).len(), 1, "the head only");
    assert_eq!(w.eu(&eu_k)["status"], "Active");
    let after_update: Vec<String> = w.state_files();
    assert_eq!(
        after_update
            .iter()
            .filter(|f| !f.starts_with("events"))
            .count(),
        before.iter().filter(|f| !f.starts_with("events")).count(),
        "no file added or removed"
    );

    // An update that fits keeps the DU's volume, and the data in it.
    let mut v11: Value =
        serde_json::from_slice(&fs::read(w.root.join("src-keeper/app.json")).unwrap()).unwrap();
    v11["version"] = json!("1.1");
    w.pack_app(&w.root.join("src-keeper"), &v11, "keeper-1.1.cpkg", &w.key);
    let volume_k = w
        .state
        .join("apps")
        .join(format!("{uuid_k}_data"))
        .join("disk.img");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
    let ino = inode(&volume_k);
    w.ctl_json(&[
        "update",
        &uuid_k,
        &server.url("http", "127.0.0.1", "keeper-1.1.cpkg"),
    ])
    .expect("the update fits");
    w.wait_log(&eu_k, "keeper had data", 20);
    assert_eq!(inode(&volume_k), ino, "the same volume");

    assert!(w.ctl(&["stop", &eu_f]).status.success());
    w.wait_eu_status(&eu_f, "Idle", 20);
    let list: Value = w.list();
    assert_eq!(list["deployment_units"].as_array().unwrap().len(), 2);
    // The running keeper's volume is a loop device (the stopped filler's went with its jail).
    w.poll(10, || match loop_devices_on(&w.root) {
        v if v.len() == 1 => Ok(()),
        v => Err(format!("one loop device expected: {v:?}")),
    });
    w.stop_daemon();
    // The volumes' mounts lived in their runners' mount namespaces: with the apps gone, no loop
    // device is left on the world's files.
    w.poll(10, || match loop_devices_on(&w.root) {
        v if v.is_empty() => Ok(()),
        v => Err(format!("loop devices left: {v:?}")),
    });
}

/// Two apps whose packages carry the same root layer hold one blob in the store: the budget
/// is charged for it once, while each app's DiskSpaceInUse still shows all its files.
#[test]
fn a_blob_two_apps_share_is_charged_once() {
    if !can_run() {
        eprintln!("skipped: needs root, {BUSYBOX} (busybox-static), mke2fs and loop devices");
        return;
    }
    let (mut w, server) = world("diskshared");
    // One source directory: both packages carry the same rootfs.tar, one blob.
    let dir = w.root.join("src-shared");
    busybox_rootfs(&dir.join("rootfs"));
    tar_dir(&dir.join("rootfs"), &dir.join("rootfs.tar"));
    let blob_kib = fs::metadata(dir.join("rootfs.tar")).unwrap().len() / 1024;
    for name in ["one", "two"] {
        let app = json!({
            "name": name, "version": "1.0", "vendor": "acme", "description": "shared root",
            "arch": "x86_64", "backends": ["jail"], "memory_mib": 16, "vcpus": 1,
            "command": ["/bin/sh", "-c", "sleep 1000"], "autostart": false,
            "rootfs": "rootfs.tar",
        });
        w.pack_app(&dir, &app, &format!("{name}.cpkg"), &w.key);
    }
    w.start_daemon(None);
    let empty = available_kib(&w);
    let mut used = Vec::new();
    for name in ["one", "two"] {
        let du = w
            .ctl_json(&[
                "install",
                &server.url("http", "127.0.0.1", &format!("{name}.cpkg")),
            ])
            .unwrap_or_else(|e| panic!("{name} installs: {e:?}"));
        let eu = w.eu(&eu_of(&du));
        used.push(eu["disk_in_use"].as_u64().unwrap());
    }
    let both = available_kib(&w);
    let shared = used[0] + used[1] - (empty - both);
    eprintln!(
        "DiskSpaceInUse {} + {} KiB, charged {} KiB, shared {shared} KiB, blob {blob_kib} KiB",
        used[0],
        used[1],
        empty - both
    );
    assert!(
        used.iter().all(|u| *u > blob_kib),
        "each app's DiskSpaceInUse counts the blob: {used:?}, blob {blob_kib} KiB"
    );
    assert!(
        (blob_kib..blob_kib + 64).contains(&shared),
        "the blob ({blob_kib} KiB) is charged once: {shared} KiB charged less"
    );
    w.stop_daemon();
}
