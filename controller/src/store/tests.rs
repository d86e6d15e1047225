//! The store's tests, each run on both databases: SQLite in a temporary file and a PostgreSQL
//! server of its own (`test_postgres`).

use super::rollouts::{NewRollout, RolloutCommand, RolloutTarget};
use super::test_postgres::TestPostgres;
use super::*;

/// A database a test opens (and may reopen): a SQLite file or a PostgreSQL server, removed
/// after.
struct Backend {
    loc: Location,
    _server: Option<TestPostgres>,
    dir: Option<std::path::PathBuf>,
}

static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Backend {
    fn sqlite() -> Backend {
        let dir = std::env::temp_dir().join(format!(
            "cpv-store-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Backend {
            loc: Location::Sqlite(dir.join("store.db")),
            _server: None,
            dir: Some(dir),
        }
    }

    fn postgres() -> Backend {
        let server = TestPostgres::start();
        Backend {
            loc: server.create_database("fleet"),
            _server: Some(server),
            dir: None,
        }
    }

    fn db(&self) -> Db {
        Db::open(&self.loc).unwrap()
    }

    fn open(&self) -> Store {
        Store::open(&self.loc).unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// `#[test]`s `NAME::sqlite` and `NAME::postgres`, each calling `NAME(&Backend)`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn sqlite() {
                super::$name(&super::Backend::sqlite());
            }
            #[test]
            fn postgres() {
                super::$name(&super::Backend::postgres());
            }
        })*
    };
}

on_both!(
    migrations_apply_to_an_empty_database,
    migrations_bring_a_version_1_database_up_keeping_its_rows,
    a_newer_database_is_refused,
    the_journal_allows_one_operation_in_flight_per_agent_and_deployment,
    inventory_pages_and_supersession,
    views_read_the_same_on_both,
    database_bytes_per_agent_stay_small,
    a_rollout_is_stored_with_its_deployment_and_targets_and_survives_a_reopen,
    a_rollback_operation_is_settled_when_the_agent_no_longer_has_the_version,
    leases_are_taken_renewed_and_taken_over_once_expired,
    replicas_share_the_shards_fairly_and_journal_only_for_their_own,
    a_dead_replicas_shards_are_taken_once_expired_or_at_once_when_gone,
    controllers_opening_a_new_database_at_once_migrate_it_once,
    a_deployment_keeps_its_network_override,
    a_rollout_pass_reads_only_the_targets_that_can_change,
);

mod labels;
mod tls;

/// The tables of the store's schema.
fn tables(db: &Db) -> Vec<String> {
    let sql = if db.is_postgres() {
        "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
         WHERE table_schema = current_schema() ORDER BY 1"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1"
    };
    db.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0).unwrap())
        .collect()
}

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

fn migrations_apply_to_an_empty_database(b: &Backend) {
    let s = b.open();
    assert_eq!(s.version().unwrap(), schema_version());
    assert!(schema_version() >= 2);
    let have = tables(&s.db);
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
        "agent_labels",
    ] {
        assert!(have.iter().any(|h| h == t), "table {t} in {have:?}");
    }
}

fn migrations_bring_a_version_1_database_up_keeping_its_rows(b: &Backend) {
    {
        let db = b.db();
        schema::migrate_to(&db, 1).unwrap();
        assert_eq!(schema::version(&db).unwrap(), 1);
        assert!(!tables(&db).iter().any(|t| t == "rollouts"), "version 3's");
        db.execute(
            "INSERT INTO deployments (name, url, version, selector, created, state)
             VALUES ('app', 'http://h/app.cpkg', '1.0', '{\"model\":\"x\"}', 5, 'active')",
            &[],
        )
        .unwrap();
    }
    let mut s = b.open();
    assert_eq!(s.version().unwrap(), schema_version());
    let deps = s.deployments(true).unwrap();
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].name, "app");
    assert_eq!(deps[0].selector["model"], "x");
    assert_eq!(deps[0].memory_mib, None, "the column version 2 added");
    assert_eq!(deps[0].network, None, "the column version 5 added");
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
    assert_eq!(schema::migrate(&b.db()).unwrap(), schema_version());
}

