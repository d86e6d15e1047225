//! State an older agent left that this one no longer produces, brought up to date at open:
//! a kvm app whose data disk was the shared blob itself gets its private copy (the blob's
//! current content: it was the app's data), and a jail app whose rootfs was never extracted
//! (older agents extracted at first start) is extracted now, so that no start extracts.

use super::config::Runner;
use super::{data_id, Agent};
use crate::store::Digest;
use crate::supervise::lock;

impl Agent {
    pub(super) fn migrate(&self) {
        let blobs = self.packages.store.blobs_dir();
        let records: Vec<_> = lock(&self.shared.model).persisted.dus.clone();
        let mut changed = false;
        for rec in records {
            let runner = self
                .cfg
                .exec_envs
                .iter()
                .find(|e| e.name == rec.du.exec_env)
                .map(|e| e.runner());
            if let Some(disk) = rec.files.disk.as_ref().filter(|d| d.starts_with(&blobs)) {
                let digest = disk
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(Digest::parse_hex);
                let copy = match (digest, runner) {
                    (Some(d), Some(Runner::Vmm)) => self
                        .packages
                        .make_data_disk_from_legacy(&data_id(&rec.du.uuid), &d)
                        .map(Some),
                    _ => Ok(None),
                };
                match copy {
                    Ok(path) => {
                        let mut m = lock(&self.shared.model);
                        if let Some(r) = m
                            .persisted
                            .dus
                            .iter_mut()
                            .find(|r| r.du.uuid == rec.du.uuid)
                        {
                            r.files.disk = path;
                            changed = true;
                        }
                    }
                    Err(f) => crate::log_error!("{}: data disk not migrated: {f}", rec.du.uuid),
                }
            }
            let unextracted = rec.files.rootfs.as_ref().filter(|_| {
                runner == Some(Runner::Jail) && !rec.files.app_dir.join("rootfs").is_dir()
            });
            if let Some(layer) = unextracted {
                let dest = rec.files.app_dir.join("rootfs");
                if let Err(f) = crate::package::extract_layer(
                    layer,
                    &dest,
                    &crate::package::LayerCaps::default(),
                ) {
                    crate::log_error!("{}: rootfs not extracted: {f}", rec.du.uuid);
                }
            }
        }
        if changed {
            let m = lock(&self.shared.model);
            if let Err(f) = self.files.save_state(&m.persisted) {
                crate::log_error!("saving migrated data disks: {f}");
            }
        }
    }
}
