//! ExecEnv operations: Reset, Enable, and resolving an ExecEnv's configuration by name.

use super::config::ExecEnvConfig;
use super::{env_is_enabled, exec_env_view, fault, Agent, OpResult};
use crate::fault::FaultCode;
use crate::model::{ExecEnv, ExecutionUnit, RequestedState};
use crate::supervise::{lock, StartReason};

impl Agent {
    /// ExecEnv.Reset(): uninstalls every DU in the ExecEnv (data included). Returns their UUIDs.
    pub fn reset_env(&self, env: &str) -> OpResult<Vec<String>> {
        self.env_config(env)?;
        let uuids: Vec<String> = lock(&self.shared.model)
            .persisted
            .dus
            .iter()
            .filter(|r| r.du.exec_env == env)
            .map(|r| r.du.uuid.clone())
            .collect();
        for u in &uuids {
            self.uninstall(u, false)?;
        }
        Ok(uuids)
    }

    pub(super) fn resolve_env(&self, name: Option<&str>) -> OpResult<ExecEnvConfig> {
        let env = match name {
            Some(n) => self.env_config(n)?,
            None => self.cfg.exec_envs[0].clone(),
        };
        if !self.env_enabled(&env) {
            return Err(fault(
                FaultCode::InvalidExecEnvState,
                format!("ExecEnv {} is disabled", env.name),
            ));
        }
        Ok(env)
    }

    pub(super) fn env_config(&self, name: &str) -> OpResult<ExecEnvConfig> {
        self.cfg
            .exec_envs
            .iter()
            .find(|e| e.name == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self.cfg.exec_envs.iter().map(|e| e.name.as_str()).collect();
                fault(
                    FaultCode::UnknownExecEnv,
                    format!(
                        "unknown ExecEnv {name:?} (this device has {})",
                        known.join(", ")
                    ),
                )
            })
    }

    pub(super) fn env_enabled(&self, env: &ExecEnvConfig) -> bool {
        env_is_enabled(env, &lock(&self.shared.model).persisted)
    }

    /// ExecEnv.Enable: disabling stops its apps (their RequestedState is kept); enabling
    /// starts again those requested Active.
    pub fn set_env_enable(&self, env: &str, enable: bool) -> OpResult<ExecEnv> {
        let cfg = self.env_config(env)?;
        let _eu = lock(&self.eu_ops);
        {
            let mut m = lock(&self.shared.model);
            let before = m.persisted.clone();
            m.persisted.disabled_envs.retain(|e| e != env);
            m.persisted.enabled_envs.retain(|e| e != env);
            if enable && !cfg.enable {
                m.persisted.enabled_envs.push(env.to_string());
            }
            if !enable && cfg.enable {
                m.persisted.disabled_envs.push(env.to_string());
            }
            if m.persisted != before {
                if let Err(f) = self.files.save_state(&m.persisted) {
                    m.persisted = before;
                    return Err(f);
                }
            }
        }
        let eus: Vec<ExecutionUnit> = lock(&self.shared.model)
            .persisted
            .eus
            .iter()
            .filter(|e| e.exec_env == env)
            .cloned()
            .collect();
        for eu in eus {
            if !enable {
                self.supervisor.stop(&eu.eu_id);
                self.net_stop(&eu.eu_id);
            } else if eu.requested_state == RequestedState::Active
                && !self.supervisor.is_running(&eu.eu_id)
            {
                if let Some(rec) = self.record(&eu.du_uuid) {
                    if let Err(msg) = self.start_eu(&rec, StartReason::AutoStart) {
                        crate::log_warn!("{}: {msg}", eu.eu_id);
                    }
                }
            }
        }
        let disk = self.env_disk(&cfg, None);
        let m = lock(&self.shared.model);
        Ok(exec_env_view(
            &cfg,
            &m.persisted,
            disk.allocated_kib,
            disk.available_kib,
        ))
    }
}
