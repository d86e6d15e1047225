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

mod cleanstop;
pub mod config;
pub mod events;
mod inflight;
mod migrate;
pub mod packages;
mod reserve;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::fault::{Fault, FaultCode};
use crate::model::uuid::{deployment_unit_uuid, is_uuid};
use crate::model::{
    now_secs, rfc3339, AutoRestart, DeploymentUnit, DuEventState, DuStateChange, DuStatus,
    EuStatus, EuValueChange, Event, EventFault, ExecEnv, ExecEnvStatus, ExecutionFaultCode,
    ExecutionUnit, Operation, RequestedState,
};
use crate::store::{persist_point, Store};
use crate::supervise::backend::{Backend, JailBackend, KvmBackend, LaunchSpec, ProcessBackend};
use crate::supervise::cgroup::CgroupParent;
use crate::supervise::ready::StartPolicy;
use crate::supervise::{lock, EuUpdate, StartReason, StatusSink, Supervisor};
use config::{AgentConfig, ExecEnvConfig, Runner};
use events::EventLog;
use inflight::InFlight;
use packages::{AppSpec, CheckedPackage, InstalledFiles, Packages};
use state::{DuRecord, Journal, PersistedState, StateFiles};

/// USP 7003 "Internal error": used for outcomes no TR-181 fault describes (an operation cut by
/// a restart of the agent, a backend that cannot start).
pub use cpevisor_usp::errors::INTERNAL_ERROR;

/// An operation's error as the API and events report it: TR-181/USP code + message.
pub type OpResult<T> = Result<T, EventFault>;

fn fault(code: FaultCode, msg: impl Into<String>) -> EventFault {
    EventFault::from(&Fault::new(code, msg))
}

fn internal(msg: impl Into<String>) -> EventFault {
    EventFault {
        code: INTERNAL_ERROR,
        message: msg.into(),
    }
}

fn ef(f: Fault) -> EventFault {
    EventFault::from(&f)
}

/// Memory in use and status of the whole agent, for the API.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub exec_envs: Vec<ExecEnv>,
    pub deployment_units: Vec<DeploymentUnit>,
    pub execution_units: Vec<ExecutionUnit>,
}

/// In-memory model guarded by one lock; `persisted` mirrors `state.json`.
struct Model {
    persisted: PersistedState,
    /// DU status while an operation runs (Installing/Updating/Uninstalling are not persisted:
    /// the journal says what was in flight).
    transient: HashMap<String, DuStatus>,
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
}

