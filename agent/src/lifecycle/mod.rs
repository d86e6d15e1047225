//! Lifecycle operations on the TR-181 model: install, update, uninstall, set requested state,
//! restart, ExecEnv reset; memory admission; the operation journal and recovery after a crash
//! or power loss; events.
//!
//! Concurrency: no lock is held across network I/O (head probe, download) or unpacking. A DU
//! operation reserves its DU in the model (`transient`, checked and set under the state lock),
//! so operations on the same DU are refused (7229) while operations on different DUs run side
//! by side, each with its own journal entry (`inflight`). EU start/stop take `eu_ops` so they
//! never interleave with the stop/commit/start phase of an update or uninstall. The state lock
//! is only held for short in-memory work and never across a blocking supervisor call.
//!
//! `Agent`'s methods are split by operation, one `impl Agent` per file: `install`, `update`,
//! `uninstall`, `eu` (requested state, restart), `execenv` (reset, enable), `admission`,
//! `recovery` (journal replay, sweep, autostart), `queries`; this file keeps the type, `open`,
//! `shutdown` and the event/journal helpers they share.

mod admission;
mod cleanstop;
pub mod config;
pub mod disk;
mod eu;
pub mod events;
mod execenv;
mod inflight;
mod install;
pub mod lanpool;
mod migrate;
mod network;
pub mod packages;
mod queries;
mod recovery;
mod reserve;
pub mod start_error;
pub mod state;
mod uninstall;
mod update;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::fault::{Fault, FaultCode};
use crate::model::{
    now_secs, rfc3339, AutoRestart, DeploymentUnit, DuEventState, DuStateChange, DuStatus,
    EuStatus, EuValueChange, Event, ExecEnv, ExecEnvStatus, ExecutionFaultCode, ExecutionUnit,
    RequestedState,
};
use crate::store::{persist_point, Store};
use crate::supervise::backend::{self, Backend, JailBackend, ProcessBackend};
use crate::supervise::cgroup::CgroupParent;
use crate::supervise::{lock, EuUpdate, StatusSink, Supervisor};
use config::{AgentConfig, ExecEnvConfig, Runner};
use events::EventLog;
use inflight::InFlight;
use packages::{AppSpec, CheckedPackage, InstalledFiles, Packages};
use state::{DuRecord, Journal, PersistedState, StateFiles};

/// An operation's error as the API and events report it: TR-181/USP code + message.
pub type OpResult<T> = Result<T, Fault>;

fn fault(code: FaultCode, msg: impl Into<String>) -> Fault {
    Fault::new(code, msg)
}

/// USP 7003 "Internal error": for outcomes no TR-181 fault describes.
fn internal(msg: impl Into<String>) -> Fault {
    Fault::new(FaultCode::Internal, msg)
}

/// Memory in use and status of the whole agent, for the API.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Every ExecEnv with its memory figures.
    pub exec_envs: Vec<ExecEnv>,
    /// Every installed DU.
    pub deployment_units: Vec<DeploymentUnit>,
    /// Every EU, with its live memory and health.
    pub execution_units: Vec<ExecutionUnit>,
    /// The network of each EU whose package has a network section, by EUID.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eu_networks: std::collections::BTreeMap<String, crate::netfilter::EuNetwork>,
}

/// In-memory model guarded by one lock; `persisted` mirrors `state.json`.
struct Model {
    persisted: PersistedState,
    /// DU status while an operation runs (Installing/Updating/Uninstalling are not persisted:
    /// the journal says what was in flight).
    transient: HashMap<String, DuStatus>,
    /// The flash of installs admitted and not yet committed (DU UUID -> ExecEnv, KiB): their
    /// files are not in `persisted`, so without this two installs running at once could each
    /// be admitted into the same last free flash (`admission::pending_disk_kib`).
    pending_disk: HashMap<String, (String, u64)>,
}

struct Shared {
    model: Mutex<Model>,
    events: EventLog,
}

impl StatusSink for Shared {
    fn eu_update(&self, u: EuUpdate) {
        {
            let mut m = lock(&self.model);
            let Some(eu) = m.persisted.eus.iter_mut().find(|e| e.eu_id == u.eu_id) else {
                return;
            };
            if !eu.status.can_become(u.status) && eu.status != u.status {
                crate::log_debug!(
                    "{}: {:?} -> {:?} outside the state machine",
                    u.eu_id,
                    eu.status,
                    u.status
                );
            }
            eu.status = u.status;
            eu.execution_fault_code = u.fault_code;
            eu.execution_fault_message = u.fault_message.clone();
            eu.auto_restart.retry_count = u.retry_count;
            eu.auto_restart.next_restart = u.next_restart;
            if u.status == EuStatus::Idle {
                eu.memory_in_use = 0;
            }
        }
        self.events.publish(Event::EuValueChange(EuValueChange {
            eu_id: u.eu_id,
            status: u.status,
            execution_fault_code: u.fault_code,
            execution_fault_message: u.fault_message,
            time: rfc3339(now_secs()),
        }));
    }
}

