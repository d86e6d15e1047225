//! USP Records and Msgs as protobuf: hand-written `prost` types with the field numbers, oneof
//! layouts and enum values of the Broadband Forum schemas `usp-record-1-4.proto` and
//! `usp-msg-1-4.proto` (USP 1.4, a superset of 1.3 on the wire). No build script and no `protoc`:
//! the structs below ARE the schema, and `tests/proto_golden.rs` pins their field numbers with
//! hand-assembled bytes.
//!
//! Naming follows what `prost-build` would generate, so code written against generated USP types
//! reads the same here: a nested message `GetResp.RequestedPathResult` is
//! `get_resp::RequestedPathResult`, a oneof `Body.msg_body` is `body::MsgBody`, enum fields are
//! stored as `i32` with a typed getter (`header.msg_type()`), maps are `BTreeMap<String, String>`
//! (sorted, so encoding is deterministic).
//!
//! Stable API for the other layers (agent, controller, transports):
//! - decoding with bounds and checks: [`crate::record::decode_record`],
//!   [`crate::record::decode_msg`] with [`crate::record::Limits`];
//! - Records: [`Record::no_session`], [`Record::no_session_msg`], [`Record::mqtt_connect`],
//!   [`Record::websocket_connect`], [`Record::disconnect`], [`Record::no_session_payload`],
//!   [`crate::record::encode_record`] (bounded) and [`Record::content`];
//! - Msgs (header msg_type always matches the body): [`Msg::request`] / [`Msg::response`]
//!   (any body), [`Msg::get`], [`Msg::get_supported_dm`], [`Msg::get_instances`],
//!   [`Msg::get_supported_protocol`], [`Msg::set`], [`Msg::add`], [`Msg::delete`],
//!   [`Msg::operate`], [`Msg::notify`], [`Msg::notify_event`], [`Msg::notify_value_change`],
//!   [`Msg::notify_object_creation`], [`Msg::notify_object_deletion`],
//!   [`Msg::operation_complete`], [`Msg::on_board_request`], [`Msg::error`] /
//!   [`Msg::from_usp_error`] (and `Error::from(&UspError)`);
//! - reading a decoded Msg: [`Msg::msg_id`], [`Msg::msg_type`], [`Msg::request_body`],
//!   [`Msg::response_body`], [`Msg::error_body`], [`Msg::body_msg_type`];
//!   [`header::MsgType::response_type`] / [`header::MsgType::is_request`];
//! - Operate results: [`operate_resp::OperationResult::sync`] (output args or failure) and
//!   [`operate_resp::OperationResult::started`] (asynchronous: the `Request.{i}.` path).
//!
//! Register/Deregister (USP 1.3, for USP Services registering data model parts at a USP Broker)
//! are present so that such Msgs decode and can be answered; cpevisor's agent is not a Broker.

mod build;
mod msg;

pub use msg::*;

/// The USP protocol version this crate speaks; goes into `Record.version`.
pub const USP_VERSION: &str = "1.4";

// ---------------------------------------------------------------- usp_record package

// Each type says which message of usp-record-1-4.proto it is and what it is for. Its fields and
// variants are that .proto's, one for one, and mean what TR-369 says they mean: a doc line each
// would restate the spec, so the types whose fields or variants have nothing of ours to add carry
// `#[allow(missing_docs)]` (the type's own doc stays; fields with something to add have docs).

/// `usp_record.Record`: the envelope every MTP carries: the two Endpoint IDs, the payload's
/// security and one record type.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub to_id: String,
    #[prost(string, tag = "3")]
    pub from_id: String,
    #[prost(enumeration = "record::PayloadSecurity", tag = "4")]
    pub payload_security: i32,
    /// MAC or signature (E2E session context integrity); we require it empty.
    #[prost(bytes = "vec", tag = "5")]
    pub mac_signature: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    pub sender_cert: Vec<u8>,
    #[prost(oneof = "record::RecordType", tags = "7, 8, 9, 10, 11, 12, 13")]
    pub record_type: Option<record::RecordType>,
}

