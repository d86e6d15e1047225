//! Get, GetInstances and GetSupportedDM responses from the data model's results.

use cpevisor_usp::proto::get_supported_dm_resp as gsdm;
use cpevisor_usp::proto::{
    get_instances_resp, get_resp, GetInstancesResp, GetResp, GetSupportedDmResp,
};

use crate::usp::dm::schema::{Access, Kind};
use crate::usp::dm::value_change::ignores_value_change;
use crate::usp::dm::SupportedFilter;

use super::record::Endpoint;

fn value_type(k: Kind) -> gsdm::ParamValueType {
    match k {
        Kind::String | Kind::List => gsdm::ParamValueType::ParamString,
        Kind::Boolean => gsdm::ParamValueType::ParamBoolean,
        Kind::UnsignedInt => gsdm::ParamValueType::ParamUnsignedInt,
        Kind::Int => gsdm::ParamValueType::ParamInt,
        Kind::UnsignedLong => gsdm::ParamValueType::ParamUnsignedLong,
        Kind::DateTime => gsdm::ParamValueType::ParamDateTime,
    }
}

impl Endpoint {
    pub(super) fn get(&mut self, paths: &[String], max_depth: u32) -> GetResp {
        GetResp {
            req_path_results: self
                .dm
                .get(paths, max_depth)
                .into_iter()
                .map(|r| {
                    let (err_code, err_msg) =
                        r.err.map(|e| (e.code, e.message)).unwrap_or_default();
                    get_resp::RequestedPathResult {
                        requested_path: r.requested_path,
                        err_code,
                        err_msg,
                        resolved_path_results: r
                            .resolved
                            .into_iter()
                            .map(|(path, params)| get_resp::ResolvedPathResult {
                                resolved_path: path,
                                result_params: params.into_iter().collect(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    pub(super) fn get_instances(
        &mut self,
        paths: &[String],
        first_level_only: bool,
    ) -> GetInstancesResp {
        GetInstancesResp {
            req_path_results: self
                .dm
                .get_instances(paths, first_level_only)
                .into_iter()
                .map(|r| {
                    let (err_code, err_msg) =
                        r.err.map(|e| (e.code, e.message)).unwrap_or_default();
                    get_instances_resp::RequestedPathResult {
                        requested_path: r.requested_path,
                        err_code,
                        err_msg,
                        curr_insts: r
                            .instances
                            .into_iter()
                            .map(|(p, keys)| get_instances_resp::CurrInstance {
                                instantiated_obj_path: p,
                                unique_keys: keys.into_iter().collect(),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }

    pub(super) fn supported(
        &mut self,
        g: &cpevisor_usp::proto::GetSupportedDm,
    ) -> GetSupportedDmResp {
        let filter = SupportedFilter {
            first_level_only: g.first_level_only,
            commands: g.return_commands,
            events: g.return_events,
            params: g.return_params,
            unique_keys: g.return_unique_key_sets,
        };
        GetSupportedDmResp {
            req_obj_results: self
                .dm
                .get_supported_dm(&g.obj_paths, filter)
                .into_iter()
                .map(|r| {
                    let (err_code, err_msg) =
                        r.err.map(|e| (e.code, e.message)).unwrap_or_default();
                    gsdm::RequestedObjectResult {
                        req_obj_path: r.requested_path,
                        err_code,
                        err_msg,
                        data_model_inst_uri: "urn:broadband-forum-org:tr-181-2-18-0-usp"
                            .to_string(),
                        supported_objs: r
                            .objects
                            .into_iter()
                            .map(|o| gsdm::SupportedObjectResult {
                                supported_obj_path: o.path,
                                access: if o.add_delete {
                                    gsdm::ObjAccessType::ObjAddDelete
                                } else {
                                    gsdm::ObjAccessType::ObjReadOnly
                                } as i32,
                                is_multi_instance: o.multi,
                                supported_commands: o
                                    .commands
                                    .iter()
                                    .map(|c| gsdm::SupportedCommandResult {
                                        command_name: format!("{}()", c.name),
                                        input_arg_names: c
                                            .inputs
                                            .iter()
                                            .map(|s| s.to_string())
                                            .collect(),
                                        output_arg_names: c
                                            .outputs
                                            .iter()
                                            .map(|s| s.to_string())
                                            .collect(),
                                        command_type: if c.is_async {
                                            gsdm::CmdType::CmdAsync
                                        } else {
                                            gsdm::CmdType::CmdSync
                                        }
                                            as i32,
                                    })
                                    .collect(),
                                supported_events: o
                                    .events
                                    .iter()
                                    .map(|e| gsdm::SupportedEventResult {
                                        event_name: format!("{}!", e.name),
                                        arg_names: e.args.iter().map(|s| s.to_string()).collect(),
                                    })
                                    .collect(),
                                supported_params: o
                                    .params
                                    .iter()
                                    .map(|(name, access, kind)| gsdm::SupportedParamResult {
                                        param_name: name.to_string(),
                                        access: match access {
                                            Access::ReadOnly => {
                                                gsdm::ParamAccessType::ParamReadOnly
                                            }
                                            Access::ReadWrite => {
                                                gsdm::ParamAccessType::ParamReadWrite
                                            }
                                        } as i32,
                                        value_type: value_type(*kind) as i32,
                                        value_change: if ignores_value_change(name) {
                                            gsdm::ValueChangeType::ValueChangeWillIgnore
                                        } else {
                                            gsdm::ValueChangeType::ValueChangeAllowed
                                        }
                                            as i32,
                                    })
                                    .collect(),
                                divergent_paths: Vec::new(),
                                unique_key_sets: if o.unique_keys.is_empty() {
                                    Vec::new()
                                } else {
                                    vec![gsdm::SupportedUniqueKeySet {
                                        key_names: o
                                            .unique_keys
                                            .iter()
                                            .map(|k| k.to_string())
                                            .collect(),
                                    }]
                                },
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}
