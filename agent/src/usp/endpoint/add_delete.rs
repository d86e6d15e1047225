//! Add and Delete responses from the data model's results.

use cpevisor_usp::proto::{add_resp, delete_resp, AddResp, DeleteResp};

use super::set::param_errors;

pub(super) fn add_resp_of(results: Vec<crate::usp::dm::AddResult>) -> AddResp {
    use add_resp::created_object_result::{operation_status as os, OperationStatus};
    AddResp {
        created_obj_results: results
            .into_iter()
            .map(|r| add_resp::CreatedObjectResult {
                requested_path: r.requested_path,
                oper_status: Some(OperationStatus {
                    oper_status: Some(match r.outcome {
                        Ok(c) => os::OperStatus::OperSuccess(os::OperationSuccess {
                            instantiated_path: c.instantiated_path,
                            param_errs: param_errors(&c.param_errs, |param, err_code, err_msg| {
                                add_resp::ParameterError {
                                    param: param.rsplit('.').next().unwrap_or_default().to_string(),
                                    err_code,
                                    err_msg,
                                }
                            }),
                            unique_keys: c.unique_keys.into_iter().collect(),
                        }),
                        Err((e, _)) => os::OperStatus::OperFailure(os::OperationFailure {
                            err_code: e.code,
                            err_msg: e.message,
                        }),
                    }),
                }),
            })
            .collect(),
    }
}

pub(super) fn delete_resp_of(results: Vec<crate::usp::dm::DeleteResult>) -> DeleteResp {
    use delete_resp::deleted_object_result::{operation_status as os, OperationStatus};
    DeleteResp {
        deleted_obj_results: results
            .into_iter()
            .map(|r| delete_resp::DeletedObjectResult {
                requested_path: r.requested_path,
                oper_status: Some(OperationStatus {
                    oper_status: Some(match r.outcome {
                        Ok(paths) => os::OperStatus::OperSuccess(os::OperationSuccess {
                            affected_paths: paths,
                            unaffected_path_errs: Vec::new(),
                        }),
                        Err(e) => os::OperStatus::OperFailure(os::OperationFailure {
                            err_code: e.code,
                            err_msg: e.message,
                        }),
                    }),
                }),
            })
            .collect(),
    }
}
