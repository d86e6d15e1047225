//! The short state transitions of DU operations that hold no lock across their slow steps:
//! reserving the DU an operation works on (so that a second operation on it is refused while
//! operations on other DUs run), its journal entry, and unpacking for the reserved DU (rootfs
//! extracted for a jail, a private data disk for a microVM).

use super::admission::{check_spec_room_in, pending_disk_kib, Need};
use super::config::{ExecEnvConfig, Runner};
use super::packages::{AppSpec, CheckedPackage, InstalledFiles};
use super::state::{DuRecord, Journal};
use super::{data_id, disk, fault, Agent, OpResult};
use crate::fault::{Fault, FaultCode};
use crate::model::DuStatus;
use crate::supervise::lock;

impl Agent {
    pub(super) fn save_journal(&self, j: &Journal) -> Result<(), Fault> {
        self.inflight.save(&self.files, j)
    }

    /// Clears stale downloads, keeping `url`'s part and the files of other operations'
    /// downloads in progress.
    pub(super) fn clear_downloads_except_part(&self, url: &str) {
        self.packages
            .clear_downloads_except_part(url, &self.inflight.busy_downloads());
    }

    /// Reserves an installed DU with no operation running on it (else 7229) for an operation.
    pub(super) fn reserve(&self, uuid: &str, status: DuStatus) -> OpResult<DuRecord> {
        let rec = self.installed_record(uuid)?;
        let mut m = lock(&self.shared.model);
        // Checked again under the lock that the reservation is made under.
        if let Some(s) = m.transient.get(uuid) {
            return Err(fault(
                FaultCode::InvalidDeploymentUnitState,
                format!("DeploymentUnit {uuid} is {s:?}"),
            ));
        }
        if !m.persisted.dus.iter().any(|r| r.du.uuid == uuid) {
            return Err(fault(
                FaultCode::InvalidDeploymentUnitState,
                format!("no DeploymentUnit {uuid}"),
            ));
        }
        m.transient.insert(uuid.to_string(), status);
        Ok(rec)
    }

    /// Reserves the DU a verified package installs: refused when it is installed (7226), when
    /// another operation holds it (7229), when it does not fit the ExecEnv (7225) or its memory
    /// or flash (7227: `need`, against `disk_left_kib` measured before the lock is taken).
    pub(super) fn reserve_install(
        &self,
        uuid: &str,
        spec: &AppSpec,
        env: &ExecEnvConfig,
        need: Need,
        disk_left_kib: u64,
    ) -> OpResult<()> {
        let mut m = lock(&self.shared.model);
        if let Some(existing) = m.persisted.dus.iter().find(|r| r.du.uuid == uuid) {
            return Err(fault(
                FaultCode::DuplicateDeploymentUnit,
                format!(
                    "{} {} from {} is already installed as {uuid} (version {}); use update",
                    spec.name, spec.version, spec.vendor, existing.du.version
                ),
            ));
        }
        if let Some(s) = m.transient.get(uuid) {
            return Err(fault(
                FaultCode::InvalidDeploymentUnitState,
                format!(
                    "{} from {} ({uuid}) is {s:?} by another operation",
                    spec.name, spec.vendor
                ),
            ));
        }
        self.fits_env(spec, env)?;
        let disk_left_kib = disk_left_kib.saturating_sub(pending_disk_kib(&m, &env.name));
        check_spec_room_in(&m.persisted, spec, need, env, disk_left_kib, None)?;
        m.transient.insert(uuid.to_string(), DuStatus::Installing);
        m.pending_disk
            .insert(uuid.to_string(), (env.name.clone(), need.disk_kib));
        Ok(())
    }

