//! Builders and accessors for [`Msg`] and [`Record`]. Every Msg built here carries a header
//! whose `msg_type` matches its body, so a peer never sees the two disagree.

use std::collections::BTreeMap;

use prost::Message;

use super::header::MsgType;
use super::{
    body, notify, operate_resp, record, request, response, Body, Delete, DisconnectRecord, Error,
    Get, GetInstances, GetSupportedDm, GetSupportedProtocol, Header, MqttConnectRecord, Msg,
    NoSessionContextRecord, Notify, Operate, Record, Request, Response, Set,
    WebSocketConnectRecord, USP_VERSION,
};
use crate::errors::UspError;

impl request::ReqType {
    /// The header `msg_type` this request travels under.
    pub fn msg_type(&self) -> MsgType {
        use request::ReqType as R;
        match self {
            R::Get(_) => MsgType::Get,
            R::GetSupportedDm(_) => MsgType::GetSupportedDm,
            R::GetInstances(_) => MsgType::GetInstances,
            R::Set(_) => MsgType::Set,
            R::Add(_) => MsgType::Add,
            R::Delete(_) => MsgType::Delete,
            R::Operate(_) => MsgType::Operate,
            R::Notify(_) => MsgType::Notify,
            R::GetSupportedProtocol(_) => MsgType::GetSupportedProto,
            R::Register(_) => MsgType::Register,
            R::Deregister(_) => MsgType::Deregister,
        }
    }
}

impl response::RespType {
    /// The header `msg_type` this response travels under.
    pub fn msg_type(&self) -> MsgType {
        use response::RespType as R;
        match self {
            R::GetResp(_) => MsgType::GetResp,
            R::GetSupportedDmResp(_) => MsgType::GetSupportedDmResp,
            R::GetInstancesResp(_) => MsgType::GetInstancesResp,
            R::SetResp(_) => MsgType::SetResp,
            R::AddResp(_) => MsgType::AddResp,
            R::DeleteResp(_) => MsgType::DeleteResp,
            R::OperateResp(_) => MsgType::OperateResp,
            R::NotifyResp(_) => MsgType::NotifyResp,
            R::GetSupportedProtocolResp(_) => MsgType::GetSupportedProtoResp,
            R::RegisterResp(_) => MsgType::RegisterResp,
            R::DeregisterResp(_) => MsgType::DeregisterResp,
        }
    }
}

impl MsgType {
    /// The response type answering this request type; `None` for responses and Error.
    pub fn response_type(self) -> Option<MsgType> {
        use MsgType as T;
        Some(match self {
            T::Get => T::GetResp,
            T::GetSupportedDm => T::GetSupportedDmResp,
            T::GetInstances => T::GetInstancesResp,
            T::Set => T::SetResp,
            T::Add => T::AddResp,
            T::Delete => T::DeleteResp,
            T::Operate => T::OperateResp,
            T::Notify => T::NotifyResp,
            T::GetSupportedProto => T::GetSupportedProtoResp,
            T::Register => T::RegisterResp,
            T::Deregister => T::DeregisterResp,
            _ => return None,
        })
    }

    /// Whether this type is a request (what an agent is asked to act on).
    pub fn is_request(self) -> bool {
        self.response_type().is_some()
    }
}

impl From<&UspError> for Error {
    fn from(e: &UspError) -> Self {
        Error {
            err_code: e.code,
            err_msg: e.message.clone(),
            param_errs: Vec::new(),
        }
    }
}

fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

impl Msg {
    fn with_body(msg_id: impl Into<String>, msg_type: MsgType, msg_body: body::MsgBody) -> Msg {
        Msg {
            header: Some(Header {
                msg_id: msg_id.into(),
                msg_type: msg_type as i32,
            }),
            body: Some(Body {
                msg_body: Some(msg_body),
            }),
        }
    }

    /// A request Msg; the header type follows the body.
    pub fn request(msg_id: impl Into<String>, req: request::ReqType) -> Msg {
        let msg_type = req.msg_type();
        Msg::with_body(
            msg_id,
            msg_type,
            body::MsgBody::Request(Request {
                req_type: Some(req),
            }),
        )
    }

    /// A response Msg; `msg_id` must be the request's (R-MSG.9).
    pub fn response(msg_id: impl Into<String>, resp: response::RespType) -> Msg {
        let msg_type = resp.msg_type();
        Msg::with_body(
            msg_id,
            msg_type,
            body::MsgBody::Response(Response {
                resp_type: Some(resp),
            }),
        )
    }

