//! Read-only views of the model for the API: the snapshot, an EU's log, and the lookups of
//! DU records and EUs the operations start from.

use super::state::DuRecord;
use super::{exec_env_view, fault, unknown_eu, Agent, OpResult, Snapshot};
use crate::fault::FaultCode;
use crate::model::uuid::is_uuid;
use crate::model::{EuStatus, ExecutionUnit};
use crate::supervise::lock;

impl Agent {
    /// The current model: ExecEnvs with their free memory and flash, DUs, and EUs with live
    /// memory, flash and health.
    pub fn snapshot(&self) -> Snapshot {
        // Flash is measured from the files without the model lock held.
        let disks: Vec<_> = self
            .cfg
            .exec_envs
            .iter()
            .map(|c| self.env_disk(c, None))
            .collect();
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
        let balloons = self.supervisor.balloon_all();
        let mut m = lock(&self.shared.model);
        for eu in m.persisted.eus.iter_mut() {
            eu.health = health.get(&eu.eu_id).cloned();
            eu.balloon = balloons.get(&eu.eu_id).copied();
        }
        for d in disks.iter().flat_map(|e| &e.dus) {
            for eu in m.persisted.eus.iter_mut().filter(|e| e.du_uuid == d.uuid) {
                eu.disk_in_use = d.used_kib;
            }
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
            .zip(&disks)
            .map(|(c, d)| exec_env_view(c, &m.persisted, d.allocated_kib, d.available_kib))
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
            eu_networks: self.eu_networks(&m.persisted),
        }
    }

    /// The recent output of EU `eu_id` (its log ring; empty when it never ran); a fault for an
    /// unknown EUID.
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

    pub(super) fn record(&self, uuid: &str) -> Option<DuRecord> {
        lock(&self.shared.model)
            .persisted
            .dus
            .iter()
            .find(|r| r.du.uuid == uuid)
            .cloned()
    }

    /// The record of an Installed DU with no operation running on it (else 7229).
    pub(super) fn installed_record(&self, uuid: &str) -> OpResult<DuRecord> {
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

    pub(super) fn eu(&self, eu_id: &str) -> Option<ExecutionUnit> {
        lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .find(|e| e.eu_id == eu_id)
            .cloned()
    }

    pub(super) fn eu_of(&self, uuid: &str) -> Option<ExecutionUnit> {
        self.eus_of(uuid).into_iter().next()
    }

    pub(super) fn eus_of(&self, uuid: &str) -> Vec<ExecutionUnit> {
        lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .filter(|e| e.du_uuid == uuid)
            .cloned()
            .collect()
    }

    pub(super) fn eu_and_record(&self, eu_id: &str) -> OpResult<(ExecutionUnit, DuRecord)> {
        let eu = self.eu(eu_id).ok_or_else(|| unknown_eu(eu_id))?;
        let rec = self.installed_record(&eu.du_uuid)?;
        Ok((eu, rec))
    }
}
