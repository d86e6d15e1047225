//! Memory and platform admission of a package against an ExecEnv, before download and after
//! verification.

use super::config::{ExecEnvConfig, Runner};
use super::packages::AppSpec;
use super::state::PersistedState;
use super::{admitted_mib, fault, Agent, OpResult};
use crate::fault::FaultCode;
use crate::supervise::lock;

impl Agent {
    /// Checks the package's architecture and backends against the ExecEnv (7225).
    /// Admission before any download: the package's head declares its arch, backends and
    /// memory (`package::head`); what the verified package would be refused for (7225, 7227) is
    /// refused now, before the flash is touched. The memory check is the one made after
    /// verification: against what is left in the ExecEnv, with the memory of `except` (the DU
    /// being updated) counted as free. The same checks run again on the verified package.
    pub(super) fn admit_before_download(
        &self,
        url: &str,
        env: &ExecEnvConfig,
        except: Option<&str>,
        check_memory: bool,
    ) -> OpResult<()> {
        let Some(spec) = self.packages.peek_spec(url)? else {
            return Ok(());
        };
        self.fits_env(&spec, env)?;
        if check_memory {
            self.check_room(&spec, env, except).map_err(|mut f| {
                f.message.push_str(" (refused before download)");
                f
            })?;
        }
        Ok(())
    }

    /// The memory admission of a package (7227) against the model as it is now: `spec`'s
    /// declared memory must fit in what `env` has left, the EUs of DU `except` (the one being
    /// updated) counted as free. Callers that already hold the model's lock use
    /// [`check_room_in`].
    pub(super) fn check_room(
        &self,
        spec: &AppSpec,
        env: &ExecEnvConfig,
        except: Option<&str>,
    ) -> OpResult<()> {
        let m = lock(&self.shared.model);
        check_spec_room_in(&m.persisted, spec, env, except)
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

/// [`check_room_in`] for a package's `spec` in `env`, the message naming its name and version.
pub(super) fn check_spec_room_in(
    s: &PersistedState,
    spec: &AppSpec,
    env: &ExecEnvConfig,
    except: Option<&str>,
) -> OpResult<()> {
    let who = format!("{} {}", spec.name, spec.version);
    check_room_in(
        s,
        &who,
        spec.memory_mib,
        &env.name,
        env.memory_budget_mib,
        except,
    )
}

/// The one memory rule (7227 SystemResourcesExceeded): `need_mib` must fit in ExecEnv `env`'s
/// `budget_mib` less the memory of the EUs requested Active in it in `s`, those of DU `except`
/// counted as free. `who` names what asks in the message.
pub(super) fn check_room_in(
    s: &PersistedState,
    who: &str,
    need_mib: u32,
    env: &str,
    budget_mib: u32,
    except: Option<&str>,
) -> OpResult<()> {
    let available = budget_mib.saturating_sub(admitted_mib(s, env, except));
    if need_mib > available {
        return Err(fault(
            FaultCode::SystemResourcesExceeded,
            format!("{who} needs {need_mib} MiB, ExecEnv {env} has {available} MiB left"),
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
            auto_restart: AutoRestart::default(),
            health: None,
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
        // 64 - 40 (a; b is Idle, c is in another ExecEnv) = 24 left.
        assert!(check_room_in(&s, "x 1.0", 24, "jail0", 64, None).is_ok());
        let f = check_room_in(&s, "x 1.0", 25, "jail0", 64, None).unwrap_err();
        assert_eq!(f.code, FaultCode::SystemResourcesExceeded);
        assert_eq!(
            f.message,
            "x 1.0 needs 25 MiB, ExecEnv jail0 has 24 MiB left"
        );
        // An update of `a` counts a's memory as free.
        assert!(check_room_in(&s, "a 2.0", 64, "jail0", 64, Some("a")).is_ok());
        assert!(check_room_in(&s, "a 2.0", 65, "jail0", 64, Some("a")).is_err());
    }
}