/// Nested types of [`Record`].
pub mod record {
    /// `Record.record_type`: what the Record carries: a Msg (with or without an end-to-end session
    /// context) or an MTP connect or disconnect notice.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum RecordType {
        #[prost(message, tag = "7")]
        NoSessionContext(super::NoSessionContextRecord),
        #[prost(message, tag = "8")]
        SessionContext(super::SessionContextRecord),
        #[prost(message, tag = "9")]
        WebsocketConnect(super::WebSocketConnectRecord),
        #[prost(message, tag = "10")]
        MqttConnect(super::MqttConnectRecord),
        #[prost(message, tag = "11")]
        StompConnect(super::StompConnectRecord),
        #[prost(message, tag = "12")]
        Disconnect(super::DisconnectRecord),
        #[prost(message, tag = "13")]
        UdsConnect(super::UdsConnectRecord),
    }

    /// `Record.PayloadSecurity`: how the payload is protected: plaintext, or USP-layer TLS 1.2
    /// (which we refuse: the MTP's TLS protects Records).
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum PayloadSecurity {
        Plaintext = 0,
        Tls12 = 1,
    }
}

/// `usp_record.NoSessionContextRecord`: one Msg outside an end-to-end session context, the only
/// kind cpevisor exchanges.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NoSessionContextRecord {
    /// A serialized [`Msg`].
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// `usp_record.SessionContextRecord`: Msgs inside an end-to-end session context (sequence numbers,
/// retransmission, segmentation); decoded, then refused.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionContextRecord {
    #[prost(uint64, tag = "1")]
    pub session_id: u64,
    #[prost(uint64, tag = "2")]
    pub sequence_id: u64,
    #[prost(uint64, tag = "3")]
    pub expected_id: u64,
    #[prost(uint64, tag = "4")]
    pub retransmit_id: u64,
    #[prost(enumeration = "session_context_record::PayloadSarState", tag = "5")]
    pub payload_sar_state: i32,
    #[prost(enumeration = "session_context_record::PayloadSarState", tag = "6")]
    pub payloadrec_sar_state: i32,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub payload: Vec<Vec<u8>>,
}

/// Nested types of [`SessionContextRecord`].
pub mod session_context_record {
    /// `SessionContextRecord.PayloadSARState`: where a payload stands in segmentation and
    /// reassembly.
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum PayloadSarState {
        None = 0,
        Begin = 1,
        Inprocess = 2,
        Complete = 3,
    }
}

/// `usp_record.WebSocketConnectRecord` (empty): announces that the sender's WebSocket connection is
/// up.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct WebSocketConnectRecord {}

/// `usp_record.MQTTConnectRecord`: announces that the sender's MQTT connection is up, and the topic
/// where it listens.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct MqttConnectRecord {
    #[prost(enumeration = "mqtt_connect_record::MqttVersion", tag = "1")]
    pub version: i32,
    /// The topic the agent subscribed to, where the controller reaches it.
    #[prost(string, tag = "2")]
    pub subscribed_topic: String,
}

/// Nested types of [`MqttConnectRecord`].
pub mod mqtt_connect_record {
    /// `MQTTConnectRecord.MQTTVersion`: the MQTT version of the sender's connection.
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MqttVersion {
        /// MQTT 3.1.1 ("v4" in the MQTT spec).
        V311 = 0,
        V5 = 1,
    }
}

/// `usp_record.STOMPConnectRecord`: announces that the sender's STOMP connection is up, and the
/// destination where it listens.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct StompConnectRecord {
    #[prost(enumeration = "stomp_connect_record::StompVersion", tag = "1")]
    pub version: i32,
    #[prost(string, tag = "2")]
    pub subscribed_destination: String,
}

/// Nested types of [`StompConnectRecord`].
pub mod stomp_connect_record {
    /// `STOMPConnectRecord.STOMPVersion`: the STOMP version of the sender's connection.
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum StompVersion {
        V12 = 0,
    }
}

/// `usp_record.UDSConnectRecord` (empty): announces that the sender's Unix domain socket connection
/// is up.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct UdsConnectRecord {}

/// `usp_record.DisconnectRecord`: the sender is about to close the MTP connection, and why.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct DisconnectRecord {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(fixed32, tag = "2")]
    pub reason_code: u32,
}
