//! USP end to end on the default board: mosquitto (with its own PKI) on the host, the agent in
//! the board connecting to it at 10.0.2.2 over QEMU user networking with the certificate
//! provisioned on its flash, and the host's `cpevisor-controller` as the controller. The controller
//! sees the agent announce itself, reads DeviceInfo and the ExecEnv, installs the sample app
//! from a server on the host (OperationComplete + `DUStateChange!` Installed), the app becomes
//! Active and answers on the board, stop and start give ValueChange Idle and Active; after a
//! reboot on the same flash the agent says `Boot!` and the app is Active again by itself; an
//! uninstall gives `DUStateChange!` Uninstalled with nothing left installed.
//!
//! Needs `make firmware` (the sample app's packages and a firmware whose init starts the agent
//! with `--usp`) and a host `cpevisor-controller`, so it is `#[ignore]`d for a
//! plain `cargo test` and run by `make e2e`.

use cpevisor_e2e::agent::{
    app_address, app_logs, fetch_status_page, reboot, sample_token, HttpServer, SamplePackages,
};
use cpevisor_e2e::usp::{UspHost, AGENT_ENDPOINT, BOARD_USP_DIR};
use cpevisor_e2e::{BoardVm, BootOptions};
use std::time::{Duration, Instant};

const BOARD: &str = "qemu-virt-a53";
const BOOT: Duration = Duration::from_secs(240);
/// From the ready marker to the agent's first announcement: TLS handshake on an emulated CPU.
const CONNECT: Duration = Duration::from_secs(180);
/// Download (~30 MB over QEMU user networking), verification and unpack on an emulated CPU.
const INSTALL: Duration = Duration::from_secs(500);
const ACTIVE: Duration = Duration::from_secs(180);
/// Nested Linux under TCG: the guest takes 20-60 s to serve HTTP.
const ANSWER: Duration = Duration::from_secs(300);
const STOP: Duration = Duration::from_secs(120);

