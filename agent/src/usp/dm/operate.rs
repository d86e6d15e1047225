//! Operate: the data model's commands mapped to `Agent` calls. Long ones (InstallDU, Update,
//! Uninstall, ExecEnv Reset, Device.Reboot) run on a thread of their own and report through
//! `Device.LocalAgent.Request.{i}` and a later OperationComplete; SetRequestedState and Restart
//! answer in the OperateResp.

use std::collections::BTreeMap;

use cpevisor_usp::errors::*;
use cpevisor_usp::path::{Leaf, Path, Segment};

use super::model::DataModel;
use super::tree::{self, Obj};
use super::types::{Caller, Completion, OperateOutcome, OperateResult, Request, MAX_REQUESTS};
use crate::fault::{Fault, FaultCode};
use crate::lifecycle::Agent;
use crate::model::uuid::is_uuid;
use crate::model::{DeploymentUnit, RequestedState};
use crate::package::network::{NetworkArg, OVERRIDE_ARG};

fn args_error(msg: impl Into<String>) -> UspError {
    UspError::new(INVALID_COMMAND_ARGUMENTS, msg)
}

fn no_credentials(cmd: &str, args: &BTreeMap<String, String>) -> Result<(), UspError> {
    for k in ["Username", "Password"] {
        if args.get(k).is_some_and(|v| !v.is_empty()) {
            return Err(args_error(format!(
                "{cmd}: {k} is not supported (downloads take no credentials; use a URL the \
                 device may fetch as is)"
            )));
        }
    }
    Ok(())
}

/// The `X_CPEVISOR_NetworkConfig` argument of InstallDU or Update, checked before the command
/// starts so a bad one installs nothing; empty: not given.
fn network_arg(cmd: &str, text: &str) -> Result<Option<NetworkArg>, UspError> {
    if text.is_empty() {
        return Ok(None);
    }
    NetworkArg::parse(text)
        .map(Some)
        .map_err(|f| args_error(format!("{cmd}: {}", f.message)))
}

