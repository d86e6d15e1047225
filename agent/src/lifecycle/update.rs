//! Update: a new version of an installed DU next to the running one, the switch to it, and
//! the rollback to the previous version.

use super::network::{effective_spec, override_after};
use super::state::{DuRecord, Journal};
use super::{app_id, apply_spec, fault, internal, restore_record, validate_url, Agent, OpResult};
use crate::fault::{Fault, FaultCode};
use crate::model::uuid::deployment_unit_uuid;
use crate::model::{
    now_secs, rfc3339, DeploymentUnit, DuEventState, DuStatus, Operation, RequestedState,
};
use crate::package::network::{NetworkArg, NetworkConfig};
use crate::store::persist_point;
use crate::supervise::{lock, StartReason};

impl Agent {
    /// Update of an installed DU from `url` (default: the URL it was installed from), keeping
    /// the operator's network override if one is in force. A failure at any step leaves the
    /// previous version installed and, if it was, running.
    pub fn update(
        &self,
        uuid: &str,
        url: Option<&str>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        self.update_with(uuid, url, None, progress)
    }

    /// Update, `network` the operator's `X_CPEVISOR_NetworkConfig` when given: a section
    /// replaces the override in force (or the package's section), `null` goes back to the new
    /// package's own; not given, the override in force stays, since it is the operator's choice
    /// for this home, not the package's.
    pub fn update_with(
        &self,
        uuid: &str,
        url: Option<&str>,
        network: Option<&NetworkArg>,
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
            return Err(f);
        }
        persist_point("lifecycle:update:journal");
        let over = override_after(network, prev.network_override.as_ref());
        let result = self.update_steps(&mut j, &prev, over.as_ref(), progress);
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

    pub(super) fn update_steps(
        &self,
        j: &mut Journal,
        prev: &DuRecord,
        over: Option<&NetworkConfig>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> OpResult<DeploymentUnit> {
        let env = self.env_config(&prev.du.exec_env)?;
        let was_active = self
            .eu_of(&prev.du.uuid)
            .is_some_and(|e| e.requested_state == RequestedState::Active);
        self.admit_before_download(&j.url, &env, Some(&prev.du.uuid), was_active, over)?;
        self.clear_downloads_except_part(&j.url);
        let path = self.packages.download(&j.url, None, progress)?;
        let checked = self
            .packages
            .check(&path)
            .inspect_err(|_| self.packages.discard_download(&path))?;
        let refuse = |f: Fault| {
            self.packages.discard_download(&path);
            Err(f)
        };
        let spec = &effective_spec(&checked.spec, over);
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
        let ports = self.net_admit(
            &lock(&self.shared.model).persisted,
            spec,
            &env,
            Some(&prev.du.uuid),
        );
        if let Err(f) = ports {
            return refuse(f);
        }
        let eu_prev = self.eu_of(&prev.du.uuid);
        let was_active = eu_prev
            .as_ref()
            .is_some_and(|e| e.requested_state == RequestedState::Active);
        // Memory only when the app is to run; flash always (its files are written either way).
        let size = std::fs::metadata(&path).ok().map(|m| m.len());
        if let Err(f) = self.check_room(spec, &env, Some(&prev.du.uuid), was_active, size) {
            return refuse(f);
        }
        j.version = spec.version.clone();
        j.app_id = app_id(&prev.du.uuid, &checked.manifest_digest);
        self.save_journal(j)?;
        self.inflight
            .pin(j.op_id, self.packages.blob_digests(&checked));
        let files = self
            .unpack_for(j, &checked, &env)
            .inspect_err(|_| self.packages.discard_download(&path))?;
        self.packages.discard_download(&path);
        persist_point("lifecycle:update:unpacked");

        let _eu = lock(&self.eu_ops);
        if let Some(eu) = &eu_prev {
            self.supervisor.stop(&eu.eu_id);
            self.net_stop(&eu.eu_id);
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
            rec.network_override = over.cloned();
            let new_record = rec.clone();
            for eu in m
                .persisted
                .eus
                .iter_mut()
                .filter(|e| e.du_uuid == prev.du.uuid)
            {
                apply_spec(eu, spec);
            }
            // Bridged now: its LAN address (the one it held, if it was bridged before).
            let eus: Vec<String> = m
                .persisted
                .eus
                .iter()
                .filter(|e| e.du_uuid == prev.du.uuid)
                .map(|e| e.eu_id.clone())
                .collect();
            for eu_id in eus {
                if let Err(f) = self.lan_assign(&mut m.persisted, spec, &eu_id) {
                    restore_record(&mut m.persisted, prev);
                    return Err(f);
                }
            }
            if let Err(f) = self.files.save_state(&m.persisted) {
                restore_record(&mut m.persisted, prev);
                return Err(f);
            }
            new_record
        };
        persist_point("lifecycle:update:committed");
        if was_active && self.env_enabled(&env) {
            if let Err(e) = self.start_eu(&new_record, StartReason::Operator) {
                // The new version does not start: go back to the previous one.
                crate::log_warn!(
                    "update of {}: {e}; restoring {}",
                    prev.du.uuid,
                    prev.du.version
                );
                {
                    let mut m = lock(&self.shared.model);
                    restore_record(&mut m.persisted, prev);
                    self.files.save_state(&m.persisted)?;
                }
                persist_point("lifecycle:update:reverted");
                let _ = self.start_eu(prev, StartReason::Operator);
                let mut f = Fault::from(e);
                f.message = format!(
                    "{} {} failed to start: {}; {} restored",
                    spec.name, spec.version, f.message, prev.du.version
                );
                return Err(f);
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
    pub(super) fn rollback_update(&self, j: &Journal, prev: &DuRecord) {
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
}
