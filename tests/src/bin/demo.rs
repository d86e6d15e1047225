//! `make demo`: boots the default emulated board with its console on this terminal and shows
//! what cpevisor does on it, step by step, driven the way an operator would: over USP. A broker
//! (mosquitto with its own CA) runs on the host; the board's flash is provisioned with the
//! agent's certificate and USP settings; the agent connects out to the broker and the host's
//! `cpevisor-controller` reads the device, installs the sample app from a server on the
//! host (OperationComplete, `DUStateChange!`), stops and starts it (ValueChange); the app runs as
//! a microVM and answers. Then the operator's fleet controller takes over (`cpevisor-controller
//! serve`, with a deployment of the app's version 1.1 for aarch64 agents in its database): the
//! board reboots on the same flash, the agent says `Boot!` again, the app is Active by itself,
//! and serve updates it to 1.1 with no command addressed to the board. On a router board (a `[network]` in its profile) the DNS filter
//! is installed the same way and the host, as a LAN client, asks the router's address for a
//! blocked and an allowed name. Boards that cannot run the aarch64 sample app show the agent
//! over USP (announcement, DeviceInfo, ExecEnv) and stop there. Exits non-zero if any step
//! fails.

#![forbid(unsafe_code)]

use cpevisor_boards::{Arch, Board, Isolation};
use cpevisor_e2e::agent::{
    app_address, app_logs, deployment_units, eu_of, fetch_status_page, reboot, sample_token,
    wait_agent, wait_eu_status, Flash, HttpServer, SamplePackages,
};
use cpevisor_e2e::dns::resolve;
use cpevisor_e2e::router::{kvm_filter_with_upstream, HostResolver, BLOCKED, ROUTER_LAN};
use cpevisor_e2e::usp::{CtlRun, UspHost, AGENT_ENDPOINT, BOARD_USP_DIR};
use cpevisor_e2e::{BoardVm, BootOptions};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The name the demo's upstream resolver knows, and its address.
const ALLOWED: (&str, Ipv4Addr) = ("allowed.example", Ipv4Addr::new(10, 9, 8, 7));

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
        // The LAN's DNS, when the board has a LAN: the host asks it as a LAN client.
        lan_udp: if is_router(board)? {
            vec![53]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let mut vm = BoardVm::boot(board, &opts)?;
    let ready = vm.wait_ready(Duration::from_secs(240))?;
    step(&format!("board ready: {ready}"));
    Ok(vm)
}