/// A deployment's network override (an object, `null`, or none) reads back as stored, also
/// after a reopen, and a rollout's deployment carries one too.
fn a_deployment_keeps_its_network_override(b: &Backend) {
    let net = r#"{"mode":"none","port_mappings":[{"external_port":8080}]}"#;
    let mut s = b.open();
    for (name, network) in [("obj", Some(net)), ("null", Some("null")), ("none", None)] {
        s.add_deployment(
            &NewDeployment {
                network: network.map(String::from),
                ..dep(name, "1")
            },
            1,
        )
        .unwrap();
    }
    let (d, _) = s
        .add_rollout(
            &NewDeployment {
                network: Some(net.into()),
                ..dep("rolled", "2")
            },
            &NewRollout {
                canary: 1,
                wave_size: 1,
                max_in_flight: 1,
                max_failure_pct: 0,
            },
            &[],
            2,
        )
        .unwrap();
    drop(s);
    let s = b.open();
    let by_name: HashMap<String, Option<String>> = s
        .deployments(true)
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.network))
        .collect();
    assert_eq!(by_name["obj"].as_deref(), Some(net));
    assert_eq!(by_name["null"].as_deref(), Some("null"));
    assert_eq!(by_name["none"], None);
    assert_eq!(by_name["rolled"].as_deref(), Some(net));
    assert!(s.deployments(true).unwrap().iter().any(|x| x.id == d));
}

fn a_newer_database_is_refused(b: &Backend) {
    let db = b.db();
    schema::migrate(&db).unwrap();
    let tx = db.begin().unwrap();
    schema::set_version(&tx, schema_version() + 1).unwrap();
    tx.commit().unwrap();
    assert!(schema::migrate(&db).unwrap_err().contains("newer"));
    assert!(Store::open(&b.loc).err().unwrap().contains("newer"));
}

