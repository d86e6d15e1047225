//! Receiving and sending USP Records with bounds: everything a peer controls is limited before
//! or right after decoding, and every refusal is a [`UspError`] naming what was wrong.
//!
//! Receiving (agent and controller alike):
//! 1. [`decode_record`]`(bytes, own_id, &limits)`: the size is checked BEFORE decoding, then the
//!    envelope: `version` ("1.x"), `to_id`/`from_id` (non-empty, bounded), `to_id == own_id`
//!    (else the Record MUST be ignored, R-E2E.1), `payload_security` PLAINTEXT only (TLS is the
//!    MTP's business), no `mac_signature`, exactly one `record_type` (R-ENC.4).
//! 2. [`Record::content`]: what the Record carries: a Msg payload, a Connect or a Disconnect.
//!    A session-context Record is parsed but answered with 7106 (Session Context not allowed):
//!    our MTPs are TLS end to end to the broker or controller, and segmentation/retransmission
//!    state per controller would be memory the agent budget has no room for; controllers fall
//!    back to no-session-context, which every USP endpoint must support.
//! 3. [`decode_msg`]`(payload, &limits)`: bounded decoding of the Msg, header present with a
//!    msg_id, exactly one body and one request/response/notification (R-ENC.3, else 7004), every
//!    count and string within [`Limits`] (else 7005 naming the limit). A header `msg_type` that
//!    disagrees with the body is corrected from the body (R-MSG.10: the body is regarded as
//!    correct), or refused with 7004 when [`Limits::strict_msg_type`] is set.
//! 4. On an error, [`error_reply`] builds the Error Record R-MTP.5 asks for, or `None` when the
//!    spec says to ignore the Record (not ours, no valid sender, not a request, no msg_id).
//!
//! Sending: build with [`Record::no_session_msg`] and the `Msg` builders in [`crate::proto`],
//! encode with [`encode_record`], which refuses a Record the peer's equal limit would refuse.
//!
//! Memory: prost allocates every element of a repeated field while decoding, before counts
//! could be checked (64 KiB of empty 2-byte elements measured 7 MiB of heap). So before prost
//! runs, `wire::count` walks the bytes without allocating and refuses (7005) more than
//! [`Limits::max_items`] submessages / map entries, or 4x that many strings and messages;
//! `tests/proto_memory.rs` measures the resulting peak heap for hostile Msgs.

mod wire;

use prost::Message;

use crate::errors::{
    UspError, INVALID_ARGUMENTS, INVALID_RECORD_VALUE, MESSAGE_FAILED, MESSAGE_NOT_SUPPORTED,
    RECORD_NOT_PARSED, RESOURCES_EXCEEDED, SECURE_SESSION_NOT_SUPPORTED,
};
use crate::proto::record::{PayloadSecurity, RecordType};
use crate::proto::session_context_record::PayloadSarState;
use crate::proto::{
    body, mqtt_connect_record, notify, request, response, stomp_connect_record, Msg, Record,
};

/// TR-369 7105 "Session Context terminated".
pub const SESSION_CONTEXT_TERMINATED: u32 = 7105;
/// TR-369 7106 "Session Context not allowed": our answer to session-context Records.
pub const SESSION_CONTEXT_NOT_ALLOWED: u32 = 7106;

/// In the message of the error [`decode_record`] returns for a Record addressed to another
/// endpoint, which the receiver must drop silently (R-E2E.1): stable, callers match on it.
pub const NOT_THIS_ENDPOINT: &str = "is not this endpoint";

/// Bounds on what a peer may send. `Default` suits an agent on a small router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded Record (and so Msg) accepted or sent, checked before decoding.
    pub max_record_bytes: usize,
    /// Longest `to_id` / `from_id`.
    pub max_endpoint_id_len: usize,
    /// Longest `msg_id`.
    pub max_msg_id_len: usize,
    /// Most paths / objects per request, most top-level results per response.
    pub max_paths: usize,
    /// Longest data model path (including search expressions).
    pub max_path_len: usize,
    /// Most parameters per object, arguments per command, entries per map, param errors.
    pub max_params: usize,
    /// Longest parameter or argument value.
    pub max_value_len: usize,
    /// Longest other string: names, keys, error messages, command keys, ids.
    pub max_text_len: usize,
    /// Most elements in one Msg, all lists and maps together (bounds nested results); also
    /// the most submessages and map entries the wire bytes may hold before prost decodes them.
    pub max_items: usize,
    /// Refuse (7004) a header msg_type that disagrees with the body instead of correcting it.
    pub strict_msg_type: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 64 * 1024,
            max_endpoint_id_len: 256,
            max_msg_id_len: 256,
            max_paths: 256,
            max_path_len: 1024,
            max_params: 1024,
            max_value_len: 16 * 1024,
            max_text_len: 1024,
            max_items: 4096,
            strict_msg_type: false,
        }
    }
}

