//! EU operations: SetRequestedState and Restart, and starting an EU on its backend.

use std::time::Duration;

use super::admission::{check_room_in, Need};
use super::start_error::StartEuError;
use super::state::DuRecord;
use super::{data_id, fault, unknown_eu, Agent, OpResult};
use crate::fault::{Fault, FaultCode};
use crate::model::{ExecutionUnit, RequestedState};
use crate::supervise::backend::LaunchSpec;
use crate::supervise::ready::StartPolicy;
use crate::supervise::{lock, StartReason};

impl Agent {
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
                if let Err(e) = self.start_eu(&rec, StartReason::Operator) {
                    self.persist_requested(eu_id, RequestedState::Idle)?;
                    return Err(Fault::from(e).prefixed(eu_id));
                }
            }
            RequestedState::Idle => {
                self.persist_requested(eu_id, RequestedState::Idle)?;
                self.supervisor.stop(eu_id);
                self.net_stop(eu_id);
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
        self.supervisor.stop(eu_id);
        self.start_eu(&rec, StartReason::Operator)
            .map_err(|e| Fault::from(e).prefixed(eu_id))?;
        self.eu(eu_id).ok_or_else(|| unknown_eu(eu_id))
    }

    pub(super) fn start_eu(&self, rec: &DuRecord, reason: StartReason) -> Result<(), StartEuError> {
        let eu = self
            .eu_of(&rec.du.uuid)
            .ok_or_else(|| StartEuError::NoEu(rec.du.uuid.clone()))?;
        let backend = self
            .backends
            .get(&eu.exec_env)
            .cloned()
            .ok_or_else(|| StartEuError::NoBackend(eu.exec_env.clone()))?;
        let data_dir = self
            .packages
            .store
            .app_dir(&data_id(&rec.du.uuid))
            .map_err(StartEuError::DataDir)?;
        let run_dir = crate::supervise::rundir::eu_dir(&self.run_dir, &eu.eu_id)
            .map_err(StartEuError::RunDir)?;
        // The rules before the app: its first packets already find them. Refused (a port
        // another app holds, no nft): the app does not start. Nothing fallible comes between
        // them and the start but the start, which takes them back when it fails.
        let lan = self
            .lan_link(rec, &eu.eu_id)
            .map_err(StartEuError::Network)?;
        self.net_start(rec, &eu.eu_id, &eu.exec_env, lan.as_ref())
            .map_err(StartEuError::Network)?;
        let spec = LaunchSpec {
            eu_id: eu.eu_id.clone(),
            command: rec.spec.command.clone(),
            kernel: rec.files.kernel.clone(),
            initrd: rec.files.initrd.clone(),
            root_image: rec.files.rootfs_image.clone(),
            disk: rec.files.disk.clone(),
            cmdline: rec.spec.cmdline.clone(),
            memory_mib: rec.spec.memory_mib,
            vcpus: rec.spec.vcpus,
            data_dir,
            app_dir: rec.files.app_dir.clone(),
            run_dir,
            tap: None,
            lan,
            rootfs: rec.files.rootfs.clone(),
            rootfs_erofs: rec.files.rootfs_erofs.clone(),
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
            .map_err(|e| {
                self.net_stop(&eu.eu_id);
                StartEuError::Start(e)
            })
    }

    pub(super) fn persist_requested(&self, eu_id: &str, req: RequestedState) -> OpResult<()> {
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
            // A start takes no flash.
            let need = Need {
                memory_mib: need,
                disk_kib: 0,
            };
            check_room_in(&m.persisted, eu_id, need, &env, budget, u64::MAX, Some(&du))?;
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
            return Err(f);
        }
        Ok(())
    }
}
