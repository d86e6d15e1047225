//! MQTT 5.0 packet encoding and strict, bounded decoding (OASIS MQTT Version 5.0, section 3).
//!
//! Only what a client needs: it encodes CONNECT, PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE,
//! PINGREQ and DISCONNECT, and decodes CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK, PINGRESP and
//! DISCONNECT. Every length read from the wire is checked against what is left of the packet,
//! and a packet larger than the configured maximum is refused before its body is read.

use std::fmt;
use std::io::Read;

/// The largest value the Variable Byte Integer encoding can carry (section 1.5.5).
pub const MAX_VARINT: u32 = 268_435_455;

/// Why bytes could not become a packet (or a packet could not become bytes).
#[derive(Debug)]
pub enum CodecError {
    /// The connection failed or ended while reading.
    Io(std::io::Error),
    /// The packet is larger than the limit in force (ours when decoding, the peer's when
    /// encoding).
    TooLarge {
        /// The packet's size in bytes (as announced, or as it would be encoded).
        size: u64,
        /// The limit it exceeds.
        max: u32,
    },
    /// The bytes break the MQTT 5 grammar; the text names what was wrong.
    Malformed(String),
    /// A well-formed packet that a client must not receive (or that we do not support).
    Unexpected(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                f.write_str("connection closed by the peer")
            }
            CodecError::Io(e) => write!(f, "connection: {e}"),
            CodecError::TooLarge { size, max } => {
                write!(
                    f,
                    "packet of {size} bytes exceeds the maximum packet size {max}"
                )
            }
            CodecError::Malformed(why) => write!(f, "malformed packet: {why}"),
            CodecError::Unexpected(why) => write!(f, "unexpected packet: {why}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<std::io::Error> for CodecError {
    fn from(e: std::io::Error) -> Self {
        CodecError::Io(e)
    }
}

fn malformed<T>(why: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError::Malformed(why.into()))
}

/// Packet types (fixed header, high nibble).
mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// Property identifiers (section 2.2.2.2).
mod prop {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUB: u8 = 0x28;
    pub const SUB_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUB: u8 = 0x2A;
}

/// CONNECT (3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Client Identifier; USP derives it from the endpoint ID.
    pub client_id: String,
    /// Clean Start: discard any session the server kept for this client.
    pub clean_start: bool,
    /// Keep Alive in seconds: the longest silence before we must send a PINGREQ (0: none).
    pub keep_alive_s: u16,
    /// Session Expiry Interval in seconds; 0 (the default, not sent) ends the session with
    /// the connection.
    pub session_expiry_s: u32,
    /// Receive Maximum: how many QoS 1 messages the server may have in flight to us.
    pub receive_maximum: u16,
    /// The largest packet we accept; the server must not send larger ones.
    pub maximum_packet_size: u32,
    /// Ask the server for Response Information in CONNACK (USP uses it for the agent's topic).
    pub request_response_information: bool,
    /// User Name, if the server wants one.
    pub username: Option<String>,
    /// Password, if the server wants one.
    pub password: Option<Vec<u8>>,
    /// User Properties (name, value); USP puts `usp-endpoint-id` here (R-MQTT.13).
    pub user_properties: Vec<(String, String)>,
}

/// CONNACK (3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present: the server resumed a session it kept for this client.
    pub session_present: bool,
    /// Connect Reason Code: 0 is success, 0x80 and up a refusal (see [`reason_name`]).
    pub reason_code: u8,
    /// Session Expiry Interval the server imposes instead of ours, in seconds.
    pub session_expiry_s: Option<u32>,
    /// Receive Maximum: how many QoS 1 messages we may have in flight to the server.
    pub receive_maximum: Option<u16>,
    /// Maximum QoS the server accepts from us; absent: 2.
    pub maximum_qos: Option<u8>,
    /// The largest packet the server accepts; absent: no limit beyond the protocol's.
    pub maximum_packet_size: Option<u32>,
    /// The Client Identifier the server assigned, when we sent an empty one.
    pub assigned_client_id: Option<String>,
    /// Topic Alias Maximum the server accepts from us (we never send aliases).
    pub topic_alias_maximum: Option<u16>,
    /// Reason String: a human-readable explanation, for diagnostics only.
    pub reason_string: Option<String>,
    /// Server Keep Alive: the keep-alive the server imposes instead of ours, in seconds.
    pub server_keep_alive_s: Option<u16>,
    /// Response Information, when we asked for it; USP builds the agent's topic from it.
    pub response_information: Option<String>,
    /// Server Reference: another server to use (with a redirecting reason code).
    pub server_reference: Option<String>,
}

/// PUBLISH (3.3), QoS 0 or 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    /// Topic Name (no wildcards).
    pub topic: String,
    /// Quality of service: 0 (at most once) or 1 (at least once).
    pub qos: u8,
    /// DUP: a redelivery of a QoS 1 message.
    pub dup: bool,
    /// RETAIN: the server keeps the message for future subscribers.
    pub retain: bool,
    /// Present exactly when `qos` is 1.
    pub packet_id: Option<u16>,
    /// Payload Format Indicator 1: the payload is UTF-8 text (checked when decoding).
    pub payload_is_utf8: bool,
    /// Message Expiry Interval in seconds.
    pub message_expiry_s: Option<u32>,
    /// Content Type; USP sends `usp.msg` (R-MQTT.27).
    pub content_type: Option<String>,
    /// Response Topic: where the receiver should answer (USP: the sender's topic).
    pub response_topic: Option<String>,
    /// Correlation Data, echoed back with a response.
    pub correlation_data: Option<Vec<u8>>,
    /// Application Message: for USP, one encoded Record.
    pub payload: Vec<u8>,
}