/// What a checked Record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordContent<'a> {
    /// An encoded Msg, for [`decode_msg`].
    Msg(&'a [u8]),
    /// An MQTT Connect Record: the peer's subscribed topic, where replies go.
    MqttConnect {
        /// The MQTT version the peer's connection uses.
        version: mqtt_connect_record::MqttVersion,
        /// The topic the peer subscribed to.
        subscribed_topic: &'a str,
    },
    /// A STOMP Connect Record.
    StompConnect {
        /// The STOMP destination the peer subscribed to, where replies go.
        subscribed_destination: &'a str,
    },
    /// A WebSocket Connect Record.
    WebSocketConnect,
    /// A Unix domain socket Connect Record.
    UdsConnect,
    /// The peer is going away.
    Disconnect {
        /// Why, for a human (may be empty).
        reason: &'a str,
        /// A USP error code saying why (0: none given).
        reason_code: u32,
    },
}

fn record_err(code: u32, message: impl Into<String>) -> UspError {
    UspError::new(code, message)
}

fn check_endpoint_id(id: &str, field: &str, limits: &Limits) -> Result<(), UspError> {
    if id.is_empty() {
        return Err(record_err(
            INVALID_RECORD_VALUE,
            format!("Record.{field} is empty"),
        ));
    }
    if id.len() > limits.max_endpoint_id_len {
        return Err(record_err(
            INVALID_RECORD_VALUE,
            format!(
                "Record.{field} is {} bytes, over the limit of {} (max_endpoint_id_len)",
                id.len(),
                limits.max_endpoint_id_len
            ),
        ));
    }
    Ok(())
}

/// "1.x" with a numeric minor: what every USP 1 endpoint understands.
fn check_version(version: &str) -> Result<(), UspError> {
    let bad = || {
        // Debug formatting escapes control characters a peer might put there.
        let shown: String = version.chars().take(32).collect();
        record_err(
            INVALID_RECORD_VALUE,
            format!("Record.version {shown:?} is not a supported USP version (1.x)"),
        )
    };
    let (major, minor) = version.split_once('.').ok_or_else(bad)?;
    let numeric = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    if major != "1" || !numeric(minor) {
        return Err(bad());
    }
    Ok(())
}

fn check_size(len: usize, what: &str, code: u32, limits: &Limits) -> Result<(), UspError> {
    if len > limits.max_record_bytes {
        return Err(UspError::new(
            code,
            format!(
                "{what} is {len} bytes, over the limit of {} (max_record_bytes)",
                limits.max_record_bytes
            ),
        ));
    }
    Ok(())
}

/// The allocation-free pass that must succeed before prost decodes `bytes`: valid protobuf,
/// and no more submessages / map entries than `limits.max_items` (what prost would allocate).
fn check_wire(bytes: &[u8], what: &str, parse_code: u32, limits: &Limits) -> Result<(), UspError> {
    let counts = wire::count(bytes, 0).map_err(|m| {
        UspError::new(
            parse_code,
            format!(
                "{what} could not be parsed: {} at byte {}",
                m.what, m.offset
            ),
        )
    })?;
    if counts.messages > limits.max_items {
        return Err(UspError::new(
            RESOURCES_EXCEEDED,
            format!(
                "{what} holds {} nested messages, over the limit of {} (max_items)",
                counts.messages, limits.max_items
            ),
        ));
    }
    // A map entry is three length-delimited fields (entry, key, value): room for max_items
    // of them plus the paths and names around them.
    let max_len_fields = limits.max_items.saturating_mul(4);
    if counts.len_fields > max_len_fields {
        return Err(UspError::new(
            RESOURCES_EXCEEDED,
            format!(
                "{what} holds {} strings and messages, over the limit of {max_len_fields} \
                 (4 x max_items)",
                counts.len_fields
            ),
        ));
    }
    Ok(())
}

/// Decodes and checks a Record addressed to `own_id`. See the module doc for the checks.
pub fn decode_record(bytes: &[u8], own_id: &str, limits: &Limits) -> Result<Record, UspError> {
    check_size(bytes.len(), "Record", RECORD_NOT_PARSED, limits)?;
    check_wire(bytes, "Record", RECORD_NOT_PARSED, limits)?;
    let record = Record::decode(bytes).map_err(|e| {
        record_err(
            RECORD_NOT_PARSED,
            format!("Record could not be parsed: {e}"),
        )
    })?;
    check_record(&record, own_id, limits)?;
    Ok(record)
}

