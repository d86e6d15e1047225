//! Uninstall: stopping a DU's EUs, removing it from the model and its files from the store.

use super::state::Journal;
use super::{data_id, Agent, OpResult};
use crate::model::{now_secs, rfc3339, DuEventState, DuStatus, Operation};
use crate::store::persist_point;
use crate::supervise::lock;

impl Agent {
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
            return Err(f);
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

    pub(super) fn uninstall_steps(&self, j: &Journal) -> OpResult<()> {
        {
            let _eu = lock(&self.eu_ops);
            for eu in self.eus_of(&j.uuid) {
                self.supervisor.stop(&eu.eu_id);
                self.net_stop(&eu.eu_id);
                self.supervisor.forget(&eu.eu_id);
            }
            let mut m = lock(&self.shared.model);
            let before = m.persisted.clone();
            m.persisted.dus.retain(|r| r.du.uuid != j.uuid);
            m.persisted.eus.retain(|e| e.du_uuid != j.uuid);
            // Its LAN address, if it was bridged, is free again.
            super::lanpool::prune(&mut m.persisted);
            if let Err(f) = self.files.save_state(&m.persisted) {
                m.persisted = before;
                return Err(f);
            }
        }
        persist_point("lifecycle:uninstall:committed");
        self.remove_du_files(j);
        Ok(())
    }

    pub(super) fn remove_du_files(&self, j: &Journal) {
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
}
