use super::rollouts::{NewRollout, RolloutCommand, RolloutTarget};
use super::*;

fn inv(dus: &[(&str, &str)]) -> Inventory {
    Inventory {
        facts: DeviceFacts {
            model: Some("cpe-a".into()),
            ..DeviceFacts::default()
        },
        exec_envs: vec![ExecEnv {
            path: "Device.SoftwareModules.ExecEnv.1.".into(),
            name: "jail0".into(),
            budget_kib: Some(65536),
            available_kib: Some(65536),
            ..ExecEnv::default()
        }],
        dus: dus
            .iter()
            .enumerate()
            .map(|(i, (n, v))| Du {
                path: format!("Device.SoftwareModules.DeploymentUnit.{}.", i + 1),
                uuid: format!("u-{n}"),
                name: n.to_string(),
                version: v.to_string(),
                ..Du::default()
            })
            .collect(),
        eus: Vec::new(),
    }
}

fn dep(name: &str, version: &str) -> NewDeployment {
    NewDeployment {
        name: name.into(),
        url: format!("http://h/{name}-{version}.cpkg"),
        version: version.into(),
        ..NewDeployment::default()
    }
}

#[test]
fn migrations_apply_to_an_empty_database() {
    let s = Store::open_in_memory().unwrap();
    assert_eq!(s.version().unwrap(), schema_version());
    assert!(schema_version() >= 2);
    // Every table of the last version is there.
    for t in [
        "agents",
        "exec_envs",
        "dus",
        "eus",
        "deployments",
        "operations",
        "rollouts",
        "rollout_targets",
    ] {
        let n: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [t],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "table {t}");
    }
}

#[test]
fn migrations_bring_a_version_1_database_up_keeping_its_rows() {
    let dir = std::env::temp_dir().join(format!("cpv-store-v1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v1.db");
    let _ = std::fs::remove_file(&path);
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.pragma_update(None, "user_version", 1).unwrap();
        c.execute(
            "INSERT INTO deployments (name, url, version, selector, created, state)
             VALUES ('app', 'http://h/app.cpkg', '1.0', '{\"model\":\"x\"}', 5, 'active')",
            [],
        )
        .unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.version().unwrap(), schema_version());
    let deps = s.deployments(true).unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].name, "app");
    assert_eq!(deps[0].selector["model"], "x");
    assert_eq!(deps[0].memory_mib, None, "the column version 2 added");
    // What version 2 added works.
    let id = s
        .add_deployment(
            &NewDeployment {
                memory_mib: Some(16),
                ..dep("other", "2")
            },
            6,
        )
        .unwrap();
    assert!(id > deps[0].id);
    s.save_inventory("os::a", &inv(&[]), 7).unwrap();
    // Opening again applies nothing more.
    drop(s);
    let mut c = Connection::open(&path).unwrap();
    assert_eq!(migrate(&mut c).unwrap(), schema_version());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_newer_database_is_refused() {
    let mut c = Connection::open_in_memory().unwrap();
    c.pragma_update(None, "user_version", schema_version() + 1)
        .unwrap();
    assert!(migrate(&mut c).unwrap_err().contains("newer"));
}

#[test]
fn the_journal_allows_one_operation_in_flight_per_agent_and_deployment() {
    let mut s = Store::open_in_memory().unwrap();
    let d = s.add_deployment(&dep("app", "1.0"), 1).unwrap();
    let op = s.begin_op("os::a", d, "install", 2).unwrap().unwrap();
    assert_eq!(s.begin_op("os::a", d, "install", 3).unwrap(), None);
    assert_eq!(s.begin_op("os::a", d, "update", 3).unwrap(), None);
    assert!(s.begin_op("os::b", d, "install", 3).unwrap().is_some());
    s.finish_op(op, Some((7227, "no memory")), 4).unwrap();
    let j = s.journal("os::a", "os::a").unwrap();
    let st = j[&("os::a".to_string(), d)];
    assert!(!st.in_flight);
    assert_eq!(st.failures, 1);
    assert_eq!(st.last_finished, Some(4));
    let again = s.begin_op("os::a", d, "install", 5).unwrap().unwrap();
    assert!(s.journal("os::a", "os::a").unwrap()[&("os::a".to_string(), d)].in_flight);
    // The agent's inventory showing the app at that version ends the operation.
    assert_eq!(
        s.save_inventory("os::a", &inv(&[("app", "1.0")]), 6)
            .unwrap(),
        1
    );
    let last = s.last_op("os::a", d).unwrap().unwrap();
    assert_eq!((last.id, last.state.as_str()), (again, "done"));
    let st = s.journal("os::a", "os::a").unwrap()[&("os::a".to_string(), d)];
    assert_eq!(st.failures, 0);
    let refusals = s.operations(10).unwrap();
    assert_eq!(refusals[refusals.len() - 1].fault_code, Some(7227));
}