fn the_journal_allows_one_operation_in_flight_per_agent_and_deployment(b: &Backend) {
    let mut s = b.open();
    let d = s.add_deployment(&dep("app", "1.0"), 1).unwrap();
    let op = s.begin_op("os::a", d, "install", 2).unwrap().unwrap();
    assert_eq!(s.begin_op("os::a", d, "install", 3).unwrap(), None);
    assert_eq!(s.begin_op("os::a", d, "update", 3).unwrap(), None);
    assert!(s.begin_op("os::b", d, "install", 3).unwrap().is_some());
    assert!(s.finish_op(op, Some((7227, "no memory")), 4).unwrap());
    // Ended once: a second end (a late result, a timeout after the inventory settled it)
    // changes nothing and says so.
    assert!(!s.finish_op(op, None, 5).unwrap());
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

fn inventory_pages_and_supersession(b: &Backend) {
    let mut s = b.open();
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

/// What the database takes on disk: SQLite's file checkpointed, PostgreSQL's tables with their
/// indexes after a VACUUM.
fn database_bytes(b: &Backend, s: &Store) -> u64 {
    match &b.loc {
        Location::Sqlite(path) => {
            s.db.batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
            std::fs::metadata(path).unwrap().len()
        }
        Location::Postgres(_) => {
            s.db.batch("VACUUM").unwrap();
            let n: i64 = s
                .db
                .query_one(
                    "SELECT CAST(sum(pg_total_relation_size(c.oid)) AS BIGINT) FROM pg_class c
                     WHERE c.relkind = 'r' AND c.relnamespace = CAST(current_schema() AS regnamespace)",
                    &[],
                )
                .unwrap()
                .get(0)
                .unwrap();
            n as u64
        }
    }
}

fn database_bytes_per_agent_stay_small(b: &Backend) {
    // 1,000 agents as the test fleet's look (an ExecEnv, one DU, one journal line): the figure
    // README.md quotes.
    let mut s = b.open();
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
    let bytes = database_bytes(b, &s);
    let per_agent = bytes / n;
    let kind = if s.db.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("store ({kind}): {bytes} bytes for {n} agents, {per_agent} bytes per agent");
    assert!(per_agent < 4096, "{per_agent} bytes per agent");
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

fn a_rollout_is_stored_with_its_deployment_and_targets_and_survives_a_reopen(b: &Backend) {
    use crate::fleet::rollout::{step, RolloutState, TargetState};
    let mut s = b.open();
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
    let mut s = b.open();
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
}

fn a_rollback_operation_is_settled_when_the_agent_no_longer_has_the_version(b: &Backend) {
    let mut s = b.open();
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

fn views_read_the_same_on_both(b: &Backend) {
    let mut s = b.open();
    let mut with_eu = inv(&[("app", "1.0")]);
    with_eu.eus.push(Eu {
        path: "Device.SoftwareModules.ExecutionUnit.1.".into(),
        euid: "eu-1".into(),
        status: Some("Active".into()),
        fault_code: Some("NoFault".into()),
        ..Eu::default()
    });
    s.save_inventory("os::a", &with_eu, 1).unwrap();
    s.save_inventory("os::b", &inv(&[("app", "2.0")]), 1)
        .unwrap();
    s.set_offline("os::b").unwrap();
    let t = s.fleet_totals().unwrap();
    assert_eq!((t.agents, t.online), (2, 1));
    assert_eq!(
        t.apps,
        [
            ("app".to_string(), "1.0".to_string(), 1, 1),
            ("app".to_string(), "2.0".to_string(), 1, 1)
        ],
        "no DU status is Installed"
    );
    let a = s.agent("os::b").unwrap().unwrap();
    assert!(!a.online);
    assert_eq!(a.dus[0].version, "2.0");
    assert!(s.agent("os::c").unwrap().is_none());
    let eus = s.eus_between("os::a", "os::b").unwrap();
    assert_eq!(eus["os::a"][0].fault_code.as_deref(), Some("NoFault"));
    let d = s.add_deployment(&dep("app", "2.0"), 2).unwrap();
    let op = s.begin_op("os::a", d, "update", 3).unwrap().unwrap();
    s.finish_op(op, Some((7227, "no memory")), 4).unwrap();
    s.record_refusal("os::b", d, "update", 7004, "arch", 5)
        .unwrap();
    assert_eq!(s.operations_of(Some("os::a"), false, 10).unwrap().len(), 1);
    assert_eq!(s.operations_of(None, true, 10).unwrap().len(), 2);
    assert_eq!(
        s.operations_of(None, true, 1).unwrap()[0].fault_code,
        Some(7004)
    );
    let counts = s.deployment_counts().unwrap();
    assert_eq!(counts[&d]["installed"], 1);
    assert_eq!(counts[&d]["failed"], 2);
    assert!(s.in_flight().unwrap().is_empty());
    let op = s.begin_op("os::a", d, "update", 6).unwrap().unwrap();
    assert_eq!(s.in_flight().unwrap(), [(op, "os::a".to_string(), d, 6)]);
    s.lose_op(op, "controller stopped", 7).unwrap();
    assert_eq!(s.last_op("os::a", d).unwrap().unwrap().state, "lost");
}

#[test]
fn endpoint_ids_page_bytewise_on_postgres_whatever_its_locale() {
    // Upper case before lower, '-' before letters: SQLite's order, which the pages go by.
    let b = Backend::postgres();
    let mut s = b.open();
    for a in ["os::b", "os::B", "os::a-2", "os::a"] {
        s.save_inventory(a, &inv(&[]), 1).unwrap();
    }
    let ids: Vec<String> = s
        .agents_page("", 10, false)
        .unwrap()
        .into_iter()
        .map(|a| a.endpoint_id)
        .collect();
    assert_eq!(ids, ["os::B", "os::a", "os::a-2", "os::b"]);
    // This machine's server has only C locales, under which any order is bytewise: the rule
    // itself is checked on the columns.
    for table in [
        "agents",
        "exec_envs",
        "dus",
        "eus",
        "operations",
        "rollout_targets",
    ] {
        let c: Option<String> =
            s.db.query_one(
                "SELECT CAST(collation_name AS TEXT) FROM information_schema.columns
                 WHERE table_name = ?1 AND column_name = 'endpoint_id'",
                &db::p![table],
            )
            .unwrap()
            .get(0)
            .unwrap();
        assert_eq!(c.as_deref(), Some("C"), "{table}.endpoint_id");
    }
}

#[test]
fn an_unreachable_or_silent_server_is_an_error_naming_the_url_without_its_password() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accepts and never answers.
    let silent = Location::parse(&format!("postgres://ctl:s3cret@127.0.0.1:{port}/fleet"));
    let t = std::time::Instant::now();
    let e = Store::open(&silent).err().unwrap();
    assert!(t.elapsed() < pg::CONNECT_DEADLINE + std::time::Duration::from_secs(5));
    assert!(
        e.contains(&format!("postgres://ctl:***@127.0.0.1:{port}/fleet")),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
    drop(l);
    let e = Store::open(&Location::parse(&format!(
        "postgres://ctl:s3cret@127.0.0.1:{port}/x"
    )))
    .err()
    .unwrap();
    assert!(e.contains("127.0.0.1") && !e.contains("s3cret"), "{e}");
    let e = Store::open(&Location::parse(
        "postgres://ctl:s3cret@127.0.0.1:notaport/x",
    ))
    .err()
    .unwrap();
    assert!(e.contains("ctl:***@") && !e.contains("s3cret"), "{e}");
}

fn leases_are_taken_renewed_and_taken_over_once_expired(b: &Backend) {
    use leases::SERVE;
    let (a, c) = (b.open(), b.open());
    assert_eq!(a.take_lease(SERVE, "a", 100, 50).unwrap().holder, "a");
    // c waits while a's is current; a renews.
    let l = c.take_lease(SERVE, "c", 120, 50).unwrap();
    assert_eq!((l.holder.as_str(), l.expires), ("a", 150));
    assert_eq!(a.take_lease(SERVE, "a", 140, 50).unwrap().expires, 190);
    // a stops renewing: c takes over once it expired.
    assert_eq!(c.take_lease(SERVE, "c", 191, 50).unwrap().holder, "c");
    assert_eq!(a.take_lease(SERVE, "a", 192, 50).unwrap().holder, "c");
    assert_eq!(a.lease(SERVE).unwrap().unwrap().holder, "c");
    // A clean stop gives it up at once.
    a.release_lease(SERVE, "a").unwrap();
    c.release_lease(SERVE, "c").unwrap();
    assert_eq!(a.lease(SERVE).unwrap(), None);
    assert_eq!(a.take_lease(SERVE, "a", 194, 50).unwrap().holder, "a");
}

/// An endpoint ID in shard `n`.
fn agent_in(n: u32) -> String {
    (0..)
        .map(|i| format!("os::{i}"))
        .find(|a| shards::shard_of(a) == n)
        .unwrap()
}

const NEVER: fn(&str) -> bool = |_| false;
const ANY: fn(u32) -> bool = |_| true;

/// Every shard held by exactly one of `views`' replicas.
fn assert_partition(views: &[shards::ReplicaView]) {
    let mut all: Vec<u32> = views.iter().flat_map(|v| v.shards.clone()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..shards::SHARDS).collect::<Vec<_>>(), "{views:?}");
}

fn replicas_share_the_shards_fairly_and_journal_only_for_their_own(b: &Backend) {
    use shards::{fair_share, SHARDS};
    let (mut a, mut bb, mut c) = (b.open(), b.open(), b.open());
    a.fence("a");
    bb.fence("b");
    c.fence("c");
    let ttl = 1000;
    // Alone, a takes them all.
    let r = a.balance_shards("a", 100, ttl, NEVER, ANY).unwrap();
    assert_eq!((r.live, r.held.len(), r.taken.len()), (1, 64, 64));
    // b joins: none free yet; a gives up half at its next round, and b takes them.
    let r = bb.balance_shards("b", 110, ttl, NEVER, ANY).unwrap();
    assert_eq!((r.live, r.held.len()), (2, 0));
    let r = a.balance_shards("a", 120, ttl, NEVER, ANY).unwrap();
    assert_eq!((r.held.len(), r.released.len()), (32, 32));
    let r = bb.balance_shards("b", 130, ttl, NEVER, ANY).unwrap();
    assert_eq!((r.held.len(), r.taken.len()), (32, 32));
    // c joins: a and b come down to their share of three, c takes what they gave up.
    assert_eq!(fair_share(3), 22);
    assert!(c
        .balance_shards("c", 140, ttl, NEVER, ANY)
        .unwrap()
        .held
        .is_empty());
    // A shard with an operation in flight is kept until a later round.
    let kept = *a.replicas(150).unwrap()[0].shards.last().unwrap();
    let r = a
        .balance_shards("a", 150, ttl, NEVER, |n| n != kept)
        .unwrap();
    assert_eq!(r.held.len(), 22);
    assert!(
        r.held.contains(&kept) && !r.released.contains(&kept),
        "{r:?}"
    );
    assert_eq!(
        bb.balance_shards("b", 160, ttl, NEVER, ANY)
            .unwrap()
            .held
            .len(),
        22
    );
    let r = c.balance_shards("c", 170, ttl, NEVER, ANY).unwrap();
    assert_eq!((r.live, r.held.len()), (3, 20));
    let views = a.replicas(180).unwrap();
    assert_eq!(
        views
            .iter()
            .map(|v| (v.name.as_str(), v.shards.len()))
            .collect::<Vec<_>>(),
        [("a", 22), ("b", 22), ("c", 20)]
    );
    assert_partition(&views);
    assert_eq!(r.holders.len(), SHARDS as usize);
    // Only the holder of an agent's shard journals (and so sends) an operation for it.
    let d = a.add_deployment(&dep("app", "1.0"), 1).unwrap();
    for (store, name) in [(&a, "a"), (&bb, "b"), (&c, "c")] {
        let n = views.iter().find(|v| v.name == name).unwrap().shards[0];
        let agent = agent_in(n);
        for (other, oname) in [(&a, "a"), (&bb, "b"), (&c, "c")] {
            if oname != name {
                assert_eq!(
                    other.begin_op(&agent, d, "install", 190).unwrap(),
                    None,
                    "{oname} sent to {agent} of {name}'s shard {n}"
                );
            }
        }
        let id = store.begin_op(&agent, d, "install", 190).unwrap();
        assert!(id.is_some(), "{name}, the holder of shard {n}");
        assert_eq!(
            store.operations(1).unwrap()[0].replica.as_deref(),
            Some(name)
        );
    }
    // A clean stop gives everything up: the others take it at their next rounds.
    c.release_replica("c").unwrap();
    assert!(a.replicas(200).unwrap().iter().all(|v| v.name != "c"));
    a.balance_shards("a", 200, ttl, NEVER, ANY).unwrap();
    bb.balance_shards("b", 210, ttl, NEVER, ANY).unwrap();
    let views = a.replicas(220).unwrap();
    assert_eq!(views.iter().map(|v| v.shards.len()).sum::<usize>(), 64);
    assert_partition(&views);
    // A store of no replica (the commands) is not fenced.
    let plain = b.open();
    assert!(plain
        .begin_op("os::x", d, "install", 230)
        .unwrap()
        .is_some());
}

fn a_dead_replicas_shards_are_taken_once_expired_or_at_once_when_gone(b: &Backend) {
    let (mut a, mut c) = (b.open(), b.open());
    a.fence("a");
    c.fence("c");
    let ttl = 100;
    a.balance_shards("a", 1000, ttl, NEVER, ANY).unwrap();
    c.balance_shards("c", 1000, ttl, NEVER, ANY).unwrap();
    a.balance_shards("a", 1010, ttl, NEVER, ANY).unwrap();
    let r = c.balance_shards("c", 1020, ttl, NEVER, ANY).unwrap();
    assert_eq!(r.held.len(), 32);
    let theirs = agent_in(*r.held.iter().next().unwrap());
    let d = a.add_deployment(&dep("app", "1.0"), 1).unwrap();
    // c stops renewing. Until its leases expire, a neither takes its shards nor sends.
    let r = a.balance_shards("a", 1100, ttl, NEVER, ANY).unwrap();
    assert_eq!((r.live, r.held.len()), (2, 32));
    assert_eq!(a.begin_op(&theirs, d, "install", 1100).unwrap(), None);
    // Expired (c renewed at 1020 until 1120): a counts one live replica and takes them all.
    let r = a.balance_shards("a", 1121, ttl, NEVER, ANY).unwrap();
    assert_eq!((r.live, r.held.len(), r.taken.len()), (1, 64, 32));
    assert!(a.begin_op(&theirs, d, "install", 1122).unwrap().is_some());
    // c, back late, renews nothing it lost and may not send to them.
    let r = c.balance_shards("c", 1130, ttl, NEVER, ANY).unwrap();
    assert!(r.held.is_empty(), "{r:?}");
    assert_eq!(c.begin_op(&theirs, d, "update", 1131).unwrap(), None);
    // A holder known to be gone (a dead process of this host) is not waited for.
    let r = c.balance_shards("c", 1140, ttl, |h| h == "a", ANY).unwrap();
    assert_eq!((r.live, r.held.len()), (1, 64));
    assert_eq!(r.gone.iter().collect::<Vec<_>>(), ["a"]);
    assert_partition(&c.replicas(1141).unwrap());
}

#[test]
fn the_shard_of_an_agent_is_stable_and_spread() {
    use shards::{shard_of, SHARDS};
    // Pinned: replicas of different builds on one database must agree.
    assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325_u64 % 64) as u32);
    assert_eq!(shard_of("os::1"), shard_of("os::1"));
    let mut counts = vec![0u32; SHARDS as usize];
    for i in 0..64_000 {
        counts[shard_of(&format!("os::cpe-{i}")) as usize] += 1;
    }
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(*lo > 800 && *hi < 1200, "{lo}..{hi}");
}

fn controllers_opening_a_new_database_at_once_migrate_it_once(b: &Backend) {
    let opened: Vec<Result<u32, String>> = std::thread::scope(|sc| {
        let all: Vec<_> = (0..4)
            .map(|_| sc.spawn(|| Store::open(&b.loc).and_then(|s| s.version())))
            .collect();
        all.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in opened {
        assert_eq!(r, Ok(schema_version()));
    }
}

/// Target `id`'s state and wave, set directly (the states a rollout reaches over many passes).
fn set_target(s: &Store, rollout: i64, id: &str, state: &str, wave: Option<i64>) {
    s.db.execute(
        "UPDATE rollout_targets SET state = ?3, wave = ?4 WHERE rollout_id = ?1 AND endpoint_id = ?2",
        &p![rollout, id, state, wave],
    )
    .unwrap();
}

/// A pass over a running rollout reads its queued and active targets, the pending and failed
/// ones whose agent has the new version and the next wave's candidates, never a done one; what
/// it decides over them and the counts of the rest is what it decides over every target.
fn a_rollout_pass_reads_only_the_targets_that_can_change(b: &Backend) {
    use crate::fleet::rollout::{step, step_of, RolloutState, TargetState};
    let mut s = b.open();
    let ids: Vec<String> = (0..40).map(|i| format!("os::t{i:02}")).collect();
    for (i, a) in ids.iter().enumerate() {
        // The first 30 took the new version; t33 had it before its wave.
        let v = if i < 30 || i == 33 { "2.0" } else { "1.0" };
        s.save_inventory(a, &inv(&[("app", v)]), 2).unwrap();
    }
    s.set_offline("os::t35").unwrap();
    let targets: Vec<RolloutTarget> = ids.iter().map(|a| target(a, Some("1.0"))).collect();
    let plan = NewRollout {
        canary: 1,
        wave_size: 3,
        max_in_flight: 3,
        max_failure_pct: 50,
    };
    let (_, id) = s
        .add_rollout(&dep("app", "2.0"), &plan, &targets, 3)
        .unwrap();
    for (i, a) in ids.iter().enumerate().take(30) {
        set_target(&s, id, a, "done", Some(i as i64 / 15));
    }
    set_target(&s, id, "os::t30", "active", Some(2));
    set_target(&s, id, "os::t31", "active", Some(2));
    set_target(&s, id, "os::t32", "failed", Some(2));
    s.db.execute("UPDATE rollouts SET wave = 2 WHERE id = ?1", &p![id])
        .unwrap();
    let same = |s: &Store, why: &str| {
        let r = s.rollout(id).unwrap().unwrap();
        let (read, unread) = s.rollout_pass(&r, "app", "2.0").unwrap();
        let all = s.rollout_targets(&r, "app", "2.0").unwrap();
        assert_eq!(all.len(), 40);
        assert!(
            read.iter().all(|t| t.state != TargetState::Done),
            "{why}: a done target read: {read:?}"
        );
        assert_eq!(
            step_of(&r, true, "app", "2.0", &read, &unread),
            step(&r, true, "app", "2.0", &all),
            "{why}"
        );
        let names: Vec<&str> = read.iter().map(|t| t.endpoint_id.as_str()).collect();
        (names.join(","), unread)
    };
    // Mid-wave: the active ones, t33 (already there), the next wave's three online candidates
    // (t35 is offline); of the rest, t32 in the wave (failed) and three pending.
    let (read, unread) = same(&s, "mid-wave");
    assert_eq!(read, "os::t30,os::t31,os::t33,os::t34,os::t36,os::t37");
    assert_eq!(
        (unread.in_wave, unread.in_wave_failed, unread.pending),
        (1, 1, 3)
    );
    // The wave over: the next one is taken from the candidates read.
    set_target(&s, id, "os::t30", "done", Some(2));
    set_target(&s, id, "os::t31", "done", Some(2));
    let (read, _) = same(&s, "next wave");
    assert_eq!(read, "os::t33,os::t34,os::t36,os::t37");
    // Failures over the threshold: it pauses, the counts of the unread ones included.
    set_target(&s, id, "os::t31", "failed", Some(2));
    let r = s.rollout(id).unwrap().unwrap();
    let (read, unread) = s.rollout_pass(&r, "app", "2.0").unwrap();
    let st = step_of(&r, true, "app", "2.0", &read, &unread);
    assert_eq!(st.rollout.map(|x| x.0), Some(RolloutState::Paused));
    same(&s, "paused");
    // A wave of five queued, three in flight at most: the first three are read, no candidate.
    s.db.execute(
        "UPDATE rollouts SET wave = 3, state = 'running' WHERE id = ?1",
        &p![id],
    )
    .unwrap();
    for a in ["os::t34", "os::t35", "os::t36", "os::t37", "os::t38"] {
        set_target(&s, id, a, "queued", Some(3));
    }
    let (read, unread) = same(&s, "queued");
    assert_eq!(read, "os::t33,os::t34,os::t35,os::t36");
    assert_eq!((unread.in_wave, unread.pending), (2, 1));
}

/// The cost of one pass over a rollout of 10,000 targets half done, before (every target read)
/// and after (`rollout_pass`), printed: `cargo test -p cpevisor-controller --release
/// rollout_pass_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: run by hand"]
fn rollout_pass_cost() {
    for b in [Backend::sqlite(), Backend::postgres()] {
        rollout_pass_cost_on(&b);
    }
}

fn rollout_pass_cost_on(b: &Backend) {
    use crate::fleet::rollout::{step, step_of};
    use std::time::Instant;
    const N: i64 = 10_000;
    let mut s = b.open();
    // Agents, their ExecEnv and DU, in three statements (the inventory's rows, not its path).
    let gen = |sql: &str| {
        s.db.batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             {sql}",
            N - 1
        ))
        .unwrap()
    };
    gen(
        "INSERT INTO agents (endpoint_id, first_seen, last_seen, online, inventory_at)
         SELECT 'os::' || CAST(100000 + i AS TEXT), 1, 1, 1, 2 FROM n",
    );
    gen("INSERT INTO dus (endpoint_id, path, uuid, name, version)
         SELECT 'os::' || CAST(100000 + i AS TEXT), 'Device.SoftwareModules.DeploymentUnit.1.',
                'u', 'app', CASE WHEN i < 5000 THEN '2.0' ELSE '1.0' END FROM n");
    let targets: Vec<RolloutTarget> = (0..N)
        .map(|i| target(&format!("os::{}", 100_000 + i), Some("1.0")))
        .collect();
    let plan = NewRollout {
        canary: 100,
        wave_size: 1000,
        max_in_flight: 50,
        max_failure_pct: 20,
    };
    let (_, id) = s
        .add_rollout(&dep("app", "2.0"), &plan, &targets, 3)
        .unwrap();
    // Half done in waves 0..4, 50 active in wave 5 and 950 queued, the rest pending.
    s.db.execute(
        "UPDATE rollout_targets SET state = 'done', wave = 0
         WHERE rollout_id = ?1 AND endpoint_id < 'os::105000'",
        &p![id],
    )
    .unwrap();
    s.db.execute(
        "UPDATE rollout_targets SET state = 'queued', wave = 5
         WHERE rollout_id = ?1 AND endpoint_id >= 'os::105000' AND endpoint_id < 'os::106000'",
        &p![id],
    )
    .unwrap();
    s.db.execute(
        "UPDATE rollout_targets SET state = 'active'
         WHERE rollout_id = ?1 AND endpoint_id >= 'os::105000' AND endpoint_id < 'os::105050'",
        &p![id],
    )
    .unwrap();
    s.db.execute("UPDATE rollouts SET wave = 5 WHERE id = ?1", &p![id])
        .unwrap();
    let r = s.rollout(id).unwrap().unwrap();
    let time = |f: &mut dyn FnMut() -> usize| {
        f();
        let t = Instant::now();
        let rows = (0..5).map(|_| f()).last().unwrap();
        (t.elapsed().as_secs_f64() * 1000.0 / 5.0, rows)
    };
    let (before, n_before) = time(&mut || {
        let all = s.rollout_targets(&r, "app", "2.0").unwrap();
        let _ = step(&r, true, "app", "2.0", &all);
        all.len()
    });
    let (after, n_after) = time(&mut || {
        let (read, unread) = s.rollout_pass(&r, "app", "2.0").unwrap();
        let _ = step_of(&r, true, "app", "2.0", &read, &unread);
        read.len()
    });
    println!(
        "rollout pass over {N} targets ({}): every target read {before:.1} ms ({n_before} rows), \
         rollout_pass {after:.1} ms ({n_after} rows)",
        if s.db.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
}