    /// An Error Msg answering the request `msg_id`.
    pub fn error(msg_id: impl Into<String>, error: Error) -> Msg {
        Msg::with_body(msg_id, MsgType::Error, body::MsgBody::Error(error))
    }

    /// An Error Msg carrying `e`'s code and message.
    pub fn from_usp_error(msg_id: impl Into<String>, e: &UspError) -> Msg {
        Msg::error(msg_id, Error::from(e))
    }

    /// Get: `max_depth` 0 means unlimited.
    pub fn get<S: Into<String>>(
        msg_id: impl Into<String>,
        paths: impl IntoIterator<Item = S>,
        max_depth: u32,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::Get(Get {
                param_paths: strings(paths),
                max_depth,
            }),
        )
    }

    /// GetSupportedDM asking for everything (commands, events, params, unique key sets).
    pub fn get_supported_dm<S: Into<String>>(
        msg_id: impl Into<String>,
        obj_paths: impl IntoIterator<Item = S>,
        first_level_only: bool,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::GetSupportedDm(GetSupportedDm {
                obj_paths: strings(obj_paths),
                first_level_only,
                return_commands: true,
                return_events: true,
                return_params: true,
                return_unique_key_sets: true,
            }),
        )
    }

    /// GetInstances.
    pub fn get_instances<S: Into<String>>(
        msg_id: impl Into<String>,
        obj_paths: impl IntoIterator<Item = S>,
        first_level_only: bool,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::GetInstances(GetInstances {
                obj_paths: strings(obj_paths),
                first_level_only,
            }),
        )
    }

    /// GetSupportedProtocol; `versions` is comma-separated ("1.3,1.4").
    pub fn get_supported_protocol(msg_id: impl Into<String>, versions: impl Into<String>) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::GetSupportedProtocol(GetSupportedProtocol {
                controller_supported_protocol_versions: versions.into(),
            }),
        )
    }

    /// Set.
    pub fn set(
        msg_id: impl Into<String>,
        allow_partial: bool,
        update_objs: Vec<super::set::UpdateObject>,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::Set(Set {
                allow_partial,
                update_objs,
            }),
        )
    }

    /// Add.
    pub fn add(
        msg_id: impl Into<String>,
        allow_partial: bool,
        create_objs: Vec<super::add::CreateObject>,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::Add(super::Add {
                allow_partial,
                create_objs,
            }),
        )
    }

    /// Delete.
    pub fn delete<S: Into<String>>(
        msg_id: impl Into<String>,
        allow_partial: bool,
        obj_paths: impl IntoIterator<Item = S>,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::Delete(Delete {
                allow_partial,
                obj_paths: strings(obj_paths),
            }),
        )
    }

    /// Operate. The agent answers a synchronous command with its output, an asynchronous one
    /// with the path of its `Request` object and later a `Notify` OperationComplete.
    pub fn operate(
        msg_id: impl Into<String>,
        command: impl Into<String>,
        command_key: impl Into<String>,
        send_resp: bool,
        input_args: BTreeMap<String, String>,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::Operate(Operate {
                command: command.into(),
                command_key: command_key.into(),
                send_resp,
                input_args,
            }),
        )
    }

    /// Notify with any notification.
    pub fn notify(
        msg_id: impl Into<String>,
        subscription_id: impl Into<String>,
        send_resp: bool,
        notification: notify::Notification,
    ) -> Msg {
        Msg::request(
            msg_id,
            request::ReqType::Notify(Notify {
                subscription_id: subscription_id.into(),
                send_resp,
                notification: Some(notification),
            }),
        )
    }

    /// Notify Event, e.g. `Device.SoftwareModules.` / `DUStateChange!`.
    pub fn notify_event(
        msg_id: impl Into<String>,
        subscription_id: impl Into<String>,
        send_resp: bool,
        obj_path: impl Into<String>,
        event_name: impl Into<String>,
        params: BTreeMap<String, String>,
    ) -> Msg {
        Msg::notify(
            msg_id,
            subscription_id,
            send_resp,
            notify::Notification::Event(notify::Event {
                obj_path: obj_path.into(),
                event_name: event_name.into(),
                params,
            }),
        )
    }

    /// Notify ValueChange.
    pub fn notify_value_change(
        msg_id: impl Into<String>,
        subscription_id: impl Into<String>,
        send_resp: bool,
        param_path: impl Into<String>,
        param_value: impl Into<String>,
    ) -> Msg {
        Msg::notify(
            msg_id,
            subscription_id,
            send_resp,
            notify::Notification::ValueChange(notify::ValueChange {
                param_path: param_path.into(),
                param_value: param_value.into(),
            }),
        )
    }

    /// Notify ObjectCreation.
    pub fn notify_object_creation(
        msg_id: impl Into<String>,
        subscription_id: impl Into<String>,
        send_resp: bool,
        obj_path: impl Into<String>,
        unique_keys: BTreeMap<String, String>,
    ) -> Msg {
        Msg::notify(
            msg_id,
            subscription_id,
            send_resp,
            notify::Notification::ObjCreation(notify::ObjectCreation {
                obj_path: obj_path.into(),
                unique_keys,
            }),
        )
    }

    /// Notify ObjectDeletion.
    pub fn notify_object_deletion(
        msg_id: impl Into<String>,
        subscription_id: impl Into<String>,
        send_resp: bool,
        obj_path: impl Into<String>,
    ) -> Msg {
        Msg::notify(
            msg_id,
            subscription_id,
            send_resp,
            notify::Notification::ObjDeletion(notify::ObjectDeletion {
                obj_path: obj_path.into(),
            }),
        )
    }

    /// Notify OperationComplete: the end of an asynchronous command, with its output
    /// arguments or the error it failed with.
    #[allow(clippy::too_many_arguments)]
    pub fn operation_complete(
        msg_id: impl Into<String>,
        subscription_id: impl Into<String>,
        send_resp: bool,
        obj_path: impl Into<String>,
        command_name: impl Into<String>,
        command_key: impl Into<String>,
        result: Result<BTreeMap<String, String>, UspError>,
    ) -> Msg {
        use notify::operation_complete::{CommandFailure, OperationResp, OutputArgs};
        let operation_resp = match result {
            Ok(output_args) => OperationResp::ReqOutputArgs(OutputArgs { output_args }),
            Err(e) => OperationResp::CmdFailure(CommandFailure {
                err_code: e.code,
                err_msg: e.message,
            }),
        };
        Msg::notify(
            msg_id,
            subscription_id,
            send_resp,
            notify::Notification::OperComplete(notify::OperationComplete {
                obj_path: obj_path.into(),
                command_name: command_name.into(),
                command_key: command_key.into(),
                operation_resp: Some(operation_resp),
            }),
        )
    }

    /// Notify OnBoardRequest (sent with `send_resp` true: the controller must answer).
    pub fn on_board_request(
        msg_id: impl Into<String>,
        oui: impl Into<String>,
        product_class: impl Into<String>,
        serial_number: impl Into<String>,
        agent_supported_protocol_versions: impl Into<String>,
    ) -> Msg {
        Msg::notify(
            msg_id,
            "",
            true,
            notify::Notification::OnBoardReq(notify::OnBoardRequest {
                oui: oui.into(),
                product_class: product_class.into(),
                serial_number: serial_number.into(),
                agent_supported_protocol_versions: agent_supported_protocol_versions.into(),
            }),
        )
    }

    /// The header's msg_id ("" when the header is missing).
    pub fn msg_id(&self) -> &str {
        self.header.as_ref().map_or("", |h| h.msg_id.as_str())
    }

    /// The header's msg_type; `None` when the header is missing or the value is not in the
    /// schema.
    pub fn msg_type(&self) -> Option<MsgType> {
        self.header
            .as_ref()
            .and_then(|h| MsgType::try_from(h.msg_type).ok())
    }

    /// The type the body actually holds (what R-MSG.10 says to trust over the header).
    pub fn body_msg_type(&self) -> Option<MsgType> {
        match self.body.as_ref()?.msg_body.as_ref()? {
            body::MsgBody::Request(r) => r.req_type.as_ref().map(request::ReqType::msg_type),
            body::MsgBody::Response(r) => r.resp_type.as_ref().map(response::RespType::msg_type),
            body::MsgBody::Error(_) => Some(MsgType::Error),
        }
    }

    /// The request body, if this Msg is a request.
    pub fn request_body(&self) -> Option<&request::ReqType> {
        match self.body.as_ref()?.msg_body.as_ref()? {
            body::MsgBody::Request(r) => r.req_type.as_ref(),
            _ => None,
        }
    }

    /// The response body, if this Msg is a response.
    pub fn response_body(&self) -> Option<&response::RespType> {
        match self.body.as_ref()?.msg_body.as_ref()? {
            body::MsgBody::Response(r) => r.resp_type.as_ref(),
            _ => None,
        }
    }

    /// The Error body, if this Msg is an Error.
    pub fn error_body(&self) -> Option<&Error> {
        match self.body.as_ref()?.msg_body.as_ref()? {
            body::MsgBody::Error(e) => Some(e),
            _ => None,
        }
    }
}