#[test]
#[ignore = "boots qemu-virt-a53: needs `make firmware` (run by `make e2e`)"]
fn controller_manages_the_board_over_usp() {
    let started = Instant::now();
    let packages = SamplePackages::find(BOARD).unwrap();
    let server = HttpServer::serve(&packages.dir).unwrap();
    let host = UspHost::start("usp-in-board").unwrap();
    let flash = host.provision_flash(BOARD, "usp-in-board", 256).unwrap();
    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(BOOT).unwrap();
    assert!(
        vm.transcript()
            .contains("CPEVISOR-DATA state=mounted dev=/dev/vda"),
        "the provisioned flash was not mounted as it is"
    );
    let marker = format!("usp={BOARD_USP_DIR}/usp.json");
    vm.wait_for(&marker, Duration::from_secs(30))
        .unwrap_or_else(|e| {
            panic!(
                "the init did not start the agent with --usp (firmware older than USP \
                 provisioning? `make firmware BOARDS={BOARD}`): {e}"
            )
        });

    let agent_log = |vm: &mut BoardVm| {
        vm.run_ok("tail -c 4000 /run/cpevisord.log", Duration::from_secs(30))
            .unwrap_or_default()
    };
    let how = host
        .wait_announced(&["Boot!", "OnBoardRequest"], CONNECT)
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent_log(&mut vm)));
    println!(
        "{AGENT_ENDPOINT} seen ({how}) {:.1?} after the start",
        started.elapsed()
    );

    let info = host
        .wait_answering("Device.DeviceInfo.", Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        info.row("ModelName").as_deref(),
        Some(BOARD),
        "{:?}",
        info.reply
    );
    assert_eq!(info.row("Manufacturer").as_deref(), Some("cpevisor"));
    assert!(info.row("UpTime").is_some(), "{:?}", info.reply);
    let env = host
        .on_agent(
            Duration::from_secs(60),
            &["get", "Device.SoftwareModules.ExecEnv."],
        )
        .unwrap()
        .ok("get ExecEnv")
        .unwrap();
    let env_name = env.row("ExecEnv.1.Name").unwrap_or_default();
    assert!(!env_name.is_empty(), "no ExecEnv.1.Name: {:?}", env.reply);
    assert_eq!(env.row("ExecEnv.1.Enable").as_deref(), Some("true"));

    // InstallDU: OperationComplete and DUStateChange! Installed, both for this UUID.
    let url = format!("http://10.0.2.2:{}/status-1.0.cpkg", server.port);
    let done = host
        .on_agent(INSTALL, &["install", &url])
        .unwrap()
        .ok("install")
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent_log(&mut vm)));
    let uuid = done.row("UUID").expect("UUID in the install result");
    assert!(
        done.events("DUStateChange!")
            .iter()
            .any(|e| e["params"]["CurrentState"] == "Installed"
                && e["params"]["UUID"] == uuid.as_str()
                && e["params"]["Fault.FaultCode"] == "0"),
        "{:?}",
        done.reply
    );
    assert_eq!(
        done.events("OperationComplete").len(),
        1,
        "{:?}",
        done.reply
    );
    println!("installed {uuid} over USP in {:.1?}", done.took);

    // AutoStart: Active without a command; then the app itself answers on the board.
    let eu_id = host
        .wait_eu_status("status", "Active", ACTIVE)
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent_log(&mut vm)));
    let addr = app_address(&mut vm, &eu_id).unwrap();
    let page = fetch_status_page(&mut vm, &addr, ANSWER)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    let token = sample_token("1.0");
    assert!(page.contains(&format!("data={token}")), "{page}");
    println!("the app answered {:.1?} after the start", started.elapsed());

    // SetRequestedState Idle: ValueChange on Status to Idle.
    let stop = host
        .on_agent(STOP, &["stop", &eu_id])
        .unwrap()
        .ok("stop")
        .unwrap();
    assert!(
        stop.events("ValueChange")
            .iter()
            .any(|e| e["params"]["value"] == "Idle"),
        "{:?}",
        stop.reply
    );
    let (_, status) = host.eu_status("status").unwrap().expect("EU still listed");
    assert_eq!(status, "Idle");
    // SetRequestedState Active: ValueChange to Active.
    let start = host
        .on_agent(STOP, &["start", &eu_id])
        .unwrap()
        .ok("start")
        .unwrap();
    assert!(
        start
            .events("ValueChange")
            .iter()
            .any(|e| e["params"]["value"] == "Active"),
        "{:?}",
        start.reply
    );

    // Reboot on the same flash: the agent reconnects with Boot! (the controller's persistent
    // subscription, made by the install) and the app is Active again without a command.
    reboot(vm).unwrap();
    let rebooted = Instant::now();
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(BOOT).unwrap();
    vm.wait_for(&marker, Duration::from_secs(30)).unwrap();
    host.wait_announced(&["Boot!"], CONNECT)
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent_log(&mut vm)));
    let again = host
        .wait_eu_status("status", "Active", ACTIVE)
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}", agent_log(&mut vm)));
    assert_eq!(again, eu_id, "the EUID changed across the reboot");
    println!(
        "Boot! and the app Active again {:.1?} after the reboot",
        rebooted.elapsed()
    );

    // Uninstall: DUStateChange! Uninstalled, then no DeploymentUnit left.
    let gone = host
        .on_agent(STOP, &["uninstall", &uuid])
        .unwrap()
        .ok("uninstall")
        .unwrap();
    assert!(
        gone.events("DUStateChange!")
            .iter()
            .any(|e| e["params"]["CurrentState"] == "Uninstalled"),
        "{:?}",
        gone.reply
    );
    let left = host
        .on_agent(
            Duration::from_secs(60),
            &["instances", "Device.SoftwareModules.DeploymentUnit."],
        )
        .unwrap()
        .ok("instances")
        .unwrap();
    assert_eq!(
        left.result().unwrap()["rows"].as_array().map(Vec::len),
        Some(0),
        "{:?}",
        left.reply
    );
    assert!(host.eu_status("status").unwrap().is_none());
    println!(
        "usp_in_board: wall time {:.1?} (boot, connect, install, app, stop/start, reboot, \
         uninstall)",
        started.elapsed()
    );
}
