//! Sample Msgs and Records of every type, shared by the proto tests (and the seed corpus).

#![allow(dead_code)]

use std::collections::BTreeMap;

use cpevisor_usp::errors::{UspError, COMMAND_FAILURE, INVALID_PATH};
use cpevisor_usp::proto::mqtt_connect_record::MqttVersion;
use cpevisor_usp::proto::*;
use prost::Message;

pub const AGENT: &str = "proto::cpevisor-agent-0001";
pub const CONTROLLER: &str = "proto::operator-controller";

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One Msg of every request, response and notification type, plus Error.
pub fn all_msgs() -> Vec<Msg> {
    use add_resp::created_object_result::{operation_status as add_st, OperationStatus as AddSt};
    use delete_resp::deleted_object_result::{
        operation_status as del_st, OperationStatus as DelSt,
    };
    use get_supported_dm_resp as gsdm;
    use response::RespType;
    use set_resp::updated_object_result::{operation_status as set_st, OperationStatus as SetSt};

    let mut msgs = vec![
        Msg::get(
            "get-1",
            [
                "Device.DeviceInfo.",
                "Device.SoftwareModules.ExecEnv.*.Name",
            ],
            2,
        ),
        Msg::get_supported_dm("gsdm-1", ["Device.SoftwareModules."], false),
        Msg::get_instances("gi-1", ["Device.SoftwareModules.DeploymentUnit."], true),
        Msg::get_supported_protocol("gsp-1", "1.3,1.4"),
        Msg::set(
            "set-1",
            true,
            vec![set::UpdateObject {
                obj_path: "Device.SoftwareModules.ExecutionUnit.1.".into(),
                param_settings: vec![set::UpdateParamSetting {
                    param: "AutoStart".into(),
                    value: "true".into(),
                    required: true,
                }],
            }],
        ),
        Msg::add(
            "add-1",
            false,
            vec![add::CreateObject {
                obj_path: "Device.LocalAgent.Subscription.".into(),
                param_settings: vec![add::CreateParamSetting {
                    param: "ReferenceList".into(),
                    value: "Device.SoftwareModules.".into(),
                    required: false,
                }],
            }],
        ),
        Msg::delete("del-1", false, ["Device.LocalAgent.Subscription.3."]),
        Msg::operate(
            "op-1",
            "Device.SoftwareModules.InstallDU()",
            "key-1",
            true,
            map(&[
                ("URL", "https://example.invalid/app"),
                ("ExecutionEnvRef", "Device.SoftwareModules.ExecEnv.1."),
            ]),
        ),
        Msg::notify_event(
            "ev-1",
            "sub-1",
            false,
            "Device.SoftwareModules.",
            "DUStateChange!",
            map(&[
                ("UUID", "00000000-0000-5000-8000-000000000000"),
                ("Fault.FaultCode", "0"),
            ]),
        ),
        Msg::notify_value_change("vc-1", "sub-2", true, "Device.DeviceInfo.UpTime", "42"),
        Msg::notify_object_creation(
            "oc-1",
            "sub-3",
            true,
            "Device.SoftwareModules.DeploymentUnit.2.",
            map(&[("UUID", "abc")]),
        ),
        Msg::notify_object_deletion(
            "od-1",
            "sub-4",
            false,
            "Device.SoftwareModules.DeploymentUnit.2.",
        ),
        Msg::operation_complete(
            "opc-1",
            "sub-5",
            true,
            "Device.SoftwareModules.",
            "InstallDU()",
            "key-1",
            Ok(map(&[(
                "DeploymentUnitRef",
                "Device.SoftwareModules.DeploymentUnit.2.",
            )])),
        ),
        Msg::operation_complete(
            "opc-2",
            "sub-5",
            true,
            "Device.SoftwareModules.",
            "InstallDU()",
            "key-2",
            Err(UspError::new(COMMAND_FAILURE, "download failed")),
        ),
        Msg::on_board_request("ob-1", "00D09E", "cpevisor-a53", "SN0001", "1.3,1.4"),
        Msg::request(
            "reg-1",
            request::ReqType::Register(Register {
                allow_partial: true,
                reg_paths: vec![register::RegistrationPath {
                    path: "Device.Service.".into(),
                }],
            }),
        ),
        Msg::request(
            "dereg-1",
            request::ReqType::Deregister(Deregister {
                paths: vec!["Device.Service.".into()],
            }),
        ),
        Msg::from_usp_error(
            "get-1",
            &UspError::new(INVALID_PATH, "Device.Nope. does not exist"),
        ),
        Msg::error(
            "set-2",
            Error {
                err_code: 7004,
                err_msg: "bad".into(),
                param_errs: vec![error::ParamError {
                    param_path: "Device.X.Y".into(),
                    err_code: 7012,
                    err_msg: "not a number".into(),
                }],
            },
        ),
    ];
    let responses = vec![
        RespType::GetResp(GetResp {
            req_path_results: vec![get_resp::RequestedPathResult {
                requested_path: "Device.DeviceInfo.".into(),
                err_code: 0,
                err_msg: String::new(),
                resolved_path_results: vec![get_resp::ResolvedPathResult {
                    resolved_path: "Device.DeviceInfo.".into(),
                    result_params: map(&[("SoftwareVersion", "0.1.0"), ("UpTime", "7")]),
                }],
            }],
        }),
        RespType::GetSupportedDmResp(GetSupportedDmResp {
            req_obj_results: vec![gsdm::RequestedObjectResult {
                req_obj_path: "Device.SoftwareModules.".into(),
                err_code: 0,
                err_msg: String::new(),
                data_model_inst_uri: "urn:broadband-forum-org:tr-181-2-17-0-usp".into(),
                supported_objs: vec![gsdm::SupportedObjectResult {
                    supported_obj_path: "Device.SoftwareModules.DeploymentUnit.{i}.".into(),
                    access: gsdm::ObjAccessType::ObjReadOnly as i32,
                    is_multi_instance: true,
                    supported_commands: vec![gsdm::SupportedCommandResult {
                        command_name: "Update()".into(),
                        input_arg_names: vec!["URL".into()],
                        output_arg_names: vec![],
                        command_type: gsdm::CmdType::CmdAsync as i32,
                    }],
                    supported_events: vec![gsdm::SupportedEventResult {
                        event_name: "DUStateChange!".into(),
                        arg_names: vec!["UUID".into()],
                    }],
                    supported_params: vec![gsdm::SupportedParamResult {
                        param_name: "UUID".into(),
                        access: gsdm::ParamAccessType::ParamReadOnly as i32,
                        value_type: gsdm::ParamValueType::ParamString as i32,
                        value_change: gsdm::ValueChangeType::ValueChangeAllowed as i32,
                    }],
                    divergent_paths: vec![],
                    unique_key_sets: vec![gsdm::SupportedUniqueKeySet {
                        key_names: vec!["UUID".into()],
                    }],
                }],
            }],
        }),
        RespType::GetInstancesResp(GetInstancesResp {
            req_path_results: vec![get_instances_resp::RequestedPathResult {
                requested_path: "Device.SoftwareModules.DeploymentUnit.".into(),
                err_code: 0,
                err_msg: String::new(),
                curr_insts: vec![get_instances_resp::CurrInstance {
                    instantiated_obj_path: "Device.SoftwareModules.DeploymentUnit.1.".into(),
                    unique_keys: map(&[("UUID", "u1")]),
                }],
            }],
        }),
        RespType::SetResp(SetResp {
            updated_obj_results: vec![
                set_resp::UpdatedObjectResult {
                    requested_path: "Device.A.".into(),
                    oper_status: Some(SetSt {
                        oper_status: Some(set_st::OperStatus::OperSuccess(set_st::OperationSuccess {
                            updated_inst_results: vec![set_resp::UpdatedInstanceResult {
                                affected_path: "Device.A.".into(),
                                param_errs: vec![],
                                updated_params: map(&[("X", "1")]),
                            }],
                        })),
                    }),
                },
                set_resp::UpdatedObjectResult {
                    requested_path: "Device.B.".into(),
                    oper_status: Some(SetSt {
                        oper_status: Some(set_st::OperStatus::OperFailure(set_st::OperationFailure {
                            err_code: 7013,
                            err_msg: "read-only".into(),
                            updated_inst_failures: vec![set_resp::UpdatedInstanceFailure {
                                affected_path: "Device.B.".into(),
                                param_errs: vec![set_resp::ParameterError {
                                    param: "Y".into(),
                                    err_code: 7013,
                                    err_msg: "read-only".into(),
                                }],
                            }],
                        })),
                    }),
                },
            ],
        }),
        RespType::AddResp(AddResp {
            created_obj_results: vec![add_resp::CreatedObjectResult {
                requested_path: "Device.LocalAgent.Subscription.".into(),
                oper_status: Some(AddSt {
                    oper_status: Some(add_st::OperStatus::OperSuccess(add_st::OperationSuccess {
                        instantiated_path: "Device.LocalAgent.Subscription.4.".into(),
                        param_errs: vec![add_resp::ParameterError {
                            param: "Enable".into(),
                            err_code: 7012,
                            err_msg: "ignored".into(),
                        }],
                        unique_keys: map(&[("ID", "s4")]),
                    })),
                }),
            }],
        }),
        RespType::DeleteResp(DeleteResp {
            deleted_obj_results: vec![delete_resp::DeletedObjectResult {
                requested_path: "Device.LocalAgent.Subscription.*.".into(),
                oper_status: Some(DelSt {
                    oper_status: Some(del_st::OperStatus::OperSuccess(del_st::OperationSuccess {
                        affected_paths: vec!["Device.LocalAgent.Subscription.4.".into()],
                        unaffected_path_errs: vec![delete_resp::UnaffectedPathError {
                            unaffected_path: "Device.LocalAgent.Subscription.5.".into(),
                            err_code: 7024,
                            err_msg: "in use".into(),
                        }],
                    })),
                }),
            }],
        }),
        RespType::OperateResp(OperateResp {
            operation_results: vec![
                operate_resp::OperationResult::started(
                    "Device.SoftwareModules.InstallDU()",
                    "Device.LocalAgent.Request.1.",
                ),
                operate_resp::OperationResult::sync("Device.Reboot()", Ok(map(&[("Status", "ok")]))),
                operate_resp::OperationResult::sync(
                    "Device.SelfTest()",
                    Err(UspError::new(COMMAND_FAILURE, "failed")),
                ),
            ],
        }),
        RespType::NotifyResp(NotifyResp {
            subscription_id: "sub-1".into(),
        }),
        RespType::GetSupportedProtocolResp(GetSupportedProtocolResp {
            agent_supported_protocol_versions: "1.3,1.4".into(),
        }),
        RespType::RegisterResp(RegisterResp {
            registered_path_results: vec![register_resp::RegisteredPathResult {
                requested_path: "Device.Service.".into(),
                oper_status: Some(register_resp::registered_path_result::OperationStatus {
                    oper_status: Some(
                        register_resp::registered_path_result::operation_status::OperStatus::OperSuccess(
                            register_resp::registered_path_result::operation_status::OperationSuccess {
                                registered_path: "Device.Service.".into(),
                            },
                        ),
                    ),
                }),
            }],
        }),
        RespType::DeregisterResp(DeregisterResp {
            deregistered_path_results: vec![deregister_resp::DeregisteredPathResult {
                requested_path: "Device.Service.".into(),
                oper_status: Some(deregister_resp::deregistered_path_result::OperationStatus {
                    oper_status: Some(
                        deregister_resp::deregistered_path_result::operation_status::OperStatus::OperFailure(
                            deregister_resp::deregistered_path_result::operation_status::OperationFailure {
                                err_code: 7030,
                                err_msg: "not registered".into(),
                            },
                        ),
                    ),
                }),
            }],
        }),
    ];
    for (i, r) in responses.into_iter().enumerate() {
        msgs.push(Msg::response(format!("resp-{i}"), r));
    }
    msgs
}

/// Records of every record type we build or parse (session context included).
pub fn all_records() -> Vec<Record> {
    let mut records: Vec<Record> = all_msgs()
        .iter()
        .map(|m| Record::no_session_msg(AGENT, CONTROLLER, m))
        .collect();
    records.push(Record::mqtt_connect(
        AGENT,
        CONTROLLER,
        MqttVersion::V5,
        "usp/agent/1",
    ));
    records.push(Record::websocket_connect(AGENT, CONTROLLER));
    records.push(Record::disconnect(AGENT, CONTROLLER, "shutting down", 7105));
    let mut session = Record::no_session(AGENT, CONTROLLER, vec![1]);
    session.record_type = Some(record::RecordType::SessionContext(SessionContextRecord {
        session_id: 9,
        sequence_id: 1,
        expected_id: 1,
        retransmit_id: 0,
        payload_sar_state: 0,
        payloadrec_sar_state: 0,
        payload: vec![Msg::get("s-1", ["Device."], 0).encode_to_vec()],
    }));
    records.push(session);
    records
}
