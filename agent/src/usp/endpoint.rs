//! The agent's USP endpoint without a transport: Records in, Records out. `handle_record`
//! decodes a Record with the bounded decoder, checks who sent it (a configured controller,
//! with the transport identity its config names), enforces its role, runs the Msg against the
//! data model and returns the reply; `notifications` and `on_connect` return the Notify Records
//! to send. The daemon's MQTT or WebSocket wiring only moves the bytes, and a test or a fleet
//! simulation can host many endpoints in one process.

use std::collections::{BTreeMap, HashSet};

use cpevisor_usp::errors::*;
use cpevisor_usp::proto::get_supported_dm_resp as gsdm;
use cpevisor_usp::proto::{
    add_resp, delete_resp, get_instances_resp, get_resp, operate_resp, request, response, set_resp,
    AddResp, DeleteResp, Error as UspErrorMsg, GetInstancesResp, GetResp, GetSupportedDmResp,
    GetSupportedProtocolResp, Msg, OperateResp, Record, SetResp,
};
use cpevisor_usp::record::{
    decode_msg, decode_record, encode_record, error_reply, Limits, RecordContent,
};

use super::config::Role;
use super::dm::schema::{Access, Kind};
use super::dm::value_change::ignores_value_change;
use super::dm::{
    Caller, DataModel, Notification, NotifyBody, ObjSettings, OperateOutcome, ParamError,
    RequestError, SupportedFilter,
};
use super::retry::{Pending, Retries, RetryPolicy};

/// A Record to send: (destination endpoint ID, encoded Record).
pub type Outgoing = (String, Vec<u8>);

/// USP versions this agent speaks (GetSupportedProtocol, OnBoardRequest).
pub const SUPPORTED_VERSIONS: &str = "1.3,1.4";
/// How many distinct unknown senders are remembered for log-once purposes.
const MAX_REMEMBERED_STRANGERS: usize = 64;

pub struct Endpoint {
    dm: DataModel,
    limits: Limits,
    next_msg: u64,
    logged_foreign: bool,
    logged_strangers: HashSet<String>,
    /// Notifications sent with send_resp, until their NotifyResp (R-NOT.1, R-NOT.6a).
    retries: Retries,
    /// MQTT: a controller without `identity` counts only on the bare topic (no peer identity).
    unnamed_on_bare_topic_only: bool,
}

fn param_errors<T>(errs: &[ParamError], make: impl Fn(String, u32, String) -> T) -> Vec<T> {
    errs.iter()
        .map(|e| make(e.path.clone(), e.err.code, e.err.message.clone()))
        .collect()
}

