//! InstallDU: admission, download, verification, unpacking and commit of a new DU, and its
//! rollback.

use super::config::ExecEnvConfig;
use super::network::{effective_spec, override_after};
use super::state::{DuRecord, Journal};
use super::{admission, app_id, fault, new_eu, validate_url, Agent, OpResult};
use crate::fault::{Fault, FaultCode};
use crate::model::uuid::deployment_unit_uuid;
use crate::model::{
    now_secs, rfc3339, DeploymentUnit, DuEventState, DuStatus, Operation, RequestedState,
};
use crate::package::network::{NetworkArg, NetworkConfig};
use crate::store::persist_point;
use crate::supervise::lock;

impl Agent {
    /// InstallDU with the package's own network section. Refused before any download: bad URL
    /// or digest (7004), unknown (7223) or disabled (7230) ExecEnv, no memory left in it, or
    /// less flash than the package's head declares (7227).
    pub fn install(
        &self,
        url: &str,
        digest: Option<&str>,
        env: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        self.install_with(url, digest, env, None, progress)
    }

    /// InstallDU, `network` the operator's `X_CPEVISOR_NetworkConfig` when given: it replaces
    /// the package's section for this DU (admitted, applied and shown as if the package had
    /// declared it) and is kept with the DU.
    pub fn install_with(
        &self,
        url: &str,
        digest: Option<&str>,
        env: Option<&str>,
        network: Option<&NetworkArg>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        let over = override_after(network, None);
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
        self.admit_before_download(url, &env, None, true, over.as_ref())?;
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
        self.save_journal(&j)?;
        persist_point("lifecycle:install:journal");
        let result = self.install_steps(&mut j, &env, digest, over.as_ref(), progress);
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

    pub(super) fn install_steps(
        &self,
        j: &mut Journal,
        env: &ExecEnvConfig,
        digest: Option<&str>,
        over: Option<&NetworkConfig>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        self.clear_downloads_except_part(&j.url);
        let path = self.packages.download(&j.url, digest, progress)?;
        let checked = self
            .packages
            .check(&path)
            .inspect_err(|_| self.packages.discard_download(&path))?;
        let spec = &effective_spec(&checked.spec, over);
        let uuid = deployment_unit_uuid(&spec.vendor, &spec.name);
        let refuse = |f: Fault| {
            self.packages.discard_download(&path);
            Err(f)
        };
        let need = admission::Need {
            memory_mib: spec.memory_mib,
            disk_kib: admission::spec_disk_kib(
                spec,
                std::fs::metadata(&path).ok().map(|m| m.len()),
            ),
        };
        // Measured from the files before the model lock is taken.
        let disk_left = self.disk_left_kib(env, None);
        if let Err(f) = self.reserve_install(&uuid, spec, env, need, disk_left) {
            return refuse(f);
        }
        // Reserved: from here `j.uuid` is ours to roll back.
        j.uuid = uuid.clone();
        j.version = spec.version.clone();
        j.app_id = app_id(&uuid, &checked.manifest_digest);
        self.save_journal(j)?;
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
            // Memory re-checked under the lock: an app started since the first check counts.
            // Not the flash: this DU's own files are on it now, not yet in the model.
            let need = admission::Need {
                memory_mib: spec.memory_mib,
                disk_kib: 0,
            };
            admission::check_spec_room_in(&m.persisted, spec, need, env, u64::MAX, None)?;
            // The router ports it maps, under the same lock: two installs cannot both take one.
            self.net_admit(&m.persisted, spec, env, None)?;
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
                network_override: over.cloned(),
            });
            m.persisted.eus.push(eu);
            // A bridged app's LAN address, in the same write (admitted above: one is free).
            if let Err(f) = self.lan_assign(&mut m.persisted, spec, &eu_id) {
                m.persisted.dus.retain(|r| r.du.uuid != uuid);
                m.persisted.eus.retain(|e| e.du_uuid != uuid);
                m.persisted.next_eu -= 1;
                return Err(f);
            }
            m.transient.remove(&uuid);
            // In the model now: measured with the other DUs from here.
            m.pending_disk.remove(&uuid);
            self.files.save_state(&m.persisted).inspect_err(|_| {
                m.persisted.dus.retain(|r| r.du.uuid != uuid);
                m.persisted.eus.retain(|e| e.du_uuid != uuid);
                m.persisted.lan_addresses.remove(&eu_id);
            })?;
            du
        };
        persist_point("lifecycle:install:committed");
        crate::log_info!("installed {} {} as {}", du.name, du.version, du.uuid);
        Ok(du)
    }

    /// Removes whatever an install that did not commit left behind.
    pub(super) fn rollback_install(&self, j: &Journal) {
        let mut m = lock(&self.shared.model);
        // `j.uuid` is set once the DU was reserved by this operation, never before.
        if !j.uuid.is_empty() {
            m.transient.remove(&j.uuid);
            m.pending_disk.remove(&j.uuid);
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
}