/// The envelope checks of [`decode_record`], for a Record decoded elsewhere.
pub fn check_record(record: &Record, own_id: &str, limits: &Limits) -> Result<(), UspError> {
    check_version(&record.version)?;
    check_endpoint_id(&record.to_id, "to_id", limits)?;
    check_endpoint_id(&record.from_id, "from_id", limits)?;
    if record.to_id != own_id {
        return Err(record_err(
            INVALID_RECORD_VALUE,
            format!(
                "Record.to_id {:?} {NOT_THIS_ENDPOINT} ({own_id:?}); the Record is ignored",
                record.to_id
            ),
        ));
    }
    match PayloadSecurity::try_from(record.payload_security) {
        Ok(PayloadSecurity::Plaintext) => {}
        Ok(PayloadSecurity::Tls12) => {
            return Err(record_err(
                SECURE_SESSION_NOT_SUPPORTED,
                "Record.payload_security TLS12 (USP-layer TLS) is not supported: \
                 the MTP's TLS protects the Records",
            ))
        }
        Err(_) => {
            return Err(record_err(
                INVALID_RECORD_VALUE,
                format!(
                    "Record.payload_security {} is not in the schema",
                    record.payload_security
                ),
            ))
        }
    }
    if !record.mac_signature.is_empty() {
        return Err(record_err(
            SECURE_SESSION_NOT_SUPPORTED,
            "Record.mac_signature is set: USP-layer integrity is not supported",
        ));
    }
    let text = |s: &str, field: &str| -> Result<(), UspError> {
        if s.len() > limits.max_text_len {
            return Err(record_err(
                INVALID_RECORD_VALUE,
                format!(
                    "{field} is {} bytes, over the limit of {} (max_text_len)",
                    s.len(),
                    limits.max_text_len
                ),
            ));
        }
        Ok(())
    };
    match &record.record_type {
        None => {
            return Err(record_err(
                RECORD_NOT_PARSED,
                "Record has no record_type (R-ENC.4)",
            ))
        }
        Some(RecordType::NoSessionContext(r)) => {
            if r.payload.is_empty() {
                return Err(record_err(
                    INVALID_RECORD_VALUE,
                    "NoSessionContextRecord.payload is empty (R-E2E.26)",
                ));
            }
        }
        Some(RecordType::SessionContext(r)) => {
            for (field, v) in [
                ("payload_sar_state", r.payload_sar_state),
                ("payloadrec_sar_state", r.payloadrec_sar_state),
            ] {
                if PayloadSarState::try_from(v).is_err() {
                    return Err(record_err(
                        INVALID_RECORD_VALUE,
                        format!("SessionContextRecord.{field} {v} is not in the schema"),
                    ));
                }
            }
        }
        Some(RecordType::MqttConnect(r)) => {
            if mqtt_connect_record::MqttVersion::try_from(r.version).is_err() {
                return Err(record_err(
                    INVALID_RECORD_VALUE,
                    format!(
                        "MQTTConnectRecord.version {} is not in the schema",
                        r.version
                    ),
                ));
            }
            text(&r.subscribed_topic, "MQTTConnectRecord.subscribed_topic")?;
        }
        Some(RecordType::StompConnect(r)) => {
            if stomp_connect_record::StompVersion::try_from(r.version).is_err() {
                return Err(record_err(
                    INVALID_RECORD_VALUE,
                    format!(
                        "STOMPConnectRecord.version {} is not in the schema",
                        r.version
                    ),
                ));
            }
            text(
                &r.subscribed_destination,
                "STOMPConnectRecord.subscribed_destination",
            )?;
        }
        Some(RecordType::Disconnect(r)) => text(&r.reason, "DisconnectRecord.reason")?,
        Some(RecordType::WebsocketConnect(_)) | Some(RecordType::UdsConnect(_)) => {}
    }
    Ok(())
}

impl Record {
    /// What a checked Record carries; a session-context Record is refused with 7106.
    pub fn content(&self) -> Result<RecordContent<'_>, UspError> {
        Ok(match &self.record_type {
            None => {
                return Err(record_err(
                    RECORD_NOT_PARSED,
                    "Record has no record_type (R-ENC.4)",
                ))
            }
            Some(RecordType::NoSessionContext(r)) => RecordContent::Msg(&r.payload),
            Some(RecordType::SessionContext(_)) => {
                return Err(record_err(
                    SESSION_CONTEXT_NOT_ALLOWED,
                    "E2E session context is not supported: send no_session_context Records",
                ))
            }
            Some(RecordType::MqttConnect(r)) => RecordContent::MqttConnect {
                version: r.version(),
                subscribed_topic: &r.subscribed_topic,
            },
            Some(RecordType::StompConnect(r)) => RecordContent::StompConnect {
                subscribed_destination: &r.subscribed_destination,
            },
            Some(RecordType::WebsocketConnect(_)) => RecordContent::WebSocketConnect,
            Some(RecordType::UdsConnect(_)) => RecordContent::UdsConnect,
            Some(RecordType::Disconnect(r)) => RecordContent::Disconnect {
                reason: &r.reason,
                reason_code: r.reason_code,
            },
        })
    }
}

/// Encodes a Record for sending, refusing one over `limits.max_record_bytes` (7005): a peer
/// with the same limit would drop it, so the caller should answer with a smaller result.
pub fn encode_record(record: &Record, limits: &Limits) -> Result<Vec<u8>, UspError> {
    check_size(record.encoded_len(), "Record", RESOURCES_EXCEEDED, limits)?;
    Ok(record.encode_to_vec())
}