fn request_error(e: RequestError) -> UspErrorMsg {
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

fn settings<P>(
    obj_path: &str,
    params: &[P],
    get: impl Fn(&P) -> (String, String, bool),
) -> ObjSettings {
    ObjSettings {
        obj_path: obj_path.to_string(),
        params: params.iter().map(get).collect(),
    }
}

impl Endpoint {
    pub fn new(dm: DataModel) -> Endpoint {
        Endpoint {
            dm,
            limits: Limits::default(),
            next_msg: 0,
            logged_foreign: false,
            logged_strangers: HashSet::new(),
            retries: Retries::default(),
            unnamed_on_bare_topic_only: false,
        }
    }

    /// MQTT, where the identity is a topic suffix: else a client that may write its own
    /// `<topic>/<CN>` could put an identity-less controller's EndpointID in `from_id`.
    pub fn bind_unnamed_controllers_to_bare_topic(&mut self) {
        self.unnamed_on_bare_topic_only = true;
    }

    /// The retry schedule of notifications sent with send_resp (R-NOT.1's m and k).
    pub fn set_retry_policy(&mut self, policy: RetryPolicy) {
        self.retries.policy = policy;
    }

    /// The WebSocket Connect Record R-MTP.6 asks for after every (re)connect, to the controller
    /// on the other end (`peer`, when its handshake named it) or to each enabled controller.
    pub fn websocket_connect_records(&self, peer: Option<&str>) -> Vec<Outgoing> {
        let own = self.endpoint_id();
        self.dm
            .config()
            .controllers
            .iter()
            .filter(|c| peer.is_none_or(|p| p == c.endpoint_id))
            .filter(|c| self.dm.controller_enabled(&c.endpoint_id))
            .filter_map(|c| {
                let rec = Record::websocket_connect(&c.endpoint_id, own);
                encode_record(&rec, &self.limits)
                    .ok()
                    .map(|b| (c.endpoint_id.clone(), b))
            })
            .collect()
    }

    /// Notifications waiting for their NotifyResp.
    pub fn pending_notifications(&self) -> &[Pending] {
        self.retries.pending()
    }

    /// The MQTT Connect Records R-MTP.6 asks for after every (re)connect: one to each enabled
    /// controller, naming the topic we subscribed to. Sent before any other Record (R-MTP.8).
    pub fn mqtt_connect_records(&self, subscribed_topic: &str) -> Vec<Outgoing> {
        use cpevisor_usp::proto::mqtt_connect_record::MqttVersion;
        let own = self.endpoint_id();
        self.dm
            .config()
            .controllers
            .iter()
            .filter(|c| self.dm.controller_enabled(&c.endpoint_id))
            .filter_map(|c| {
                let rec =
                    Record::mqtt_connect(&c.endpoint_id, own, MqttVersion::V5, subscribed_topic);
                encode_record(&rec, &self.limits)
                    .ok()
                    .map(|b| (c.endpoint_id.clone(), b))
            })
            .collect()
    }

    pub fn endpoint_id(&self) -> &str {
        &self.dm.config().endpoint_id
    }

    pub fn data_model(&mut self) -> &mut DataModel {
        &mut self.dm
    }

    fn msg_id(&mut self, what: &str) -> String {
        self.next_msg += 1;
        format!("cpv-{what}-{}", self.next_msg)
    }

    /// Encodes `msg` for `to`; a reply too large for the limits becomes a 7005 Error.
    fn record(&self, to: &str, msg: &Msg) -> Option<Outgoing> {
        let own = self.endpoint_id();
        let rec = Record::no_session_msg(to, own, msg);
        match encode_record(&rec, &self.limits) {
            Ok(b) => Some((to.to_string(), b)),
            Err(e) => {
                crate::log_warn!("usp: reply to {to} dropped: {e}");
                let err = Msg::from_usp_error(msg.msg_id(), &e);
                let rec = Record::no_session_msg(to, own, &err);
                encode_record(&rec, &self.limits)
                    .ok()
                    .map(|b| (to.to_string(), b))
            }
        }
    }

    /// The configured controller that sent a Record, checked against the transport identity.
    fn caller(&mut self, from_id: &str, peer_identity: Option<&str>) -> Option<Caller> {
        let c = self
            .dm
            .config()
            .controllers
            .iter()
            .find(|c| c.endpoint_id == from_id)
            .cloned();
        let ok = match &c {
            Some(c) => {
                let identity_ok = match c.identity.as_deref() {
                    Some(want) => peer_identity == Some(want),
                    None => peer_identity.is_none() || !self.unnamed_on_bare_topic_only,
                };
                identity_ok && self.dm.controller_enabled(&c.endpoint_id)
            }
            None => false,
        };
        if !ok {
            if self.logged_strangers.len() < MAX_REMEMBERED_STRANGERS
                && self.logged_strangers.insert(from_id.to_string())
            {
                crate::log_warn!(
                    "usp: ignoring records from {from_id:?} (identity {peer_identity:?}): not a \
                     configured controller with that identity"
                );
            }
            return None;
        }
        let c = c.expect("checked");
        Some(Caller {
            endpoint_id: c.endpoint_id,
            role: c.role,
        })
    }

    /// Handles one received Record; returns the Records to send back (none, or one reply).
    /// `peer_identity` is what the transport authenticated (the client certificate's CN).
    pub fn handle_record(&mut self, bytes: &[u8], peer_identity: Option<&str>) -> Vec<Outgoing> {
        let own = self.endpoint_id().to_string();
        let record = match decode_record(bytes, &own, &self.limits) {
            Ok(r) => r,
            Err(e) => return self.refuse_record(bytes, peer_identity, &e),
        };
        let Some(caller) = self.caller(&record.from_id, peer_identity) else {
            return Vec::new();
        };
        let payload = match record.content() {
            Ok(RecordContent::Msg(p)) => p,
            Ok(_) => return Vec::new(), // Connect and Disconnect Records need no answer.
            Err(e) => return self.refuse_record(bytes, peer_identity, &e),
        };
        let msg = match decode_msg(payload, &self.limits) {
            Ok(m) => m,
            Err(e) => return self.refuse_record(bytes, peer_identity, &e),
        };
        let reply = self.dispatch(&caller, &msg);
        reply
            .and_then(|m| self.record(&caller.endpoint_id, &m))
            .into_iter()
            .collect()
    }

    /// The Error Record R-MTP.5 asks for, sent only to a configured controller; a Record for
    /// another endpoint is dropped (logged once).
    fn refuse_record(
        &mut self,
        bytes: &[u8],
        peer_identity: Option<&str>,
        e: &UspError,
    ) -> Vec<Outgoing> {
        let own = self.endpoint_id().to_string();
        let Some(reply) = error_reply(bytes, &own, &self.limits, e) else {
            if e.message.contains("is not this endpoint") {
                if !self.logged_foreign {
                    self.logged_foreign = true;
                    crate::log_warn!("usp: dropping a record for another endpoint: {e}");
                }
            } else {
                crate::log_debug!("usp: record ignored: {e}");
            }
            return Vec::new();
        };
        if self.caller(&reply.to_id, peer_identity).is_none() {
            return Vec::new();
        }
        match encode_record(&reply, &self.limits) {
            Ok(b) => vec![(reply.to_id.clone(), b)],
            Err(_) => Vec::new(),
        }
    }

    fn dispatch(&mut self, caller: &Caller, msg: &Msg) -> Option<Msg> {
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
                        response::RespType::OperateResp(OperateResp {
                            operation_results: results
                                .into_iter()
                                .map(|r| match r.outcome {
                                    OperateOutcome::Request(p) => {
                                        operate_resp::OperationResult::started(
                                            r.executed_command,
                                            p,
                                        )
                                    }
                                    OperateOutcome::Output(out) => {
                                        operate_resp::OperationResult::sync(
                                            r.executed_command,
                                            Ok(out),
                                        )
                                    }
                                    OperateOutcome::Failure(e) => {
                                        operate_resp::OperationResult::sync(
                                            r.executed_command,
                                            Err(e),
                                        )
                                    }
                                })
                                .collect(),
                        })
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

    fn get(&mut self, paths: &[String], max_depth: u32) -> GetResp {
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

    fn get_instances(&mut self, paths: &[String], first_level_only: bool) -> GetInstancesResp {
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

    fn supported(&mut self, g: &cpevisor_usp::proto::GetSupportedDm) -> GetSupportedDmResp {
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

    fn notify_records(&mut self, notes: Vec<Notification>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for n in notes {
            let onboard = matches!(n.body, NotifyBody::OnBoardRequest { .. });
            if onboard && self.retries.onboard_pending(&n.to) {
                continue; // the one already sent is retried (and was resent on reconnect)
            }
            let id = self.msg_id("notify");
            let sent_id = id.clone();
            let msg = match n.body {
                NotifyBody::Event {
                    obj_path,
                    event_name,
                    params,
                } => Msg::notify_event(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    obj_path,
                    event_name,
                    params,
                ),
                NotifyBody::ValueChange {
                    param_path,
                    param_value,
                } => Msg::notify_value_change(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    param_path,
                    param_value,
                ),
                NotifyBody::ObjectCreation {
                    obj_path,
                    unique_keys,
                } => Msg::notify_object_creation(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    obj_path,
                    unique_keys,
                ),
                NotifyBody::ObjectDeletion { obj_path } => {
                    Msg::notify_object_deletion(id, n.subscription_id, n.send_resp, obj_path)
                }
                NotifyBody::OperationComplete {
                    obj_path,
                    command_name,
                    command_key,
                    result,
                } => Msg::operation_complete(
                    id,
                    n.subscription_id,
                    n.send_resp,
                    obj_path,
                    command_name,
                    command_key,
                    result,
                ),
                NotifyBody::OnBoardRequest {
                    oui,
                    product_class,
                    serial_number,
                    agent_supported_protocol_versions,
                } => Msg::on_board_request(
                    id,
                    oui,
                    product_class,
                    serial_number,
                    agent_supported_protocol_versions,
                ),
            };
            let Some(rec) = self.record(&n.to, &msg) else {
                continue;
            };
            if n.send_resp && !self.retries.track(&n.to, &sent_id, onboard, rec.1.clone()) {
                crate::log_warn!(
                    "usp: {} notifications await a NotifyResp; {sent_id} to {} is sent once",
                    super::retry::MAX_PENDING,
                    n.to
                );
            }
            out.push(rec);
        }
        out
    }

    /// Notify Records for what happened since the last call (call it often, or when the
    /// agent's events wake the transport loop).
    pub fn notifications(&mut self) -> Vec<Outgoing> {
        let notes = self.dm.poll();
        let mut out = self.notify_records(notes);
        out.extend(self.retries.due(std::time::Instant::now()));
        out
    }

    /// Notify Records to send when the transport has (re)connected: `Boot!` once per start,
    /// the OnBoardRequest to each controller until it answers one, and every notification
    /// still waiting for its NotifyResp (the broker may have lost it).
    pub fn on_connect(&mut self) -> Vec<Outgoing> {
        let mut out = self.retries.resend_all(std::time::Instant::now());
        let notes = self.dm.on_connect();
        out.extend(self.notify_records(notes));
        out
    }
}

fn set_resp_of(results: Vec<super::dm::SetResult>) -> SetResp {
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

fn add_resp_of(results: Vec<super::dm::AddResult>) -> AddResp {
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

fn delete_resp_of(results: Vec<super::dm::DeleteResult>) -> DeleteResp {
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
