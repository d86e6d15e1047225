//! Memory and platform admission of a package against an ExecEnv, before download and after
//! verification.

use super::config::{ExecEnvConfig, Runner};
use super::packages::AppSpec;
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
        let available = self.available_mib(&env.name, except);
        if check_memory && spec.memory_mib > available {
            return Err(fault(
                FaultCode::SystemResourcesExceeded,
                format!(
                    "{} {} declares {} MiB, ExecEnv {} has {available} MiB left (refused before download)",
                    spec.name, spec.version, spec.memory_mib, env.name
                ),
            ));
        }
        Ok(())
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
