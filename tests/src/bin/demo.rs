//! `make demo`: boots the default emulated board with its console on this terminal and shows
//! what cpevisor does on it, step by step: the agent installs the sample app from a server on
//! the host, runs it as a microVM, the app answers; the board reboots on the same flash and the
//! app is Active again by itself. Exits non-zero if any step fails.

use cpevisor_boards::{Arch, Board, Isolation};
use cpevisor_e2e::agent::{
    app_address, app_logs, eu_of, fetch_status_page, install, reboot, sample_token, wait_agent,
    wait_eu_status, Flash, HttpServer, SamplePackages,
};
use cpevisor_e2e::{BoardVm, BootOptions};
use std::time::{Duration, Instant};

fn step(title: &str) {
    println!("\n\x1b[1m==> {title}\x1b[0m");
}

fn main() {
    let board = std::env::args()
        .nth(1)
        .unwrap_or_else(|| cpevisor_boards::DEFAULT_BOARD.to_string());
    let started = Instant::now();
    match demo(&board) {
        Ok(()) => println!(
            "\n\x1b[1mdemo finished in {:.0?} on {board}\x1b[0m",
            started.elapsed()
        ),
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            std::process::exit(1);
        }
    }
}

fn boot(board: &str, flash: &Flash) -> Result<BoardVm, String> {
    let opts = BootOptions {
        echo: true,
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(board, &opts)?;
    let ready = vm.wait_ready(Duration::from_secs(240))?;
    step(&format!("board ready: {ready}"));
    Ok(vm)
}

/// Shows the app's EU reaching Active and its page; returns the EUID.
fn show_app(vm: &mut BoardVm, token: &str) -> Result<String, String> {
    let list = wait_agent(vm, Duration::from_secs(60))?;
    let eu = eu_of(&list, "status").ok_or("the agent lists no `status` app")?;
    let eu_id = eu["eu_id"].as_str().unwrap_or_default().to_string();
    step(&format!("waiting for {eu_id} to be Active (AutoStart)"));
    wait_eu_status(vm, &eu_id, "Active", Duration::from_secs(120))
        .map_err(|e| format!("{e}\n{}", app_logs(vm, &eu_id)))?;
    vm.run_ok("cpevisorctl list", Duration::from_secs(60))?;
    let addr = app_address(vm, &eu_id)?;
    step(&format!(
        "the app boots in its microVM; asking it for http://{addr}/status from the board"
    ));
    let page = fetch_status_page(vm, &addr, Duration::from_secs(300))
        .map_err(|e| format!("{e}\n{}", app_logs(vm, &eu_id)))?;
    if !page.contains(&format!("data={token}")) {
        return Err(format!("the page does not carry {token}:\n{page}"));
    }
    step(&format!("the app answered with its token {token}"));
    Ok(eu_id)
}

/// The sample app is an aarch64 microVM: elsewhere the demo shows the agent and stops there.
fn runs_sample_app(board: &str) -> Result<bool, String> {
    let b = Board::by_name(board).map_err(|e| e.to_string())?;
    Ok(b.isolation == Isolation::Kvm && b.cpu.arch == Arch::Aarch64)
}

/// On a board that cannot run the sample app: the agent, its ExecEnv, and power-off.
fn agent_only(board: &str) -> Result<(), String> {
    let flash = Flash::blank("demo", 256)?;
    step(&format!(
        "booting {board} under QEMU (firmware from target/firmware/{board})"
    ));
    let mut vm = boot(board, &flash)?;
    step("the agent cpevisord and its ExecEnv on this board");
    wait_agent(&mut vm, Duration::from_secs(60))?;
    vm.run_ok("cpevisorctl list", Duration::from_secs(60))?;
    step("the sample app is an aarch64 microVM: run `make demo` on qemu-virt-a53 to see it");
    power_off(vm)
}

fn power_off(mut vm: BoardVm) -> Result<(), String> {
    step("powering the board off");
    vm.send_line("poweroff -f")?;
    match vm.wait_exit(Duration::from_secs(60))? {
        0 => Ok(()),
        c => Err(format!("QEMU exited with {c}")),
    }
}

fn demo(board: &str) -> Result<(), String> {
    if !runs_sample_app(board)? {
        return agent_only(board);
    }
    let packages = SamplePackages::find(board)?;
    let server = HttpServer::serve(&packages.dir)?;
    let flash = Flash::blank("demo", 256)?;
    step(&format!(
        "serving the sample app's signed packages from {} on the host (port {})",
        packages.dir.display(),
        server.port
    ));
    step(&format!(
        "booting {board} under QEMU with a blank 256 MiB flash (firmware from target/firmware/{board})"
    ));
    let mut vm = boot(board, &flash)?;
    step("the agent cpevisord is running; nothing is installed yet");
    wait_agent(&mut vm, Duration::from_secs(60))?;
    vm.run_ok("cpevisorctl list", Duration::from_secs(60))?;

    let url = format!("http://10.0.2.2:{}/status-1.0.cpkg", server.port);
    step(&format!(
        "cpevisorctl install {url}  (download, digests, signature, unpack to flash)"
    ));
    let done = install(&mut vm, &url, Duration::from_secs(400))?;
    let took = done.took;
    let du = done
        .outcome
        .map_err(|f| format!("install failed: {} {}", f.code, f.message))?;
    step(&format!(
        "installed {} {} in {took:.1?}",
        du["name"].as_str().unwrap_or("?"),
        du["version"].as_str().unwrap_or("?")
    ));
    let eu_id = show_app(&mut vm, &sample_token("1.0"))?;

    step("rebooting the board (sync; reboot -f), then booting it again on the same flash");
    reboot(vm)?;
    let mut vm = boot(board, &flash)?;
    step("no command given: the agent recovers its store and starts the app again");
    let again = show_app(&mut vm, &sample_token("1.0"))?;
    if again != eu_id {
        return Err(format!(
            "the EUID changed across the reboot: {eu_id} -> {again}"
        ));
    }

    power_off(vm)
}
