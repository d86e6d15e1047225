//! Memory and platform admission of a package against an ExecEnv, before download and after
//! verification.

use super::config::{ExecEnvConfig, Runner};
use super::packages::AppSpec;
use super::state::PersistedState;
use super::{admitted_mib, fault, Agent, Model, OpResult};
use crate::fault::FaultCode;
use crate::supervise::lock;

impl Agent {
    /// Checks the package's architecture and backends against the ExecEnv (7225).
    /// Admission before any download: the package's head declares its arch, backends,
    /// memory and flash (`package::head`); what the verified package would be refused for
    /// (7225, 7227) is refused now, before anything is fetched or written. The checks are the
    /// ones made after verification: against what is left in the ExecEnv, with what DU
    /// `except` (the one being updated) holds counted as free; memory only when
    /// `check_memory` (an update of an app not requested Active takes none), its network
    /// section `over` when the operator overrides it. The same checks run again on the
    /// verified package.
    pub(super) fn admit_before_download(
        &self,
        url: &str,
        env: &ExecEnvConfig,
        except: Option<&str>,
        check_memory: bool,
        over: Option<&crate::package::network::NetworkConfig>,
    ) -> OpResult<()> {
        let Some(spec) = self.packages.peek_spec(url)? else {
            return Ok(());
        };
        // The network the DU is to run with: the operator's override, when one is in force.
        let spec = super::network::effective_spec(&spec, over);
        self.fits_env(&spec, env)?;
        self.check_room(&spec, env, except, check_memory, None)
            // Its network too (a malformed section, a router port another DU maps): checked
            // again under the lock where the install commits.
            .and_then(|()| {
                let m = lock(&self.shared.model);
                self.net_admit(&m.persisted, &spec, env, except)
            })
            .map_err(|mut f| {
                f.message.push_str(" (refused before download)");
                f
            })
    }

    /// The admission of a package (7227) against the model and the flash as they are now:
    /// `spec`'s memory (when `check_memory`) and flash ([`spec_disk_kib`], `package_bytes` the
    /// downloaded package's size when known) must fit in what `env` has left, what DU `except`
    /// (the one being updated) holds counted as free. Callers that already hold the model's
    /// lock use [`check_room_in`] with a [`Agent::disk_left_kib`] measured before taking it.
    pub(super) fn check_room(
        &self,
        spec: &AppSpec,
        env: &ExecEnvConfig,
        except: Option<&str>,
        check_memory: bool,
        package_bytes: Option<u64>,
    ) -> OpResult<()> {
        // Measured from the files without the model lock held.
        let disk_left = self.disk_left_kib(env, except);
        let need = Need {
            memory_mib: if check_memory { spec.memory_mib } else { 0 },
            disk_kib: spec_disk_kib(spec, package_bytes),
        };
        let m = lock(&self.shared.model);
        let disk_left = disk_left.saturating_sub(pending_disk_kib(&m, &env.name));
        check_spec_room_in(&m.persisted, spec, need, env, disk_left, except)
    }

    pub(super) fn fits_env(&self, spec: &AppSpec, env: &ExecEnvConfig) -> OpResult<()> {
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
    pub(super) fn available_mib(&self, env: &str, except: Option<&str>) -> u32 {
        let Some(cfg) = self.cfg.exec_envs.iter().find(|e| e.name == env) else {
            return 0;
        };
        let m = lock(&self.shared.model);
        cfg.memory_budget_mib
            .saturating_sub(admitted_mib(&m.persisted, env, except))
    }
}

/// What a package (or a start) asks of an ExecEnv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Need {
    /// Memory, MiB (0: none, e.g. an update of an app that is not requested Active).
    pub memory_mib: u32,
    /// Flash, KiB (0: none, e.g. a start).
    pub disk_kib: u64,
}

/// The flash a package asks for, KiB: its declared `disk_mib`, else the downloaded package's
/// size (`package_bytes`: what its blobs take at the least), else (before download, undeclared)
/// nothing.
pub(super) fn spec_disk_kib(spec: &AppSpec, package_bytes: Option<u64>) -> u64 {
    match (spec.disk_mib, package_bytes) {
        (Some(mib), _) => u64::from(mib) * 1024,
        (None, Some(bytes)) => bytes.div_ceil(1024),
        (None, None) => 0,
    }
}

/// The flash of ExecEnv `env` held by installs admitted and not yet committed, KiB: taken for
/// every other admission (their files are on flash, but not yet in the model that
/// `disk::available_kib` measures).
pub(super) fn pending_disk_kib(m: &Model, env: &str) -> u64 {
    m.pending_disk
        .values()
        .filter(|(e, _)| e == env)
        .fold(0u64, |sum, (_, kib)| sum.saturating_add(*kib))
}

/// [`check_room_in`] for a package's `spec` in `env`, the message naming its name and version.
pub(super) fn check_spec_room_in(
    s: &PersistedState,
    spec: &AppSpec,
    need: Need,
    env: &ExecEnvConfig,
    disk_left_kib: u64,
    except: Option<&str>,
) -> OpResult<()> {
    let who = format!("{} {}", spec.name, spec.version);
    check_room_in(
        s,
        &who,
        need,
        &env.name,
        env.memory_budget_mib,
        disk_left_kib,
        except,
    )
}

