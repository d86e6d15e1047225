//! `make bench`: binary sizes from `make cross`, the agent's host figures, then the `qemu-virt-a53` board booted with the
//! bench overlay (`scripts/bench-overlay.sh`) to time and weigh cpevisor-vmm beside
//! qemu-system-aarch64 -accel kvm on the same guest. Prints a table, writes `target/bench.json`.
//! Exits 1 when a figure group could not be taken (after writing what was measured).
//! `CPEVISOR_BENCH_ONLY=group,...` takes only those groups (sizes, agent, flash, ready, usp,
//! fleet, board, stop, density, jail-density, jail, net, wear), e.g. to re-measure one piece.

#![forbid(unsafe_code)]

use cpevisor_e2e::bench::{
    agent, board, density, flash, fleet, graceful, jail, net, ready, sizes, table, usp, wear,
    write_json, Figure,
};
use cpevisor_e2e::{many_apps, workspace_root};

/// Whether `group` is to be measured (all of them unless CPEVISOR_BENCH_ONLY names some).
fn wanted(group: &str) -> bool {
    match std::env::var("CPEVISOR_BENCH_ONLY") {
        Ok(only) if !only.trim().is_empty() => only.split(',').any(|g| g.trim() == group),
        _ => true,
    }
}

fn main() {
    let root = workspace_root();
    let mut figures: Vec<Figure> = Vec::new();
    let mut failed = false;
    if wanted("sizes") {
        sizes::binary_sizes(&root, &mut figures);
    }
    // Agent figures on this host (tests/src/bench/agent.rs): idle memory, install throughput.
    if wanted("agent") {
        if let Err(e) = agent::figures(&root, &mut figures) {
            eprintln!("bench: agent figures: {e}");
            failed = true;
        }
    }
    // Flash an installed jail app takes, erofs root against tar (tests/src/bench/flash.rs).
    if wanted("flash") {
        if let Err(e) = flash::figures(&root, &mut figures) {
            eprintln!("bench: flash figures: {e}");
            failed = true;
        }
    }
    // Start request to Active of a microVM app on this host (tests/src/bench/ready.rs).
    if wanted("ready") {
        if let Err(e) = ready::figures(&root, &mut figures) {
            eprintln!("bench: ready figures: {e}");
            failed = true;
        }
    }
    // USP on this host (tests/src/bench/usp.rs): the 200-agent fleet install, idle memory.
    if wanted("usp") {
        if let Err(e) = usp::figures(&root, &mut figures) {
            eprintln!("bench: usp figures: {e}");
            failed = true;
        }
    }
    // The fleet controller's rollout to 1k/5k/10k simulated agents (tests/src/bench/fleet.rs).
    if wanted("fleet") {
        if let Err(e) = fleet::figures(&root, &mut figures) {
            eprintln!("bench: fleet figures: {e}");
            failed = true;
        }
    }

    let initrd = root.join("target/bench/board-initrd");
    let runs = board::runs().unwrap_or_else(|e| {
        eprintln!("bench: {e}");
        std::process::exit(2);
    });
    if wanted("board") {
        if initrd.is_file() {
            println!(
                "bench: booting {} with {} ({runs} runs per monitor)",
                board::BOARD,
                initrd.display(),
            );
            match board::measure(&initrd, runs) {
                Ok(m) => {
                    for p in &m.problems {
                        eprintln!("bench: {p}");
                    }
                    failed |= !m.problems.is_empty();
                    if let Some((rss, pss)) = m.agent_idle_kib {
                        figures.extend(board::agent_figures(rss, pss));
                    }
                    for (guest, vmm, qemu) in [
                        (&board::APP_GUEST, &m.app_vmm, &m.app_qemu),
                        (&board::STOCK_GUEST, &m.vmm, &m.qemu),
                    ] {
                        let board_figures = board::figures(guest, vmm, qemu);
                        failed |= board_figures.is_empty();
                        figures.extend(board_figures);
                        figures.extend(density::figures(guest, vmm, qemu));
                    }
                    let confined = board::confined_figures(&m.vmm_confined, &m.vmm);
                    failed |= confined.is_empty();
                    figures.extend(confined);
                }
                Err(e) => {
                    eprintln!("bench: board measurement failed: {e}");
                    failed = true;
                }
            }
        } else {
            eprintln!(
                "bench: {} missing (run scripts/bench-overlay.sh): no board figures",
                initrd.display()
            );
            failed = true;
        }
    }

    // Copies of the sample app until the board's admission refuses one
    // (tests/src/many_apps.rs): qemu-virt-a53's firmware and the sample app's staged build.
    if wanted("density") {
        println!(
            "bench: booting {} for the density figures",
            many_apps::BOARD
        );
        let budget = cpevisor_boards::Board::by_name(many_apps::BOARD)
            .map(|b| b.memory.app_budget_mib)
            .unwrap_or_default();
        match many_apps::run(None, &|s| println!("bench: {s}")) {
            Ok(run) => figures.extend(density::many_figures(&run, budget)),
            Err(e) => {
                eprintln!("bench: density figures: {e}");
                failed = true;
            }
        }
    }

    // The same with jail apps on qemu-malta-mipsel: its firmware and jail packages
    // (`make firmware BOARDS=qemu-malta-mipsel`).
    if wanted("jail-density") {
        println!(
            "bench: booting {} for the jail density figures",
            many_apps::JAIL_BOARD
        );
        let budget = cpevisor_boards::Board::by_name(many_apps::JAIL_BOARD)
            .map(|b| b.memory.app_budget_mib)
            .unwrap_or_default();
        let declared = Some(many_apps::JAIL_DECLARED_MIB);
        match many_apps::run_jail(declared, &|s| println!("bench: {s}")) {
            Ok(run) => figures.extend(density::many_figures(&run, budget)),
            Err(e) => {
                eprintln!("bench: jail density figures: {e}");
                failed = true;
            }
        }
    }

    // The graceful stop (tests/src/bench/graceful.rs): qemu-virt-a53's firmware and the
    // minimal guest kernel.
    if wanted("stop") {
        println!("bench: booting {} for the stop figures", graceful::BOARD);
        match graceful::measure(runs).and_then(|(g, i)| graceful::figures(&g, &i)) {
            Ok(f) => figures.extend(f),
            Err(e) => {
                eprintln!("bench: stop figures: {e}");
                failed = true;
            }
        }
    }

    // Jail figures (tests/src/bench/jail.rs): qemu-malta-mipsel's firmware and jail packages
    // (`make firmware BOARDS=qemu-malta-mipsel`).
    if wanted("jail") {
        println!("bench: booting {} for the jail figures", jail::BENCH_BOARD);
        if let Err(e) = jail::figures(&root, &mut figures) {
            eprintln!("bench: jail figures: {e}");
            failed = true;
        }
    }

    // The DNS filter on the router board's LAN (tests/src/bench/net.rs): qemu-malta-mipsel's
    // firmware and the filter's package (`make firmware BOARDS=qemu-malta-mipsel`).
    if wanted("net") {
        println!("bench: booting qemu-malta-mipsel for the net figures");
        if let Err(e) = net::figures(&root, &mut figures) {
            eprintln!("bench: net figures: {e}");
            failed = true;
        }
    }

    // Flash wear on the router board (tests/src/bench/wear.rs): qemu-malta-mipsel's firmware
    // and jail packages (`make firmware BOARDS=qemu-malta-mipsel`).
    if wanted("wear") {
        println!("bench: booting {} for the flash wear figures", wear::BOARD);
        if let Err(e) = wear::figures(&mut figures) {
            eprintln!("bench: flash wear figures: {e}");
            failed = true;
        }
    }

    print!("{}", table(&figures));
    let out = root.join("target/bench.json");
    if let Err(e) = write_json(&figures, &out) {
        eprintln!("bench: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!("wrote {}", out.display());
    if failed {
        std::process::exit(1);
    }
}
