//! A router with a small flash (issue 15): qemu-malta-mipsel with a 16 MiB data partition. A
//! package that declares more flash than is left is refused with 7227 before its download,
//! leaving nothing on the flash; the status app (declaring 4 MiB) installs and answers; an app
//! that writes until its data volume is full hits its cap (ENOSPC in the app) while the status
//! app stays Active, the agent keeps answering and writing its state, and the flash keeps free
//! space. The two apps' roots are erofs images (their packages repacked so), mounted, never
//! extracted: no file of theirs is under the apps' directories on the flash. What the installed
//! apps take on the flash is printed.
//!
//! Needs `make firmware BOARDS=qemu-malta-mipsel` (the jail packages with it), so `#[ignore]`d
//! for a plain `cargo test`.

use cpevisor_e2e::agent::{
    app_logs, ctl_json, deployment_units, fetch_status_page, install, wait_agent, wait_eu_status,
    Flash, HttpServer,
};
use cpevisor_e2e::bench::jail::{boot_jail_board, jail_address, jail_pid, JailPackages, APP_PORT};
use cpevisor_e2e::packages::{erofs_root, Variants};
use cpevisor_e2e::BoardVm;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOARD: &str = "qemu-malta-mipsel";
const FLASH_MIB: u64 = 16;
/// What the small apps declare: their ~2.4 MiB package plus a data volume.
const APP_DISK_MIB: u64 = 4;
const AGENT: Duration = Duration::from_secs(120);
const INSTALL: Duration = Duration::from_secs(400);
const ACTIVE: Duration = Duration::from_secs(240);

fn files_on_flash(vm: &mut BoardVm) -> String {
    vm.run_ok(
        "find /data/cpevisor/blobs /data/cpevisor/apps /data/cpevisor/downloads -type f \
         2>/dev/null | wc -l",
        Duration::from_secs(30),
    )
    .unwrap()
    .trim()
    .to_string()
}

fn first_eu(du: &Value) -> String {
    du["execution_unit_list"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no EU in {du}"))
        .to_string()
}

#[test]
#[ignore = "boots qemu-malta-mipsel: needs `make firmware BOARDS=qemu-malta-mipsel`; run by `make e2e`"]
fn small_flash_admits_caps_and_refuses() {
    let packages = JailPackages::find(BOARD).unwrap();
    let run = std::process::id();
    let arch = packages.arch.clone();
    let small = packages
        .variant(&format!("small-{arch}-{run}"), |c| {
            c["name"] = json!("small");
            c["disk_mib"] = json!(APP_DISK_MIB);
            erofs_root(c);
        })
        .unwrap();
    let filler = packages
        .variant(&format!("filler-{arch}-{run}"), |c| {
            c["name"] = json!("filler");
            c["disk_mib"] = json!(APP_DISK_MIB);
            erofs_root(c);
            c["command"] =
                json!([
                "/bin/busybox", "sh", "-c",
                "/bin/busybox dd if=/dev/zero of=/data/big bs=64k 2>&1 | /bin/busybox tail -n 3; \
                 echo FILLED; exec /bin/busybox sleep 100000"
            ]);
        })
        .unwrap();
    let huge = packages
        .variant(&format!("huge-{arch}-{run}"), |c| {
            c["name"] = json!("huge");
            c["disk_mib"] = json!(FLASH_MIB * 4);
        })
        .unwrap();
    let mut _variants = Variants::new(&packages.dir);
    for f in [&small, &filler, &huge] {
        _variants.keep(f.clone());
    }
    let server = HttpServer::serve(&packages.dir).unwrap();
    let url = |f: &str| format!("http://10.0.2.2:{}/{f}", server.port);
    let flash = Flash::blank("small-flash", FLASH_MIB).unwrap();
    let started = Instant::now();
    let mut vm = boot_jail_board(BOARD, &flash, "formatted").unwrap();
    let list = wait_agent(&mut vm, AGENT).unwrap();
    assert!(deployment_units(&list).is_empty(), "fresh flash: {list}");
    println!("{BOARD}: agent answering after {:.1?}", started.elapsed());
    println!(
        "{BOARD}: AvailableDiskSpace {} KiB on a {FLASH_MIB} MiB flash",
        list["exec_envs"][0]["available_disk_kib"]
    );

    // Declares four times the flash: refused before its download, nothing written.
    match install(&mut vm, &url(&huge), INSTALL).unwrap().outcome {
        Err(f) if f.code == 7227 => println!("{BOARD}: huge refused: 7227 {}", f.message),
        other => panic!("huge: expected fault 7227, got {other:?}"),
    }
    assert_eq!(files_on_flash(&mut vm), "0", "a refused package left files");

    let du = install(&mut vm, &url(&small), INSTALL)
        .unwrap()
        .outcome
        .unwrap_or_else(|f| panic!("small: {} {}", f.code, f.message));
    let small_eu = first_eu(&du);
    wait_eu_status(&mut vm, &small_eu, "Active", ACTIVE).unwrap();
    // Served from its mounted image; nothing of its root extracted on the flash.
    let pid = jail_pid(&mut vm, &small_eu, "httpd").unwrap_or_else(|e| panic!("{e}"));
    let addr = jail_address(&mut vm, pid).unwrap();
    let page = fetch_status_page(&mut vm, &format!("{addr}:{APP_PORT}"), ACTIVE)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &small_eu)));
    assert!(page.contains("backend=jail"), "{page}");
    let extracted = vm
        .run_ok(
            "find /data/cpevisor/apps -path '*/rootfs/*' | wc -l",
            Duration::from_secs(30),
        )
        .unwrap();
    assert_eq!(
        extracted.trim(),
        "0",
        "files under an app's rootfs/ on the flash"
    );

    let du = install(&mut vm, &url(&filler), INSTALL)
        .unwrap()
        .outcome
        .unwrap_or_else(|f| panic!("filler: {} {}", f.code, f.message));
    let filler_eu = first_eu(&du);
    let deadline = Instant::now() + BoardVm::scaled(ACTIVE);
    let logs = loop {
        let logs = app_logs(&mut vm, &filler_eu);
        if logs.contains("FILLED") {
            break logs;
        }
        assert!(
            Instant::now() < deadline,
            "the filler never finished:\n{logs}"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(logs.contains("No space left on device"), "{logs}");
    // The cap held: the other app runs, the agent answers and writes its state (a stop is
    // persisted), and the flash itself still has room.
    wait_eu_status(&mut vm, &small_eu, "Active", ACTIVE).unwrap();
    ctl_json(
        &mut vm,
        &format!("stop {filler_eu}"),
        Duration::from_secs(120),
    )
    .unwrap();
    wait_eu_status(&mut vm, &filler_eu, "Idle", ACTIVE).unwrap();
    let df = vm
        .run_ok("df -k /data | tail -n 1", Duration::from_secs(30))
        .unwrap();
    let free_kib: u64 = df
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("df: {df}"));
    assert!(free_kib > 512, "the flash filled up: {df}");
    let usage = vm
        .run_ok(
            "du -sk /data/cpevisor/blobs; for d in /data/cpevisor/apps/*; do du -sk \"$d\"; done",
            Duration::from_secs(30),
        )
        .unwrap();
    println!(
        "{BOARD}: flash after installs (KiB), packages {} + {} bytes; df: {df}\n{usage}",
        std::fs::metadata(packages.dir.join(&small)).unwrap().len(),
        std::fs::metadata(packages.dir.join(&filler)).unwrap().len(),
    );
}