/// SUBSCRIBE (3.8): one filter per packet is all a USP endpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet Identifier, echoed in SUBACK (non-zero).
    pub packet_id: u16,
    /// Topic Filter (may hold `+` and `#` wildcards).
    pub filter: String,
    /// Maximum QoS we accept on this subscription (0 or 1).
    pub max_qos: u8,
    /// No Local: do not send our own publications back to us.
    pub no_local: bool,
}

/// SUBACK / UNSUBACK (3.9, 3.11): one reason code per filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The Packet Identifier of the SUBSCRIBE / UNSUBSCRIBE it answers.
    pub packet_id: u16,
    /// One per filter: the granted QoS (0-2) or a failure (0x80 and up).
    pub reason_codes: Vec<u8>,
    /// Reason String: a human-readable explanation, for diagnostics only.
    pub reason_string: Option<String>,
}

/// Packets a client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// CONNACK (3.2): the server's answer to CONNECT.
    ConnAck(ConnAck),
    /// PUBLISH (3.3): a message on a topic we subscribed to.
    Publish(Publish),
    /// PUBACK (3.4): the server took one of our QoS 1 PUBLISHes.
    PubAck {
        /// The Packet Identifier of the PUBLISH it acknowledges.
        packet_id: u16,
        /// 0 (the short form) is success, 0x80 and up a refusal.
        reason_code: u8,
    },
    /// SUBACK (3.9).
    SubAck(SubAck),
    /// UNSUBACK (3.11).
    UnsubAck(SubAck),
    /// PINGRESP (3.13): the answer to our PINGREQ.
    PingResp,
    /// DISCONNECT (3.14): the server ends the connection.
    Disconnect {
        /// Why (see [`reason_name`]); 0 is a normal disconnection.
        reason_code: u8,
        /// Reason String: a human-readable explanation, for diagnostics only.
        reason_string: Option<String>,
    },
}