/// Decodes and checks a Msg (the payload of a no-session-context Record).
pub fn decode_msg(bytes: &[u8], limits: &Limits) -> Result<Msg, UspError> {
    check_size(bytes.len(), "Msg", RESOURCES_EXCEEDED, limits)?;
    check_wire(bytes, "Msg", MESSAGE_FAILED, limits)?;
    let mut msg = Msg::decode(bytes)
        .map_err(|e| UspError::new(MESSAGE_FAILED, format!("Msg could not be parsed: {e}")))?;
    check_msg(&mut msg, limits)?;
    Ok(msg)
}

fn invalid(message: impl Into<String>) -> UspError {
    UspError::new(INVALID_ARGUMENTS, message)
}

/// The checks of [`decode_msg`] on a Msg decoded or built elsewhere; corrects a header
/// msg_type that disagrees with the body unless `limits.strict_msg_type`.
pub fn check_msg(msg: &mut Msg, limits: &Limits) -> Result<(), UspError> {
    let header = msg
        .header
        .as_ref()
        .ok_or_else(|| invalid("Msg has no header (R-MSG.8)"))?;
    if header.msg_id.is_empty() {
        return Err(invalid("Header.msg_id is empty (R-MSG.8)"));
    }
    let mut check = Checker { limits, items: 0 };
    check.bounded(
        &header.msg_id,
        limits.max_msg_id_len,
        "Header.msg_id",
        "max_msg_id_len",
    )?;
    let body = msg
        .body
        .as_ref()
        .and_then(|b| b.msg_body.as_ref())
        .ok_or_else(|| invalid("Msg has no body (R-ENC.3)"))?;
    match body {
        body::MsgBody::Request(r) => {
            let req = r
                .req_type
                .as_ref()
                .ok_or_else(|| invalid("Request has no known req_type (R-ENC.3)"))?;
            check.request(req)?;
        }
        body::MsgBody::Response(r) => {
            let resp = r
                .resp_type
                .as_ref()
                .ok_or_else(|| invalid("Response has no known resp_type (R-ENC.3)"))?;
            check.response(resp)?;
        }
        body::MsgBody::Error(e) => check.error(e)?,
    }
    let body_type = msg
        .body_msg_type()
        .ok_or_else(|| invalid("Msg body holds no typed message (R-ENC.3)"))?;
    // R-ENC.2: an unknown enumeration value is reported (R-MTP.5), never guessed from the
    // body; 7001 because the sender asked for a message type this endpoint does not know.
    if msg.msg_type().is_none() {
        return Err(UspError::new(
            MESSAGE_NOT_SUPPORTED,
            format!(
                "Header.msg_type {} is not a known MsgType (R-ENC.2)",
                header.msg_type
            ),
        ));
    }
    if msg.msg_type() != Some(body_type) {
        if limits.strict_msg_type {
            return Err(invalid(format!(
                "Header.msg_type {} disagrees with the body ({body_type:?})",
                header.msg_type
            )));
        }
        if let Some(h) = msg.header.as_mut() {
            h.msg_type = body_type as i32;
        }
    }
    Ok(())
}

/// Walks a decoded Msg, checking every count and string a peer controls.
struct Checker<'l> {
    limits: &'l Limits,
    items: usize,
}

