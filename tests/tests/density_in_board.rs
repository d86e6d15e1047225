//! Where one microVM app's memory goes (docs/density.md): the agent in qemu-virt-a53 installs
//! the sample app's package (`target/packages/status-1.0.cpkg`, built by scripts/sample-app.sh
//! with the kernel `SAMPLE_KERNEL` names), the app answers, and the test reads the app's cgroup,
//! its VMM's smaps and the guest's /proc/meminfo, prints the table and appends it to
//! `target/e2e-logs/density.txt`.
//!
//! Asserts what must hold whatever the kernel: the figures are there and consistent (the guest
//! RAM the VMM holds resident is at most the declared memory, the cgroup is within its limit,
//! the VMM's PSS covers the guest RAM it touched). The figures themselves go to the doc and the
//! bench, not into assertions.
//!
//! Needs `make firmware` (the packages too); `#[ignore]`d for a plain `cargo test`.

use cpevisor_e2e::agent::{
    app_address, app_logs, eu_of, fetch_status_page, install, sample_token, wait_agent,
    wait_eu_status, Flash, HttpServer, SamplePackages,
};
use cpevisor_e2e::density::measure_app;
use cpevisor_e2e::{workspace_root, BoardVm, BootOptions};
use std::io::Write;
use std::time::Duration;

const BOARD: &str = "qemu-virt-a53";
const DECLARED_MIB: u64 = 16;