    /// Unpacks a checked package for the reserved DU `j.uuid`: blobs, version directory, the
    /// rootfs extracted for a jail (so that no start extracts), and its data volume: for a
    /// microVM the DU's private copy of its data disk, for a jail app that declares `disk_mib`
    /// a fixed-size volume of what the declaration leaves once the package is unpacked (both
    /// kept if they exist: the DU's data survives an update). A package whose files take more
    /// than it declared is refused (7004).
    pub(super) fn unpack_for(
        &self,
        j: &mut Journal,
        checked: &CheckedPackage,
        env: &ExecEnvConfig,
    ) -> OpResult<InstalledFiles> {
        let runner = env.runner();
        let (mut files, disk) = self
            .packages
            .unpack(checked, &j.app_id, runner == Runner::Jail)?;
        let spec = &checked.spec;
        let declared_kib = spec.disk_mib.map(|m| u64::from(m) * 1024);
        let data = data_id(&j.uuid);
        let path = self.packages.data_disk_path(&data)?;
        match (disk, runner, declared_kib) {
            (Some(blob), Runner::Vmm, _) => {
                if !path.is_file() {
                    // On flash before the copy: a rollback then removes the copy (and only a
                    // copy this operation made, never data an earlier uninstall kept).
                    j.disk_created = true;
                    self.save_journal(j)?;
                }
                let (path, _) = self.packages.make_data_disk(&data, &blob)?;
                files.disk = Some(path);
            }
            // A volume the DU has is its data: kept, whatever this version declares.
            (_, Runner::Jail, _) if path.is_file() => files.disk = Some(path),
            (_, Runner::Jail, Some(declared)) => {
                let package = self.package_kib(&files);
                let volume_mib = (declared.saturating_sub(package)) / 1024;
                if volume_mib < disk::MIN_VOLUME_MIB {
                    return Err(too_small(spec, package));
                }
                let dir = self.packages.store.app_dir(&data)?;
                if std::fs::read_dir(&dir).is_ok_and(|mut rd| rd.next().is_some()) {
                    // Data an uncapped earlier version wrote: a volume mounted over it would
                    // hide it from the app.
                    crate::log_warn!(
                        "{}: keeps its data directory without a cap (it holds data already)",
                        spec.name
                    );
                } else {
                    j.disk_created = true;
                    self.save_journal(j)?;
                    self.packages.store.create_app_dir(&data)?;
                    let tmp = self.packages.store.temp_path("volume");
                    disk::make_volume(&path, &tmp, volume_mib)?;
                    files.disk = Some(path);
                }
            }
            _ => {}
        }
        if let Some(declared) = declared_kib {
            // Measured: the data disk of a microVM counts, a jail volume's unwritten blocks not.
            let taken = self.package_kib(&files)
                + files
                    .disk
                    .as_deref()
                    .map_or(0, |d| disk::tree_kib(d, &mut Default::default()));
            if taken > declared && runner == Runner::Vmm {
                return Err(too_small(spec, taken));
            }
        }
        Ok(files)
    }

    /// Removes the data disk an operation that did not commit created.
    pub(super) fn remove_created_disk(&self, j: &Journal) {
        if !j.disk_created || j.uuid.is_empty() {
            return;
        }
        let data = data_id(&j.uuid);
        if let Ok(path) = self.packages.data_disk_path(&data) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        // The directory too when nothing else is in it.
                        let _ = std::fs::remove_dir(dir);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => crate::log_warn!("rollback: {}: {e}", path.display()),
            }
        }
    }
}

/// A package whose own files leave no room in the flash it declares (7004, naming the field).
fn too_small(spec: &AppSpec, taken_kib: u64) -> Fault {
    fault(
        FaultCode::InvalidArguments,
        format!(
            "{} {}: app config field `disk_mib`: {} MiB leaves no room for its data volume: \
             its files take {taken_kib} KiB",
            spec.name,
            spec.version,
            spec.disk_mib.unwrap_or(0)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::config::AgentConfig;
    use crate::model::ExecEnvType;
    use crate::package::config::AppConfig;

    fn spec(name: &str, disk_mib: u32) -> AppSpec {
        let c: AppConfig = serde_json::from_value(serde_json::json!({
            "name": name, "version": "1.0", "vendor": "t", "arch": "x86_64",
            "backends": ["jail"], "memory_mib": 8, "vcpus": 1, "command": ["/bin/true"],
            "disk_mib": disk_mib
        }))
        .unwrap();
        AppSpec::from_config(&c)
    }

    /// Two installs at once: the second is admitted while the first's files are on flash but
    /// not yet in the model, so only the first's pending reservation can refuse it.
    #[test]
    fn an_install_between_admission_and_commit_holds_its_flash() {
        let dir = std::env::temp_dir().join(format!("cpv-pending-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = AgentConfig::single("jail0", ExecEnvType::Jail, "x86_64", 64);
        cfg.exec_envs[0].disk_budget_mib = Some(100);
        let agent = Agent::open(&dir, cfg.clone()).unwrap();
        let env = &cfg.exec_envs[0];
        let need = |mib: u64| Need {
            memory_mib: 8,
            disk_kib: mib * 1024,
        };
        let left = agent.disk_left_kib(env, None);
        agent
            .reserve_install("du-a", &spec("a", 60), env, need(60), left)
            .unwrap();
        let f = agent
            .reserve_install("du-b", &spec("b", 60), env, need(60), left)
            .unwrap_err();
        assert_eq!(f.code, FaultCode::SystemResourcesExceeded, "{f}");
        assert!(f.message.contains("b 1.0"), "{f}");
        // What fits beside the first is admitted, before download as well.
        agent
            .reserve_install("du-c", &spec("c", 30), env, need(30), left)
            .unwrap();
        let f = agent
            .check_room(&spec("d", 20), env, None, false, None)
            .unwrap_err();
        assert_eq!(f.code, FaultCode::SystemResourcesExceeded, "{f}");
        agent.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
