//! `cpevisor-controller serve` against real agents: a real mosquitto with TLS, agents hosted in
//! this process (each its own `Agent` on its own state dir, `process` runner, its own MQTT
//! session and EndpointID, like usp_fleet.rs), a signed package on a loopback HTTP server, and
//! the controller's binary with its database: SQLite, and again PostgreSQL (a server of the
//! test's own, Debian's binaries: `make setup` installs them).
//!
//! This test lives in the agent crate, not the controller's: it needs agents whose ExecEnv
//! budget and DeviceInfo differ per agent, built in process from the agent's own types, and the
//! package helpers of tests/common; the controller crate does not depend on the agent's.
//!
//! One fleet, three checks in order: (a) a deployment by selector, with the operator's network
//! override, installs on the matching agents only, each with the override in force (another
//! model is not touched, an agent whose budget is too small records the agent's 7227, a
//! selector on an architecture no agent's ExecEnv runs touches nobody); (b) an agent that
//! connects after the deployment converges, with the override too; (c) `serve` killed and
//! started again on the same database sends no second install. The time to converge is
//! printed.

#[path = "common/agentd.rs"]
mod agentd;
#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/usp.rs"]
mod usp_common;

use std::collections::BTreeSet;
use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentd::World;
use cpevisor_controller::store::test_postgres::TestPostgres;
use fleet::{broker_for_fleet, query, serve, sleeper, start_agent, wait_for, MemberSpec};
use serde_json::{json, Value};

const CTL_ID: &str = "self::serve-ctl";

fn ops_of<'a>(ops: &'a Value, agent: &str) -> Vec<&'a Value> {
    ops["operations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["agent"] == agent)
        .collect()
}

fn has_app(agents: &Value, agent: &str, name: &str, version: &str) -> bool {
    agents["agents"].as_array().unwrap().iter().any(|a| {
        a["endpoint_id"] == agent
            && a["dus"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["name"] == name && d["version"] == version)
    })
}

/// The network override of the `svc` deployment: no network at all (the app has no section
/// of its own, so without it the agent reports none).
const NETWORK: &str = r#"{"mode":"none"}"#;

/// The network mode of `m`'s app as its agent has it in force (what the data model's
/// `ExecutionUnit.{i}.NetworkConfig.X_CPEVISOR_Mode` shows), if its app has a section.
fn mode_of(m: &fleet::Member) -> Option<String> {
    let s = m.agent.snapshot();
    s.eu_networks
        .values()
        .next()
        .map(|n| n.config.mode.as_str().to_string())
}

/// One fleet at a time: two at once on a small machine starve each other's agents.
static ONE_FLEET: Mutex<()> = Mutex::new(());

#[test]
fn serve_places_converges_and_restarts_without_duplicates() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let world = World::new("usp-serve");
    let db = world.root.join("fleet.db");
    places_converges_restarts(&world, db.to_str().unwrap());
}

/// The same on PostgreSQL: the database is a server's, the rest unchanged.
#[test]
fn serve_on_postgres_places_converges_and_restarts_without_duplicates() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let pg = TestPostgres::start();
    pg.create_database("fleet");
    places_converges_restarts(&World::new("usp-serve-pg"), &pg.url("fleet"));
}

