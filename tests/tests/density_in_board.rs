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

/// Installs the package `pkg` (served on the host's `port`) on the board's agent and waits
/// until its app is Active and answers its status page: its (EUID, address).
fn install_answering(vm: &mut BoardVm, port: u16, pkg: &std::path::Path) -> (String, String) {
    let name = pkg
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap()
        .to_string();
    let url = format!("http://10.0.2.2:{port}/{name}.cpkg");
    install(vm, &url, Duration::from_secs(400))
        .unwrap()
        .outcome
        .unwrap_or_else(|f| panic!("{name}: install failed: {} {}", f.code, f.message));
    let list = wait_agent(vm, Duration::from_secs(60)).unwrap();
    let eu = eu_of(&list, &name).unwrap_or_else(|| panic!("no {name} EU: {list}"));
    let eu_id = eu["eu_id"].as_str().unwrap().to_string();
    wait_eu_status(vm, &eu_id, "Active", Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    let addr = app_address(vm, &eu_id).unwrap();
    fetch_status_page(vm, &addr, Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(vm, &eu_id)));
    (eu_id, addr)
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
    let apps: Vec<(String, String)> = packages
        .iter()
        .map(|pkg| install_answering(&mut vm, server.port, pkg))
        .collect();
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

/// Stops the board's agent and starts it again with the config the board profile gives plus
/// `balloon` (the agent's `balloon` settings): the firmware's init starts it with `--board`,
/// which takes no overrides.
fn restart_agent_with_balloon(vm: &mut BoardVm, balloon: serde_json::Value) {
    let board = cpevisor_boards::Board::by_name(BOARD).unwrap();
    let mut cfg = serde_json::json!({
        "exec_envs": [{
            "name": "kvm0",
            "type": "kvm",
            "arch": board.cpu.arch.as_str(),
            "memory_budget_mib": board.memory.app_budget_mib,
            "disk_budget_mib": board.memory.flash_mib,
            "app_network": "10.100.0.0/16",
        }],
        "trusted_keys_dir": "/etc/cpevisor/keys",
        "balloon": balloon,
    });
    if let Some(n) = &board.network {
        cfg["wan_interface"] = n.wan.clone().into();
        cfg["lan_interface"] = n.lan.clone().into();
        cfg["lan_address"] = n.lan_address.clone().into();
        if let Some(r) = &n.app_range {
            cfg["lan_app_range"] = r.clone().into();
        }
    }
    let t = Duration::from_secs(60);
    vm.run_ok(&format!("printf '%s' '{cfg}' > /tmp/agent.json"), t)
        .unwrap();
    vm.run_ok(
        "kill $(pidof cpevisord); for i in $(seq 60); do pidof cpevisord >/dev/null || break; \
         sleep 1; done; ! pidof cpevisord",
        BoardVm::scaled(Duration::from_secs(120)),
    )
    .unwrap();
    vm.run_ok(
        "(setsid cpevisord --state-dir /data/cpevisor --socket /run/cpevisord.sock \
         --config /tmp/agent.json </dev/null >>/run/cpevisord.log 2>&1 &)",
        t,
    )
    .unwrap();
    wait_agent(vm, Duration::from_secs(60)).unwrap();
}

/// The EU's balloon figures as the agent reports them: (target, actual) MiB, once it has any.
fn balloon_of(vm: &mut BoardVm, eu_id: &str) -> Option<(u64, u64)> {
    let list = cpevisor_e2e::agent::ctl_json(vm, "list", Duration::from_secs(60)).unwrap();
    let eu = list["execution_units"]
        .as_array()?
        .iter()
        .find(|e| e["eu_id"] == eu_id)?
        .clone();
    let b = &eu["balloon"];
    Some((b["target_mib"].as_u64()?, b["actual_mib"].as_u64()?))
}

/// Polls the EU's balloon until `ok` holds; the last figures either way.
fn balloon_until(
    vm: &mut BoardVm,
    eu_id: &str,
    within: Duration,
    ok: impl Fn((u64, u64)) -> bool,
) -> Option<(u64, u64)> {
    let deadline = std::time::Instant::now() + BoardVm::scaled(within);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        last = balloon_of(vm, eu_id);
        if last.is_some_and(&ok) {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    last
}

/// Issue 11's deflate on OOM, with the agent deciding the target: the agent runs with a low
/// watermark above all the board's memory (pressure for good), so it inflates the balloon of
/// the one sample app (64 MiB) step by step up to its declared memory less its floor (48 MiB);
/// then the guest takes 32 MiB (`/cgi-bin/alloc?32`), which it only has by taking pages back
/// from its balloon (it had ~10 MiB outside it, ~7 in use): the allocation succeeds, the
/// balloon's `actual` falls by at least 16 MiB, and the agent's target follows it down instead
/// of inflating it again.
#[test]
#[ignore = "boots the emulated board and a microVM in it: needs `make firmware`"]
fn the_balloon_deflates_when_the_guest_needs_memory() {
    const DECLARED: u32 = 64;
    const HOG_MIB: u64 = 32;
    let out = workspace_root().join(format!("target/balloon-oom/{}", std::process::id()));
    let (packages, _) = cpevisor_e2e::many_apps::variant_packages(1, Some(DECLARED), &out).unwrap();
    let server = HttpServer::serve(&out).unwrap();
    let flash = Flash::blank("balloon-oom", 512).unwrap();
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(Duration::from_secs(240)).unwrap();
    wait_agent(&mut vm, Duration::from_secs(60)).unwrap();
    restart_agent_with_balloon(
        &mut vm,
        serde_json::json!({
            "low_watermark_mib": 1_000_000,
            "high_watermark_mib": 1_000_001,
            "tick_ms": 2000,
            "step_mib": 8,
        }),
    );
    let (eu_id, addr) = install_answering(&mut vm, server.port, &packages[0]);

    // Inflated by the agent, within declared memory less the floor (max(16, 25%) = 16 MiB):
    // to 48 MiB, or nearly (the guest may have taken a step back while it settled).
    let max = u64::from(DECLARED) - 16;
    let inflated = balloon_until(&mut vm, &eu_id, Duration::from_secs(240), |(t, a)| {
        t >= max - 8 && a + 2 >= t
    });
    let (target, inflated) = inflated.unwrap_or((0, 0));
    assert!(
        target <= max && target >= max - 8 && inflated + 2 >= target,
        "the agent did not inflate the balloon toward {max} MiB: target {target}, actual \
         {inflated}\n{}",
        app_logs(&mut vm, &eu_id)
    );
    let squeezed = guest_ram_kib(&mut vm, &eu_id, &addr);

    // The guest needs 32 MiB: it takes them back from its balloon.
    let held = guest_alloc(&mut vm, &addr, HOG_MIB as u32);
    assert!(
        held.contains(&format!("held_kib={}", HOG_MIB * 1024)),
        "{held}\n{}",
        app_logs(&mut vm, &eu_id)
    );
    let holding = guest_ram_kib(&mut vm, &eu_id, &addr);
    // The agent's target follows the guest's actual down, and stays there under pressure.
    let after = balloon_until(&mut vm, &eu_id, Duration::from_secs(60), |(t, a)| {
        t <= a + 1 && a + 16 <= inflated
    });
    std::thread::sleep(BoardVm::scaled(Duration::from_secs(10)));
    let settled = balloon_of(&mut vm, &eu_id);
    println!(
        "{eu_id} balloon (MiB, target/actual): inflated {target}/{inflated}, after the guest took \
         {HOG_MIB} MiB {after:?}, 10 s later {settled:?}; guest RAM resident (KiB): squeezed \
         {squeezed}, holding {holding}"
    );
    let (t_after, a_after) = after.expect("no balloon figures after the allocation");
    assert!(
        a_after + 16 <= inflated && t_after <= a_after + 1,
        "the balloon did not deflate: target {t_after}, actual {a_after} (inflated {inflated})"
    );
    let (t_settled, a_settled) = settled.expect("no balloon figures");
    assert!(
        t_settled <= t_after && a_settled <= a_after + 1,
        "the agent inflated the balloon again: {t_settled}/{a_settled} after {t_after}/{a_after}"
    );
    let page = fetch_status_page(&mut vm, &addr, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{eu_id}: {e}"));
    assert!(page.contains(&sample_token("1.0")), "{eu_id}: {page}");
    let _ = std::fs::remove_dir_all(&out);
}