impl Checker<'_> {
    fn bounded(&self, s: &str, max: usize, what: &str, limit: &str) -> Result<(), UspError> {
        if s.len() > max {
            return Err(UspError::new(
                RESOURCES_EXCEEDED,
                format!(
                    "{what} is {} bytes, over the limit of {max} ({limit})",
                    s.len()
                ),
            ));
        }
        Ok(())
    }

    fn path(&self, s: &str, what: &str) -> Result<(), UspError> {
        self.bounded(s, self.limits.max_path_len, what, "max_path_len")
    }

    fn value(&self, s: &str, what: &str) -> Result<(), UspError> {
        self.bounded(s, self.limits.max_value_len, what, "max_value_len")
    }

    fn text(&self, s: &str, what: &str) -> Result<(), UspError> {
        self.bounded(s, self.limits.max_text_len, what, "max_text_len")
    }

    /// A list of `n` elements where at most `max` are allowed; also counts toward max_items.
    fn count(&mut self, n: usize, max: usize, what: &str, limit: &str) -> Result<(), UspError> {
        if n > max {
            return Err(UspError::new(
                RESOURCES_EXCEEDED,
                format!("{what} has {n} entries, over the limit of {max} ({limit})"),
            ));
        }
        self.items = self.items.saturating_add(n);
        if self.items > self.limits.max_items {
            return Err(UspError::new(
                RESOURCES_EXCEEDED,
                format!(
                    "Msg has over {} elements in all (max_items), reached at {what}",
                    self.limits.max_items
                ),
            ));
        }
        Ok(())
    }

    fn paths(&mut self, paths: &[String], what: &str) -> Result<(), UspError> {
        self.count(paths.len(), self.limits.max_paths, what, "max_paths")?;
        paths.iter().try_for_each(|p| self.path(p, what))
    }

    /// A list whose length only the Msg-wide max_items bounds (nested results).
    fn nested(&mut self, n: usize, what: &str) -> Result<(), UspError> {
        self.count(n, self.limits.max_items, what, "max_items")
    }

    fn params(&mut self, n: usize, what: &str) -> Result<(), UspError> {
        self.count(n, self.limits.max_params, what, "max_params")
    }

    fn map(
        &mut self,
        map: &std::collections::BTreeMap<String, String>,
        what: &str,
    ) -> Result<(), UspError> {
        self.params(map.len(), what)?;
        for (k, v) in map {
            self.text(k, what)?;
            self.value(v, what)?;
        }
        Ok(())
    }

    fn texts(&mut self, items: &[String], what: &str) -> Result<(), UspError> {
        self.params(items.len(), what)?;
        items.iter().try_for_each(|s| self.text(s, what))
    }

    fn request(&mut self, req: &request::ReqType) -> Result<(), UspError> {
        use request::ReqType as R;
        match req {
            R::Get(g) => self.paths(&g.param_paths, "Get.param_paths"),
            R::GetSupportedDm(g) => self.paths(&g.obj_paths, "GetSupportedDM.obj_paths"),
            R::GetInstances(g) => self.paths(&g.obj_paths, "GetInstances.obj_paths"),
            R::GetSupportedProtocol(g) => self.text(
                &g.controller_supported_protocol_versions,
                "GetSupportedProtocol.controller_supported_protocol_versions",
            ),
            R::Set(s) => {
                let n = s.update_objs.len();
                self.count(n, self.limits.max_paths, "Set.update_objs", "max_paths")?;
                for o in &s.update_objs {
                    self.path(&o.obj_path, "Set.UpdateObject.obj_path")?;
                    self.params(o.param_settings.len(), "Set.UpdateObject.param_settings")?;
                    for p in &o.param_settings {
                        self.text(&p.param, "Set.UpdateParamSetting.param")?;
                        self.value(&p.value, "Set.UpdateParamSetting.value")?;
                    }
                }
                Ok(())
            }
            R::Add(a) => {
                let n = a.create_objs.len();
                self.count(n, self.limits.max_paths, "Add.create_objs", "max_paths")?;
                for o in &a.create_objs {
                    self.path(&o.obj_path, "Add.CreateObject.obj_path")?;
                    self.params(o.param_settings.len(), "Add.CreateObject.param_settings")?;
                    for p in &o.param_settings {
                        self.text(&p.param, "Add.CreateParamSetting.param")?;
                        self.value(&p.value, "Add.CreateParamSetting.value")?;
                    }
                }
                Ok(())
            }
            R::Delete(d) => self.paths(&d.obj_paths, "Delete.obj_paths"),
            R::Operate(o) => {
                self.path(&o.command, "Operate.command")?;
                self.text(&o.command_key, "Operate.command_key")?;
                self.map(&o.input_args, "Operate.input_args")
            }
            R::Notify(n) => self.notify(n),
            R::Register(r) => {
                let n = r.reg_paths.len();
                self.count(n, self.limits.max_paths, "Register.reg_paths", "max_paths")?;
                r.reg_paths
                    .iter()
                    .try_for_each(|p| self.path(&p.path, "Register.RegistrationPath.path"))
            }
            R::Deregister(d) => self.paths(&d.paths, "Deregister.paths"),
        }
    }

    fn notify(&mut self, n: &crate::proto::Notify) -> Result<(), UspError> {
        use notify::Notification as N;
        self.text(&n.subscription_id, "Notify.subscription_id")?;
        let notification = n
            .notification
            .as_ref()
            .ok_or_else(|| invalid("Notify has no known notification (R-ENC.3)"))?;
        match notification {
            N::Event(e) => {
                self.path(&e.obj_path, "Notify.Event.obj_path")?;
                self.text(&e.event_name, "Notify.Event.event_name")?;
                self.map(&e.params, "Notify.Event.params")
            }
            N::ValueChange(v) => {
                self.path(&v.param_path, "Notify.ValueChange.param_path")?;
                self.value(&v.param_value, "Notify.ValueChange.param_value")
            }
            N::ObjCreation(o) => {
                self.path(&o.obj_path, "Notify.ObjectCreation.obj_path")?;
                self.map(&o.unique_keys, "Notify.ObjectCreation.unique_keys")
            }
            N::ObjDeletion(o) => self.path(&o.obj_path, "Notify.ObjectDeletion.obj_path"),
            N::OperComplete(o) => {
                use notify::operation_complete::OperationResp;
                self.path(&o.obj_path, "Notify.OperationComplete.obj_path")?;
                self.text(&o.command_name, "Notify.OperationComplete.command_name")?;
                self.text(&o.command_key, "Notify.OperationComplete.command_key")?;
                match o.operation_resp.as_ref() {
                    None => Err(invalid(
                        "Notify.OperationComplete has no operation_resp (R-ENC.3)",
                    )),
                    Some(OperationResp::ReqOutputArgs(a)) => {
                        self.map(&a.output_args, "Notify.OperationComplete.output_args")
                    }
                    Some(OperationResp::CmdFailure(f)) => self.text(
                        &f.err_msg,
                        "Notify.OperationComplete.CommandFailure.err_msg",
                    ),
                }
            }
            N::OnBoardReq(o) => {
                self.text(&o.oui, "Notify.OnBoardRequest.oui")?;
                self.text(&o.product_class, "Notify.OnBoardRequest.product_class")?;
                self.text(&o.serial_number, "Notify.OnBoardRequest.serial_number")?;
                self.text(
                    &o.agent_supported_protocol_versions,
                    "Notify.OnBoardRequest.agent_supported_protocol_versions",
                )
            }
        }
    }

    fn error(&mut self, e: &crate::proto::Error) -> Result<(), UspError> {
        self.text(&e.err_msg, "Error.err_msg")?;
        self.params(e.param_errs.len(), "Error.param_errs")?;
        for p in &e.param_errs {
            self.path(&p.param_path, "Error.ParamError.param_path")?;
            self.text(&p.err_msg, "Error.ParamError.err_msg")?;
        }
        Ok(())
    }

    fn top_results(&mut self, n: usize, what: &str) -> Result<(), UspError> {
        self.count(n, self.limits.max_paths, what, "max_paths")
    }

    fn response(&mut self, resp: &response::RespType) -> Result<(), UspError> {
        use response::RespType as R;
        match resp {
            R::GetResp(g) => {
                self.top_results(g.req_path_results.len(), "GetResp.req_path_results")?;
                for r in &g.req_path_results {
                    self.path(&r.requested_path, "GetResp.requested_path")?;
                    self.text(&r.err_msg, "GetResp.err_msg")?;
                    self.nested(
                        r.resolved_path_results.len(),
                        "GetResp.resolved_path_results",
                    )?;
                    for rp in &r.resolved_path_results {
                        self.path(&rp.resolved_path, "GetResp.resolved_path")?;
                        self.map(&rp.result_params, "GetResp.result_params")?;
                    }
                }
                Ok(())
            }
            R::GetSupportedDmResp(g) => {
                let what = "GetSupportedDMResp.req_obj_results";
                self.top_results(g.req_obj_results.len(), what)?;
                for r in &g.req_obj_results {
                    self.path(&r.req_obj_path, "GetSupportedDMResp.req_obj_path")?;
                    self.text(&r.err_msg, "GetSupportedDMResp.err_msg")?;
                    self.text(
                        &r.data_model_inst_uri,
                        "GetSupportedDMResp.data_model_inst_uri",
                    )?;
                    self.nested(r.supported_objs.len(), "GetSupportedDMResp.supported_objs")?;
                    for o in &r.supported_objs {
                        self.supported_obj(o)?;
                    }
                }
                Ok(())
            }
            R::GetInstancesResp(g) => {
                self.top_results(
                    g.req_path_results.len(),
                    "GetInstancesResp.req_path_results",
                )?;
                for r in &g.req_path_results {
                    self.path(&r.requested_path, "GetInstancesResp.requested_path")?;
                    self.text(&r.err_msg, "GetInstancesResp.err_msg")?;
                    self.nested(r.curr_insts.len(), "GetInstancesResp.curr_insts")?;
                    for c in &r.curr_insts {
                        self.path(
                            &c.instantiated_obj_path,
                            "GetInstancesResp.instantiated_obj_path",
                        )?;
                        self.map(&c.unique_keys, "GetInstancesResp.unique_keys")?;
                    }
                }
                Ok(())
            }
            R::SetResp(s) => self.set_resp(s),
            R::AddResp(a) => self.add_resp(a),
            R::DeleteResp(d) => self.delete_resp(d),
            R::OperateResp(o) => {
                use crate::proto::operate_resp::operation_result::OperationResp;
                self.top_results(o.operation_results.len(), "OperateResp.operation_results")?;
                for r in &o.operation_results {
                    self.path(&r.executed_command, "OperateResp.executed_command")?;
                    match r.operation_resp.as_ref() {
                        None => {
                            return Err(invalid(
                                "OperateResp.OperationResult has no operation_resp (R-ENC.3)",
                            ))
                        }
                        Some(OperationResp::ReqObjPath(p)) => {
                            self.path(p, "OperateResp.req_obj_path")?
                        }
                        Some(OperationResp::ReqOutputArgs(a)) => {
                            self.map(&a.output_args, "OperateResp.output_args")?
                        }
                        Some(OperationResp::CmdFailure(f)) => {
                            self.text(&f.err_msg, "OperateResp.CommandFailure.err_msg")?
                        }
                    }
                }
                Ok(())
            }
            R::NotifyResp(n) => self.text(&n.subscription_id, "NotifyResp.subscription_id"),
            R::GetSupportedProtocolResp(g) => self.text(
                &g.agent_supported_protocol_versions,
                "GetSupportedProtocolResp.agent_supported_protocol_versions",
            ),
            R::RegisterResp(r) => self.register_resp(r),
            R::DeregisterResp(d) => self.deregister_resp(d),
        }
    }

    fn register_resp(&mut self, r: &crate::proto::RegisterResp) -> Result<(), UspError> {
        use crate::proto::register_resp::registered_path_result::operation_status as st;
        let what = "RegisterResp.registered_path_results";
        self.top_results(r.registered_path_results.len(), what)?;
        for res in &r.registered_path_results {
            self.path(&res.requested_path, "RegisterResp.requested_path")?;
            let status = res
                .oper_status
                .as_ref()
                .and_then(|s| s.oper_status.as_ref());
            match oper_status(status, "RegisterResp")? {
                st::OperStatus::OperFailure(f) => self.text(&f.err_msg, "RegisterResp.err_msg")?,
                st::OperStatus::OperSuccess(ok) => {
                    self.path(&ok.registered_path, "RegisterResp.registered_path")?
                }
            }
        }
        Ok(())
    }

    fn deregister_resp(&mut self, d: &crate::proto::DeregisterResp) -> Result<(), UspError> {
        use crate::proto::deregister_resp::deregistered_path_result::operation_status as st;
        let what = "DeregisterResp.deregistered_path_results";
        self.top_results(d.deregistered_path_results.len(), what)?;
        for res in &d.deregistered_path_results {
            self.path(&res.requested_path, "DeregisterResp.requested_path")?;
            let status = res
                .oper_status
                .as_ref()
                .and_then(|s| s.oper_status.as_ref());
            match oper_status(status, "DeregisterResp")? {
                st::OperStatus::OperFailure(f) => {
                    self.text(&f.err_msg, "DeregisterResp.err_msg")?
                }
                st::OperStatus::OperSuccess(ok) => {
                    let what = "DeregisterResp.deregistered_path";
                    self.nested(ok.deregistered_path.len(), what)?;
                    for p in &ok.deregistered_path {
                        self.path(p, what)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn supported_obj(
        &mut self,
        o: &crate::proto::get_supported_dm_resp::SupportedObjectResult,
    ) -> Result<(), UspError> {
        self.path(
            &o.supported_obj_path,
            "GetSupportedDMResp.supported_obj_path",
        )?;
        self.params(
            o.supported_commands.len(),
            "GetSupportedDMResp.supported_commands",
        )?;
        for c in &o.supported_commands {
            self.text(&c.command_name, "GetSupportedDMResp.command_name")?;
            self.texts(&c.input_arg_names, "GetSupportedDMResp.input_arg_names")?;
            self.texts(&c.output_arg_names, "GetSupportedDMResp.output_arg_names")?;
        }
        self.params(
            o.supported_events.len(),
            "GetSupportedDMResp.supported_events",
        )?;
        for e in &o.supported_events {
            self.text(&e.event_name, "GetSupportedDMResp.event_name")?;
            self.texts(&e.arg_names, "GetSupportedDMResp.arg_names")?;
        }
        self.params(
            o.supported_params.len(),
            "GetSupportedDMResp.supported_params",
        )?;
        for p in &o.supported_params {
            self.text(&p.param_name, "GetSupportedDMResp.param_name")?;
        }
        self.nested(
            o.divergent_paths.len(),
            "GetSupportedDMResp.divergent_paths",
        )?;
        for p in &o.divergent_paths {
            self.path(p, "GetSupportedDMResp.divergent_paths")?;
        }
        self.params(
            o.unique_key_sets.len(),
            "GetSupportedDMResp.unique_key_sets",
        )?;
        for k in &o.unique_key_sets {
            self.texts(&k.key_names, "GetSupportedDMResp.key_names")?;
        }
        Ok(())
    }

    fn set_resp(&mut self, s: &crate::proto::SetResp) -> Result<(), UspError> {
        use crate::proto::set_resp::updated_object_result::operation_status::OperStatus;
        self.top_results(s.updated_obj_results.len(), "SetResp.updated_obj_results")?;
        for r in &s.updated_obj_results {
            self.path(&r.requested_path, "SetResp.requested_path")?;
            let status = r.oper_status.as_ref().and_then(|s| s.oper_status.as_ref());
            match oper_status(status, "SetResp")? {
                OperStatus::OperFailure(f) => {
                    self.text(&f.err_msg, "SetResp.OperationFailure.err_msg")?;
                    let n = f.updated_inst_failures.len();
                    self.nested(n, "SetResp.updated_inst_failures")?;
                    for i in &f.updated_inst_failures {
                        self.path(&i.affected_path, "SetResp.affected_path")?;
                        self.set_param_errs(&i.param_errs)?;
                    }
                }
                OperStatus::OperSuccess(ok) => {
                    self.nested(
                        ok.updated_inst_results.len(),
                        "SetResp.updated_inst_results",
                    )?;
                    for i in &ok.updated_inst_results {
                        self.path(&i.affected_path, "SetResp.affected_path")?;
                        self.set_param_errs(&i.param_errs)?;
                        self.map(&i.updated_params, "SetResp.updated_params")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn set_param_errs(
        &mut self,
        errs: &[crate::proto::set_resp::ParameterError],
    ) -> Result<(), UspError> {
        self.params(errs.len(), "SetResp.param_errs")?;
        for e in errs {
            self.text(&e.param, "SetResp.ParameterError.param")?;
            self.text(&e.err_msg, "SetResp.ParameterError.err_msg")?;
        }
        Ok(())
    }

    fn add_resp(&mut self, a: &crate::proto::AddResp) -> Result<(), UspError> {
        use crate::proto::add_resp::created_object_result::operation_status::OperStatus;
        self.top_results(a.created_obj_results.len(), "AddResp.created_obj_results")?;
        for r in &a.created_obj_results {
            self.path(&r.requested_path, "AddResp.requested_path")?;
            let status = r.oper_status.as_ref().and_then(|s| s.oper_status.as_ref());
            match oper_status(status, "AddResp")? {
                OperStatus::OperFailure(f) => {
                    self.text(&f.err_msg, "AddResp.OperationFailure.err_msg")?
                }
                OperStatus::OperSuccess(ok) => {
                    self.path(&ok.instantiated_path, "AddResp.instantiated_path")?;
                    self.params(ok.param_errs.len(), "AddResp.param_errs")?;
                    for e in &ok.param_errs {
                        self.text(&e.param, "AddResp.ParameterError.param")?;
                        self.text(&e.err_msg, "AddResp.ParameterError.err_msg")?;
                    }
                    self.map(&ok.unique_keys, "AddResp.unique_keys")?;
                }
            }
        }
        Ok(())
    }

    fn delete_resp(&mut self, d: &crate::proto::DeleteResp) -> Result<(), UspError> {
        use crate::proto::delete_resp::deleted_object_result::operation_status::OperStatus;
        self.top_results(
            d.deleted_obj_results.len(),
            "DeleteResp.deleted_obj_results",
        )?;
        for r in &d.deleted_obj_results {
            self.path(&r.requested_path, "DeleteResp.requested_path")?;
            let status = r.oper_status.as_ref().and_then(|s| s.oper_status.as_ref());
            match oper_status(status, "DeleteResp")? {
                OperStatus::OperFailure(f) => {
                    self.text(&f.err_msg, "DeleteResp.OperationFailure.err_msg")?
                }
                OperStatus::OperSuccess(ok) => {
                    self.nested(ok.affected_paths.len(), "DeleteResp.affected_paths")?;
                    for p in &ok.affected_paths {
                        self.path(p, "DeleteResp.affected_paths")?;
                    }
                    let n = ok.unaffected_path_errs.len();
                    self.nested(n, "DeleteResp.unaffected_path_errs")?;
                    for e in &ok.unaffected_path_errs {
                        self.path(&e.unaffected_path, "DeleteResp.unaffected_path")?;
                        self.text(&e.err_msg, "DeleteResp.UnaffectedPathError.err_msg")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A result's `oper_status` oneof, required by R-ENC.3.
fn oper_status<'a, T>(status: Option<&'a T>, what: &str) -> Result<&'a T, UspError> {
    status.ok_or_else(|| invalid(format!("{what} result has no oper_status (R-ENC.3)")))
}

/// The Error Record that R-MTP.5 asks for in answer to an erroneous Record `bytes`, carrying
/// `err`; `None` where the spec says to ignore the Record instead: it cannot be parsed at all,
/// its from_id is not valid, its to_id is not `own_id`, it carries no Request, or no msg_id can
/// be read from it.
pub fn error_reply(bytes: &[u8], own_id: &str, limits: &Limits, err: &UspError) -> Option<Record> {
    if bytes.len() > limits.max_record_bytes {
        return None;
    }
    let record = Record::decode(bytes).ok()?;
    check_endpoint_id(&record.from_id, "from_id", limits).ok()?;
    if record.to_id != own_id {
        return None;
    }
    let payload: &[u8] = match record.record_type.as_ref()? {
        RecordType::NoSessionContext(r) => &r.payload,
        // A single unsegmented payload still lets us name the request we refuse.
        RecordType::SessionContext(r) if r.payload.len() == 1 => &r.payload[0],
        _ => return None,
    };
    let msg = Msg::decode(payload).ok()?;
    let msg_id = msg.msg_id();
    if msg_id.is_empty() || msg_id.len() > limits.max_msg_id_len {
        return None;
    }
    // The body's type is what R-MSG.10 trusts; fall back to the header when the body is bad.
    let msg_type = msg.body_msg_type().or_else(|| msg.msg_type())?;
    if !msg_type.is_request() {
        return None;
    }
    let reply = Msg::from_usp_error(msg_id, err);
    Some(Record::no_session_msg(record.from_id, own_id, &reply))
}