/// The three checks on database `db` (`--db`'s argument).
fn places_converges_restarts(world: &World, db: &str) {
    let (broker, agent_cert) = broker_for_fleet(world, "serve-agent");
    let url = world.publish(&sleeper("svc", "1.0", 16), "svc-1.0.cpkg");
    let cfg = usp_common::ctl_config(&broker, &world.root, CTL_ID, true, json!({}));
    let log = world.root.join("serve.log");
    let mut ctl = serve(&cfg, db, &log, &[]);

    let join = |spec: &MemberSpec| start_agent(world, &broker, &agent_cert, CTL_ID, spec);
    let mut fleet = vec![
        join(&MemberSpec {
            id: "os::a-1",
            model: "cpe-a",
            budget_mib: Some(64),
        }),
        join(&MemberSpec {
            id: "os::a-2",
            model: "cpe-a",
            budget_mib: Some(64),
        }),
        // Too small for the app's 16 MiB: the agent refuses the install (7227).
        join(&MemberSpec {
            id: "os::a-small",
            model: "cpe-a",
            budget_mib: Some(8),
        }),
        join(&MemberSpec {
            id: "os::b-1",
            model: "cpe-b",
            budget_mib: Some(64),
        }),
    ];
    // Every agent announced itself and its inventory was read.
    wait_for("inventory of 4 agents", 60, &log, || {
        let v = query(db, "agents");
        let a = v["agents"].as_array().unwrap();
        a.len() == 4 && a.iter().all(|a| a["inventory_at"].is_number())
    });
    let v = query(db, "agents");
    let b1 = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["endpoint_id"] == "os::b-1")
        .unwrap()
        .clone();
    assert_eq!(b1["model"], "cpe-b", "{b1}");
    assert_eq!(b1["exec_envs"][0]["budget_kib"], 64 * 1024, "{b1}");

    // (a) placement by selector.
    let t_deploy = Instant::now();
    let (code, _, err) = usp_common::run_ctl([
        "deploy",
        "--db",
        db,
        "svc",
        &url,
        "--version",
        "1.0",
        "--selector",
        "model=cpe-a",
        // The operator's network section for these homes, sent with every install.
        "--network",
        NETWORK,
    ]);
    assert_eq!(code, 0, "{err}");
    // Every agent here runs x86_64 ExecEnvs (X_CPEVISOR_Architecture): a deployment for
    // aarch64 matches nobody, while the model=cpe-a one above matches its agents.
    let (code, _, err) = usp_common::run_ctl([
        "deploy",
        "--db",
        db,
        "other",
        &url,
        "--version",
        "9",
        "--selector",
        "arch=aarch64",
    ]);
    assert_eq!(code, 0, "{err}");
    let converged = wait_for(
        "svc on a-1, a-2 and the refusal of a-small",
        120,
        &log,
        || {
            let agents = query(db, "agents");
            let ops = query(db, "operations");
            has_app(&agents, "os::a-1", "svc", "1.0")
                && has_app(&agents, "os::a-2", "svc", "1.0")
                && ops_of(&ops, "os::a-small")
                    .iter()
                    .any(|o| o["state"] == "failed")
        },
    );
    println!("usp serve: 2 agents converged and 1 refusal recorded {converged:.1} s after the deployment");
    let ops = query(db, "operations");
    let small = ops_of(&ops, "os::a-small");
    assert_eq!(small.len(), 1, "refused once, then backed off: {small:?}");
    assert_eq!(small[0]["fault_code"], 7227, "{}", small[0]);
    assert!(
        ops_of(&ops, "os::b-1").is_empty(),
        "another model is not touched"
    );
    assert!(
        ops["operations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["deployment"] == 1),
        "nothing for the arch=aarch64 deployment: {ops}"
    );
    // The inventory has each ExecEnv's architecture, as the agents publish it.
    let agents = query(db, "agents");
    let a1 = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["endpoint_id"] == "os::a-1")
        .expect("a-1 in the inventory");
    assert_eq!(a1["exec_envs"][0]["arch"], "x86_64", "{a1}");
    for m in &fleet {
        let want = usize::from(m.id == "os::a-1" || m.id == "os::a-2");
        assert_eq!(m.agent.snapshot().deployment_units.len(), want, "{}", m.id);
        if want == 1 {
            assert_eq!(
                mode_of(m).as_deref(),
                Some("none"),
                "{}: the override",
                m.id
            );
        }
    }
    let deps = query(db, "deployments");
    assert_eq!(
        deps["deployments"][1]["network"],
        json!({"mode": "none"}),
        "{deps}"
    );

    // (b) an agent that was not there when the deployment was made converges when it connects.
    fleet.push(join(&MemberSpec {
        id: "os::a-late",
        model: "cpe-a",
        budget_mib: Some(64),
    }));
    let late = wait_for("svc on the late agent", 120, &log, || {
        has_app(&query(db, "agents"), "os::a-late", "svc", "1.0")
    });
    println!("usp serve: the late agent converged {late:.1} s after it started");
    assert_eq!(mode_of(fleet.last().unwrap()).as_deref(), Some("none"));

    // (c) serve stopped hard and started again: no operation is sent twice.
    drop(ctl);
    let before = query(db, "operations")["operations"]
        .as_array()
        .unwrap()
        .len();
    ctl = serve(&cfg, db, &log, &[]);
    // Its first sweep reads every agent again (its inventory time moves past the restart);
    // then several reconciliation passes run.
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    wait_for("the restarted serve's first sweep", 60, &log, || {
        let v = query(db, "agents");
        v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["inventory_at"].as_i64().unwrap_or(0) > restarted)
    });
    // Not waiting out the killed one's lease: its process is gone from this host.
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains("is gone from this host: taking over"));
    std::thread::sleep(Duration::from_secs(5));
    let ops = query(db, "operations");
    assert_eq!(ops["operations"].as_array().unwrap().len(), before, "{ops}");
    for id in ["os::a-1", "os::a-2", "os::a-late"] {
        let mine = ops_of(&ops, id);
        assert_eq!(mine.len(), 1, "{id}: {mine:?}");
        assert_eq!(mine[0]["state"], "done", "{id}: {}", mine[0]);
    }
    for m in &fleet {
        let want = usize::from(m.id != "os::a-small" && m.id != "os::b-1");
        assert_eq!(m.agent.snapshot().deployment_units.len(), want, "{}", m.id);
    }
    let deps = query(db, "deployments");
    let svc = deps["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "svc")
        .unwrap()
        .clone();
    assert_eq!(svc["installed"], 3, "{svc}");
    assert_eq!(svc["failed"], 1, "{svc}");
    let size = |suffix: &str| {
        fs::metadata(format!("{db}{suffix}"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    if db.starts_with("postgres") {
        println!(
            "usp serve (PostgreSQL): whole run {:.1} s for {} agents",
            t_deploy.elapsed().as_secs_f64(),
            fleet.len()
        );
    } else {
        println!(
            "usp serve (SQLite): whole run {:.1} s; database {} bytes + WAL {} bytes for {} agents",
            t_deploy.elapsed().as_secs_f64(),
            size(""),
            size("-wal"),
            fleet.len()
        );
    }
    // SIGTERM: serve stops by itself, nothing in flight, exit 0.
    assert_eq!(
        ctl.terminate(20),
        Some(0),
        "serve's log:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains("stopped, 0 operations left in flight"));
    for m in fleet {
        m.session.stop();
        m.agent.shutdown();
    }
}

/// `cpevisor-controller rollout status ID --db DB --json`.
fn rollout_status(db: &str, id: &str) -> Value {
    let (code, v, err) = usp_common::run_ctl(["rollout", "status", id, "--db", db, "--json"]);
    assert_eq!(code, 0, "rollout status: {err}");
    v
}

/// `cpevisor-controller replicas --json`: (name, shards held) of each live replica, and the
/// count of shards no live replica holds.
fn shard_owners(db: &str) -> (Vec<(String, Vec<u32>)>, usize) {
    let v = query(db, "replicas");
    let list = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let shards = r["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap() as u32)
                .collect();
            (r["name"].as_str().unwrap().to_string(), shards)
        })
        .collect();
    (list, v["unheld"].as_array().unwrap().len())
}

/// Every shard held, by exactly `names` (in name order), each holding `lo..=hi`.
fn shared_by(db: &str, names: &[&str], lo: usize, hi: usize) -> bool {
    let (list, unheld) = shard_owners(db);
    unheld == 0
        && list
            .iter()
            .map(|(n, _)| n.as_str())
            .eq(names.iter().copied())
        && list.iter().all(|(_, s)| (lo..=hi).contains(&s.len()))
}

/// The version of svc each agent runs, by the agents' own state; more than one DU (a
/// duplicate install) fails.
fn version_on(m: &fleet::Member) -> String {
    let dus = m.agent.snapshot().deployment_units;
    assert!(dus.len() <= 1, "{}: {} DUs", m.id, dus.len());
    dus.first().map(|d| d.version.clone()).unwrap_or_default()
}

/// Exactly one operation of `deployment` reached each of `ids`: one done, none failed; a lost
/// one (a killed replica's, unanswered) is the only other kind allowed. The replicas that sent
/// the done ones.
fn once_each(db: &str, ids: &[String], deployment: &Value) -> BTreeSet<String> {
    let ops = query(db, "operations");
    let mut senders = BTreeSet::new();
    for a in ids {
        let mine: Vec<_> = ops_of(&ops, a)
            .into_iter()
            .filter(|o| o["deployment"] == *deployment)
            .collect();
        let done: Vec<_> = mine.iter().filter(|o| o["state"] == "done").collect();
        assert_eq!(done.len(), 1, "{a}: {mine:?}");
        assert!(
            mine.iter()
                .all(|o| o["state"] == "done" || o["state"] == "lost"),
            "{a}: {mine:?}"
        );
        senders.insert(done[0]["replica"].as_str().unwrap_or("?").to_string());
    }
    senders
}

/// Three `serve` replicas on one PostgreSQL database share the fleet: each holds about a third
/// of the 64 shards and sends the operations of its agents, so one rollout's are sent by more
/// than one replica. One killed (SIGKILL) mid-rollout: its shards move to the others within
/// the lease and the rollout completes; a fourth joining during a second rollout takes shards
/// from the others. Every agent gets each version once (its own state has one DU, the journal
/// one done operation, none failed).
///
/// It once failed 1 run in 5 on a race, fixed since: after a takeover an agent's
/// OperationComplete reached a third replica, which forwarded it by the shard holders it had
/// seen last, still the killed one. Now a replica that took a shard from others sends its
/// agents nothing until every replica has had two rounds to learn the new holder, and a result
/// that never comes is looked for in the agent's inventory before the operation is called
/// failed (usp_serve_unheard.rs).
#[test]
fn serve_replicas_on_postgres_share_the_fleet_one_killed_one_joining() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let world = World::new("usp-serve-replicas");
    let (broker, agent_cert) = broker_for_fleet(&world, "serve-agent");
    let publish =
        |version: &str| world.publish(&sleeper("svc", version, 8), &format!("svc-{version}.cpkg"));
    let (url1, url2) = (publish("1.0"), publish("2.0"));
    let pg = TestPostgres::start();
    pg.create_database("fleet");
    let db = pg.url("fleet");
    let cfg = usp_common::ctl_config(&broker, &world.root, CTL_ID, true, json!({}));
    let logs: Vec<_> = (0..4)
        .map(|i| world.root.join(format!("serve-r{i}.log")))
        .collect();
    let log_of = |i: usize| fs::read_to_string(&logs[i]).unwrap_or_default();
    let all_logs = world.root.join("serve-all.log");
    let dump = || {
        let text: String = (0..4).map(|i| format!("--- r{i}\n{}", log_of(i))).collect();
        fs::write(&all_logs, text).unwrap();
    };
    let start = |i: usize| {
        let name = format!("r{i}");
        // A lost operation (sent by the killed one, never answered) is sent again soon.
        let extra = ["--replica", &name, "--lease-ttl", "2", "--op-timeout", "20"];
        Some(serve(&cfg, &db, &logs[i], &extra))
    };
    let mut replicas: Vec<Option<fleet::Serve>> = (0..3).map(start).collect();
    let t0 = Instant::now();
    wait_for("three replicas sharing the shards", 60, &all_logs, || {
        dump();
        shared_by(&db, &["r0", "r1", "r2"], 20, 22)
    });
    println!(
        "usp serve replicas: 3 replicas share the 64 shards {:.1} s after start: {:?}",
        t0.elapsed().as_secs_f64(),
        shard_owners(&db)
            .0
            .iter()
            .map(|(n, s)| (n.clone(), s.len()))
            .collect::<Vec<_>>()
    );

    let ids: Vec<String> = (0..9).map(|i| format!("os::r-{i}")).collect();
    let fleet: Vec<_> = ids
        .iter()
        .map(|id| {
            let spec = MemberSpec {
                id,
                model: "cpe-a",
                budget_mib: Some(64),
            };
            start_agent(&world, &broker, &agent_cert, CTL_ID, &spec)
        })
        .collect();
    wait_for("inventory of 9 agents", 60, &all_logs, || {
        dump();
        let v = query(&db, "agents");
        let a = v["agents"].as_array().unwrap();
        a.len() == ids.len() && a.iter().all(|a| a["inventory_at"].is_number())
    });
    let rollout = |url: &str, version: &str| {
        let (code, started, err) = usp_common::run_ctl([
            "rollout",
            "start",
            "svc",
            url,
            "--version",
            version,
            "--selector",
            "model=cpe-a",
            "--canary",
            "1",
            "--wave",
            "2",
            "--max-in-flight",
            "2",
            "--db",
            &db,
            "--json",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(started["targets"], ids.len(), "{started}");
        (
            started["id"].as_i64().unwrap().to_string(),
            started["deployment"].clone(),
        )
    };
    let (id, dep1) = rollout(&url1, "1.0");
    let done = |id: &str| {
        rollout_status(&db, id)["targets"]["done"]
            .as_u64()
            .unwrap_or(0) as usize
    };
    wait_for("3 agents done", 120, &all_logs, || {
        dump();
        done(&id) >= 3
    });
    // The victim: the holder of an agent not done yet, so its death matters to the rollout.
    let s = rollout_status(&db, &id);
    let waiting = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["state"] != "done")
        .map(|a| a["agent"].as_str().unwrap().to_string())
        .unwrap();
    let shard = cpevisor_controller::store::shards::shard_of(&waiting);
    let (owners, _) = shard_owners(&db);
    let victim = owners
        .iter()
        .find(|(_, s)| s.contains(&shard))
        .map(|(n, _)| n[1..].parse::<usize>().unwrap())
        .unwrap();
    let at_kill = done(&id);
    assert!(at_kill < ids.len(), "the kill is mid-rollout");
    // SIGKILL: no lease given up, whatever it had in flight left in the journal.
    replicas[victim] = None;
    let t_kill = Instant::now();
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| format!("r{i}"))
        .collect();
    let names: Vec<&str> = survivors.iter().map(String::as_str).collect();
    wait_for("the survivors taking its shards", 30, &all_logs, || {
        dump();
        shared_by(&db, &names, 32, 32)
    });
    let took_over = t_kill.elapsed().as_secs_f64();
    wait_for("the rollout done", 180, &all_logs, || {
        dump();
        rollout_status(&db, &id)["state"] == "done"
    });
    println!(
        "usp serve replicas: r{victim} killed with {at_kill} of {} done ({waiting} of its shard {shard} waiting), its shards held by {names:?} {took_over:.1} s later (lease 2 s), the rollout done {:.1} s after the kill",
        ids.len(),
        t_kill.elapsed().as_secs_f64()
    );
    let s = rollout_status(&db, &id);
    assert_eq!(s["targets"]["done"], ids.len(), "{s}");
    let senders = once_each(&db, &ids, &dep1);
    println!("usp serve replicas: 1.0 sent by {senders:?}");
    assert!(
        senders.len() >= 2,
        "one rollout, several senders: {senders:?}"
    );
    for m in &fleet {
        assert_eq!(version_on(m), "1.0", "{}", m.id);
    }

    // A fourth joins during the rollout of 2.0 and takes its share from the others.
    let (id2, dep2) = rollout(&url2, "2.0");
    replicas.push(start(3));
    let mut names4 = names.clone();
    names4.push("r3");
    let t_join = Instant::now();
    wait_for(
        "the joining replica taking its share",
        30,
        &all_logs,
        || {
            dump();
            shared_by(&db, &names4, 20, 22)
        },
    );
    let rebalanced = t_join.elapsed().as_secs_f64();
    wait_for("the second rollout done", 180, &all_logs, || {
        dump();
        rollout_status(&db, &id2)["state"] == "done"
    });
    println!(
        "usp serve replicas: r3 joined, shares rebalanced to {:?} in {rebalanced:.1} s; 2.0 sent by {:?}",
        shard_owners(&db).0.iter().map(|(n, s)| (n.clone(), s.len())).collect::<Vec<_>>(),
        once_each(&db, &ids, &dep2)
    );
    for m in &fleet {
        assert_eq!(version_on(m), "2.0", "{}", m.id);
    }
    assert!(
        log_of(3).contains("replica r3: holds"),
        "the log says what it holds: {}",
        log_of(3)
    );
    // A replica stopped cleanly gives its shards up at once.
    let ctl = replicas[3].take().unwrap();
    assert_eq!(ctl.terminate(20), Some(0), "{}", log_of(3));
    assert!(shard_owners(&db).0.iter().all(|(n, _)| n != "r3"));
    wait_for("the others taking r3's shards", 30, &all_logs, || {
        dump();
        shared_by(&db, &names, 32, 32)
    });
    for m in fleet {
        m.session.stop();
        m.agent.shutdown();
    }
}