/// A reason code's name, for error messages (section 2.4).
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0x00 => "Success",
        0x01 => "Granted QoS 1",
        0x02 => "Granted QoS 2",
        0x04 => "Disconnect with Will Message",
        0x10 => "No matching subscribers",
        0x11 => "No subscription existed",
        0x80 => "Unspecified error",
        0x81 => "Malformed Packet",
        0x82 => "Protocol Error",
        0x83 => "Implementation specific error",
        0x84 => "Unsupported Protocol Version",
        0x85 => "Client Identifier not valid",
        0x86 => "Bad User Name or Password",
        0x87 => "Not authorized",
        0x88 => "Server unavailable",
        0x89 => "Server busy",
        0x8A => "Banned",
        0x8B => "Server shutting down",
        0x8C => "Bad authentication method",
        0x8D => "Keep Alive timeout",
        0x8E => "Session taken over",
        0x8F => "Topic Filter invalid",
        0x90 => "Topic Name invalid",
        0x91 => "Packet Identifier in use",
        0x92 => "Packet Identifier not found",
        0x93 => "Receive Maximum exceeded",
        0x94 => "Topic Alias invalid",
        0x95 => "Packet too large",
        0x96 => "Message rate too high",
        0x97 => "Quota exceeded",
        0x98 => "Administrative action",
        0x99 => "Payload format invalid",
        0x9A => "Retain not supported",
        0x9B => "QoS not supported",
        0x9C => "Use another server",
        0x9D => "Server moved",
        0x9E => "Shared Subscriptions not supported",
        0x9F => "Connection rate exceeded",
        0xA0 => "Maximum connect time",
        0xA1 => "Subscription Identifiers not supported",
        0xA2 => "Wildcard Subscriptions not supported",
        _ => "unknown reason code",
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends a Variable Byte Integer (1.5.5).
fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    debug_assert!(value <= MAX_VARINT);
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a length-prefixed string or binary field; longer than 65535 bytes is an error.
fn put_bytes(out: &mut Vec<u8>, what: &str, bytes: &[u8]) -> Result<(), CodecError> {
    let len = u16::try_from(bytes.len())
        .or_else(|_| malformed(format!("{what} is {} bytes, over 65535", bytes.len())))?;
    put_u16(out, len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// A UTF-8 string field must not hold U+0000 (1.5.4).
fn put_str(out: &mut Vec<u8>, what: &str, s: &str) -> Result<(), CodecError> {
    if s.contains('\0') {
        return malformed(format!("{what} contains U+0000"));
    }
    put_bytes(out, what, s.as_bytes())
}

/// Wraps a variable header + payload in the fixed header, refusing a packet over `max`.
fn finish(first_byte: u8, body: Vec<u8>, max: u32) -> Result<Vec<u8>, CodecError> {
    let remaining = u32::try_from(body.len())
        .ok()
        .filter(|&n| n <= MAX_VARINT)
        .ok_or(CodecError::TooLarge {
            size: body.len() as u64,
            max,
        })?;
    let total = 1 + varint_len(remaining) as u64 + remaining as u64;
    if total > max as u64 {
        return Err(CodecError::TooLarge { size: total, max });
    }
    let mut out = Vec::with_capacity(total as usize);
    out.push(first_byte);
    put_varint(&mut out, remaining);
    out.extend_from_slice(&body);
    Ok(out)
}

fn put_props(out: &mut Vec<u8>, props: &[u8]) {
    put_varint(out, props.len() as u32);
    out.extend_from_slice(props);
}

/// Encodes CONNECT.
pub fn encode_connect(c: &Connect) -> Result<Vec<u8>, CodecError> {
    let mut body = Vec::with_capacity(64 + c.client_id.len());
    put_str(&mut body, "protocol name", "MQTT")?;
    body.push(5); // protocol level: MQTT 5.0
    let mut flags = 0u8;
    if c.username.is_some() {
        flags |= 0x80;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.clean_start {
        flags |= 0x02;
    }
    body.push(flags);
    put_u16(&mut body, c.keep_alive_s);

    let mut props = Vec::with_capacity(16);
    if c.session_expiry_s != 0 {
        props.push(prop::SESSION_EXPIRY);
        put_u32(&mut props, c.session_expiry_s);
    }
    if c.receive_maximum == 0 {
        return malformed("Receive Maximum must not be 0");
    }
    if c.receive_maximum != u16::MAX {
        props.push(prop::RECEIVE_MAXIMUM);
        put_u16(&mut props, c.receive_maximum);
    }
    if c.maximum_packet_size == 0 {
        return malformed("Maximum Packet Size must not be 0");
    }
    props.push(prop::MAXIMUM_PACKET_SIZE);
    put_u32(&mut props, c.maximum_packet_size);
    if c.request_response_information {
        props.push(prop::REQUEST_RESPONSE_INFO);
        props.push(1);
    }
    for (name, value) in &c.user_properties {
        props.push(prop::USER_PROPERTY);
        put_str(&mut props, "user property name", name)?;
        put_str(&mut props, "user property value", value)?;
    }
    put_props(&mut body, &props);

    put_str(&mut body, "client identifier", &c.client_id)?;
    if let Some(user) = &c.username {
        put_str(&mut body, "user name", user)?;
    }
    if let Some(password) = &c.password {
        put_bytes(&mut body, "password", password)?;
    }
    finish(kind::CONNECT << 4, body, MAX_VARINT)
}

/// Encodes PUBLISH; `max` is the server's Maximum Packet Size.
pub fn encode_publish(p: &Publish, max: u32) -> Result<Vec<u8>, CodecError> {
    if p.qos > 1 {
        return malformed(format!("QoS {} is not supported (0 or 1)", p.qos));
    }
    if p.topic.is_empty() || p.topic.contains(['+', '#']) {
        return malformed(format!(
            "topic name {:?} is empty or has a wildcard",
            p.topic
        ));
    }
    if (p.qos == 1) != p.packet_id.is_some() {
        return malformed("a QoS 1 PUBLISH needs a packet identifier, QoS 0 none");
    }
    let mut body = Vec::with_capacity(p.topic.len() + p.payload.len() + 64);
    put_str(&mut body, "topic name", &p.topic)?;
    if let Some(id) = p.packet_id {
        if id == 0 {
            return malformed("packet identifier 0");
        }
        put_u16(&mut body, id);
    }
    let mut props = Vec::new();
    if p.payload_is_utf8 {
        props.extend_from_slice(&[prop::PAYLOAD_FORMAT, 1]);
    }
    if let Some(expiry) = p.message_expiry_s {
        props.push(prop::MESSAGE_EXPIRY);
        put_u32(&mut props, expiry);
    }
    if let Some(ct) = &p.content_type {
        props.push(prop::CONTENT_TYPE);
        put_str(&mut props, "content type", ct)?;
    }
    if let Some(rt) = &p.response_topic {
        if rt.is_empty() || rt.contains(['+', '#']) {
            return malformed(format!("response topic {rt:?} is empty or has a wildcard"));
        }
        props.push(prop::RESPONSE_TOPIC);
        put_str(&mut props, "response topic", rt)?;
    }
    if let Some(cd) = &p.correlation_data {
        props.push(prop::CORRELATION_DATA);
        put_bytes(&mut props, "correlation data", cd)?;
    }
    put_props(&mut body, &props);
    body.extend_from_slice(&p.payload);
    let mut first = (kind::PUBLISH << 4) | (p.qos << 1);
    if p.dup {
        first |= 0x08;
    }
    if p.retain {
        first |= 0x01;
    }
    finish(first, body, max)
}

/// Encodes PUBACK; a success without properties takes the 2-byte short form (3.4.2.1).
pub fn encode_puback(packet_id: u16, reason_code: u8) -> Vec<u8> {
    let mut out = vec![kind::PUBACK << 4];
    if reason_code == 0 {
        out.push(2);
        put_u16(&mut out, packet_id);
    } else {
        out.push(3);
        put_u16(&mut out, packet_id);
        out.push(reason_code);
    }
    out
}

/// Encodes SUBSCRIBE for one topic filter.
pub fn encode_subscribe(s: &Subscribe) -> Result<Vec<u8>, CodecError> {
    if s.filter.is_empty() {
        return malformed("empty topic filter");
    }
    if s.max_qos > 1 {
        return malformed(format!("QoS {} is not supported (0 or 1)", s.max_qos));
    }
    let mut body = Vec::with_capacity(s.filter.len() + 8);
    put_u16(&mut body, s.packet_id);
    put_props(&mut body, &[]);
    put_str(&mut body, "topic filter", &s.filter)?;
    let mut options = s.max_qos;
    if s.no_local {
        options |= 0x04;
    }
    body.push(options);
    // SUBSCRIBE's fixed header flags are reserved as 0b0010 (3.8.1).
    finish((kind::SUBSCRIBE << 4) | 0x02, body, MAX_VARINT)
}

/// Encodes UNSUBSCRIBE for one topic filter.
pub fn encode_unsubscribe(packet_id: u16, filter: &str) -> Result<Vec<u8>, CodecError> {
    let mut body = Vec::with_capacity(filter.len() + 8);
    put_u16(&mut body, packet_id);
    put_props(&mut body, &[]);
    put_str(&mut body, "topic filter", filter)?;
    finish((kind::UNSUBSCRIBE << 4) | 0x02, body, MAX_VARINT)
}

/// Encodes PINGREQ (3.12): two bytes, no variable header or payload.
pub fn encode_pingreq() -> Vec<u8> {
    vec![kind::PINGREQ << 4, 0]
}

/// Encodes DISCONNECT; Normal disconnection (0) takes the 2-byte short form (3.14.2.1).
pub fn encode_disconnect(reason_code: u8) -> Vec<u8> {
    if reason_code == 0 {
        vec![kind::DISCONNECT << 4, 0]
    } else {
        vec![kind::DISCONNECT << 4, 1, reason_code]
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A cursor over one packet's bytes; every read is checked against what is left.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CodecError> {
        if self.remaining() < n {
            return malformed(format!(
                "{what}: needs {n} bytes, {} left in the packet",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, CodecError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn varint(&mut self, what: &str) -> Result<u32, CodecError> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8(what)?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        malformed(format!("{what}: variable byte integer longer than 4 bytes"))
    }

    fn binary(&mut self, what: &str) -> Result<&'a [u8], CodecError> {
        let len = self.u16(what)? as usize;
        self.take(len, what)
    }

    fn string(&mut self, what: &str) -> Result<String, CodecError> {
        let bytes = self.binary(what)?;
        let s = std::str::from_utf8(bytes)
            .or_else(|_| malformed(format!("{what} is not valid UTF-8")))?;
        if s.contains('\0') {
            return malformed(format!("{what} contains U+0000"));
        }
        Ok(s.to_owned())
    }
}

/// Properties as read from a packet; each may appear at most once (user properties aside).
#[derive(Default)]
struct Props {
    /// Bit n set: property n was read.
    seen: u64,
    payload_format: Option<u8>,
    message_expiry: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    session_expiry: Option<u32>,
    assigned_client_id: Option<String>,
    server_keep_alive: Option<u16>,
    response_info: Option<String>,
    server_reference: Option<String>,
    reason_string: Option<String>,
    receive_maximum: Option<u16>,
    topic_alias_maximum: Option<u16>,
    topic_alias: Option<u16>,
    maximum_qos: Option<u8>,
    maximum_packet_size: Option<u32>,
}

/// Reads a property block; `allowed` lists the identifiers valid in this packet.
fn read_props(c: &mut Cursor<'_>, packet: &str, allowed: &[u8]) -> Result<Props, CodecError> {
    let len = c.varint("property length")? as usize;
    let block = c.take(len, "properties")?;
    let mut p = Cursor { buf: block, pos: 0 };
    let mut out = Props::default();
    while p.remaining() > 0 {
        let id = p.varint("property identifier")?;
        let id = u8::try_from(id)
            .ok()
            .filter(|id| allowed.contains(id))
            .ok_or_else(|| {
                CodecError::Malformed(format!("property 0x{id:02X} is not valid in {packet}"))
            })?;
        if id != prop::USER_PROPERTY && id != prop::SUBSCRIPTION_ID {
            if out.seen & (1 << id) != 0 {
                return malformed(format!("property 0x{id:02X} appears twice in {packet}"));
            }
            out.seen |= 1 << id;
        }
        match id {
            prop::PAYLOAD_FORMAT => {
                let v = p.u8("payload format indicator")?;
                if v > 1 {
                    return malformed(format!("payload format indicator {v}"));
                }
                out.payload_format = Some(v);
            }
            prop::MESSAGE_EXPIRY => out.message_expiry = Some(p.u32("message expiry")?),
            prop::CONTENT_TYPE => out.content_type = Some(p.string("content type")?),
            prop::RESPONSE_TOPIC => {
                let t = p.string("response topic")?;
                if t.is_empty() || t.contains(['+', '#']) {
                    return malformed(format!("response topic {t:?} is empty or has a wildcard"));
                }
                out.response_topic = Some(t);
            }
            prop::CORRELATION_DATA => {
                out.correlation_data = Some(p.binary("correlation data")?.to_vec())
            }
            prop::SUBSCRIPTION_ID => {
                if p.varint("subscription identifier")? == 0 {
                    return malformed("subscription identifier 0");
                }
            }
            prop::SESSION_EXPIRY => out.session_expiry = Some(p.u32("session expiry")?),
            prop::ASSIGNED_CLIENT_ID => {
                out.assigned_client_id = Some(p.string("assigned client identifier")?)
            }
            prop::SERVER_KEEP_ALIVE => out.server_keep_alive = Some(p.u16("server keep alive")?),
            prop::AUTH_METHOD => {
                p.string("authentication method")?;
            }
            prop::AUTH_DATA => {
                p.binary("authentication data")?;
            }
            prop::RESPONSE_INFO => out.response_info = Some(p.string("response information")?),
            prop::SERVER_REFERENCE => out.server_reference = Some(p.string("server reference")?),
            prop::REASON_STRING => out.reason_string = Some(p.string("reason string")?),
            prop::RECEIVE_MAXIMUM => {
                let v = p.u16("receive maximum")?;
                if v == 0 {
                    return malformed("receive maximum 0");
                }
                out.receive_maximum = Some(v);
            }
            prop::TOPIC_ALIAS_MAXIMUM => {
                out.topic_alias_maximum = Some(p.u16("topic alias maximum")?)
            }
            prop::TOPIC_ALIAS => out.topic_alias = Some(p.u16("topic alias")?),
            prop::MAXIMUM_QOS => {
                let v = p.u8("maximum QoS")?;
                if v > 1 {
                    return malformed(format!("maximum QoS {v}"));
                }
                out.maximum_qos = Some(v);
            }
            prop::RETAIN_AVAILABLE
            | prop::WILDCARD_SUB
            | prop::SUB_ID_AVAILABLE
            | prop::SHARED_SUB => {
                if p.u8("availability flag")? > 1 {
                    return malformed(format!("property 0x{id:02X} must be 0 or 1"));
                }
            }
            prop::USER_PROPERTY => {
                p.string("user property name")?;
                p.string("user property value")?;
            }
            prop::MAXIMUM_PACKET_SIZE => {
                let v = p.u32("maximum packet size")?;
                if v == 0 {
                    return malformed("maximum packet size 0");
                }
                out.maximum_packet_size = Some(v);
            }
            // `allowed` only lists identifiers handled above.
            other => return malformed(format!("property 0x{other:02X} is not handled")),
        }
    }
    Ok(out)
}

fn expect_end(c: &Cursor<'_>, packet: &str) -> Result<(), CodecError> {
    if c.remaining() != 0 {
        return malformed(format!("{} trailing bytes after {packet}", c.remaining()));
    }
    Ok(())
}

/// Decodes one packet from its first byte and its remaining bytes.
pub fn decode(first_byte: u8, body: &[u8]) -> Result<Incoming, CodecError> {
    let kind = first_byte >> 4;
    let flags = first_byte & 0x0F;
    let mut c = Cursor { buf: body, pos: 0 };
    if kind != kind::PUBLISH && flags != 0 {
        return malformed(format!(
            "packet type {kind} with reserved flags 0x{flags:X}"
        ));
    }
    match kind {
        kind::CONNACK => {
            let ack_flags = c.u8("connect acknowledge flags")?;
            if ack_flags & 0xFE != 0 {
                return malformed("CONNACK reserved flag bits set");
            }
            let reason_code = c.u8("CONNACK reason code")?;
            let p = read_props(
                &mut c,
                "CONNACK",
                &[
                    prop::SESSION_EXPIRY,
                    prop::RECEIVE_MAXIMUM,
                    prop::MAXIMUM_QOS,
                    prop::RETAIN_AVAILABLE,
                    prop::MAXIMUM_PACKET_SIZE,
                    prop::ASSIGNED_CLIENT_ID,
                    prop::TOPIC_ALIAS_MAXIMUM,
                    prop::REASON_STRING,
                    prop::USER_PROPERTY,
                    prop::WILDCARD_SUB,
                    prop::SUB_ID_AVAILABLE,
                    prop::SHARED_SUB,
                    prop::SERVER_KEEP_ALIVE,
                    prop::RESPONSE_INFO,
                    prop::SERVER_REFERENCE,
                    prop::AUTH_METHOD,
                    prop::AUTH_DATA,
                ],
            )?;
            expect_end(&c, "CONNACK")?;
            Ok(Incoming::ConnAck(ConnAck {
                session_present: ack_flags & 1 == 1,
                reason_code,
                session_expiry_s: p.session_expiry,
                receive_maximum: p.receive_maximum,
                maximum_qos: p.maximum_qos,
                maximum_packet_size: p.maximum_packet_size,
                assigned_client_id: p.assigned_client_id,
                topic_alias_maximum: p.topic_alias_maximum,
                reason_string: p.reason_string,
                server_keep_alive_s: p.server_keep_alive,
                response_information: p.response_info,
                server_reference: p.server_reference,
            }))
        }
        kind::PUBLISH => {
            let qos = (flags >> 1) & 0x03;
            if qos > 1 {
                return Err(CodecError::Unexpected(format!(
                    "PUBLISH with QoS {qos} (we subscribe with at most QoS 1)"
                )));
            }
            let dup = flags & 0x08 != 0;
            if qos == 0 && dup {
                return malformed("PUBLISH QoS 0 with DUP set");
            }
            let topic = c.string("topic name")?;
            if topic.contains(['+', '#']) {
                return malformed(format!("topic name {topic:?} has a wildcard"));
            }
            let packet_id = if qos > 0 {
                let id = c.u16("packet identifier")?;
                if id == 0 {
                    return malformed("packet identifier 0");
                }
                Some(id)
            } else {
                None
            };
            let p = read_props(
                &mut c,
                "PUBLISH",
                &[
                    prop::PAYLOAD_FORMAT,
                    prop::MESSAGE_EXPIRY,
                    prop::TOPIC_ALIAS,
                    prop::RESPONSE_TOPIC,
                    prop::CORRELATION_DATA,
                    prop::USER_PROPERTY,
                    prop::SUBSCRIPTION_ID,
                    prop::CONTENT_TYPE,
                ],
            )?;
            // We announce Topic Alias Maximum 0, so the server must not use aliases (3.3.2.3.4).
            if p.topic_alias.is_some() {
                return malformed("PUBLISH uses a topic alias, but we allow none");
            }
            if topic.is_empty() {
                return malformed("PUBLISH with an empty topic name");
            }
            let payload = body[c.pos..].to_vec();
            let payload_is_utf8 = p.payload_format == Some(1);
            if payload_is_utf8 && std::str::from_utf8(&payload).is_err() {
                return malformed("PUBLISH payload marked UTF-8 is not valid UTF-8");
            }
            Ok(Incoming::Publish(Publish {
                topic,
                qos,
                dup,
                retain: flags & 0x01 != 0,
                packet_id,
                payload_is_utf8,
                message_expiry_s: p.message_expiry,
                content_type: p.content_type,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                payload,
            }))
        }
        kind::PUBACK => {
            let packet_id = c.u16("packet identifier")?;
            let mut reason_code = 0;
            if c.remaining() > 0 {
                reason_code = c.u8("PUBACK reason code")?;
            }
            if c.remaining() > 0 {
                read_props(
                    &mut c,
                    "PUBACK",
                    &[prop::REASON_STRING, prop::USER_PROPERTY],
                )?;
            }
            expect_end(&c, "PUBACK")?;
            Ok(Incoming::PubAck {
                packet_id,
                reason_code,
            })
        }
        kind::SUBACK | kind::UNSUBACK => {
            let name = if kind == kind::SUBACK {
                "SUBACK"
            } else {
                "UNSUBACK"
            };
            let packet_id = c.u16("packet identifier")?;
            let p = read_props(&mut c, name, &[prop::REASON_STRING, prop::USER_PROPERTY])?;
            if c.remaining() == 0 {
                return malformed(format!("{name} without reason codes"));
            }
            let ack = SubAck {
                packet_id,
                reason_codes: body[c.pos..].to_vec(),
                reason_string: p.reason_string,
            };
            Ok(if kind == kind::SUBACK {
                Incoming::SubAck(ack)
            } else {
                Incoming::UnsubAck(ack)
            })
        }
        kind::PINGRESP => {
            expect_end(&c, "PINGRESP")?;
            Ok(Incoming::PingResp)
        }
        kind::DISCONNECT => {
            let mut reason_code = 0;
            let mut reason_string = None;
            if c.remaining() > 0 {
                reason_code = c.u8("DISCONNECT reason code")?;
            }
            if c.remaining() > 0 {
                let p = read_props(
                    &mut c,
                    "DISCONNECT",
                    &[
                        prop::SESSION_EXPIRY,
                        prop::REASON_STRING,
                        prop::USER_PROPERTY,
                        prop::SERVER_REFERENCE,
                    ],
                )?;
                reason_string = p.reason_string;
            }
            expect_end(&c, "DISCONNECT")?;
            Ok(Incoming::Disconnect {
                reason_code,
                reason_string,
            })
        }
        0 | 15 => malformed(format!(
            "packet type {kind} is reserved or AUTH (unsupported)"
        )),
        other => Err(CodecError::Unexpected(format!(
            "packet type {other} is not sent to a client"
        ))),
    }
}

/// Reads one packet, refusing one larger than `max_packet_size` before reading its body.
pub fn read_packet<R: Read>(r: &mut R, max_packet_size: u32) -> Result<Incoming, CodecError> {
    let mut byte = [0u8; 1];
    r.read_exact(&mut byte)?;
    let first = byte[0];
    let mut remaining = 0u32;
    let mut header_len = 1u64;
    for i in 0..4 {
        r.read_exact(&mut byte)?;
        header_len += 1;
        remaining |= u32::from(byte[0] & 0x7F) << (7 * i);
        if byte[0] & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return malformed("remaining length longer than 4 bytes");
        }
    }
    let total = header_len + remaining as u64;
    if total > max_packet_size as u64 {
        return Err(CodecError::TooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    let mut body = vec![0u8; remaining as usize];
    r.read_exact(&mut body)?;
    decode(first, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Connect {
        Connect {
            client_id: "ab".into(),
            clean_start: true,
            keep_alive_s: 60,
            session_expiry_s: 0,
            receive_maximum: u16::MAX,
            maximum_packet_size: 1024,
            request_response_information: false,
            username: None,
            password: None,
            user_properties: Vec::new(),
        }
    }

    #[test]
    fn connect_golden_bytes() {
        // 3.1.2: "MQTT", level 5, flags (clean start), keep alive 60, properties
        // (Maximum Packet Size 1024), payload: client id "ab".
        let expected = [
            0x10, 20, // fixed header, remaining length
            0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, // variable header
            5, 0x27, 0, 0, 4, 0, // properties
            0, 2, b'a', b'b', // client id
        ];
        assert_eq!(encode_connect(&connect()).unwrap(), expected);
    }

    #[test]
    fn connect_user_property_golden_bytes() {
        // 3.1.2.11.8: User Property (0x26), a UTF-8 string pair (R-MQTT.13's usp-endpoint-id).
        let mut c = connect();
        c.user_properties = vec![("k".into(), "v".into())];
        let expected = [
            0x10, 27, // fixed header, remaining length
            0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, // variable header
            12, 0x27, 0, 0, 4, 0, 0x26, 0, 1, b'k', 0, 1, b'v', // properties
            0, 2, b'a', b'b', // client id
        ];
        assert_eq!(encode_connect(&c).unwrap(), expected);
        c.user_properties = vec![("k".into(), "a\0b".into())];
        assert!(encode_connect(&c).is_err(), "U+0000 is refused");
    }

    #[test]
    fn connect_with_everything() {
        let mut c = connect();
        c.session_expiry_s = 300;
        c.receive_maximum = 10;
        c.request_response_information = true;
        c.username = Some("u".into());
        c.password = Some(vec![9]);
        let bytes = encode_connect(&c).unwrap();
        assert_eq!(bytes[9], 0x80 | 0x40 | 0x02);
        let props = &bytes[12..];
        assert_eq!(
            &props[..16],
            &[15, 0x11, 0, 0, 1, 44, 0x21, 0, 10, 0x27, 0, 0, 4, 0, 0x19, 1]
        );
        assert_eq!(
            &bytes[bytes.len() - 10..],
            &[0, 2, b'a', b'b', 0, 1, b'u', 0, 1, 9]
        );
    }

    #[test]
    fn connack_golden_decode() {
        // session present 0, Success, props: assigned id "x", server keep alive 30,
        // maximum packet size 2048, topic alias maximum 10, response information "r/1".
        let body = [
            0, 0, 21, 0x12, 0, 1, b'x', 0x13, 0, 30, 0x27, 0, 0, 8, 0, 0x22, 0, 10, 0x1A, 0, 3,
            b'r', b'/', b'1',
        ];
        let Incoming::ConnAck(ack) = decode(0x20, &body).unwrap() else {
            panic!("not a CONNACK");
        };
        assert_eq!(ack.reason_code, 0);
        assert_eq!(ack.assigned_client_id.as_deref(), Some("x"));
        assert_eq!(ack.server_keep_alive_s, Some(30));
        assert_eq!(ack.maximum_packet_size, Some(2048));
        assert_eq!(ack.topic_alias_maximum, Some(10));
        assert_eq!(ack.response_information.as_deref(), Some("r/1"));
    }

    #[test]
    fn connack_refusal_reason() {
        let Incoming::ConnAck(ack) = decode(0x20, &[0, 0x87, 0]).unwrap() else {
            panic!("not a CONNACK");
        };
        assert_eq!(ack.reason_code, 0x87);
        assert_eq!(reason_name(ack.reason_code), "Not authorized");
    }

    #[test]
    fn publish_golden_and_round_trip() {
        let p = Publish {
            topic: "a/b".into(),
            qos: 1,
            packet_id: Some(7),
            content_type: Some("usp.msg".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(vec![1, 2]),
            message_expiry_s: Some(5),
            payload: vec![0xDE, 0xAD],
            ..Default::default()
        };
        let bytes = encode_publish(&p, 1 << 20).unwrap();
        let expected = [
            0x32, 34, 0, 3, b'a', b'/', b'b', 0, 7, // topic, packet id
            24, 0x02, 0, 0, 0, 5, 0x03, 0, 7, b'u', b's', b'p', b'.', b'm', b's', b'g', 0x08, 0, 1,
            b'r', 0x09, 0, 2, 1, 2, // properties
            0xDE, 0xAD,
        ];
        assert_eq!(bytes, expected);
        let back = read_packet(&mut &bytes[..], 1 << 20).unwrap();
        assert_eq!(back, Incoming::Publish(p));
    }

    #[test]
    fn publish_qos0_has_no_packet_id() {
        let p = Publish {
            topic: "t".into(),
            payload: b"x".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            encode_publish(&p, 100).unwrap(),
            [0x30, 5, 0, 1, b't', 0, b'x']
        );
    }

    #[test]
    fn oversized_publish_is_refused_by_the_encoder() {
        let p = Publish {
            topic: "t".into(),
            payload: vec![0; 100],
            ..Default::default()
        };
        match encode_publish(&p, 100) {
            Err(CodecError::TooLarge {
                size: 106,
                max: 100,
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn oversized_packet_is_refused_before_reading_the_body() {
        // Remaining length 200, but only the header is there: the size check comes first.
        let bytes = [0x30, 0xC8, 0x01];
        match read_packet(&mut &bytes[..], 100) {
            Err(CodecError::TooLarge {
                size: 203,
                max: 100,
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn five_byte_remaining_length_is_malformed() {
        let bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert!(matches!(
            read_packet(&mut &bytes[..], u32::MAX),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn varint_boundaries() {
        for (v, enc) in [
            (0u32, vec![0u8]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (MAX_VARINT, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, enc, "{v}");
            assert_eq!(varint_len(v), enc.len());
            let mut c = Cursor { buf: &enc, pos: 0 };
            assert_eq!(c.varint("v").unwrap(), v);
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let cases: &[(u8, &[u8])] = &[
            (0x20, &[]),                                // CONNACK truncated
            (0x20, &[0, 0, 5, 0x27, 0, 0]),             // property runs past its block
            (0x20, &[0, 0, 2, 0x13, 0]),                // u16 property cut short
            (0x20, &[0, 0, 6, 0x13, 0, 1, 0x13, 0, 2]), // duplicate property
            (0x20, &[0, 0, 2, 0x01, 0]),                // property not valid in CONNACK
            (0x20, &[2, 0, 0]),                         // reserved ack flag
            (0x30, &[0, 2, 0xC3, 0x28, 0]),             // topic not UTF-8
            (0x30, &[0, 2, b'a', 0, 0]),                // topic with U+0000
            (0x30, &[0, 1, b'#', 0]),                   // topic with wildcard
            (0x30, &[0, 1, b'a', 3, 0x23, 0, 1]),       // topic alias we did not allow
            (0x32, &[0, 1, b'a', 0, 0, 0]),             // packet id 0
            (0x34, &[0, 1, b'a', 0, 1, 0]),             // QoS 2
            (0x38, &[0, 1, b'a', 0]),                   // DUP with QoS 0
            (0x30, &[0, 1, b'a', 2, 0x01, 1, 0xFF]),    // payload marked UTF-8 but is not
            (0x30, &[0, 9, b'a']),                      // string longer than the packet
            (0x90, &[0, 1, 0]),                         // SUBACK without reason codes
            (0xD1, &[]),                                // PINGRESP with flags
            (0xD0, &[0]),                               // PINGRESP with a body
            (0x10, &[]),                                // CONNECT is not for a client
            (0xF0, &[]),                                // AUTH unsupported
            (0x00, &[]),                                // reserved type
            (0x40, &[0]),                               // PUBACK cut short
            (0xE0, &[0, 3, 0x1F, 0, 5]),                // DISCONNECT reason string cut short
        ];
        for (first, body) in cases {
            assert!(
                decode(*first, body).is_err(),
                "0x{first:02X} {body:?} decoded"
            );
        }
    }

    #[test]
    fn short_forms_decode() {
        assert_eq!(
            decode(0x40, &[0, 9]).unwrap(),
            Incoming::PubAck {
                packet_id: 9,
                reason_code: 0
            }
        );
        assert_eq!(
            decode(0xE0, &[]).unwrap(),
            Incoming::Disconnect {
                reason_code: 0,
                reason_string: None
            }
        );
        let Incoming::SubAck(ack) = decode(0x90, &[0, 3, 0, 1, 0x87]).unwrap() else {
            panic!("not a SUBACK");
        };
        assert_eq!((ack.packet_id, ack.reason_codes), (3, vec![1, 0x87]));
    }

    #[test]
    fn subscribe_unsubscribe_ping_disconnect_golden() {
        let s = Subscribe {
            packet_id: 1,
            filter: "a/#".into(),
            max_qos: 1,
            no_local: true,
        };
        assert_eq!(
            encode_subscribe(&s).unwrap(),
            [0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'#', 0x05]
        );
        assert_eq!(
            encode_unsubscribe(2, "a").unwrap(),
            [0xA2, 6, 0, 2, 0, 0, 1, b'a']
        );
        assert_eq!(encode_pingreq(), [0xC0, 0]);
        assert_eq!(encode_disconnect(0), [0xE0, 0]);
        assert_eq!(encode_disconnect(0x8D), [0xE0, 1, 0x8D]);
        assert_eq!(encode_puback(5, 0), [0x40, 2, 0, 5]);
        assert_eq!(encode_puback(5, 0x80), [0x40, 3, 0, 5, 0x80]);
    }

    /// Random and mutated packets: decoding gives a packet or an error, never a panic.
    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = encode_publish(
            &Publish {
                topic: "a/b".into(),
                qos: 1,
                packet_id: Some(3),
                content_type: Some("usp.msg".into()),
                response_topic: Some("r".into()),
                payload: vec![1, 2, 3],
                ..Default::default()
            },
            1 << 20,
        )
        .unwrap();
        for round in 0..50_000 {
            let mut bytes = if round % 2 == 0 {
                valid.clone()
            } else {
                let len = (next() % 40) as usize;
                (0..len).map(|_| next() as u8).collect()
            };
            if !bytes.is_empty() {
                for _ in 0..=(next() % 3) {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            }
            let _ = read_packet(&mut &bytes[..], 1 << 16);
            if let Some((&first, body)) = bytes.split_first() {
                let _ = decode(first, body);
            }
        }
    }
}