impl DataModel {
    /// Runs `command` (a command path, possibly with wildcards) for `caller`. A bad path is an
    /// Error for the whole message (7008/7026/7016); per-object failures are in the results.
    pub fn operate(
        &mut self,
        caller: &Caller,
        command: &str,
        command_key: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<Vec<OperateResult>, UspError> {
        self.touched = true;
        let path = Path::parse(command)?;
        let Leaf::Command(name) = path.leaf.clone() else {
            return Err(UspError::new(
                INVALID_PATH,
                format!("{command}: not a command path (Name())"),
            ));
        };
        tree::schema_of(&path)?;
        let tree = self.materialize();
        let targets: Vec<Obj> = tree.resolve(&path).into_iter().cloned().collect();
        if targets.is_empty()
            && path
                .segments
                .iter()
                .all(|s| matches!(s, Segment::Name(_) | Segment::Instance(_)))
        {
            return Err(UspError::new(
                OBJECT_DOES_NOT_EXIST,
                format!("{} does not exist", path.object_path()),
            ));
        }
        let mut out = Vec::new();
        for t in targets {
            let executed_command = format!("{}{name}()", t.path);
            let outcome = match self.run_command(caller, &t, &name, command_key, args) {
                Ok(o) => o,
                Err(e) => OperateOutcome::Failure(e),
            };
            out.push(OperateResult {
                executed_command,
                outcome,
            });
        }
        Ok(out)
    }

    fn run_command(
        &mut self,
        caller: &Caller,
        t: &Obj,
        name: &str,
        command_key: &str,
        args: &BTreeMap<String, String>,
    ) -> Result<OperateOutcome, UspError> {
        let cmd = t.desc.command(name).expect("schema_of checked it");
        // R-OPR.6: input arguments the command does not take are ignored, not refused.
        let args: BTreeMap<String, String> = args
            .iter()
            .filter(|(k, _)| cmd.inputs.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let args = &args;
        let arg = |k: &str| args.get(k).map(String::as_str).unwrap_or("");
        match (t.desc.name, name) {
            ("ExecutionUnit", "SetRequestedState") => {
                let req = match arg("RequestedState") {
                    "Idle" => RequestedState::Idle,
                    "Active" => RequestedState::Active,
                    other => {
                        return Err(args_error(format!(
                            "SetRequestedState: RequestedState {other:?} is not Idle or Active"
                        )))
                    }
                };
                self.agent.set_requested_state(&t.key, req)?;
                Ok(OperateOutcome::Output(BTreeMap::new()))
            }
            ("ExecutionUnit", "Restart") => {
                self.agent.restart(&t.key)?;
                Ok(OperateOutcome::Output(BTreeMap::new()))
            }
            ("SoftwareModules", "InstallDU") => {
                no_credentials(name, args)?;
                let url = arg("URL").to_string();
                if url.is_empty() {
                    return Err(args_error("InstallDU: URL is required"));
                }
                let want_uuid = match arg("UUID") {
                    "" => None,
                    u if is_uuid(&u.to_ascii_lowercase()) => Some(u.to_ascii_lowercase()),
                    u => return Err(args_error(format!("InstallDU: UUID {u:?} is not a UUID"))),
                };
                let env = match arg("ExecutionEnvRef") {
                    "" => None,
                    r => Some(self.exec_env_named(r)?),
                };
                let network = network_arg(name, arg(OVERRIDE_ARG))?;
                self.start_async(caller, t, name, command_key, want_uuid, move |a| {
                    a.install_with(&url, None, env.as_deref(), network.as_ref(), &mut |_, _| {})
                        .map(Some)
                })
            }
            ("DeploymentUnit", "Update") => {
                no_credentials(name, args)?;
                let url = match arg("URL") {
                    "" => None,
                    u => Some(u.to_string()),
                };
                let network = network_arg(name, arg(OVERRIDE_ARG))?;
                let uuid = t.key.clone();
                self.start_async(caller, t, name, command_key, None, move |a| {
                    a.update_with(&uuid, url.as_deref(), network.as_ref(), &mut |_, _| {})
                        .map(Some)
                })
            }
            ("DeploymentUnit", "Uninstall") => {
                let uuid = t.key.clone();
                self.start_async(caller, t, name, command_key, None, move |a| {
                    a.uninstall(&uuid, false).map(|()| None)
                })
            }
            ("ExecEnv", "Reset") => {
                let env = t.key.clone();
                self.start_async(caller, t, name, command_key, None, move |a| {
                    a.reset_env(&env).map(|_| None)
                })
            }
            ("Device", "Reboot") => {
                // Recorded first: the Boot! after the reboot reports this CommandKey.
                self.store.data.reboot_command_key = Some(command_key.to_string());
                self.store
                    .save_if_changed()
                    .map_err(|f| UspError::new(INTERNAL_ERROR, f.to_string()))?;
                let hook = self.reboot.clone();
                self.start_async(caller, t, name, command_key, None, move |_| {
                    hook()
                        .map(|()| None)
                        .map_err(|m| Fault::new(FaultCode::CommandFailure, format!("reboot: {m}")))
                })
            }
            (obj, cmd) => Err(UspError::new(
                COMMAND_FAILURE,
                format!("{obj}.{cmd}() is not implemented"),
            )),
        }
    }

    /// `Device.SoftwareModules.ExecEnv.N` (dot optional) to the ExecEnv's name; 7223 when it
    /// names none.
    fn exec_env_named(&mut self, reference: &str) -> Result<String, UspError> {
        let r = reference.trim_end_matches('.');
        let tree = self.materialize();
        tree.get(&format!("{r}."))
            .filter(|o| o.desc.name == "ExecEnv" && o.instance().is_some())
            .map(|o| o.key.clone())
            .ok_or_else(|| {
                UspError::new(
                    7223,
                    format!("ExecutionEnvRef {reference:?} names no ExecEnv"),
                )
            })
    }

    fn start_async<F>(
        &mut self,
        caller: &Caller,
        t: &Obj,
        name: &str,
        command_key: &str,
        want_uuid: Option<String>,
        work: F,
    ) -> Result<OperateOutcome, UspError>
    where
        F: FnOnce(&Agent) -> Result<Option<DeploymentUnit>, Fault> + Send + 'static,
    {
        let full = || {
            UspError::new(
                RESOURCES_EXCEEDED,
                format!("already {MAX_REQUESTS} commands in progress"),
            )
        };
        if self.requests.is_full() {
            return Err(full());
        }
        self.next_request += 1;
        let instance = self.next_request;
        let originator = self.controller_path(&caller.endpoint_id);
        self.requests
            .push(Request {
                instance,
                originator,
                command: format!("{}{name}()", t.path),
                command_key: command_key.to_string(),
            })
            .map_err(|_| full())?;
        let agent = self.agent.clone();
        let tx = self.completions_tx.clone();
        let obj_path = t.path.clone();
        let command_name = format!("{name}()");
        let command_key = command_key.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("usp-req-{instance}"))
            .spawn(move || {
                let result = work(&agent);
                let _ = tx.send(Completion {
                    request: instance,
                    obj_path,
                    command_name,
                    command_key,
                    result,
                    want_uuid,
                });
            });
        if let Err(e) = spawned {
            self.requests.retain(|r| r.instance != instance);
            return Err(UspError::new(
                INTERNAL_ERROR,
                format!("cannot start the command: {e}"),
            ));
        }
        Ok(OperateOutcome::Request(format!(
            "Device.LocalAgent.Request.{instance}"
        )))
    }
}
