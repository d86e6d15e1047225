//! Operate responses: a request started (asynchronous), or the output or failure of a
//! synchronous command.

use cpevisor_usp::proto::{operate_resp, OperateResp};

use crate::usp::dm::{OperateOutcome, OperateResult};

/// The OperateResp for the data model's results (sent only when the request asks for it).
pub(super) fn operate_resp_of(results: Vec<OperateResult>) -> OperateResp {
    OperateResp {
        operation_results: results
            .into_iter()
            .map(|r| match r.outcome {
                OperateOutcome::Request(p) => {
                    operate_resp::OperationResult::started(r.executed_command, p)
                }
                OperateOutcome::Output(out) => {
                    operate_resp::OperationResult::sync(r.executed_command, Ok(out))
                }
                OperateOutcome::Failure(e) => {
                    operate_resp::OperationResult::sync(r.executed_command, Err(e))
                }
            })
            .collect(),
    }
}
