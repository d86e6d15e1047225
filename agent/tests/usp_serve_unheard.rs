//! `cpevisor-controller serve` when an operation's result never reaches it: the agent carries
//! out the install but its OperationComplete is lost on the way (here: its notifications go to
//! a topic nobody reads; in the field: a broker restart, or a replica forwarding by a shard
//! holder it has not yet seen change). serve must read the agent's inventory before it calls
//! the operation failed: it finds the app there and journals the operation done, and sends no
//! second install. Real mosquitto with TLS, an agent hosted in this process (as usp_serve.rs),
//! SQLite.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/usp.rs"]
mod usp_common;

use std::fs;
use std::time::{Duration, Instant};

use agentd::World;
use fleet::{
    broker_for_fleet, query, reconnect_notifying, serve, sleeper, start_agent, wait_for, MemberSpec,
};
use serde_json::json;

const CTL_ID: &str = "self::serve-unheard-ctl";

#[test]
fn an_operation_whose_result_is_lost_is_settled_from_the_agents_inventory() {
    let world = World::new("usp-serve-unheard");
    let (broker, cert) = broker_for_fleet(&world, "serve-agent");
    let url = world.publish(&sleeper("svc", "1.0", 8), "svc-1.0.cpkg");
    let cfg = usp_common::ctl_config(&broker, &world.root, CTL_ID, true, json!({}));
    let log = world.root.join("serve.log");
    let db = world.root.join("fleet.db");
    let db = db.to_str().unwrap();
    // A short operation timeout; a failed install would not be tried again within the test
    // (the back-off starts at 30 s), so the journal shows what serve made of the first.
    let extra = ["--op-timeout", "6"];
    let ctl = serve(&cfg, db, &log, &extra);

    let spec = MemberSpec {
        id: "os::u-1",
        model: "cpe-u",
        budget_mib: Some(64),
    };
    let m = start_agent(&world, &broker, &cert, CTL_ID, &spec);
    wait_for("the agent's inventory", 60, &log, || {
        let v = query(db, "agents");
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["endpoint_id"] == spec.id && a["inventory_at"].is_number())
    });
    // From now on its notifications go nowhere; it still answers requests.
    let m = reconnect_notifying(m, &world, &broker, &cert, CTL_ID, &spec, "usp/void");
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.session.stats().connects == 0 {
        assert!(Instant::now() < deadline, "the agent did not connect again");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));

    let (code, _, err) = usp_common::run_ctl([
        "deploy",
        "--db",
        db,
        "svc",
        &url,
        "--version",
        "1.0",
        "--selector",
        "model=cpe-u",
    ]);
    assert_eq!(code, 0, "{err}");
    let ops_of = || {
        let v = query(db, "operations");
        v["operations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["agent"] == spec.id)
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_for("the install's end in the journal", 90, &log, || {
        ops_of().iter().any(|o| o["state"] != "sent")
    });
    // A few passes more: nothing else is sent.
    std::thread::sleep(Duration::from_secs(3));
    let ops = ops_of();
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(ops.len(), 1, "{ops:?}\n{text}");
    assert_eq!(ops[0]["state"], "done", "{:?}\n{text}", ops[0]);
    assert!(text.contains("reading the agent's inventory"), "{text}");
    assert_eq!(m.agent.snapshot().deployment_units.len(), 1);
    // The result was lost, not slow: the agent sent its notifications elsewhere.
    assert!(m.session.stats().sent > 0);
    assert_eq!(ctl.terminate(20), Some(0), "{text}");
    m.session.stop();
    m.agent.shutdown();
}