impl Agent {
    /// Opens the state directory, recovers an interrupted operation (publishing its event), and
    /// starts the apps that were Active with AutoStart.
    pub fn open(state_dir: &Path, cfg: AgentConfig) -> Result<Agent, Fault> {
        cfg.validate()
            .map_err(|m| Fault::new(FaultCode::InvalidArguments, m))?;
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
        let shared = Arc::new(Shared {
            model: Mutex::new(Model {
                persisted,
                transient: HashMap::new(),
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
        let mut backends: HashMap<String, Arc<dyn Backend>> = HashMap::new();
        for env in &cfg.exec_envs {
            let b: Arc<dyn Backend> = match env.runner() {
                Runner::Vmm => Arc::new(KvmBackend {
                    vmm_path: cfg.vmm_path.clone(),
                    network: env
                        .app_network
                        .as_deref()
                        .and_then(|n| crate::supervise::net::parse_network(n).ok()),
                }),
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
        };
        agent.recover()?;
        agent.sweep();
        agent.migrate();
        agent.autostart();
        Ok(agent)
    }

    pub fn events(&self) -> &EventLog {
        &self.shared.events
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    // ---- queries -------------------------------------------------------------------------

    pub fn snapshot(&self) -> Snapshot {
        // MemoryInUse is read without the model lock held (the supervisor's threads take it).
        let running: Vec<String> = lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .filter(|e| e.status != EuStatus::Idle)
            .map(|e| e.eu_id.clone())
            .collect();
        let usage: Vec<(String, u64)> = running
            .into_iter()
            .map(|id| {
                let kib = self.supervisor.memory_in_use_kib(&id).unwrap_or(0);
                (id, kib)
            })
            .collect();
        let health = self.supervisor.health_all();
        let mut m = lock(&self.shared.model);
        for eu in m.persisted.eus.iter_mut() {
            eu.health = health.get(&eu.eu_id).cloned();
        }
        for (id, kib) in usage {
            if let Some(eu) = m.persisted.eus.iter_mut().find(|e| e.eu_id == id) {
                if eu.status != EuStatus::Idle {
                    eu.memory_in_use = kib;
                }
            }
        }
        let exec_envs = self
            .cfg
            .exec_envs
            .iter()
            .map(|c| exec_env_view(c, &m.persisted))
            .collect();
        let deployment_units = m
            .persisted
            .dus
            .iter()
            .map(|r| {
                let mut du = r.du.clone();
                if let Some(s) = m.transient.get(&du.uuid) {
                    du.status = *s;
                }
                du
            })
            .collect();
        Snapshot {
            exec_envs,
            deployment_units,
            execution_units: m.persisted.eus.clone(),
        }
    }

    pub fn logs(&self, eu_id: &str) -> OpResult<String> {
        if !lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .any(|e| e.eu_id == eu_id)
        {
            return Err(unknown_eu(eu_id));
        }
        Ok(self.supervisor.logs(eu_id).unwrap_or_default())
    }

    // ---- DU operations -------------------------------------------------------------------

    /// InstallDU. Refused before any download: bad URL or digest (7004), unknown (7223) or
    /// disabled (7230) ExecEnv, no memory left in it (7227).
    pub fn install(
        &self,
        url: &str,
        digest: Option<&str>,
        env: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        validate_url(url)?;
        if let Some(d) = digest {
            crate::store::Digest::parse(d)
                .map_err(|e| fault(FaultCode::InvalidArguments, format!("digest: {e}")))?;
        }
        let env = self.resolve_env(env)?;
        let available = self.available_mib(&env.name, None);
        if available == 0 {
            return Err(fault(
                FaultCode::SystemResourcesExceeded,
                format!(
                    "ExecEnv {} has no memory left (budget {} MiB)",
                    env.name, env.memory_budget_mib
                ),
            ));
        }
        // The probe and the download hold no lock: a slow server stalls only this operation.
        self.admit_before_download(url, &env, None, true)?;
        let _download = self.inflight.claim_download(url)?;
        let mut j = Journal {
            op_id: self.inflight.new_op(),
            disk_created: false,
            operation: Operation::Install,
            start_time: rfc3339(now_secs()),
            url: url.to_string(),
            uuid: String::new(),
            version: String::new(),
            exec_env: env.name.clone(),
            app_id: String::new(),
            keep_data: false,
            previous: None,
            outcome: None,
        };
        self.save_journal(&j).map_err(ef)?;
        persist_point("lifecycle:install:journal");
        let result = self.install_steps(&mut j, &env, digest, progress);
        match result {
            Ok(du) => {
                let event = self.event(
                    &j,
                    &du.uuid,
                    &du.version,
                    DuEventState::Installed,
                    true,
                    None,
                );
                self.finish(&mut j, event);
                if self.eu_of(&du.uuid).is_some_and(|eu| eu.auto_start) {
                    self.autostart_du(&du.uuid);
                }
                Ok(du)
            }
            Err(f) => {
                self.rollback_install(&j);
                let (uuid, version) = (j.uuid.clone(), j.version.clone());
                let event = self.event(
                    &j,
                    &uuid,
                    &version,
                    DuEventState::Failed,
                    false,
                    Some(f.clone()),
                );
                self.finish(&mut j, event);
                Err(f)
            }
        }
    }

    fn install_steps(
        &self,
        j: &mut Journal,
        env: &ExecEnvConfig,
        digest: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        self.clear_downloads_except_part(&j.url);
        let path = self
            .packages
            .download(&j.url, digest, progress)
            .map_err(ef)?;
        let checked = self.packages.check(&path).map_err(|f| {
            self.packages.discard_download(&path);
            ef(f)
        })?;
        let spec = &checked.spec;
        let uuid = deployment_unit_uuid(&spec.vendor, &spec.name);
        let refuse = |f: EventFault| {
            self.packages.discard_download(&path);
            Err(f)
        };
        if let Err(f) = self.reserve_install(&uuid, spec, env) {
            return refuse(f);
        }
        // Reserved: from here `j.uuid` is ours to roll back.
        j.uuid = uuid.clone();
        j.version = spec.version.clone();
        j.app_id = app_id(&uuid, &checked.manifest_digest);
        self.save_journal(j).map_err(ef)?;
        self.inflight
            .pin(j.op_id, self.packages.blob_digests(&checked));
        let files = self
            .unpack_for(j, &checked, env)
            .inspect_err(|_| self.packages.discard_download(&path))?;
        self.packages.discard_download(&path);
        persist_point("lifecycle:install:unpacked");
        // Commit: from here the install survives a crash.
        let du = {
            let mut m = lock(&self.shared.model);
            // Re-checked under the lock: an app started since the first check counts.
            reserve::fits_budget(&m.persisted, spec, env)?;
            m.persisted.next_eu += 1;
            let eu_id = format!("eu-{}", m.persisted.next_eu);
            let du = DeploymentUnit {
                uuid: uuid.clone(),
                name: spec.name.clone(),
                version: spec.version.clone(),
                vendor: spec.vendor.clone(),
                description: spec.description.clone(),
                url: j.url.clone(),
                status: DuStatus::Installed,
                resolved: true,
                exec_env: env.name.clone(),
                execution_unit_list: vec![eu_id.clone()],
                manifest_digest: checked.manifest_digest.clone(),
            };
            let mut eu = new_eu(&eu_id, &du, spec);
            if spec.autostart {
                // Admitted above; recorded in the same write as the install so a crash right
                // after the commit still brings the app up on restart.
                eu.requested_state = RequestedState::Active;
            }
            m.persisted.dus.push(DuRecord {
                du: du.clone(),
                spec: spec.clone(),
                files,
            });
            m.persisted.eus.push(eu);
            m.transient.remove(&uuid);
            self.files.save_state(&m.persisted).map_err(|f| {
                m.persisted.dus.retain(|r| r.du.uuid != uuid);
                m.persisted.eus.retain(|e| e.du_uuid != uuid);
                ef(f)
            })?;
            du
        };
        persist_point("lifecycle:install:committed");
        crate::log_info!("installed {} {} as {}", du.name, du.version, du.uuid);
        Ok(du)
    }

    /// Removes whatever an install that did not commit left behind.
    fn rollback_install(&self, j: &Journal) {
        let mut m = lock(&self.shared.model);
        // `j.uuid` is set once the DU was reserved by this operation, never before.
        if !j.uuid.is_empty() {
            m.transient.remove(&j.uuid);
        }
        let committed = m
            .persisted
            .dus
            .iter()
            .any(|r| !j.app_id.is_empty() && r.files.app_id == j.app_id);
        drop(m);
        if !committed && !j.app_id.is_empty() {
            if let Err(f) = self.packages.remove_app(&j.app_id) {
                crate::log_warn!("rollback: {f}");
            }
        }
        if !committed {
            self.remove_created_disk(j);
        }
        self.clear_downloads_except_part(&j.url);
        self.inflight.unpin(j.op_id);
        self.gc();
    }

    /// Update of an installed DU from `url` (default: the URL it was installed from). A failure
    /// at any step leaves the previous version installed and, if it was, running.
    pub fn update(
        &self,
        uuid: &str,
        url: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        if let Some(u) = url {
            validate_url(u)?;
        }
        let prev = self.installed_record(uuid)?;
        let url = url.unwrap_or(&prev.du.url).to_string();
        validate_url(&url)?;
        // Reserved for the whole update (a second operation on this DU is refused with 7229);
        // the download below holds no lock.
        let prev = self.reserve(uuid, DuStatus::Updating)?;
        let download = match self.inflight.claim_download(&url) {
            Ok(c) => c,
            Err(f) => {
                lock(&self.shared.model).transient.remove(uuid);
                return Err(f);
            }
        };
        let mut j = Journal {
            op_id: self.inflight.new_op(),
            disk_created: false,
            operation: Operation::Update,
            start_time: rfc3339(now_secs()),
            url,
            uuid: uuid.to_string(),
            version: prev.du.version.clone(),
            exec_env: prev.du.exec_env.clone(),
            app_id: String::new(),
            keep_data: true,
            previous: Some(prev.clone()),
            outcome: None,
        };
        if let Err(f) = self.save_journal(&j) {
            lock(&self.shared.model).transient.remove(uuid);
            return Err(ef(f));
        }
        persist_point("lifecycle:update:journal");
        let result = self.update_steps(&mut j, &prev, progress);
        drop(download);
        match result {
            Ok(du) => {
                lock(&self.shared.model).transient.remove(uuid);
                let event = self.event(&j, uuid, &du.version, DuEventState::Installed, true, None);
                self.finish(&mut j, event);
                Ok(du)
            }
            Err(f) => {
                self.rollback_update(&j, &prev);
                lock(&self.shared.model).transient.remove(uuid);
                let event = self.event(
                    &j,
                    uuid,
                    &prev.du.version,
                    DuEventState::Installed,
                    true,
                    Some(f.clone()),
                );
                self.finish(&mut j, event);
                Err(f)
            }
        }
    }

    fn update_steps(
        &self,
        j: &mut Journal,
        prev: &DuRecord,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        let env = self.env_config(&prev.du.exec_env)?;
        let was_active = self
            .eu_of(&prev.du.uuid)
            .is_some_and(|e| e.requested_state == RequestedState::Active);
        self.admit_before_download(&j.url, &env, Some(&prev.du.uuid), was_active)?;
        self.clear_downloads_except_part(&j.url);
        let path = self.packages.download(&j.url, None, progress).map_err(ef)?;
        let checked = self.packages.check(&path).map_err(|f| {
            self.packages.discard_download(&path);
            ef(f)
        })?;
        let refuse = |f: EventFault| {
            self.packages.discard_download(&path);
            Err(f)
        };
        let spec = &checked.spec;
        if deployment_unit_uuid(&spec.vendor, &spec.name) != prev.du.uuid {
            return refuse(fault(
                FaultCode::InvalidArguments,
                format!(
                    "the package is {} from {}, not {} from {} (DU {})",
                    spec.name, spec.vendor, prev.du.name, prev.du.vendor, prev.du.uuid
                ),
            ));
        }
        if checked.manifest_digest == prev.du.manifest_digest || spec.version == prev.du.version {
            return refuse(fault(
                FaultCode::DuplicateDeploymentUnit,
                format!(
                    "{} version {} is already installed",
                    spec.name, prev.du.version
                ),
            ));
        }
        if let Err(f) = self.fits_env(spec, &env) {
            return refuse(f);
        }
        let eu_prev = self.eu_of(&prev.du.uuid);
        let was_active = eu_prev
            .as_ref()
            .is_some_and(|e| e.requested_state == RequestedState::Active);
        let available = self.available_mib(&env.name, Some(&prev.du.uuid));
        if was_active && spec.memory_mib > available {
            return refuse(fault(
                FaultCode::SystemResourcesExceeded,
                format!(
                    "{} {} needs {} MiB, ExecEnv {} has {available} MiB left",
                    spec.name, spec.version, spec.memory_mib, env.name
                ),
            ));
        }
        j.version = spec.version.clone();
        j.app_id = app_id(&prev.du.uuid, &checked.manifest_digest);
        self.save_journal(j).map_err(ef)?;
        self.inflight
            .pin(j.op_id, self.packages.blob_digests(&checked));
        let files = self
            .unpack_for(j, &checked, &env)
            .inspect_err(|_| self.packages.discard_download(&path))?;
        self.packages.discard_download(&path);
        persist_point("lifecycle:update:unpacked");

        let _eu = lock(&self.eu_ops);
        if let Some(eu) = &eu_prev {
            let _ = self.supervisor.stop(&eu.eu_id);
        }
        let new_record = {
            let mut m = lock(&self.shared.model);
            let rec = m
                .persisted
                .dus
                .iter_mut()
                .find(|r| r.du.uuid == prev.du.uuid)
                .ok_or_else(|| internal("the DU vanished during its update"))?;
            rec.du.version = spec.version.clone();
            rec.du.description = spec.description.clone();
            rec.du.url = j.url.clone();
            rec.du.manifest_digest = checked.manifest_digest.clone();
            rec.spec = spec.clone();
            rec.files = files;
            let new_record = rec.clone();
            for eu in m
                .persisted
                .eus
                .iter_mut()
                .filter(|e| e.du_uuid == prev.du.uuid)
            {
                apply_spec(eu, spec);
            }
            if let Err(f) = self.files.save_state(&m.persisted) {
                restore_record(&mut m.persisted, prev);
                return Err(ef(f));
            }
            new_record
        };
        persist_point("lifecycle:update:committed");
        if was_active && self.env_enabled(&env) {
            if let Err(msg) = self.start_eu(&new_record, StartReason::Operator) {
                // The new version does not start: go back to the previous one.
                crate::log_warn!(
                    "update of {}: {msg}; restoring {}",
                    prev.du.uuid,
                    prev.du.version
                );
                {
                    let mut m = lock(&self.shared.model);
                    restore_record(&mut m.persisted, prev);
                    self.files.save_state(&m.persisted).map_err(ef)?;
                }
                persist_point("lifecycle:update:reverted");
                let _ = self.start_eu(prev, StartReason::Operator);
                return Err(internal(format!(
                    "{} {} failed to start: {msg}; {} restored",
                    spec.name, spec.version, prev.du.version
                )));
            }
        }
        if prev.files.app_id != new_record.files.app_id {
            if let Err(f) = self.packages.remove_app(&prev.files.app_id) {
                crate::log_warn!("update: removing the previous version: {f}");
            }
        }
        self.gc();
        crate::log_info!("updated {} to {}", prev.du.uuid, new_record.du.version);
        Ok(new_record.du)
    }

    /// Leaves the previous version installed (and its files), drops the new one's.
    fn rollback_update(&self, j: &Journal, prev: &DuRecord) {
        let current_app = self.record(&prev.du.uuid).map(|r| r.files.app_id);
        if !j.app_id.is_empty()
            && j.app_id != prev.files.app_id
            && current_app.as_deref() != Some(&j.app_id)
        {
            if let Err(f) = self.packages.remove_app(&j.app_id) {
                crate::log_warn!("rollback: {f}");
            }
        }
        if current_app.as_deref() != Some(&j.app_id) {
            self.remove_created_disk(j);
        }
        self.clear_downloads_except_part(&j.url);
        self.inflight.unpin(j.op_id);
        self.gc();
    }

    /// Uninstall: stops the DU's EUs, forgets it, removes its files (and data unless kept).
    pub fn uninstall(&self, uuid: &str, keep_data: bool) -> OpResult<()> {
        let rec = self.reserve(uuid, DuStatus::Uninstalling)?;
        let mut j = Journal {
            op_id: self.inflight.new_op(),
            disk_created: false,
            operation: Operation::Uninstall,
            start_time: rfc3339(now_secs()),
            url: rec.du.url.clone(),
            uuid: uuid.to_string(),
            version: rec.du.version.clone(),
            exec_env: rec.du.exec_env.clone(),
            app_id: rec.files.app_id.clone(),
            keep_data,
            previous: None,
            outcome: None,
        };
        if let Err(f) = self.save_journal(&j) {
            lock(&self.shared.model).transient.remove(uuid);
            return Err(ef(f));
        }
        persist_point("lifecycle:uninstall:journal");
        let result = self.uninstall_steps(&j);
        lock(&self.shared.model).transient.remove(uuid);
        let (state, f) = match &result {
            Ok(()) => (DuEventState::Uninstalled, None),
            Err(f) => (DuEventState::Installed, Some(f.clone())),
        };
        let event = self.event(&j, uuid, &rec.du.version, state, result.is_err(), f);
        self.finish(&mut j, event);
        result
    }

    fn uninstall_steps(&self, j: &Journal) -> OpResult<()> {
        {
            let _eu = lock(&self.eu_ops);
            for eu in self.eus_of(&j.uuid) {
                let _ = self.supervisor.stop(&eu.eu_id);
                self.supervisor.forget(&eu.eu_id);
            }
            let mut m = lock(&self.shared.model);
            let before = m.persisted.clone();
            m.persisted.dus.retain(|r| r.du.uuid != j.uuid);
            m.persisted.eus.retain(|e| e.du_uuid != j.uuid);
            if let Err(f) = self.files.save_state(&m.persisted) {
                m.persisted = before;
                return Err(ef(f));
            }
        }
        persist_point("lifecycle:uninstall:committed");
        self.remove_du_files(j);
        Ok(())
    }

    fn remove_du_files(&self, j: &Journal) {
        if !j.app_id.is_empty() {
            if let Err(f) = self.packages.remove_app(&j.app_id) {
                crate::log_warn!("uninstall {}: {f}", j.uuid);
            }
        }
        if !j.keep_data {
            if let Err(f) = self.packages.remove_app(&data_id(&j.uuid)) {
                crate::log_warn!("uninstall {}: data: {f}", j.uuid);
            }
        }
        self.gc();
        persist_point("lifecycle:uninstall:files-removed");
    }

    /// ExecEnv.Reset(): uninstalls every DU in the ExecEnv (data included). Returns their UUIDs.
    pub fn reset_env(&self, env: &str) -> OpResult<Vec<String>> {
        self.env_config(env)?;
        let uuids: Vec<String> = lock(&self.shared.model)
            .persisted
            .dus
            .iter()
            .filter(|r| r.du.exec_env == env)
            .map(|r| r.du.uuid.clone())
            .collect();
        for u in &uuids {
            self.uninstall(u, false)?;
        }
        Ok(uuids)
    }

    // ---- EU operations -------------------------------------------------------------------

    /// SetRequestedState. Active is admitted against the ExecEnv's memory (7227) and refused
    /// in a disabled ExecEnv (7230) or while its DU is busy (7229).
    pub fn set_requested_state(&self, eu_id: &str, req: RequestedState) -> OpResult<ExecutionUnit> {
        let _eu = lock(&self.eu_ops);
        let (eu, rec) = self.eu_and_record(eu_id)?;
        match req {
            RequestedState::Active => {
                let env = self.env_config(&eu.exec_env)?;
                if !self.env_enabled(&env) {
                    return Err(fault(
                        FaultCode::InvalidExecEnvState,
                        format!("ExecEnv {} is disabled", env.name),
                    ));
                }
                if eu.requested_state == RequestedState::Active && self.supervisor.is_running(eu_id)
                {
                    return Ok(self.eu(eu_id).unwrap_or(eu));
                }
                self.persist_requested(eu_id, RequestedState::Active)?;
                if let Err(msg) = self.start_eu(&rec, StartReason::Operator) {
                    self.persist_requested(eu_id, RequestedState::Idle)?;
                    return Err(internal(format!("{eu_id}: {msg}")));
                }
            }
            RequestedState::Idle => {
                self.persist_requested(eu_id, RequestedState::Idle)?;
                self.supervisor.stop(eu_id).map_err(internal)?;
            }
        }
        self.eu(eu_id).ok_or_else(|| unknown_eu(eu_id))
    }

    /// Restart of a running (or crash-looping) EU.
    pub fn restart(&self, eu_id: &str) -> OpResult<ExecutionUnit> {
        let _eu = lock(&self.eu_ops);
        let (eu, rec) = self.eu_and_record(eu_id)?;
        if eu.requested_state != RequestedState::Active {
            return Err(fault(
                FaultCode::InvalidDeploymentUnitState,
                format!("{eu_id} is not requested Active; start it instead"),
            ));
        }
        let env = self.env_config(&eu.exec_env)?;
        if !self.env_enabled(&env) {
            return Err(fault(
                FaultCode::InvalidExecEnvState,
                format!("ExecEnv {} is disabled", env.name),
            ));
        }
        self.supervisor.stop(eu_id).map_err(internal)?;
        self.start_eu(&rec, StartReason::Operator)
            .map_err(|m| internal(format!("{eu_id}: {m}")))?;
        self.eu(eu_id).ok_or_else(|| unknown_eu(eu_id))
    }

    /// Stops every app at once (daemon shutdown), then records the clean stop; requested
    /// states stay as persisted, so the next start brings the AutoStart apps back.
    pub fn shutdown(&self) {
        let stopped = self.supervisor.stop_all();
        if let Err(f) = cleanstop::record(self.files.dir(), stopped) {
            crate::log_error!("recording the clean stop: {f}");
        }
    }

    // ---- recovery ------------------------------------------------------------------------

    /// Finishes the operations a crash cut: roll back what did not commit, complete what did,
    /// publish each one's event once.
    fn recover(&self) -> Result<(), Fault> {
        let journals = match self.files.load_journals() {
            Ok(js) => js,
            Err(f) if f.code == FaultCode::CorruptData => {
                // Only we write it, atomically: damage means the flash failed. Keep it for
                // diagnosis and carry on; the state file still describes what is installed.
                crate::log_error!("{f}; set aside, the interrupted operation is not recovered");
                self.files.set_journal_aside()?;
                Vec::new()
            }
            Err(f) => return Err(f),
        };
        if journals.is_empty() {
            self.packages.clear_downloads();
            return Ok(());
        }
        self.inflight.adopt(journals);
        for j in self.inflight.entries() {
            self.recover_one(j)?;
        }
        Ok(())
    }

    fn recover_one(&self, mut j: Journal) -> Result<(), Fault> {
        crate::log_warn!(
            "recovering an interrupted {:?} of {:?} started {}",
            j.operation,
            j.uuid,
            j.start_time
        );
        if let Some(event) = j.outcome.take() {
            // Decided before the crash: only the publication may be missing.
            self.finish(&mut j, event);
            return Ok(());
        }
        let cut = || internal("interrupted by a restart of the agent");
        let event = match j.operation {
            Operation::Install => {
                let committed = self
                    .record(&j.uuid)
                    .is_some_and(|r| !j.app_id.is_empty() && r.files.app_id == j.app_id);
                if committed {
                    self.packages.clear_downloads();
                    self.gc();
                    self.event(&j, &j.uuid, &j.version, DuEventState::Installed, true, None)
                } else {
                    self.rollback_install(&j);
                    self.event(
                        &j,
                        &j.uuid,
                        &j.version,
                        DuEventState::Failed,
                        false,
                        Some(cut()),
                    )
                }
            }
            Operation::Update => {
                let Some(prev) = j.previous.clone() else {
                    crate::log_error!("journal: update without previous version, dropped: {j:?}");
                    self.inflight.remove(&self.files, j.op_id)?;
                    self.packages.clear_downloads();
                    return Ok(());
                };
                let committed = self
                    .record(&j.uuid)
                    .is_some_and(|r| !j.app_id.is_empty() && r.files.app_id == j.app_id);
                if committed {
                    if prev.files.app_id != j.app_id {
                        let _ = self.packages.remove_app(&prev.files.app_id);
                    }
                    self.packages.clear_downloads();
                    self.gc();
                    self.event(&j, &j.uuid, &j.version, DuEventState::Installed, true, None)
                } else {
                    // The state file still (or again) names the previous version.
                    {
                        let mut m = lock(&self.shared.model);
                        if m.persisted.dus.iter().all(|r| r.du.uuid != prev.du.uuid) {
                            restore_record(&mut m.persisted, &prev);
                            self.files.save_state(&m.persisted)?;
                        }
                    }
                    self.rollback_update(&j, &prev);
                    self.event(
                        &j,
                        &j.uuid,
                        &prev.du.version,
                        DuEventState::Installed,
                        true,
                        Some(cut()),
                    )
                }
            }
            Operation::Uninstall => {
                // Uninstall always completes: nothing of the DU was needed any more.
                {
                    let mut m = lock(&self.shared.model);
                    if m.persisted.dus.iter().any(|r| r.du.uuid == j.uuid) {
                        m.persisted.dus.retain(|r| r.du.uuid != j.uuid);
                        m.persisted.eus.retain(|e| e.du_uuid != j.uuid);
                        self.files.save_state(&m.persisted)?;
                    }
                }
                self.remove_du_files(&j);
                self.event(
                    &j,
                    &j.uuid,
                    &j.version,
                    DuEventState::Uninstalled,
                    false,
                    None,
                )
            }
        };
        self.finish(&mut j, event);
        Ok(())
    }

    /// Removes version directories and blobs nothing in the state refers to (left by damage or
    /// a journal that had to be set aside). Data directories are kept: uninstall may keep them.
    fn sweep(&self) {
        let referenced: HashSet<String> = lock(&self.shared.model)
            .persisted
            .dus
            .iter()
            .map(|r| r.files.app_id.clone())
            .collect();
        let mut removed = false;
        for id in self.packages.store.list_apps().unwrap_or_default() {
            let is_version_dir = id
                .rsplit_once('_')
                .is_some_and(|(_, h)| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if is_version_dir && !referenced.contains(&id) {
                crate::log_warn!("removing stray app directory {id}");
                if let Err(f) = self.packages.remove_app(&id) {
                    crate::log_warn!("{f}");
                }
                removed = true;
            }
        }
        if removed {
            self.gc();
        }
    }

    /// Starts the EUs that were Active with AutoStart; an EU requested Active without
    /// AutoStart stays Idle after a reboot (TR-181 AutoStart semantics).
    fn autostart(&self) {
        let (starts, changed) = {
            let mut m = lock(&self.shared.model);
            let mut changed = false;
            let mut starts = Vec::new();
            for eu in &mut m.persisted.eus {
                if eu.requested_state != RequestedState::Active {
                    continue;
                }
                if eu.auto_start {
                    starts.push(eu.du_uuid.clone());
                } else {
                    eu.requested_state = RequestedState::Idle;
                    changed = true;
                }
            }
            if changed {
                if let Err(f) = self.files.save_state(&m.persisted) {
                    crate::log_error!("{f}");
                }
            }
            (starts, changed)
        };
        let _ = changed;
        for uuid in starts {
            self.autostart_du(&uuid);
        }
    }

    fn autostart_du(&self, uuid: &str) {
        let Some(rec) = self.record(uuid) else { return };
        let Some(eu) = self.eu_of(uuid) else { return };
        let _eu = lock(&self.eu_ops);
        let env_ok = self
            .env_config(&eu.exec_env)
            .map(|e| self.env_enabled(&e))
            .unwrap_or(false);
        if !env_ok {
            crate::log_warn!(
                "{}: not auto-started, ExecEnv {} is disabled",
                eu.eu_id,
                eu.exec_env
            );
            return;
        }
        if eu.requested_state != RequestedState::Active {
            if let Err(f) = self.persist_requested(&eu.eu_id, RequestedState::Active) {
                crate::log_error!("{}: {}", eu.eu_id, f.message);
                return;
            }
        }
        if let Err(msg) = self.start_eu(&rec, StartReason::AutoStart) {
            crate::log_warn!("{}: auto-start failed: {msg}", eu.eu_id);
        }
    }

    // ---- helpers -------------------------------------------------------------------------

    fn start_eu(&self, rec: &DuRecord, reason: StartReason) -> Result<(), String> {
        let eu = self
            .eu_of(&rec.du.uuid)
            .ok_or_else(|| format!("DU {} has no execution unit", rec.du.uuid))?;
        let backend = self
            .backends
            .get(&eu.exec_env)
            .cloned()
            .ok_or_else(|| format!("no backend for ExecEnv {}", eu.exec_env))?;
        let data_dir = self
            .packages
            .store
            .app_dir(&data_id(&rec.du.uuid))
            .map_err(|f| f.message)?;
        let spec = LaunchSpec {
            eu_id: eu.eu_id.clone(),
            command: rec.spec.command.clone(),
            kernel: rec.files.kernel.clone(),
            initrd: rec.files.initrd.clone(),
            disk: rec.files.disk.clone(),
            cmdline: rec.spec.cmdline.clone(),
            memory_mib: rec.spec.memory_mib,
            vcpus: rec.spec.vcpus,
            data_dir,
            app_dir: rec.files.app_dir.clone(),
            run_dir: crate::supervise::rundir::eu_dir(&self.run_dir, &eu.eu_id)
                .map_err(|e| e.to_string())?,
            tap: None,
            rootfs: rec.files.rootfs.clone(),
            cgroup: None,
            start: StartPolicy::new(rec.spec.start_deadline_s, rec.spec.health.clone()),
            stop_timeout: Duration::from_millis(
                rec.spec
                    .stop_timeout_ms
                    .map_or(self.cfg.stop_timeout_ms, u64::from),
            ),
        };
        self.supervisor
            .start(backend, spec, eu.auto_restart.clone(), reason)
    }

    fn event(
        &self,
        j: &Journal,
        uuid: &str,
        version: &str,
        current_state: DuEventState,
        resolved: bool,
        f: Option<EventFault>,
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

    fn persist_requested(&self, eu_id: &str, req: RequestedState) -> OpResult<()> {
        let mut m = lock(&self.shared.model);
        let eu = m
            .persisted
            .eus
            .iter_mut()
            .find(|e| e.eu_id == eu_id)
            .ok_or_else(|| unknown_eu(eu_id))?;
        if eu.requested_state == req {
            return Ok(());
        }
        if req == RequestedState::Active {
            // Admission under the same lock as the write, so two starts cannot both take the
            // last MiB.
            let (env, du, need) = (eu.exec_env.clone(), eu.du_uuid.clone(), eu.memory_mib);
            let budget = self
                .cfg
                .exec_envs
                .iter()
                .find(|e| e.name == env)
                .map_or(0, |e| e.memory_budget_mib);
            let available = budget.saturating_sub(admitted_mib(&m.persisted, &env, Some(&du)));
            if need > available {
                return Err(fault(
                    FaultCode::SystemResourcesExceeded,
                    format!("{eu_id} needs {need} MiB, ExecEnv {env} has {available} MiB left"),
                ));
            }
        }
        let Some(eu) = m.persisted.eus.iter_mut().find(|e| e.eu_id == eu_id) else {
            return Err(unknown_eu(eu_id));
        };
        let old = eu.requested_state;
        eu.requested_state = req;
        if let Err(f) = self.files.save_state(&m.persisted) {
            if let Some(eu) = m.persisted.eus.iter_mut().find(|e| e.eu_id == eu_id) {
                eu.requested_state = old;
            }
            return Err(ef(f));
        }
        Ok(())
    }

    fn resolve_env(&self, name: Option<&str>) -> OpResult<ExecEnvConfig> {
        let env = match name {
            Some(n) => self.env_config(n)?,
            None => self.cfg.exec_envs[0].clone(),
        };
        if !self.env_enabled(&env) {
            return Err(fault(
                FaultCode::InvalidExecEnvState,
                format!("ExecEnv {} is disabled", env.name),
            ));
        }
        Ok(env)
    }

    fn env_config(&self, name: &str) -> OpResult<ExecEnvConfig> {
        self.cfg
            .exec_envs
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self.cfg.exec_envs.iter().map(|e| e.name.as_str()).collect();
                fault(
                    FaultCode::UnknownExecEnv,
                    format!(
                        "unknown ExecEnv {name:?} (this device has {})",
                        known.join(", ")
                    ),
                )
            })
    }

    fn env_enabled(&self, env: &ExecEnvConfig) -> bool {
        env_is_enabled(env, &lock(&self.shared.model).persisted)
    }

    /// ExecEnv.Enable: disabling stops its apps (their RequestedState is kept); enabling
    /// starts again those requested Active.
    pub fn set_env_enable(&self, env: &str, enable: bool) -> OpResult<ExecEnv> {
        let cfg = self.env_config(env)?;
        let _eu = lock(&self.eu_ops);
        {
            let mut m = lock(&self.shared.model);
            let before = m.persisted.clone();
            m.persisted.disabled_envs.retain(|e| e != env);
            m.persisted.enabled_envs.retain(|e| e != env);
            if enable && !cfg.enable {
                m.persisted.enabled_envs.push(env.to_string());
            }
            if !enable && cfg.enable {
                m.persisted.disabled_envs.push(env.to_string());
            }
            if m.persisted != before {
                if let Err(f) = self.files.save_state(&m.persisted) {
                    m.persisted = before;
                    return Err(ef(f));
                }
            }
        }
        let eus: Vec<ExecutionUnit> = lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .filter(|e| e.exec_env == env)
            .cloned()
            .collect();
        for eu in eus {
            if !enable {
                self.supervisor.stop(&eu.eu_id).map_err(internal)?;
            } else if eu.requested_state == RequestedState::Active
                && !self.supervisor.is_running(&eu.eu_id)
            {
                if let Some(rec) = self.record(&eu.du_uuid) {
                    if let Err(msg) = self.start_eu(&rec, StartReason::AutoStart) {
                        crate::log_warn!("{}: {msg}", eu.eu_id);
                    }
                }
            }
        }
        let m = lock(&self.shared.model);
        Ok(exec_env_view(&cfg, &m.persisted))
    }

    /// Checks the package's architecture and backends against the ExecEnv (7225).
    /// Admission before any download: the package's head declares its arch, backends and
    /// memory (`package::head`); what the verified package would be refused for (7225, 7227) is
    /// refused now, before the flash is touched. The memory check is the one made after
    /// verification: against what is left in the ExecEnv, with the memory of `except` (the DU
    /// being updated) counted as free. The same checks run again on the verified package.
    fn admit_before_download(
        &self,
        url: &str,
        env: &ExecEnvConfig,
        except: Option<&str>,
        check_memory: bool,
    ) -> OpResult<()> {
        let Some(spec) = self.packages.peek_spec(url).map_err(ef)? else {
            return Ok(());
        };
        self.fits_env(&spec, env)?;
        let available = self.available_mib(&env.name, except);
        if check_memory && spec.memory_mib > available {
            return Err(fault(
                FaultCode::SystemResourcesExceeded,
                format!(
                    "{} {} declares {} MiB, ExecEnv {} has {available} MiB left (refused before download)",
                    spec.name, spec.version, spec.memory_mib, env.name
                ),
            ));
        }
        Ok(())
    }

    fn fits_env(&self, spec: &AppSpec, env: &ExecEnvConfig) -> OpResult<()> {
        if spec.arch != env.arch {
            return Err(fault(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!(
                    "{} is built for {}, ExecEnv {} runs {}",
                    spec.name, spec.arch, env.name, env.arch
                ),
            ));
        }
        if !spec.backends.iter().any(|b| b == env.env_type.as_str()) {
            return Err(fault(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!(
                    "{} supports backends [{}], ExecEnv {} is {}",
                    spec.name,
                    spec.backends.join(", "),
                    env.name,
                    env.env_type.as_str()
                ),
            ));
        }
        if matches!(env.runner(), Runner::Process | Runner::Jail) && spec.command.is_empty() {
            return Err(fault(
                FaultCode::DeploymentUnitToExecEnvMismatch,
                format!("{} has no command for ExecEnv {}", spec.name, env.name),
            ));
        }
        Ok(())
    }

    /// Budget minus the declared memory of EUs requested Active (`except` a DU's own EUs).
    fn available_mib(&self, env: &str, except: Option<&str>) -> u32 {
        let Some(cfg) = self.cfg.exec_envs.iter().find(|e| e.name == env) else {
            return 0;
        };
        let m = lock(&self.shared.model);
        cfg.memory_budget_mib
            .saturating_sub(admitted_mib(&m.persisted, env, except))
    }

    fn record(&self, uuid: &str) -> Option<DuRecord> {
        lock(&self.shared.model)
            .persisted
            .dus
            .iter()
            .find(|r| r.du.uuid == uuid)
            .cloned()
    }

    /// The record of an Installed DU with no operation running on it (else 7229).
    fn installed_record(&self, uuid: &str) -> OpResult<DuRecord> {
        if !is_uuid(uuid) {
            return Err(fault(
                FaultCode::InvalidDeploymentUnitState,
                format!(
                    "{:?} is not a DeploymentUnit UUID",
                    crate::store::clip(uuid)
                ),
            ));
        }
        let m = lock(&self.shared.model);
        let rec = m
            .persisted
            .dus
            .iter()
            .find(|r| r.du.uuid == uuid)
            .cloned()
            .ok_or_else(|| {
                fault(
                    FaultCode::InvalidDeploymentUnitState,
                    format!("no DeploymentUnit {uuid}"),
                )
            })?;
        if let Some(s) = m.transient.get(uuid) {
            return Err(fault(
                FaultCode::InvalidDeploymentUnitState,
                format!("DeploymentUnit {uuid} is {s:?}"),
            ));
        }
        Ok(rec)
    }

    fn eu(&self, eu_id: &str) -> Option<ExecutionUnit> {
        lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .find(|e| e.eu_id == eu_id)
            .cloned()
    }

    fn eu_of(&self, uuid: &str) -> Option<ExecutionUnit> {
        self.eus_of(uuid).into_iter().next()
    }

    fn eus_of(&self, uuid: &str) -> Vec<ExecutionUnit> {
        lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .filter(|e| e.du_uuid == uuid)
            .cloned()
            .collect()
    }

    fn eu_and_record(&self, eu_id: &str) -> OpResult<(ExecutionUnit, DuRecord)> {
        let eu = self.eu(eu_id).ok_or_else(|| unknown_eu(eu_id))?;
        let rec = self.installed_record(&eu.du_uuid)?;
        Ok((eu, rec))
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

fn exec_env_view(c: &ExecEnvConfig, s: &PersistedState) -> ExecEnv {
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
        auto_restart: AutoRestart {
            enable: false,
            retry_minimum_wait_interval: 0,
            retry_maximum_wait_interval: 0,
            retry_interval_multiplier: 0,
            maximum_retry_count: 0,
            reset_period: 0,
            retry_count: 0,
            next_restart: 0,
        },
        health: None,
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

fn unknown_eu(eu_id: &str) -> EventFault {
    fault(
        FaultCode::InvalidDeploymentUnitState,
        format!("no ExecutionUnit {:?}", crate::store::clip(eu_id)),
    )
}

/// The download's own URL rule (`fetch::Url::parse`), checked before anything else: http(s),
/// a host and port, no user:password (7004 otherwise).
pub fn validate_url(url: &str) -> OpResult<()> {
    crate::fetch::Url::parse(url).map(|_| ()).map_err(ef)
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
            assert_eq!(e.code, 7004, "{bad}");
        }
    }

    #[test]
    fn app_ids_fit_the_store() {
        let id = app_id(&"0".repeat(36), &format!("sha256:{}", "f".repeat(64)));
        assert_eq!(id.len(), 49);
        assert!(id.ends_with("_ffffffffffff"));
    }
}
