//! Set responses, and what Set and Add share: settings from the request, per-parameter
//! errors, and the Error message of a refused request.

use std::collections::BTreeMap;

use cpevisor_usp::proto::{set_resp, Error as UspErrorMsg, SetResp};

use crate::usp::dm::{ObjSettings, ParamError, RequestError};

pub(super) fn param_errors<T>(
    errs: &[ParamError],
    make: impl Fn(String, u32, String) -> T,
) -> Vec<T> {
    errs.iter()
        .map(|e| make(e.path.clone(), e.err.code, e.err.message.clone()))
        .collect()
}

pub(super) fn request_error(e: RequestError) -> UspErrorMsg {
    UspErrorMsg {
        err_code: e.err.code,
        err_msg: e.err.message,
        param_errs: param_errors(&e.param_errs, |param_path, err_code, err_msg| {
            cpevisor_usp::proto::error::ParamError {
                param_path,
                err_code,
                err_msg,
            }
        }),
    }
}

pub(super) fn settings<P>(
    obj_path: &str,
    params: &[P],
    get: impl Fn(&P) -> (String, String, bool),
) -> ObjSettings {
    ObjSettings {
        obj_path: obj_path.to_string(),
        params: params.iter().map(get).collect(),
    }
}

pub(super) fn set_resp_of(results: Vec<crate::usp::dm::SetResult>) -> SetResp {
    use set_resp::updated_object_result::{operation_status as os, OperationStatus};
    let perr = |errs: &[ParamError]| {
        param_errors(errs, |param, err_code, err_msg| set_resp::ParameterError {
            param: param.rsplit('.').next().unwrap_or_default().to_string(),
            err_code,
            err_msg,
        })
    };
    SetResp {
        updated_obj_results: results
            .into_iter()
            .map(|r| set_resp::UpdatedObjectResult {
                requested_path: r.requested_path,
                oper_status: Some(OperationStatus {
                    oper_status: Some(match r.outcome {
                        Ok(insts) => os::OperStatus::OperSuccess(os::OperationSuccess {
                            updated_inst_results: insts
                                .into_iter()
                                .map(|i| set_resp::UpdatedInstanceResult {
                                    affected_path: i.affected_path,
                                    param_errs: perr(&i.param_errs),
                                    updated_params: i
                                        .updated
                                        .into_iter()
                                        .collect::<BTreeMap<_, _>>(),
                                })
                                .collect(),
                        }),
                        Err((e, errs)) => os::OperStatus::OperFailure(os::OperationFailure {
                            err_code: e.code,
                            err_msg: e.message,
                            updated_inst_failures: if errs.is_empty() {
                                Vec::new()
                            } else {
                                vec![set_resp::UpdatedInstanceFailure {
                                    affected_path: errs[0]
                                        .path
                                        .rsplit_once('.')
                                        .map(|(o, _)| format!("{o}."))
                                        .unwrap_or_default(),
                                    param_errs: perr(&errs),
                                }]
                            },
                        }),
                    }),
                }),
            })
            .collect(),
    }
}