/// The agent: owns the model, the state files, the packages and the supervisor, and runs every
/// lifecycle operation.
pub struct Agent {
    cfg: AgentConfig,
    files: StateFiles,
    packages: Packages,
    shared: Arc<Shared>,
    supervisor: Supervisor,
    backends: HashMap<String, Arc<dyn Backend>>,
    inflight: InFlight,
    eu_ops: Mutex<()>,
    /// The private base of the EUs' run directories (`supervise::rundir`).
    run_dir: PathBuf,
    /// The running apps' nftables rules (`lifecycle::network`).
    netfilter: crate::netfilter::Netfilter,
}

impl Agent {
    /// Opens the state directory, recovers an interrupted operation (publishing its event), and
    /// starts the apps that were Active with AutoStart.
    pub fn open(state_dir: &Path, cfg: AgentConfig) -> Result<Agent, Fault> {
        cfg.validate()?;
        let run_dir = crate::supervise::rundir::prepare_base(cfg.run_dir.as_deref(), state_dir)
            .map_err(|e| Fault::new(FaultCode::InvalidArguments, e.to_string()))?;
        let store = Store::open(state_dir)?;
        let files = StateFiles::new(state_dir);
        let mut persisted = files.load_state()?;
        for eu in &mut persisted.eus {
            // Runtime fields do not survive a reboot.
            eu.status = EuStatus::Idle;
            eu.memory_in_use = 0;
            eu.auto_restart.retry_count = 0;
            eu.auto_restart.next_restart = 0;
            eu.execution_fault_code = ExecutionFaultCode::NoFault;
            eu.execution_fault_message.clear();
        }
        let unclean = match cleanstop::take(state_dir) {
            Some(_) => Vec::new(),
            None => cleanstop::mark_unclean(&mut persisted.eus),
        };
        let netfilter = crate::netfilter::Netfilter::open(
            crate::netfilter::Interfaces {
                wan: cfg.wan_interface.clone(),
                lan: cfg.lan_interface.clone(),
                lan_net: cfg.lan_pool().ok().flatten().map(|p| p.subnet()),
            },
            cfg.nft_path.as_deref(),
            persisted.dus.iter().any(|r| r.spec.network.is_some()),
        );
        let shared = Arc::new(Shared {
            model: Mutex::new(Model {
                persisted,
                transient: HashMap::new(),
                pending_disk: HashMap::new(),
            }),
            events: EventLog::new(),
        });
        for e in unclean {
            shared.events.publish(Event::EuValueChange(e));
        }
        let cgroups = match CgroupParent::prepare(&cfg.cgroup_root) {
            Ok(c) => Some(c),
            Err(why) => {
                crate::log_warn!("app memory limits not enforced: {why}");
                None
            }
        };
        let supervisor = Supervisor::new(cgroups, shared.clone());
        supervisor.start_balloons(cfg.balloon);
        let mut backends: HashMap<String, Arc<dyn Backend>> = HashMap::new();
        for env in &cfg.exec_envs {
            let b: Arc<dyn Backend> = match env.runner() {
                // Refused by `validate` already where the build has no microVMs.
                Runner::Vmm => backend::microvm(
                    cfg.vmm_path.clone(),
                    env.app_network
                        .as_deref()
                        .and_then(|n| crate::supervise::net::parse_network(n).ok()),
                )
                .map_err(|why| Fault::new(FaultCode::InvalidArguments, why))?,
                Runner::Process => Arc::new(ProcessBackend),
                Runner::Jail => Arc::new(JailBackend {
                    runner_exe: config::jail_runner_exe(),
                    network: env
                        .app_network
                        .as_deref()
                        .and_then(|n| crate::supervise::net::parse_network(n).ok()),
                    bridge: env.lan_bridge(),
                    pids_max: crate::supervise::backend::DEFAULT_JAIL_PIDS_MAX,
                    user_namespace: env.jail_user_namespace(),
                }),
            };
            backends.insert(env.name.clone(), b);
        }
        let packages = Packages {
            store,
            trusted_keys_dir: cfg.trusted_keys_dir.clone(),
            download_cap_bytes: cfg.download_cap_bytes,
            ca_file: cfg.ca_file.clone(),
            limits: cfg.download_limits,
        };
        let agent = Agent {
            cfg,
            files,
            packages,
            shared,
            supervisor,
            backends,
            inflight: InFlight::new(),
            eu_ops: Mutex::new(()),
            run_dir,
            netfilter,
        };
        agent.recover()?;
        agent.sweep();
        agent.migrate();
        agent.autostart();
        Ok(agent)
    }

