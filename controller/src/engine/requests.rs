//! What the controller sends for a job: the lookup of a DU or EU by name, the subscriptions
//! that report its end, and the main request.

use std::collections::BTreeMap;

use cpevisor_usp::proto::{add, set, Msg};

use super::controller::Controller;
use super::types::{instance_of, split_param, Job, Op, Phase};

/// The agent's vendor argument of InstallDU and Update: a network section (JSON) in place of
/// the package's (agent/README.md).
const NETWORK_ARG: &str = "X_CPEVISOR_NetworkConfig";

impl Controller {
    pub(super) fn start(&mut self, agent: &str, job: &mut Job) {
        if let Some((table, key, _)) = job.op.lookup() {
            let id = self.next_id("lookup");
            let path = format!("Device.SoftwareModules.{table}.*.{key}");
            self.request(agent, job, Phase::Lookup, Msg::get(id, [path], 0));
        } else {
            self.after_lookup(agent, job);
        }
    }

    pub(super) fn after_lookup(&mut self, agent: &str, job: &mut Job) {
        if job.op.needs_subscriptions() {
            let id = self.next_id("sub");
            let msg = Msg::add(id, true, self.subscriptions());
            self.request(agent, job, Phase::Subscribe, msg);
        } else {
            self.main_request(agent, job);
        }
    }

    /// The subscriptions commands rely on, with IDs fixed per controller so that adding them
    /// again is refused as a duplicate (7025) instead of piling up.
    pub(super) fn subscriptions(&self) -> Vec<add::CreateObject> {
        let sub = |suffix: &str, notif: &str, refs: &str| add::CreateObject {
            obj_path: "Device.LocalAgent.Subscription.".to_string(),
            param_settings: [
                ("ID", format!("{}-{suffix}", self.id)),
                ("NotifType", notif.to_string()),
                ("ReferenceList", refs.to_string()),
                ("Enable", "true".to_string()),
                ("Persistent", "true".to_string()),
            ]
            .into_iter()
            .map(|(p, v)| add::CreateParamSetting {
                param: p.to_string(),
                value: v,
                required: true,
            })
            .collect(),
        };
        vec![
            sub("opc", "OperationComplete", "Device."),
            sub("du", "Event", "Device.SoftwareModules.DUStateChange!"),
            sub("boot", "Event", "Device.Boot!"),
            sub(
                "vc",
                "ValueChange",
                "Device.SoftwareModules.ExecutionUnit.*.Status",
            ),
        ]
    }

    pub(super) fn main_request(&mut self, agent: &str, job: &mut Job) {
        let id = self.next_id("req");
        let key = job.command_key.clone();
        let target = job.target.clone().unwrap_or_default();
        let operate = |cmd: String, args: Vec<(&str, String)>| {
            let args: BTreeMap<String, String> = args
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            Msg::operate(id.clone(), cmd, key.clone(), true, args)
        };
        let msg = match &job.op {
            Op::Get { paths, max_depth } => Msg::get(id.clone(), paths.clone(), *max_depth),
            Op::Probe => Msg::get(id.clone(), ["Device.DeviceInfo."], 1),
            Op::Instances { paths } => Msg::get_instances(id.clone(), paths.clone(), false),
            Op::Supported { paths } => Msg::get_supported_dm(id.clone(), paths.clone(), false),
            Op::Set { params } => {
                let mut objs: Vec<set::UpdateObject> = Vec::new();
                for (path, value) in params {
                    let (obj, name) = split_param(path).unwrap_or((path, ""));
                    let setting = set::UpdateParamSetting {
                        param: name.to_string(),
                        value: value.clone(),
                        required: true,
                    };
                    match objs.iter_mut().find(|o| o.obj_path == obj) {
                        Some(o) => o.param_settings.push(setting),
                        None => objs.push(set::UpdateObject {
                            obj_path: obj.to_string(),
                            param_settings: vec![setting],
                        }),
                    }
                }
                Msg::set(id.clone(), false, objs)
            }
            Op::Operate { command, args } => {
                Msg::operate(id.clone(), command.clone(), key.clone(), true, args.clone())
            }
            Op::Install { url, env, network } => operate(
                "Device.SoftwareModules.InstallDU()".into(),
                vec![
                    ("URL", url.clone()),
                    ("ExecutionEnvRef", env.clone().unwrap_or_default()),
                    (NETWORK_ARG, network.clone().unwrap_or_default()),
                ],
            ),
            Op::Update { url, network, .. } => operate(
                format!("{}Update()", instance_of(&target, &job.op)),
                vec![
                    ("URL", url.clone().unwrap_or_default()),
                    (NETWORK_ARG, network.clone().unwrap_or_default()),
                ],
            ),
            Op::Uninstall { .. } => operate(
                format!("{}Uninstall()", instance_of(&target, &job.op)),
                vec![],
            ),
            Op::Start { .. } | Op::Stop { .. } => {
                let want = if matches!(job.op, Op::Start { .. }) {
                    "Active"
                } else {
                    "Idle"
                };
                operate(
                    format!("{}SetRequestedState()", instance_of(&target, &job.op)),
                    vec![("RequestedState", want.to_string())],
                )
            }
        };
        self.request(agent, job, Phase::Request, msg);
    }
}