/// The one admission rule (7227 SystemResourcesExceeded): `need.memory_mib` must fit in
/// ExecEnv `env`'s `budget_mib` less the memory of the EUs requested Active in it in `s`,
/// those of DU `except` counted as free; and `need.disk_kib` in `disk_left_kib`, the flash the
/// ExecEnv has left (`disk::available_kib`, measured with `except` counted as free). `who`
/// names what asks in the message.
pub(super) fn check_room_in(
    s: &PersistedState,
    who: &str,
    need: Need,
    env: &str,
    budget_mib: u32,
    disk_left_kib: u64,
    except: Option<&str>,
) -> OpResult<()> {
    let available = budget_mib.saturating_sub(admitted_mib(s, env, except));
    if need.memory_mib > available {
        return Err(fault(
            FaultCode::SystemResourcesExceeded,
            format!(
                "{who} needs {} MiB, ExecEnv {env} has {available} MiB left",
                need.memory_mib
            ),
        ));
    }
    if need.disk_kib > disk_left_kib {
        return Err(fault(
            FaultCode::SystemResourcesExceeded,
            format!(
                "{who} needs {} KiB of flash, ExecEnv {env} has {disk_left_kib} KiB left",
                need.disk_kib
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AutoRestart, EuStatus, ExecutionFaultCode, ExecutionUnit, RequestedState};

    fn eu(du: &str, env: &str, mib: u32, req: RequestedState) -> ExecutionUnit {
        ExecutionUnit {
            eu_id: format!("eu-{du}"),
            name: du.into(),
            du_uuid: du.into(),
            exec_env: env.into(),
            status: EuStatus::Idle,
            requested_state: req,
            execution_fault_code: ExecutionFaultCode::NoFault,
            execution_fault_message: String::new(),
            auto_start: false,
            run_level: 0,
            memory_in_use: 0,
            memory_mib: mib,
            disk_in_use: 0,
            allocated_disk_kib: None,
            auto_restart: AutoRestart::default(),
            health: None,
            balloon: None,
        }
    }

    #[test]
    fn room_counts_active_eus_of_the_env_but_not_except() {
        let s = PersistedState {
            eus: vec![
                eu("a", "jail0", 40, RequestedState::Active),
                eu("b", "jail0", 30, RequestedState::Idle),
                eu("c", "vm0", 50, RequestedState::Active),
            ],
            ..Default::default()
        };
        let mem = |memory_mib| Need {
            memory_mib,
            disk_kib: 0,
        };
        let room = |need, except| check_room_in(&s, "x 1.0", need, "jail0", 64, 1000, except);
        // 64 - 40 (a; b is Idle, c is in another ExecEnv) = 24 left.
        assert!(room(mem(24), None).is_ok());
        let f = room(mem(25), None).unwrap_err();
        assert_eq!(f.code, FaultCode::SystemResourcesExceeded);
        assert_eq!(
            f.message,
            "x 1.0 needs 25 MiB, ExecEnv jail0 has 24 MiB left"
        );
        // An update of `a` counts a's memory as free.
        assert!(room(mem(64), Some("a")).is_ok());
        assert!(room(mem(65), Some("a")).is_err());
    }

    #[test]
    fn room_refuses_flash_past_what_is_left_in_the_same_rule() {
        let s = PersistedState::default();
        let need = |memory_mib, disk_kib| Need {
            memory_mib,
            disk_kib,
        };
        assert!(check_room_in(&s, "x 1.0", need(8, 2048), "jail0", 64, 2048, None).is_ok());
        let f = check_room_in(&s, "x 1.0", need(8, 2049), "jail0", 64, 2048, None).unwrap_err();
        assert_eq!(f.code, FaultCode::SystemResourcesExceeded);
        assert_eq!(
            f.message,
            "x 1.0 needs 2049 KiB of flash, ExecEnv jail0 has 2048 KiB left"
        );
        // Memory is checked first and named as such.
        let f = check_room_in(&s, "x 1.0", need(65, 4096), "jail0", 64, 2048, None).unwrap_err();
        assert!(f.message.contains("65 MiB"), "{}", f.message);
    }

    #[test]
    fn a_package_asks_for_its_declared_flash_else_its_size() {
        let mut spec = crate::lifecycle::packages::AppSpec::from_config(
            &crate::package::AppConfig::from_json(
                br#"{"name":"a","version":"1","vendor":"v","arch":"x86_64","backends":["jail"],
                     "memory_mib":8,"vcpus":1,"command":["/a"]}"#,
            )
            .unwrap(),
        );
        assert_eq!(spec_disk_kib(&spec, None), 0);
        assert_eq!(spec_disk_kib(&spec, Some(1025)), 2);
        spec.disk_mib = Some(3);
        assert_eq!(spec_disk_kib(&spec, None), 3072);
        assert_eq!(spec_disk_kib(&spec, Some(10 << 20)), 3072);
    }
}
