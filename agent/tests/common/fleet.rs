//! Shared by the tests of `cpevisor-controller serve` against agents hosted in the test
//! process (usp_serve.rs, usp_rollout.rs): an agent with its own state dir and MQTT session,
//! the `serve` process, and polling its database through the controller's `--json` commands.
//! A test including this also includes common/agentd.rs as `agentd` and common/usp.rs as
//! `usp_common`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpevisor_agent::lifecycle::config::AgentConfig;
use cpevisor_agent::lifecycle::Agent;
use cpevisor_agent::usp::config::{DeviceInfoConfig, Role};
use cpevisor_agent::usp::file::{ControllerEntry, UspFile};
use cpevisor_agent::usp::{self, session::Session};
use cpevisor_usp::broker::{Identity, TestBroker};
use cpevisor_usp::mqtt::MqttSettings;
use serde_json::Value;

use crate::agentd::{App, World};
use crate::usp_common;

/// One agent of the fleet.
/// What a fleet test starts with: the controller built (before any agent runs: a build under
/// way starves the agents of CPU and their operations time out), the agents' logs quiet, a
/// broker, and one certificate for every agent (client ids, the endpoint IDs, tell the sessions
/// apart).
pub fn broker_for_fleet(world: &World, cert_name: &str) -> (TestBroker, Identity) {
    usp_common::controller();
    cpevisor_agent::LOG_LEVEL.store(0, std::sync::atomic::Ordering::Relaxed);
    let broker = TestBroker::start(&world.root.join("broker")).expect("mosquitto");
    let cert = broker.identity(cert_name).unwrap();
    (broker, cert)
}

/// A jail app `name` `version` that only sleeps, declaring `memory_mib`.
pub fn sleeper(name: &str, version: &str, memory_mib: u32) -> App {
    App {
        command: vec!["/bin/sh".into(), "-c".into(), "exec sleep 100000".into()],
        memory_mib,
        ..App::new(name, version)
    }
}

pub struct Member {
    pub id: String,
    pub agent: Arc<Agent>,
    pub session: Session,
}

/// What differs between the fleet's agents.
pub struct MemberSpec<'a> {
    /// Its EndpointID (and serial number).
    pub id: &'a str,
    /// Its DeviceInfo.ModelName, for selectors.
    pub model: &'a str,
    /// Its ExecEnv's memory budget; None: the world's config.
    pub budget_mib: Option<u32>,
}

/// Starts an agent on its own state dir under `world`, connected to `broker` with `cert`,
/// managed by the controller `ctl_id` (FullAccess).
pub fn start_agent(
    world: &World,
    broker: &TestBroker,
    cert: &Identity,
    ctl_id: &str,
    spec: &MemberSpec,
) -> Member {
    let id = spec.id;
    let dir = member_dir(world, id);
    fs::create_dir_all(&dir).unwrap();
    let mut cfg = AgentConfig::load(&world.config).unwrap();
    if let Some(mib) = spec.budget_mib {
        cfg.exec_envs[0].memory_budget_mib = mib;
    }
    let agent = Arc::new(Agent::open(&dir, cfg).unwrap());
    let file = usp_file(broker, cert, ctl_id, spec, None);
    let session = usp::start(agent.clone(), &file, &dir).expect("session");
    Member {
        id: id.into(),
        agent,
        session,
    }
}

/// Where member `id` keeps its state.
fn member_dir(world: &World, id: &str) -> std::path::PathBuf {
    world.root.join("agents").join(id.replace(':', "_"))
}

/// Ends `m`'s MQTT session and starts another whose notifications (Boot!, OperationComplete,
/// DUStateChange!...) go to `notify_topic` instead of the controller's topic; its responses
/// still go where each request's Response Topic says.
pub fn reconnect_notifying(
    m: Member,
    world: &World,
    broker: &TestBroker,
    cert: &Identity,
    ctl_id: &str,
    spec: &MemberSpec,
    notify_topic: &str,
) -> Member {
    m.session.stop();
    let file = usp_file(broker, cert, ctl_id, spec, Some(notify_topic.into()));
    let dir = member_dir(world, spec.id);
    Member {
        session: usp::start(m.agent.clone(), &file, &dir).expect("session"),
        id: m.id,
        agent: m.agent,
    }
}

/// The agent's USP configuration: its broker, identity and controller.
fn usp_file(
    broker: &TestBroker,
    cert: &Identity,
    ctl_id: &str,
    spec: &MemberSpec,
    ctl_topic: Option<String>,
) -> UspFile {
    let id = spec.id;
    UspFile {
        mqtt: MqttSettings {
            broker_host: broker.host().into(),
            broker_port: Some(broker.port()),
            ca_file: Some(broker.ca()),
            cert_file: Some(cert.cert.clone()),
            key_file: Some(cert.key.clone()),
            server_name: None,
            endpoint_id: id.into(),
            topic: None,
        },
        controllers: vec![ControllerEntry {
            endpoint_id: ctl_id.into(),
            topic: ctl_topic,
            role: Role::FullAccess,
            // Fleets may share one client certificate: identity binding needs one per
            // controller and the broker's USP ACL (tested in usp_identity.rs).
            identity: None,
        }],
        device_info: DeviceInfoConfig {
            manufacturer: "acme".into(),
            model_name: spec.model.into(),
            serial_number: id.into(),
            ..DeviceInfoConfig::default()
        },
        keep_alive_s: 60,
        max_record_bytes: None,
        reboot_command: None,
        websocket: None,
    }
}

/// The `serve` process, killed when dropped.
pub struct Serve(pub Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    /// SIGTERM, then waits up to `secs` for serve to exit; its exit code (None: still running
    /// then, and killed).
    pub fn terminate(mut self, secs: u64) -> Option<i32> {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// `cpevisor-controller serve --config CFG --db DB EXTRA...`, its log appended to `log`.
pub fn serve(cfg: &Path, db: impl AsRef<OsStr>, log: &Path, extra: &[&str]) -> Serve {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Serve(
        Command::new(usp_common::controller())
            .args(["serve", "--config"])
            .arg(cfg)
            .arg("--db")
            .arg(db.as_ref())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cpevisor-controller serve"),
    )
}

/// `cpevisor-controller CMD --db DB --json`, which must succeed; DB is a SQLite file or a
/// PostgreSQL URL.
pub fn query(db: impl AsRef<OsStr>, cmd: &str) -> Value {
    let (code, v, err) = usp_common::run_ctl([
        cmd.as_ref(),
        "--db".as_ref(),
        db.as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "{cmd}: {err}");
    v
}

/// Polls `done` until it holds; fails after `secs` with serve's log. Returns the seconds taken.
pub fn wait_for(what: &str, secs: u64, log: &Path, mut done: impl FnMut() -> bool) -> f64 {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s; serve's log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed().as_secs_f64()
}