#[test]
fn inventory_pages_and_supersession() {
    let mut s = Store::open_in_memory().unwrap();
    for a in ["os::c", "os::a", "os::b"] {
        s.save_inventory(a, &inv(&[("app", "1.0")]), 10).unwrap();
    }
    s.set_offline("os::b").unwrap();
    let p = s.agents_page("", 2, false).unwrap();
    assert_eq!(
        p.iter().map(|a| a.endpoint_id.as_str()).collect::<Vec<_>>(),
        ["os::a", "os::b"]
    );
    assert_eq!(p[0].dus.len(), 1);
    assert_eq!(p[0].exec_envs[0].available_kib, Some(65536));
    let online = s.agents_page("os::a", 10, true).unwrap();
    assert_eq!(online.len(), 1);
    assert_eq!(online[0].endpoint_id, "os::c");
    s.save_inventory("os::a", &inv(&[]), 11).unwrap();
    assert!(s.agents_page("", 1, false).unwrap()[0].dus.is_empty());
    // Offline agents are not swept: they come back by their own announcements.
    assert_eq!(s.stale_agents(11, 10).unwrap(), ["os::c"]);
    s.seen("os::new", 12).unwrap();
    assert_eq!(
        s.stale_agents(0, 1).unwrap(),
        ["os::new"],
        "never read first"
    );
    let d1 = s.add_deployment(&dep("app", "1.0"), 1).unwrap();
    let d2 = s.add_deployment(&dep("app", "2.0"), 2).unwrap();
    let active = s.deployments(true).unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].id, d2);
    let all = s.deployments(false).unwrap();
    assert_eq!(all.iter().find(|d| d.id == d1).unwrap().state, "superseded");
}