#[test]
#[ignore = "boots the emulated board and a microVM in it: needs `make firmware`"]
fn one_sample_app_memory() {
    let packages = SamplePackages::find(BOARD).unwrap();
    let server = HttpServer::serve(&packages.dir).unwrap();
    let flash = Flash::blank("density", 256).unwrap();
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(Duration::from_secs(240)).unwrap();
    wait_agent(&mut vm, Duration::from_secs(60)).unwrap();
    let url = format!("http://10.0.2.2:{}/status-1.0.cpkg", server.port);
    install(&mut vm, &url, Duration::from_secs(400))
        .unwrap()
        .outcome
        .unwrap_or_else(|f| panic!("install failed: {} {}", f.code, f.message));
    let list = wait_agent(&mut vm, Duration::from_secs(60)).unwrap();
    let eu = eu_of(&list, "status").unwrap_or_else(|| panic!("no status EU: {list}"));
    let eu_id = eu["eu_id"].as_str().unwrap().to_string();
    wait_eu_status(&mut vm, &eu_id, "Active", Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    let addr = app_address(&mut vm, &eu_id).unwrap();
    let page = fetch_status_page(&mut vm, &addr, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    assert!(page.contains(&sample_token("1.0")), "{page}");
    // The guest's init found its address set (by the kernel's ip= autoconfiguration) or set it.
    let logs = app_logs(&mut vm, &eu_id);
    assert!(logs.contains("APP-NET state=configured"), "{logs}");

    let m = measure_app(&mut vm, &eu_id, &addr)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    let kernel = m
        .figures
        .get("guest.kernel-memory")
        .cloned()
        .unwrap_or_default();
    let table = m.table_text();
    println!("{eu_id} memory (KiB):\n{table}");
    let dir = workspace_root().join("target/e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("density.txt"))
        .unwrap();
    writeln!(f, "# {BOARD} {eu_id} kernel blob {kernel}\n{table}").unwrap();

    let guest_ram = m.num("vmm.guest_ram_rss").unwrap();
    assert!(guest_ram > 0, "{table}");
    assert!(guest_ram <= DECLARED_MIB * 1024, "{table}");
    assert!(m.num("vmm.Pss").unwrap() >= guest_ram / 2, "{table}");
    assert!(
        m.num("cg.memory.current").unwrap() <= (DECLARED_MIB + 4) << 20,
        "{table}"
    );
    let total = m.num("guest.meminfo.MemTotal").unwrap();
    assert!(total <= DECLARED_MIB * 1024, "{table}");
}

/// Copies of the sample app until the agent's admission refuses one: all of them answer at once,
/// and the refusal is the memory budget's (7227). `CPEVISOR_DENSITY_MIB` overrides the memory
/// the copies declare. Prints each app's cost; `make bench` turns the same run into figures.
#[test]
#[ignore = "boots the emulated board and microVMs until its budget is full: needs `make firmware`"]
fn sample_apps_until_admission_refuses() {
    let mib = std::env::var("CPEVISOR_DENSITY_MIB")
        .ok()
        .map(|m| m.parse().expect("CPEVISOR_DENSITY_MIB: MiB"));
    let run = cpevisor_e2e::many_apps::run(mib, &|s| println!("{s}")).unwrap();
    for a in &run.apps {
        println!(
            "{} MemoryInUse {} KiB, VMM Pss {} KiB, install to Active {:.1?}",
            a.eu_id, a.memory_in_use_kib, a.pss_kib, a.install_to_active
        );
    }
    println!("board before: {:?}", run.board_before);
    println!("board after: {:?}", run.board_after);
    assert!(!run.apps.is_empty(), "no app admitted: {:?}", run.refusal);
    assert_eq!(
        run.answered,
        run.apps.len(),
        "not every admitted app answered"
    );
    let refusal = run
        .refusal
        .expect("every copy was admitted: the budget never ran out");
    assert_eq!(refusal.code, 7227, "{}", refusal.message);
}

/// The guest RAM its VMM holds resident for app `eu_id` (KiB): every guest page touched and not
/// given back.
fn guest_ram_kib(vm: &mut BoardVm, eu_id: &str, addr: &str) -> u64 {
    let m = measure_app(vm, eu_id, addr).unwrap_or_else(|e| panic!("{e}"));
    m.num("vmm.guest_ram_rss")
        .unwrap_or_else(|e| panic!("{e}\n{}", m.table_text()))
}

/// `GET /cgi-bin/alloc?MIB` in the guest at `addr` (rootfs/files/guest/status/alloc.cgi).
fn guest_alloc(vm: &mut BoardVm, addr: &str, mib: u32) -> String {
    vm.run_ok(
        &format!("timeout 60 wget -q -O - 'http://{addr}/cgi-bin/alloc?{mib}'"),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("alloc {mib} MiB in the guest at {addr}: {e}"))
}

/// Issue 11's balloon end to end: four sample apps at once on qemu-virt-a53; in one guest
/// 32 MiB is taken and given back, and the VMM's resident guest RAM rises by it and, through
/// the guest's free page reporting (the virtio-balloon every microVM app gets), falls back.
#[test]
#[ignore = "boots the emulated board and four microVMs in it: needs `make firmware`"]
fn a_guest_gives_back_the_memory_it_frees() {
    const APPS: usize = 4;
    const DECLARED: u32 = 64;
    const HOG_MIB: u64 = 32;
    let out = workspace_root().join(format!("target/balloon-apps/{}", std::process::id()));
    let (packages, _) =
        cpevisor_e2e::many_apps::variant_packages(APPS, Some(DECLARED), &out).unwrap();
    let server = HttpServer::serve(&out).unwrap();
    let flash = Flash::blank("balloon", 512).unwrap();
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(Duration::from_secs(240)).unwrap();
    wait_agent(&mut vm, Duration::from_secs(60)).unwrap();
    let mut apps = Vec::new();
    for pkg in &packages {
        let name = pkg
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap()
            .to_string();
        let url = format!("http://10.0.2.2:{}/{name}.cpkg", server.port);
        install(&mut vm, &url, Duration::from_secs(400))
            .unwrap()
            .outcome
            .unwrap_or_else(|f| panic!("{name}: install failed: {} {}", f.code, f.message));
        let list = wait_agent(&mut vm, Duration::from_secs(60)).unwrap();
        let eu = eu_of(&list, &name).unwrap_or_else(|| panic!("no {name} EU: {list}"));
        let eu_id = eu["eu_id"].as_str().unwrap().to_string();
        wait_eu_status(&mut vm, &eu_id, "Active", Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
        let addr = app_address(&mut vm, &eu_id).unwrap();
        fetch_status_page(&mut vm, &addr, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
        apps.push((eu_id, addr));
    }
    let (eu_id, addr) = apps[0].clone();
    let before = guest_ram_kib(&mut vm, &eu_id, &addr);
    let held = guest_alloc(&mut vm, &addr, HOG_MIB as u32);
    assert!(
        held.contains(&format!("held_kib={}", HOG_MIB * 1024)),
        "{held}"
    );
    let peak = guest_ram_kib(&mut vm, &eu_id, &addr);
    assert!(
        peak >= before + (HOG_MIB - 4) * 1024,
        "holding {HOG_MIB} MiB: guest RAM resident {before} -> {peak} KiB"
    );
    let freed = guest_alloc(&mut vm, &addr, 0);
    assert!(freed.contains("freed=yes"), "{freed}");
    // Free page reporting hands back free blocks of 4 MiB some seconds after they are freed;
    // the bound leaves room for what the guest's page cache and slab took meanwhile.
    let bound = before + 8 * 1024;
    let deadline = std::time::Instant::now() + BoardVm::scaled(Duration::from_secs(120));
    let mut after = peak;
    while std::time::Instant::now() < deadline {
        after = guest_ram_kib(&mut vm, &eu_id, &addr);
        if after <= bound {
            break;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    println!("{eu_id} guest RAM resident (KiB): before {before}, holding {HOG_MIB} MiB {peak}, freed {after}");
    assert!(
        after <= bound,
        "the guest freed {HOG_MIB} MiB but its VMM still holds {after} KiB (before {before}, \
         peak {peak}, bound {bound})\n{}",
        app_logs(&mut vm, &eu_id)
    );
    // All four still answer.
    for (eu_id, addr) in &apps {
        let page = fetch_status_page(&mut vm, addr, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{eu_id}: {e}"));
        assert!(page.contains(&sample_token("1.0")), "{eu_id}: {page}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
