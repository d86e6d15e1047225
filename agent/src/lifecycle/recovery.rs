//! Recovery after a crash or power loss: finishing the operations the journal says were in
//! flight, sweeping leftovers, and starting the apps requested Active with AutoStart.

use std::collections::HashSet;

use super::state::Journal;
use super::{internal, restore_record, Agent};
use crate::fault::{Fault, FaultCode};
use crate::model::{DuEventState, Operation, RequestedState};
use crate::supervise::{lock, StartReason};

impl Agent {
    /// Finishes the operations a crash cut: roll back what did not commit, complete what did,
    /// publish each one's event once.
    pub(super) fn recover(&self) -> Result<(), Fault> {
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

    pub(super) fn recover_one(&self, mut j: Journal) -> Result<(), Fault> {
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
    pub(super) fn sweep(&self) {
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
    pub(super) fn autostart(&self) {
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

    pub(super) fn autostart_du(&self, uuid: &str) {
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
}