impl operate_resp::OperationResult {
    /// A synchronous command's result: its output arguments or its failure.
    pub fn sync(
        executed_command: impl Into<String>,
        result: Result<BTreeMap<String, String>, UspError>,
    ) -> Self {
        use operate_resp::operation_result::{CommandFailure, OperationResp, OutputArgs};
        let resp = match result {
            Ok(output_args) => OperationResp::ReqOutputArgs(OutputArgs { output_args }),
            Err(e) => OperationResp::CmdFailure(CommandFailure {
                err_code: e.code,
                err_msg: e.message,
            }),
        };
        operate_resp::OperationResult {
            executed_command: executed_command.into(),
            operation_resp: Some(resp),
        }
    }

    /// An asynchronous command's acknowledgement: the path of its `Request.{i}.` object.
    pub fn started(executed_command: impl Into<String>, req_obj_path: impl Into<String>) -> Self {
        operate_resp::OperationResult {
            executed_command: executed_command.into(),
            operation_resp: Some(operate_resp::operation_result::OperationResp::ReqObjPath(
                req_obj_path.into(),
            )),
        }
    }
}

impl Record {
    fn envelope(
        to_id: impl Into<String>,
        from_id: impl Into<String>,
        t: record::RecordType,
    ) -> Self {
        Record {
            version: USP_VERSION.to_string(),
            to_id: to_id.into(),
            from_id: from_id.into(),
            payload_security: record::PayloadSecurity::Plaintext as i32,
            mac_signature: Vec::new(),
            sender_cert: Vec::new(),
            record_type: Some(t),
        }
    }