    /// The published events, numbered.
    pub fn events(&self) -> &EventLog {
        &self.shared.events
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Stops every app at once (daemon shutdown), then records the clean stop; requested
    /// states stay as persisted, so the next start brings the AutoStart apps back.
    pub fn shutdown(&self) {
        let stopped = self.supervisor.stop_all();
        // No app runs: none of their rules stays (the next start puts back those that run).
        for eu in lock(&self.shared.model).persisted.eus.iter() {
            self.netfilter.remove(&eu.eu_id);
        }
        if let Err(f) = cleanstop::record(self.files.dir(), stopped) {
            crate::log_error!("recording the clean stop: {f}");
        }
    }

    fn event(
        &self,
        j: &Journal,
        uuid: &str,
        version: &str,
        current_state: DuEventState,
        resolved: bool,
        f: Option<Fault>,
    ) -> DuStateChange {
        DuStateChange {
            uuid: uuid.to_string(),
            version: version.to_string(),
            current_state,
            resolved,
            operation_performed: j.operation,
            start_time: j.start_time.clone(),
            complete_time: rfc3339(now_secs()),
            fault: f,
        }
    }

    /// Records the outcome in the journal, publishes the event, removes the journal. A crash
    /// before the outcome is on flash re-decides it on restart; after, republishes this event.
    fn finish(&self, j: &mut Journal, event: DuStateChange) {
        j.outcome = Some(event.clone());
        if let Err(f) = self.save_journal(j) {
            crate::log_error!("journal: {f}");
        }
        persist_point("lifecycle:event:decided");
        self.shared.events.publish(Event::DuStateChange(event));
        if let Err(f) = self.inflight.remove(&self.files, j.op_id) {
            crate::log_error!("journal: {f}");
        }
        self.inflight.unpin(j.op_id);
    }

    /// Removes the blobs neither an installed version nor an operation in flight uses.
    fn gc(&self) {
        let result = self.inflight.with_pins(|pinned| {
            let mut keep: HashSet<String> = lock(&self.shared.model)
                .persisted
                .dus
                .iter()
                .flat_map(|r| r.files.blobs.iter().cloned())
                .collect();
            keep.extend(pinned.iter().cloned());
            self.packages.gc(&keep)
        });
        if let Err(f) = result {
            crate::log_warn!("blob GC: {f}");
        }
    }
}

fn admitted_mib(s: &PersistedState, env: &str, except: Option<&str>) -> u32 {
    s.eus
        .iter()
        .filter(|e| e.exec_env == env && e.requested_state == RequestedState::Active)
        .filter(|e| except != Some(e.du_uuid.as_str()))
        .map(|e| e.memory_mib)
        .fold(0u32, |a, b| a.saturating_add(b))
}

fn env_is_enabled(c: &ExecEnvConfig, s: &PersistedState) -> bool {
    !s.disabled_envs.contains(&c.name) && (c.enable || s.enabled_envs.contains(&c.name))
}

/// ExecEnv `c` as the model shows it, with its flash (`disk::EnvDisk`) as measured by the caller.
fn exec_env_view(
    c: &ExecEnvConfig,
    s: &PersistedState,
    allocated_disk_kib: u64,
    available_disk_kib: u64,
) -> ExecEnv {
    let enabled = env_is_enabled(c, s);
    ExecEnv {
        name: c.name.clone(),
        env_type: c.env_type,
        enable: enabled,
        status: if enabled {
            ExecEnvStatus::Up
        } else {
            ExecEnvStatus::Disabled
        },
        arch: c.arch.clone(),
        memory_budget_mib: c.memory_budget_mib,
        available_memory_mib: c
            .memory_budget_mib
            .saturating_sub(admitted_mib(s, &c.name, None)),
        allocated_disk_kib,
        available_disk_kib,
    }
}

fn new_eu(eu_id: &str, du: &DeploymentUnit, spec: &AppSpec) -> ExecutionUnit {
    let mut eu = ExecutionUnit {
        eu_id: eu_id.to_string(),
        name: spec.name.clone(),
        du_uuid: du.uuid.clone(),
        exec_env: du.exec_env.clone(),
        status: EuStatus::Idle,
        requested_state: RequestedState::Idle,
        execution_fault_code: ExecutionFaultCode::NoFault,
        execution_fault_message: String::new(),
        auto_start: false,
        run_level: 0,
        memory_in_use: 0,
        memory_mib: 0,
        disk_in_use: 0,
        allocated_disk_kib: None,
        auto_restart: AutoRestart::default(),
        health: None,
        balloon: None,
    };
    apply_spec(&mut eu, spec);
    eu
}

/// Copies what the package config decides into the EU (install and update).
fn apply_spec(eu: &mut ExecutionUnit, spec: &AppSpec) {
    eu.name = spec.name.clone();
    eu.auto_start = spec.autostart;
    eu.run_level = spec.run_level;
    eu.memory_mib = spec.memory_mib;
    eu.allocated_disk_kib = spec.disk_mib.map(|m| u64::from(m) * 1024);
    let r = &spec.restart;
    eu.auto_restart.enable = r.enable;
    eu.auto_restart.retry_minimum_wait_interval = r.retry_min_wait_s;
    eu.auto_restart.retry_maximum_wait_interval = r.retry_max_wait_s;
    eu.auto_restart.retry_interval_multiplier = r.retry_interval_multiplier;
    eu.auto_restart.maximum_retry_count = r.max_retry_count;
    eu.auto_restart.reset_period = r.reset_period_s;
}

/// Puts `prev` back as the DU's record (and its spec into its EUs).
fn restore_record(s: &mut PersistedState, prev: &DuRecord) {
    match s.dus.iter_mut().find(|r| r.du.uuid == prev.du.uuid) {
        Some(r) => *r = prev.clone(),
        None => s.dus.push(prev.clone()),
    }
    for eu in s.eus.iter_mut().filter(|e| e.du_uuid == prev.du.uuid) {
        apply_spec(eu, &prev.spec);
    }
}

/// Store directory of one installed version: the UUID plus the manifest digest's start, so an
/// update unpacks next to the running version.
fn app_id(uuid: &str, manifest_digest: &str) -> String {
    let hex = manifest_digest
        .strip_prefix("sha256:")
        .unwrap_or(manifest_digest);
    format!("{uuid}_{}", &hex[..hex.len().min(12)])
}

/// Store directory of a DU's persistent data (kept across updates, optionally on uninstall).
fn data_id(uuid: &str) -> String {
    format!("{uuid}_data")
}

fn unknown_eu(eu_id: &str) -> Fault {
    fault(
        FaultCode::InvalidDeploymentUnitState,
        format!("no ExecutionUnit {:?}", crate::store::clip(eu_id)),
    )
}

/// The download's own URL rule (`fetch::Url::parse`), checked before anything else: http(s),
/// a host and port, no user:password (7004 otherwise).
pub fn validate_url(url: &str) -> OpResult<()> {
    crate::fetch::Url::parse(url).map(|_| ())
}

/// Where a checked package's blobs would go, for tests of the layout.
pub fn app_dir_for(state_dir: &Path, uuid: &str, manifest_digest: &str) -> PathBuf {
    state_dir
        .join(crate::store::APPS_DIR)
        .join(app_id(uuid, manifest_digest))
}

#[allow(dead_code)]
fn _assert_types(_: &CheckedPackage, _: &InstalledFiles) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_by_the_downloads_rule() {
        assert!(validate_url("http://10.0.2.2:8000/app.cpkg").is_ok());
        assert!(validate_url("https://example.net/a?b=c@d").is_ok());
        for bad in [
            "ftp://x/y",
            "http://user:pw@host/x",
            "https://user@host/x",
            "http:///x",
            "http://a b/",
            "nonsense",
            // Accepted by the lifecycle's own rule before, refused at download time.
            "http://127.0.0.1:99999/x",
            "http://ho$t/x",
            "HTTP://host/x",
            "http://[::1/x",
        ] {
            let e = validate_url(bad).unwrap_err();
            assert_eq!(e.code, FaultCode::InvalidArguments, "{bad}");
        }
    }

    #[test]
    fn app_ids_fit_the_store() {
        let id = app_id(&"0".repeat(36), &format!("sha256:{}", "f".repeat(64)));
        assert_eq!(id.len(), 49);
        assert!(id.ends_with("_ffffffffffff"));
    }
}