/// Prints what a controller run gave: its rows and the notifications it received.
fn show_run(run: &CtlRun) {
    let Ok(result) = run.result() else {
        println!("    {}", run.reply);
        return;
    };
    for r in result["rows"].as_array().into_iter().flatten() {
        println!(
            "    {} = {}",
            r[0].as_str().unwrap_or("?"),
            r[1].as_str().unwrap_or("?")
        );
    }
    for e in result["events"].as_array().into_iter().flatten() {
        let params: Vec<String> = e["params"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        println!(
            "    <- {} {} {}",
            e["kind"].as_str().unwrap_or("?"),
            e["path"].as_str().unwrap_or_default(),
            params.join(" ")
        );
    }
    println!("    ({:.1?})", run.took);
}

/// A controller command that must succeed; shown as it ran.
fn usp(host: &UspHost, timeout: Duration, args: &[&str]) -> Result<CtlRun, String> {
    step(&format!(
        "controller: cpevisor-controller --agent {AGENT_ENDPOINT} {}",
        args.join(" ")
    ));
    let run = host.on_agent(timeout, args)?.ok(&args.join(" "))?;
    show_run(&run);
    Ok(run)
}

/// Shows the app's EU reaching Active (as the controller reads it) and its page; returns the
/// EUID.
fn show_app(vm: &mut BoardVm, host: &UspHost, token: &str) -> Result<String, String> {
    step("controller: waiting for the `status` ExecutionUnit to be Active (AutoStart)");
    let eu_id = host.wait_eu_status("status", "Active", Duration::from_secs(180))?;
    vm.run_ok("cpevisorctl list", Duration::from_secs(60))?;
    let addr = app_address(vm, &eu_id)?;
    step(&format!(
        "{eu_id} is Active: the app boots in its microVM; asking it for http://{addr}/status \
         from the board"
    ));
    let page = fetch_status_page(vm, &addr, Duration::from_secs(300))
        .map_err(|e| format!("{e}\n{}", app_logs(vm, &eu_id)))?;
    if !page.contains(&format!("data={token}")) {
        return Err(format!("the page does not carry {token}:\n{page}"));
    }
    step(&format!("the app answered with its token {token}"));
    Ok(eu_id)
}

/// A board with a WAN and a LAN side.
fn is_router(board: &str) -> Result<bool, String> {
    Ok(Board::by_name(board)
        .map_err(|e| e.to_string())?
        .network
        .is_some())
}

/// The DNS filter, installed over USP like the sample app with its upstream set to a resolver
/// on the host's side of the WAN (Debian's dnsmasq, as an ISP's); then the host, a client on
/// the board's LAN, asks the router's address for a blocked and an allowed name.
fn dns_filter(
    vm: &mut BoardVm,
    host: &UspHost,
    server: &HttpServer,
    dir: &Path,
) -> Result<(), String> {
    let (name, addr) = ALLOWED;
    let upstream = HostResolver::start(&[ALLOWED])?;
    step(&format!(
        "upstream resolver on the WAN side: dnsmasq on the host (127.0.0.1:{}), knows {name} = {addr}",
        upstream.port
    ));
    let file = kvm_filter_with_upstream(dir, "dns-filter-demo", upstream.port, true)?;
    let url = format!("http://10.0.2.2:{}/{file}", server.port);
    usp(host, Duration::from_secs(500), &["install", &url])?;
    step("controller: waiting for the `dns-filter` ExecutionUnit to be Active (its package asks for the LAN's DNS)");
    let eu_id = host.wait_eu_status("dns-filter", "Active", Duration::from_secs(180))?;
    vm.run_ok("nft list table inet cpevisor", Duration::from_secs(60))?;
    let dns = format!(
        "127.0.0.1:{}",
        vm.lan_udp_port(53)
            .ok_or("the LAN's port 53 is not forwarded")?
    );
    for (asked, want) in [(BLOCKED, Ipv4Addr::UNSPECIFIED), (name, addr)] {
        step(&format!(
            "LAN client (this host, through the board's br-lan) asks the router {ROUTER_LAN} for {asked}"
        ));
        let answer = resolve(&dns, asked, Duration::from_secs(60)).map_err(|e| {
            format!(
                "{e}\n{}\nupstream:\n{}",
                app_logs(vm, &eu_id),
                upstream.log()
            )
        })?;
        if answer.addresses != [want] {
            return Err(format!("{asked}: expected {want}, got {answer:?}"));
        }
        let how = if want.is_unspecified() {
            "blocked by the filter"
        } else {
            "forwarded to the upstream"
        };
        step(&format!("{asked} = {want} ({how})"));
    }
    let _ = std::fs::remove_file(dir.join(&file));
    Ok(())
}

/// The sample app is an aarch64 microVM: elsewhere the demo shows the agent and stops there.
fn runs_sample_app(board: &str) -> Result<bool, String> {
    let b = Board::by_name(board).map_err(|e| e.to_string())?;
    Ok(b.isolation == Isolation::Kvm && b.cpu.arch == Arch::Aarch64)
}

/// On a board that cannot run the sample app: the agent over USP (announcement, DeviceInfo,
/// its ExecEnv), and power-off.
fn agent_only(board: &str) -> Result<(), String> {
    let host = start_usp(board)?;
    let flash = host.provision_flash(board, "demo", 256)?;
    step(&format!(
        "booting {board} under QEMU on that flash (firmware from target/firmware/{board})"
    ));
    let mut vm = boot(board, &flash)?;
    meet_agent(&mut vm, &host)?;
    step("the sample app is an aarch64 microVM: run `make demo` on qemu-virt-a53 to see it");
    power_off(vm)
}

/// The broker on the host, announced.
fn start_usp(board: &str) -> Result<UspHost, String> {
    let host = UspHost::start("demo")?;
    step(&format!(
        "USP broker (mosquitto, TLS with client certificates) on 127.0.0.1:{0}; the board \
         reaches it as 10.0.2.2:{0}",
        host.broker.port()
    ));
    step(&format!(
        "{board}'s flash provisioned with the agent's certificate and usp.json (endpoint \
         {AGENT_ENDPOINT})"
    ));
    Ok(host)
}

/// The agent connects out to the broker; the controller sees it and reads the device.
fn meet_agent(vm: &mut BoardVm, host: &UspHost) -> Result<(), String> {
    vm.wait_for(
        &format!("usp={BOARD_USP_DIR}/usp.json"),
        Duration::from_secs(30),
    )
    .map_err(|e| {
        format!(
            "the init did not start the agent with --usp (firmware older than USP \
                 provisioning? `make firmware BOARDS={}`): {e}",
            vm.board.name
        )
    })?;
    wait_agent(vm, Duration::from_secs(60))?;
    step("the agent cpevisord connects to the broker; the controller listens for it");
    let how = host.wait_announced(&["OnBoardRequest", "Boot!"], Duration::from_secs(180))?;
    step(&format!(
        "controller: {AGENT_ENDPOINT} announced itself ({how})"
    ));
    let info = host.wait_answering("Device.DeviceInfo.", Duration::from_secs(60))?;
    step(&format!(
        "controller: cpevisor-controller --agent {AGENT_ENDPOINT} get Device.DeviceInfo."
    ));
    show_run(&info);
    usp(
        host,
        Duration::from_secs(60),
        &["get", "Device.SoftwareModules.ExecEnv."],
    )?;
    Ok(())
}

/// Powers the board off as a router's user would, with plain `poweroff`: the init stops the
/// agent (the app's guest powers itself off), syncs and unmounts the flash, then powers off.
fn power_off(mut vm: BoardVm) -> Result<(), String> {
    step("powering the board off (poweroff: the agent stops the app, the flash is unmounted)");
    let line = vm.shut_down("poweroff", Duration::from_secs(180))?;
    step(&format!("firmware: {line}"));
    let complaints = cpevisor_e2e::vm::kernel_complaints(&vm.transcript())
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if !complaints.is_empty() {
        return Err(format!(
            "the board's kernel complained:\n{}",
            complaints.join("\n")
        ));
    }
    Ok(())
}

fn demo(board: &str) -> Result<(), String> {
    if !runs_sample_app(board)? {
        return agent_only(board);
    }
    let packages = SamplePackages::find(board)?;
    let server = HttpServer::serve(&packages.dir)?;
    step(&format!(
        "serving the sample app's signed packages from {} on the host (port {})",
        packages.dir.display(),
        server.port
    ));
    let host = start_usp(board)?;
    let flash = host.provision_flash(board, "demo", 256)?;
    step(&format!(
        "booting {board} under QEMU on that flash (firmware from target/firmware/{board})"
    ));
    let mut vm = boot(board, &flash)?;
    meet_agent(&mut vm, &host)?;

    let url = format!("http://10.0.2.2:{}/status-1.0.cpkg", server.port);
    let done = usp(&host, Duration::from_secs(500), &["install", &url])?;
    let installed = done.events("DUStateChange!").iter().any(|e| {
        e["params"]["CurrentState"] == "Installed" && e["params"]["Fault.FaultCode"] == "0"
    });
    if !installed || done.events("OperationComplete").is_empty() {
        return Err(format!(
            "install: no DUStateChange! Installed / OperationComplete: {}",
            done.reply
        ));
    }
    let eu_id = show_app(&mut vm, &host, &sample_token("1.0"))?;
    usp(&host, Duration::from_secs(120), &["stop", &eu_id])?;
    usp(&host, Duration::from_secs(120), &["start", &eu_id])?;
    if is_router(board)? {
        dns_filter(&mut vm, &host, &server, &packages.dir)?;
    }

    // From here the operator's fleet controller holds the controller's session: the one-shot
    // commands above would share it, so what follows is read from its database and the board.
    let db = host.dir.join("fleet.db");
    let url = format!("http://10.0.2.2:{}/status-1.1.cpkg", server.port);
    // The sample app's packages are aarch64 microVMs.
    let deploy = [
        "deploy",
        "status",
        &url,
        "--version",
        "1.1",
        "--selector",
        "arch=aarch64",
    ];
    step(&format!(
        "the operator's fleet controller: cpevisor-controller {} --db fleet.db (desired state: \
         version 1.1 on every aarch64 agent), then cpevisor-controller serve --db fleet.db",
        deploy.join(" ")
    ));
    host.fleet(&db, &deploy)?;
    let serve = host.serve(&db)?;

    step("rebooting the board (reboot: the agent stops the app first), then booting it again on the same flash");
    reboot(vm)?;
    let mut vm = boot(board, &flash)?;
    step(
        "no command given: the agent recovers its store, reconnects and says Boot!; serve reads \
         its inventory, finds status 1.0 where 1.1 is wanted, and updates it",
    );
    let updated = wait_fleet_app(&host, &db, "status", "1.1", Duration::from_secs(500))
        .map_err(|e| format!("{e}\nserve log:\n{}", serve.log_tail(3000)))?;
    step(&format!(
        "serve: {AGENT_ENDPOINT} runs status 1.1 ({} operation(s) in the journal for it)",
        updated
    ));
    let again = show_app_on_board(&mut vm, "1.1", &sample_token("1.0"))?;
    if again != eu_id {
        return Err(format!(
            "the EUID changed across the reboot and the update: {eu_id} -> {again}"
        ));
    }
    let status = serve.stop(Duration::from_secs(30))?;
    if !status.success() {
        return Err(format!("serve exit after SIGTERM: {status}"));
    }
    step("serve stopped (SIGTERM: it finishes what it has in flight first)");

    power_off(vm)
}

/// Waits until serve's database has `name` at `version` on the board's agent; returns how many
/// operations its journal holds for the agent.
fn wait_fleet_app(
    host: &UspHost,
    db: &Path,
    name: &str,
    version: &str,
    timeout: Duration,
) -> Result<usize, String> {
    let deadline = Instant::now() + BoardVm::scaled(timeout);
    loop {
        let agent = host.fleet_board_agent(db)?;
        let has =
            agent.as_ref().is_some_and(|a| {
                a["dus"].as_array().into_iter().flatten().any(|d| {
                    d["name"] == name && d["version"] == version && d["status"] == "Installed"
                })
            });
        if has {
            let ops = host.fleet(db, &["operations"])?;
            let mine = ops["operations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["agent"] == AGENT_ENDPOINT)
                .count();
            return Ok(mine);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "serve did not bring {name} {version} to {AGENT_ENDPOINT} in {timeout:?}: {agent:?}"
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Shows the `status` app at `version` Active and answering, read on the board's console
/// (`cpevisorctl`); its data volume, kept by updates, still carries `token`. Returns its EUID.
fn show_app_on_board(vm: &mut BoardVm, version: &str, token: &str) -> Result<String, String> {
    let list = wait_agent(vm, Duration::from_secs(60))?;
    let du_version = deployment_units(&list)
        .into_iter()
        .find(|d| d["name"] == "status")
        .map(|d| d["version"].clone());
    if du_version.as_ref().and_then(|v| v.as_str()) != Some(version) {
        return Err(format!(
            "the board has status {du_version:?}, not {version}: {list}"
        ));
    }
    let eu = eu_of(&list, "status").ok_or_else(|| format!("no status EU on the board: {list}"))?;
    let eu_id = eu["eu_id"].as_str().unwrap_or_default().to_string();
    wait_eu_status(vm, &eu_id, "Active", Duration::from_secs(300))
        .map_err(|e| format!("{e}\n{}", app_logs(vm, &eu_id)))?;
    vm.run_ok("cpevisorctl list", Duration::from_secs(60))?;
    let addr = app_address(vm, &eu_id)?;
    let page = fetch_status_page(vm, &addr, Duration::from_secs(300))
        .map_err(|e| format!("{e}\n{}", app_logs(vm, &eu_id)))?;
    if !page.contains(&format!("data={token}")) {
        return Err(format!("the page does not carry {token}:\n{page}"));
    }
    step(&format!(
        "{eu_id} runs status {version}, Active, and answered; its data volume, kept by the \
         update, still says {token}"
    ));
    Ok(eu_id)
}