    /// A no-session-context Record carrying an encoded Msg.
    pub fn no_session(to_id: impl Into<String>, from_id: impl Into<String>, msg: Vec<u8>) -> Self {
        Record::envelope(
            to_id,
            from_id,
            record::RecordType::NoSessionContext(NoSessionContextRecord { payload: msg }),
        )
    }

    /// A no-session-context Record carrying `msg`, encoded here.
    pub fn no_session_msg(to_id: impl Into<String>, from_id: impl Into<String>, msg: &Msg) -> Self {
        Record::no_session(to_id, from_id, msg.encode_to_vec())
    }

    /// The MQTT Connect Record an agent sends after connecting to the broker (R-MTP.6).
    pub fn mqtt_connect(
        to_id: impl Into<String>,
        from_id: impl Into<String>,
        version: super::mqtt_connect_record::MqttVersion,
        subscribed_topic: impl Into<String>,
    ) -> Self {
        Record::envelope(
            to_id,
            from_id,
            record::RecordType::MqttConnect(MqttConnectRecord {
                version: version as i32,
                subscribed_topic: subscribed_topic.into(),
            }),
        )
    }

    /// The WebSocket Connect Record.
    pub fn websocket_connect(to_id: impl Into<String>, from_id: impl Into<String>) -> Self {
        Record::envelope(
            to_id,
            from_id,
            record::RecordType::WebsocketConnect(WebSocketConnectRecord {}),
        )
    }

    /// A Disconnect Record; `reason_code` is a USP error code (e.g. 7105) or 0.
    pub fn disconnect(
        to_id: impl Into<String>,
        from_id: impl Into<String>,
        reason: impl Into<String>,
        reason_code: u32,
    ) -> Self {
        Record::envelope(
            to_id,
            from_id,
            record::RecordType::Disconnect(DisconnectRecord {
                reason: reason.into(),
                reason_code,
            }),
        )
    }

    /// The encoded Msg of a no-session-context Record.
    pub fn no_session_payload(&self) -> Option<&[u8]> {
        match &self.record_type {
            Some(record::RecordType::NoSessionContext(r)) => Some(&r.payload),
            _ => None,
        }
    }
}