#[test]
fn database_bytes_per_agent_stay_small() {
    // 1,000 agents as the test fleet's look (an ExecEnv, one DU, one journal line), checkpointed:
    // the figure README.md quotes.
    let dir = std::env::temp_dir().join(format!("cpv-store-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("size.db");
    let _ = std::fs::remove_file(&path);
    let mut s = Store::open(&path).unwrap();
    let d = s.add_deployment(&dep("app", "1.0"), 1).unwrap();
    let n = 1000;
    for i in 0..n {
        let a = format!("os::agent-{i:05}");
        let mut inv = inv(&[("app", "1.0")]);
        inv.facts.serial = Some(format!("SN{i:08}"));
        inv.facts.software_version = Some("0.1.0".into());
        inv.eus.push(Eu {
            path: "Device.SoftwareModules.ExecutionUnit.1.".into(),
            euid: "eu-1".into(),
            status: Some("Active".into()),
            ..Eu::default()
        });
        let op = s.begin_op(&a, d, "install", 2).unwrap().unwrap();
        s.finish_op(op, None, 3).unwrap();
        s.save_inventory(&a, &inv, 4).unwrap();
    }
    s.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();
    let per_agent = bytes / n;
    println!("store: {bytes} bytes for {n} agents, {per_agent} bytes per agent");
    assert!(per_agent < 4096, "{per_agent} bytes per agent");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

fn target(id: &str, prev: Option<&str>) -> RolloutTarget {
    RolloutTarget {
        endpoint_id: id.into(),
        prev_version: prev.map(str::to_string),
        prev_url: prev.map(|v| format!("http://h/app-{v}.cpkg")),
    }
}

const PLAN: NewRollout = NewRollout {
    canary: 1,
    wave_size: 2,
    max_in_flight: 2,
    max_failure_pct: 50,
};

#[test]
fn a_rollout_is_stored_with_its_deployment_and_targets_and_survives_a_reopen() {
    use crate::fleet::rollout::{step, RolloutState, TargetState};
    let dir = std::env::temp_dir().join(format!("cpv-store-ro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ro.db");
    let _ = std::fs::remove_file(&path);
    let mut s = Store::open(&path).unwrap();
    let old = s.add_deployment(&dep("app", "1.0"), 1).unwrap();
    for a in ["os::a", "os::b", "os::c"] {
        s.save_inventory(a, &inv(&[("app", "1.0")]), 2).unwrap();
    }
    let targets = [
        target("os::a", Some("1.0")),
        target("os::b", Some("1.0")),
        target("os::c", Some("1.0")),
    ];
    let (d, id) = s
        .add_rollout(&dep("app", "2.0"), &PLAN, &targets, 3)
        .unwrap();
    let r = s.rollout(id).unwrap().unwrap();
    assert_eq!((r.deployment_id, r.previous_id), (d, Some(old)));
    assert_eq!(r.state, RolloutState::Running);
    assert_eq!(
        s.deployments(true).unwrap()[0].id,
        d,
        "the old one superseded"
    );
    // Gated: a running rollout with nobody active lets nobody in.
    assert_eq!(s.rollout_gates().unwrap()[&d].len(), 0);
    // A step (the canary) stored, then read back after a reopen.
    let ts = s.rollout_targets(&r, "app", "2.0").unwrap();
    assert_eq!(ts.len(), 3);
    assert_eq!(ts[0].du.as_deref(), Some("u-app"));
    assert!(!ts[0].has_new);
    let st = step(&r, true, "app", "2.0", &ts);
    s.apply_rollout_step(&r, &st, 4).unwrap();
    drop(s);
    let mut s = Store::open(&path).unwrap();
    let r = s.rollout(id).unwrap().unwrap();
    assert_eq!(r.wave, 0);
    let ts = s.rollout_targets(&r, "app", "2.0").unwrap();
    assert_eq!(ts[0].state, TargetState::Active);
    assert_eq!(ts[1].state, TargetState::Pending);
    assert_eq!(
        s.rollout_gates().unwrap()[&d],
        std::collections::HashSet::from(["os::a".to_string()])
    );
    // The operator's commands, where the state allows them.
    assert!(s
        .rollout_command(id, RolloutCommand::Resume, 5)
        .unwrap_err()
        .contains("running"));
    let p = s.rollout_command(id, RolloutCommand::Pause, 5).unwrap();
    assert_eq!(p.state, RolloutState::Paused);
    assert!(s.rollout_gates().unwrap()[&d].is_empty(), "paused: nobody");
    let p = s.rollout_command(id, RolloutCommand::Resume, 6).unwrap();
    assert_eq!((p.state, p.accepted_wave), (RolloutState::Running, 0));
    // A step decided before a command does not undo it.
    let stale = s.rollout(id).unwrap().unwrap();
    s.rollout_command(id, RolloutCommand::Pause, 7).unwrap();
    let st = crate::fleet::rollout::Step {
        rollout: Some((RolloutState::Done, 3, None)),
        ..Default::default()
    };
    s.apply_rollout_step(&stale, &st, 8).unwrap();
    assert_eq!(s.rollout(id).unwrap().unwrap().state, RolloutState::Paused);
    // Rollback: the deployment removed; when it ends, the previous one is active again.
    let rb = s.rollout_command(id, RolloutCommand::Rollback, 9).unwrap();
    assert_eq!(rb.state, RolloutState::RollingBack);
    assert!(s.deployments(true).unwrap().is_empty());
    let st = crate::fleet::rollout::Step {
        rollout: Some((RolloutState::RolledBack, 0, None)),
        ..Default::default()
    };
    s.apply_rollout_step(&rb, &st, 10).unwrap();
    assert_eq!(s.deployments(true).unwrap()[0].id, old);
    assert!(s.rollout_gates().unwrap().is_empty());
    assert!(s
        .rollout_command(id, RolloutCommand::Abort, 11)
        .unwrap_err()
        .contains("rolled_back"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rollback_operation_is_settled_when_the_agent_no_longer_has_the_version() {
    let mut s = Store::open_in_memory().unwrap();
    s.save_inventory("os::a", &inv(&[("app", "1.0")]), 1)
        .unwrap();
    let (d, _) = s
        .add_rollout(
            &dep("app", "2.0"),
            &PLAN,
            &[target("os::a", Some("1.0"))],
            2,
        )
        .unwrap();
    s.save_inventory("os::a", &inv(&[("app", "2.0")]), 3)
        .unwrap();
    let op = s
        .begin_rollback_op("os::a", d, "update", 4)
        .unwrap()
        .unwrap();
    assert_eq!(s.begin_rollback_op("os::a", d, "update", 4).unwrap(), None);
    // Still on 2.0: not settled (an install's rule would have settled it).
    assert_eq!(
        s.save_inventory("os::a", &inv(&[("app", "2.0")]), 5)
            .unwrap(),
        0
    );
    assert_eq!(s.last_op("os::a", d).unwrap().unwrap().state, "sent");
    assert_eq!(
        s.save_inventory("os::a", &inv(&[("app", "1.0")]), 6)
            .unwrap(),
        1
    );
    let o = s.last_op("os::a", d).unwrap().unwrap();
    assert_eq!((o.id, o.state.as_str()), (op, "done"));
}
