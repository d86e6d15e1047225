//! The fleet controller end to end on the default board (issue 13): `cpevisor-controller serve`
//! on the host keeps the desired state in its database, and the board's agent, connecting over
//! the test broker as in usp_in_board, converges on it without any command addressed to it.
//!
//! Two deployments exist before the board first boots: the sample app for `arch=aarch64`, which
//! the board's ExecEnv runs, and one for `arch=mipsel`, which it does not. The board's `Boot!`
//! makes serve read its inventory and install the first; the app becomes Active and answers on
//! the board; the second is never sent. After a reboot on the same flash the agent says `Boot!`
//! again, the app is Active again by itself, and serve sends nothing more: one install in the
//! journal for the board, ever.
//!
//! Needs `make firmware` and a host `cpevisor-controller`, so it is `#[ignore]`d for a plain
//! `cargo test` and run by `make e2e`.

use cpevisor_e2e::agent::{
    app_address, app_logs, eu_of, fetch_status_page, reboot, sample_token, wait_agent,
    wait_eu_status, HttpServer, SamplePackages,
};
use cpevisor_e2e::usp::{Serving, UspHost, AGENT_ENDPOINT, BOARD_USP_DIR};
use cpevisor_e2e::{BoardVm, BootOptions};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const BOARD: &str = "qemu-virt-a53";
const BOOT: Duration = Duration::from_secs(240);
/// From the board's boot to the app installed by serve: connect, inventory, download, verify.
const CONVERGE: Duration = Duration::from_secs(600);
const ACTIVE: Duration = Duration::from_secs(300);
const ANSWER: Duration = Duration::from_secs(300);

/// The board's agent as the controller's database has it.
fn board_agent(host: &UspHost, db: &Path) -> Option<Value> {
    host.fleet_board_agent(db).ok().flatten()
}

fn has_du(agent: &Value, name: &str, version: &str) -> bool {
    agent["dus"].as_array().is_some_and(|dus| {
        dus.iter()
            .any(|d| d["name"] == name && d["version"] == version)
    })
}

/// The journal's operations for the board's agent, oldest first.
fn board_operations(host: &UspHost, db: &Path) -> Vec<Value> {
    let ops = host.fleet(db, &["operations", "--limit", "1000"]).unwrap();
    let mut mine: Vec<Value> = ops["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o["agent"] == AGENT_ENDPOINT)
        .collect();
    mine.reverse();
    mine
}

/// Polls the database until `done` holds for the board's agent.
fn wait_inventory(
    host: &UspHost,
    db: &Path,
    serve: &Serving,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + BoardVm::scaled(timeout);
    loop {
        let agent = board_agent(host, db);
        if let Some(a) = agent.as_ref().filter(|a| done(a)) {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not after {timeout:?}; the board's agent in the database: {agent:?}\n\
             operations: {:?}\nserve log:\n{}",
            board_operations(host, db),
            serve.log_tail(4000)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
#[ignore = "boots qemu-virt-a53: needs `make firmware` (run by `make e2e`)"]
fn a_deployment_by_arch_converges_on_the_board_and_survives_its_reboot() {
    let started = Instant::now();
    let packages = SamplePackages::find(BOARD).unwrap();
    let server = HttpServer::serve(&packages.dir).unwrap();
    let host = UspHost::start("fleet-in-board").unwrap();
    let flash = host.provision_flash(BOARD, "fleet-in-board", 256).unwrap();
    let db = host.dir.join("fleet.db");
    let url = format!("http://10.0.2.2:{}/status-1.0.cpkg", server.port);

    // The desired state, written before the board was ever seen.
    let mut ids = Vec::new();
    for (name, arch) in [("status", "aarch64"), ("status-mips", "mipsel")] {
        let made = host
            .fleet(
                &db,
                &[
                    "deploy",
                    name,
                    &url,
                    "--version",
                    "1.0",
                    "--selector",
                    &format!("arch={arch}"),
                ],
            )
            .unwrap();
        ids.push(made["id"].as_i64().expect("deployment id"));
    }
    let mipsel_deployment = ids[1];
    let serve = host.serve(&db).unwrap();

    let opts = BootOptions {
        flash: Some(flash.path.clone()),
        ..Default::default()
    };
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(BOOT).unwrap();
    let marker = format!("usp={BOARD_USP_DIR}/usp.json");
    vm.wait_for(&marker, Duration::from_secs(30)).unwrap();

    // serve installs the aarch64 deployment on the board by itself.
    let agent = wait_inventory(&host, &db, &serve, "status 1.0 installed", CONVERGE, |a| {
        has_du(a, "status", "1.0")
    });
    assert_eq!(agent["exec_envs"][0]["arch"], "aarch64", "{agent}");
    println!(
        "{AGENT_ENDPOINT}: status 1.0 installed by serve {:.1?} after the start",
        started.elapsed()
    );
    let list = wait_agent(&mut vm, Duration::from_secs(60)).unwrap();
    let eu = eu_of(&list, "status").unwrap_or_else(|| panic!("no status EU on the board: {list}"));
    let eu_id = eu["eu_id"].as_str().unwrap().to_string();
    wait_eu_status(&mut vm, &eu_id, "Active", ACTIVE)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    let addr = app_address(&mut vm, &eu_id).unwrap();
    let page = fetch_status_page(&mut vm, &addr, ANSWER)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    assert!(page.contains(&sample_token("1.0")), "{page}");

    let ops = board_operations(&host, &db);
    let installs: Vec<&Value> = ops.iter().filter(|o| o["kind"] == "install").collect();
    assert_eq!(installs.len(), 1, "one install for the board: {ops:?}");
    assert!(
        ops.iter().all(|o| o["deployment"] != mipsel_deployment),
        "the mipsel deployment reached an aarch64 board: {ops:?}"
    );

    // A reboot on the same flash: Boot!, the app Active again by itself, nothing new sent.
    let seen_before = agent["last_seen"].as_i64().unwrap_or_default();
    reboot(vm).unwrap();
    let rebooted = Instant::now();
    let mut vm = BoardVm::boot(BOARD, &opts).unwrap();
    vm.wait_ready(BOOT).unwrap();
    vm.wait_for(&marker, Duration::from_secs(30)).unwrap();
    wait_inventory(
        &host,
        &db,
        &serve,
        "seen again after the reboot",
        CONVERGE,
        |a| {
            a["last_seen"].as_i64().unwrap_or_default() > seen_before
                && a["inventory_at"].as_i64().unwrap_or_default() > seen_before
                && has_du(a, "status", "1.0")
        },
    );
    // The agent speaks USP before its local socket is up.
    wait_agent(&mut vm, Duration::from_secs(60)).unwrap();
    wait_eu_status(&mut vm, &eu_id, "Active", ACTIVE)
        .unwrap_or_else(|e| panic!("{e}\n{}", app_logs(&mut vm, &eu_id)));
    // serve's passes run every 2 s (--sweep): give it several before reading the journal.
    std::thread::sleep(Duration::from_secs(10));
    let after = board_operations(&host, &db);
    assert_eq!(
        after.len(),
        ops.len(),
        "serve sent the converged board more operations after its reboot: {after:?}"
    );
    println!(
        "{AGENT_ENDPOINT}: converged again {:.1?} after the reboot, no new operation",
        rebooted.elapsed()
    );

    let status = serve.stop(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "serve exit: {status}");
    println!("fleet_in_board: wall time {:.1?}", started.elapsed());
}
