//! One received Msg to its handler: NotifyResp and Error end here, writes need FullAccess,
//! each request kind goes to its data model call and its response builder.

use cpevisor_usp::errors::*;
use cpevisor_usp::proto::{request, response, GetSupportedProtocolResp, Msg};

use crate::usp::config::Role;
use crate::usp::dm::{Caller, ObjSettings};

use super::add_delete::{add_resp_of, delete_resp_of};
use super::operate::operate_resp_of;
use super::record::{Endpoint, SUPPORTED_VERSIONS};
use super::set::{request_error, set_resp_of, settings};

impl Endpoint {
    pub(super) fn dispatch(&mut self, caller: &Caller, msg: &Msg) -> Option<Msg> {
        let id = msg.msg_id().to_string();
        let Some(req) = msg.request_body() else {
            // A NotifyResp ends the retries of its Notify; for the OnBoardRequest it is what
            // makes the controller onboarded (R-NOT.6a). Responses and Errors get no answer.
            if let Some(response::RespType::NotifyResp(_)) = msg.response_body() {
                if let Some(p) = self.retries.answered(&caller.endpoint_id, &id) {
                    if p.onboard {
                        self.dm.mark_onboarded(&caller.endpoint_id);
                    }
                }
            }
            if let Some(e) = msg.error_body() {
                crate::log_info!(
                    "usp: {} reported error {}: {}",
                    caller.endpoint_id,
                    e.err_code,
                    e.err_msg
                );
            }
            return None;
        };
        let writes = matches!(
            req,
            request::ReqType::Set(_)
                | request::ReqType::Add(_)
                | request::ReqType::Delete(_)
                | request::ReqType::Operate(_)
        );
        if writes && caller.role != Role::FullAccess {
            return Some(Msg::from_usp_error(
                id,
                &UspError::new(
                    PERMISSION_DENIED,
                    format!(
                        "controller {} has role {}: it may only read",
                        caller.endpoint_id,
                        caller.role.as_str()
                    ),
                ),
            ));
        }
        let resp = match req {
            request::ReqType::Get(g) => {
                response::RespType::GetResp(self.get(&g.param_paths, g.max_depth))
            }
            request::ReqType::GetInstances(g) => response::RespType::GetInstancesResp(
                self.get_instances(&g.obj_paths, g.first_level_only),
            ),
            request::ReqType::GetSupportedDm(g) => {
                response::RespType::GetSupportedDmResp(self.supported(g))
            }
            request::ReqType::GetSupportedProtocol(_) => {
                response::RespType::GetSupportedProtocolResp(GetSupportedProtocolResp {
                    agent_supported_protocol_versions: SUPPORTED_VERSIONS.to_string(),
                })
            }
            request::ReqType::Set(s) => {
                let objs: Vec<ObjSettings> = s
                    .update_objs
                    .iter()
                    .map(|o| {
                        settings(&o.obj_path, &o.param_settings, |p| {
                            (p.param.clone(), p.value.clone(), p.required)
                        })
                    })
                    .collect();
                match self.dm.set(&objs, s.allow_partial) {
                    Ok(r) => response::RespType::SetResp(set_resp_of(r)),
                    Err(e) => return Some(Msg::error(id, request_error(e))),
                }
            }
            request::ReqType::Add(a) => {
                let objs: Vec<ObjSettings> = a
                    .create_objs
                    .iter()
                    .map(|o| {
                        settings(&o.obj_path, &o.param_settings, |p| {
                            (p.param.clone(), p.value.clone(), p.required)
                        })
                    })
                    .collect();
                match self.dm.add(caller, &objs, a.allow_partial) {
                    Ok(r) => response::RespType::AddResp(add_resp_of(r)),
                    Err(e) => return Some(Msg::error(id, request_error(e))),
                }
            }
            request::ReqType::Delete(d) => match self.dm.delete(&d.obj_paths, d.allow_partial) {
                Ok(r) => response::RespType::DeleteResp(delete_resp_of(r)),
                Err(e) => return Some(Msg::error(id, request_error(e))),
            },
            request::ReqType::Operate(o) => {
                match self
                    .dm
                    .operate(caller, &o.command, &o.command_key, &o.input_args)
                {
                    Ok(results) => {
                        if !o.send_resp {
                            return None;
                        }
                        response::RespType::OperateResp(operate_resp_of(results))
                    }
                    Err(e) => return Some(Msg::from_usp_error(id, &e)),
                }
            }
            request::ReqType::Notify(_)
            | request::ReqType::Register(_)
            | request::ReqType::Deregister(_) => {
                return Some(Msg::from_usp_error(
                    id,
                    &UspError::new(
                        MESSAGE_NOT_SUPPORTED,
                        "this agent takes no Notify, Register or Deregister",
                    ),
                ))
            }
        };
        Some(Msg::response(id, resp))
    }
}
