//! Bad input gives a UspError naming what was wrong, never a panic: malformed protobuf, Records
//! for another endpoint, oversized Records, missing oneofs, over-limit counts and strings, deep
//! nesting, random bytes, and a seeded mutation run over valid Records of every type.

mod proto_support;

use cpevisor_usp::errors::*;
use cpevisor_usp::proto::header::MsgType;
use cpevisor_usp::proto::*;
use cpevisor_usp::record::*;
use prost::Message;
use proto_support::*;

fn record_err(bytes: &[u8]) -> UspError {
    decode_record(bytes, AGENT, &Limits::default()).expect_err("should be refused")
}

fn msg_err(msg: &Msg) -> UspError {
    decode_msg(&msg.encode_to_vec(), &Limits::default()).expect_err("should be refused")
}

fn record_bytes(r: &Record) -> Vec<u8> {
    r.encode_to_vec()
}

#[test]
fn malformed_protobuf_is_refused_with_7100_or_7000() {
    let cases: &[(&str, &[u8])] = &[
        ("truncated varint", &[0x0a, 0x80]),
        ("truncated tag", &[0x80]),
        ("length past the end", &[0x0a, 0x05, b'1']),
        ("huge length", &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        (
            "ten-byte varint overflow",
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ],
        ),
        ("wrong wire type for version", &[0x08, 0x01]),
        ("field number zero", &[0x00, 0x01]),
        ("end group without start", &[0x0c]),
        ("invalid utf-8 in to_id", &[0x12, 0x02, 0xc3, 0x28]),
    ];
    for (what, bytes) in cases {
        let e = record_err(bytes);
        assert_eq!(e.code, RECORD_NOT_PARSED, "{what}: {e}");
        let e = decode_msg(bytes, &Limits::default()).expect_err(what);
        assert_eq!(e.code, MESSAGE_FAILED, "{what}: {e}");
        assert!(e.message.contains("could not be parsed"), "{what}: {e}");
    }
}

#[test]
fn empty_input_is_refused() {
    // An empty buffer is a valid (all-default) protobuf: the checks must still catch it.
    assert_eq!(record_err(&[]).code, INVALID_RECORD_VALUE);
    assert_eq!(
        decode_msg(&[], &Limits::default()).unwrap_err().code,
        INVALID_ARGUMENTS
    );
}

#[test]
fn oversized_record_is_refused_before_decoding() {
    let limits = Limits::default();
    // Valid protobuf (an unknown bytes field), just too big: the size check must come first.
    let mut big = record_bytes(&Record::no_session(AGENT, CONTROLLER, vec![1]));
    big.extend_from_slice(&[0xfa, 0x01]); // field 31, LEN
    let pad = limits.max_record_bytes;
    let mut len = Vec::new();
    prost::encoding::encode_varint(pad as u64, &mut len);
    big.extend_from_slice(&len);
    big.resize(big.len() + pad, 0);
    let e = record_err(&big);
    assert_eq!(e.code, RECORD_NOT_PARSED);
    assert!(e.message.contains("max_record_bytes"), "{e}");

    // A smaller limit applies the same way; exactly at the limit is accepted.
    let ok = record_bytes(&Record::no_session_msg(
        AGENT,
        CONTROLLER,
        &Msg::get("g", ["Device."], 0),
    ));
    let tight = Limits {
        max_record_bytes: ok.len(),
        ..Limits::default()
    };
    decode_record(&ok, AGENT, &tight).unwrap();
    let tighter = Limits {
        max_record_bytes: ok.len() - 1,
        ..Limits::default()
    };
    assert!(decode_record(&ok, AGENT, &tighter).is_err());
    let e = decode_msg(&vec![0u8; tight.max_record_bytes + 1], &tight).unwrap_err();
    assert_eq!(e.code, RESOURCES_EXCEEDED);

    // Sending refuses what a peer with the same limit would refuse.
    let r = Record::no_session(AGENT, CONTROLLER, vec![7; 70_000]);
    let e = encode_record(&r, &limits).unwrap_err();
    assert_eq!(e.code, RESOURCES_EXCEEDED);
}

#[test]
fn record_for_another_endpoint_is_refused_and_not_answered() {
    let r = Record::no_session_msg(
        "proto::someone-else",
        CONTROLLER,
        &Msg::get("g", ["Device."], 0),
    );
    let bytes = record_bytes(&r);
    let e = record_err(&bytes);
    assert_eq!(e.code, INVALID_RECORD_VALUE);
    assert!(e.message.contains("to_id"), "{e}");
    assert!(error_reply(&bytes, AGENT, &Limits::default(), &e).is_none());
}

#[test]
fn envelope_fields_are_checked() {
    let base = Record::no_session_msg(AGENT, CONTROLLER, &Msg::get("g", ["Device."], 0));
    let mut cases: Vec<(&str, Record, u32, &str)> = Vec::new();
    for (v, code) in [
        ("2.0", INVALID_RECORD_VALUE),
        ("", INVALID_RECORD_VALUE),
        ("1", INVALID_RECORD_VALUE),
        ("1.x", INVALID_RECORD_VALUE),
    ] {
        let mut r = base.clone();
        r.version = v.into();
        cases.push(("version", r, code, "version"));
    }
    let mut r = base.clone();
    r.from_id.clear();
    cases.push(("empty from_id", r, INVALID_RECORD_VALUE, "from_id"));
    let mut r = base.clone();
    r.from_id = "x".repeat(300);
    cases.push((
        "long from_id",
        r,
        INVALID_RECORD_VALUE,
        "max_endpoint_id_len",
    ));
    let mut r = base.clone();
    r.to_id.clear();
    cases.push(("empty to_id", r, INVALID_RECORD_VALUE, "to_id"));
    let mut r = base.clone();
    r.payload_security = record::PayloadSecurity::Tls12 as i32;
    cases.push(("TLS12", r, SECURE_SESSION_NOT_SUPPORTED, "TLS12"));
    let mut r = base.clone();
    r.payload_security = 9;
    cases.push((
        "unknown security",
        r,
        INVALID_RECORD_VALUE,
        "payload_security",
    ));
    let mut r = base.clone();
    r.mac_signature = vec![1, 2, 3];
    cases.push(("mac", r, SECURE_SESSION_NOT_SUPPORTED, "mac_signature"));
    let mut r = base.clone();
    r.record_type = None;
    cases.push(("no record_type", r, RECORD_NOT_PARSED, "record_type"));
    let r = Record::no_session(AGENT, CONTROLLER, vec![]);
    cases.push(("empty payload", r, INVALID_RECORD_VALUE, "payload"));
    let mut r = Record::mqtt_connect(AGENT, CONTROLLER, mqtt_connect_record::MqttVersion::V5, "t");
    if let Some(record::RecordType::MqttConnect(m)) = r.record_type.as_mut() {
        m.version = 7;
    }
    cases.push((
        "mqtt version",
        r,
        INVALID_RECORD_VALUE,
        "MQTTConnectRecord.version",
    ));
    let r = Record::mqtt_connect(
        AGENT,
        CONTROLLER,
        mqtt_connect_record::MqttVersion::V5,
        "t".repeat(2000),
    );
    cases.push(("long topic", r, INVALID_RECORD_VALUE, "max_text_len"));
    let r = Record::disconnect(AGENT, CONTROLLER, "r".repeat(2000), 0);
    cases.push((
        "long reason",
        r,
        INVALID_RECORD_VALUE,
        "DisconnectRecord.reason",
    ));

    for (what, r, code, needle) in cases {
        let e = record_err(&record_bytes(&r));
        assert_eq!(e.code, code, "{what}: {e}");
        assert!(e.message.contains(needle), "{what}: {e}");
    }
}

#[test]
fn unknown_record_type_is_refused() {
    // Only an unknown field 14 where the record_type oneof should be.
    let mut bytes = record_bytes(&Record::no_session(AGENT, CONTROLLER, vec![1]));
    let at = bytes.iter().rposition(|&b| b == 0x3a).unwrap();
    bytes[at] = 14 << 3 | 2;
    let e = record_err(&bytes);
    assert_eq!(e.code, RECORD_NOT_PARSED);
    assert!(e.message.contains("record_type"), "{e}");
}

#[test]
fn session_context_is_answered_with_7106() {
    let records = all_records();
    let session = records
        .iter()
        .find(|r| matches!(r.record_type, Some(record::RecordType::SessionContext(_))))
        .unwrap();
    let bytes = record_bytes(session);
    let decoded = decode_record(&bytes, AGENT, &Limits::default()).unwrap();
    let e = decoded.content().unwrap_err();
    assert_eq!(e.code, SESSION_CONTEXT_NOT_ALLOWED);
    let reply = error_reply(&bytes, AGENT, &Limits::default(), &e).expect("a request inside");
    assert_eq!(
        (reply.to_id.as_str(), reply.from_id.as_str()),
        (CONTROLLER, AGENT)
    );
    let msg = decode_msg(reply.no_session_payload().unwrap(), &Limits::default()).unwrap();
    assert_eq!(msg.msg_id(), "s-1");
    assert_eq!(
        msg.error_body().unwrap().err_code,
        SESSION_CONTEXT_NOT_ALLOWED
    );
}

#[test]
fn error_reply_answers_requests_only() {
    let limits = Limits::default();
    let e = UspError::new(RESOURCES_EXCEEDED, "too many paths");
    let get = record_bytes(&Record::no_session_msg(
        AGENT,
        CONTROLLER,
        &Msg::get("g-7", ["Device."], 0),
    ));
    let reply = error_reply(&get, AGENT, &limits, &e).unwrap();
    let msg = decode_msg(reply.no_session_payload().unwrap(), &limits).unwrap();
    assert_eq!(msg.msg_id(), "g-7");
    assert_eq!(msg.msg_type(), Some(MsgType::Error));
    assert_eq!(msg.error_body().unwrap().err_msg, "too many paths");

    let resp = Msg::response("r", response::RespType::NotifyResp(NotifyResp::default()));
    let bytes = record_bytes(&Record::no_session_msg(AGENT, CONTROLLER, &resp));
    assert!(
        error_reply(&bytes, AGENT, &limits, &e).is_none(),
        "responses are never answered"
    );
    let err = Msg::from_usp_error("x", &e);
    let bytes = record_bytes(&Record::no_session_msg(AGENT, CONTROLLER, &err));
    assert!(
        error_reply(&bytes, AGENT, &limits, &e).is_none(),
        "errors are never answered"
    );
    let bytes = record_bytes(&Record::no_session(AGENT, CONTROLLER, vec![0x0a, 0x80]));
    assert!(
        error_reply(&bytes, AGENT, &limits, &e).is_none(),
        "no msg_id to answer"
    );
    let mut no_from = Record::no_session_msg(AGENT, CONTROLLER, &Msg::get("g", ["Device."], 0));
    no_from.from_id.clear();
    assert!(
        error_reply(&record_bytes(&no_from), AGENT, &limits, &e).is_none(),
        "nowhere to answer"
    );
    assert!(error_reply(&[0xff], AGENT, &limits, &e).is_none());
}

#[test]
fn msg_structure_is_checked() {
    let get = Msg::get("g", ["Device."], 0);
    let mut m = get.clone();
    m.header = None;
    assert_eq!(msg_err(&m).code, INVALID_ARGUMENTS);
    let mut m = get.clone();
    m.header.as_mut().unwrap().msg_id.clear();
    assert!(msg_err(&m).message.contains("msg_id"));
    let mut m = get.clone();
    m.body = None;
    assert!(msg_err(&m).message.contains("body"));
    let mut m = get.clone();
    m.body.as_mut().unwrap().msg_body = Some(body::MsgBody::Request(Request { req_type: None }));
    assert!(msg_err(&m).message.contains("req_type"));
    let mut m = get.clone();
    m.body.as_mut().unwrap().msg_body = Some(body::MsgBody::Response(Response { resp_type: None }));
    assert!(msg_err(&m).message.contains("resp_type"));

    let mut n = Msg::notify_value_change("n", "s", false, "Device.X", "1");
    if let Some(body::MsgBody::Request(Request {
        req_type: Some(request::ReqType::Notify(n)),
    })) = n.body.as_mut().and_then(|b| b.msg_body.as_mut())
    {
        n.notification = None;
    }
    let e = msg_err(&n);
    assert_eq!(e.code, INVALID_ARGUMENTS);
    assert!(e.message.contains("notification"), "{e}");

    let add = Msg::response(
        "a",
        response::RespType::AddResp(AddResp {
            created_obj_results: vec![add_resp::CreatedObjectResult {
                requested_path: "Device.A.".into(),
                oper_status: None,
            }],
        }),
    );
    assert!(msg_err(&add).message.contains("oper_status"));
    let op = Msg::response(
        "o",
        response::RespType::OperateResp(OperateResp {
            operation_results: vec![operate_resp::OperationResult {
                executed_command: "Device.X()".into(),
                operation_resp: None,
            }],
        }),
    );
    assert!(msg_err(&op).message.contains("operation_resp"));
}

#[test]
fn unknown_request_oneof_is_refused() {
    // Body.request > Request with field 12 (not in the schema) only.
    let msg = cat_msg(
        &[0x0a, 0x03, 0x0a, 0x01, b'u'],
        &[0x12, 0x04, 0x0a, 0x02, 0x62, 0x00],
    );
    let e = decode_msg(&msg, &Limits::default()).unwrap_err();
    assert_eq!(e.code, INVALID_ARGUMENTS);
    assert!(e.message.contains("req_type"), "{e}");
}

fn cat_msg(header: &[u8], body: &[u8]) -> Vec<u8> {
    [header, body].concat()
}

#[test]
fn header_type_disagreeing_with_body_is_corrected_or_refused() {
    let mut m = Msg::get("g", ["Device."], 0);
    m.header.as_mut().unwrap().msg_type = MsgType::Set as i32;
    let bytes = m.encode_to_vec();
    let fixed = decode_msg(&bytes, &Limits::default()).unwrap();
    assert_eq!(
        fixed.msg_type(),
        Some(MsgType::Get),
        "R-MSG.10: the body wins"
    );
    let strict = Limits {
        strict_msg_type: true,
        ..Limits::default()
    };
    let e = decode_msg(&bytes, &strict).unwrap_err();
    assert_eq!(e.code, INVALID_ARGUMENTS);
    assert!(e.message.contains("msg_type"), "{e}");
}

/// R-ENC.2: an unknown enumeration value (header msg_type 99) is reported as a failure the
/// way R-MTP.5 says (an Error to the sender of a request), never answered as the body's type.
#[test]
fn unknown_msg_type_is_an_error_not_a_guess() {
    let mut m = Msg::get("g99", ["Device."], 0);
    m.header.as_mut().unwrap().msg_type = 99;
    let payload = m.encode_to_vec();
    for limits in [
        Limits::default(),
        Limits {
            strict_msg_type: true,
            ..Limits::default()
        },
    ] {
        let e = decode_msg(&payload, &limits).unwrap_err();
        assert_eq!(e.code, MESSAGE_NOT_SUPPORTED, "{e}");
        assert!(e.message.contains("99"), "{e}");
    }
    let bytes = Record::no_session("os::agent", "self::ctl", payload).encode_to_vec();
    let e = decode_msg(
        decode_record(&bytes, "os::agent", &Limits::default())
            .unwrap()
            .no_session_payload()
            .unwrap(),
        &Limits::default(),
    )
    .unwrap_err();
    let reply = error_reply(&bytes, "os::agent", &Limits::default(), &e).expect("R-MTP.5 reply");
    assert_eq!(reply.to_id, "self::ctl");
    let msg = decode_msg(reply.no_session_payload().unwrap(), &Limits::default()).unwrap();
    assert_eq!(msg.msg_id(), "g99");
    assert_eq!(msg.error_body().unwrap().err_code, MESSAGE_NOT_SUPPORTED);
}

#[test]
fn counts_and_strings_are_bounded() {
    let l = Limits::default();
    let many: Vec<String> = (0..l.max_paths + 1)
        .map(|i| format!("Device.X.{i}."))
        .collect();
    let cases: Vec<(Msg, &str)> = vec![
        (Msg::get("g", many.clone(), 0), "max_paths"),
        (Msg::delete("d", false, many.clone()), "max_paths"),
        (
            Msg::get("g", ["D".repeat(l.max_path_len + 1)], 0),
            "max_path_len",
        ),
        (
            Msg::operate(
                "o",
                "Device.X()",
                "k",
                true,
                (0..l.max_params + 1)
                    .map(|i| (format!("a{i}"), "v".to_string()))
                    .collect(),
            ),
            "max_params",
        ),
        (
            Msg::operate(
                "o",
                "Device.X()",
                "k".repeat(l.max_text_len + 1),
                true,
                Default::default(),
            ),
            "max_text_len",
        ),
        (
            Msg::notify_value_change("n", "s", false, "Device.X", "v".repeat(l.max_value_len + 1)),
            "max_value_len",
        ),
        (
            Msg::get("m".repeat(l.max_msg_id_len + 1), ["Device."], 0),
            "max_msg_id_len",
        ),
        (
            Msg::set(
                "s",
                false,
                vec![set::UpdateObject {
                    obj_path: "Device.A.".into(),
                    param_settings: vec![set::UpdateParamSetting::default(); l.max_params + 1],
                }],
            ),
            "max_params",
        ),
    ];
    for (msg, needle) in cases {
        let e = msg_err(&msg);
        assert_eq!(e.code, RESOURCES_EXCEEDED, "{needle}: {e}");
        assert!(e.message.contains(needle), "{needle}: {e}");
    }
    // Exactly at the limits is accepted.
    let at: Vec<String> = many[..l.max_paths].to_vec();
    decode_msg(&Msg::get("g", at, 0).encode_to_vec(), &l).unwrap();

    // A large but legitimate GetResp (3000 parameters, ~50 KiB) passes every limit.
    let objects: Vec<get_resp::ResolvedPathResult> = (0..3)
        .map(|o| get_resp::ResolvedPathResult {
            resolved_path: format!("Device.X.{o}."),
            result_params: (0..1000)
                .map(|i| (format!("Param{i}"), "v".to_string()))
                .collect(),
        })
        .collect();
    let big = Msg::response(
        "big",
        response::RespType::GetResp(GetResp {
            req_path_results: vec![get_resp::RequestedPathResult {
                requested_path: "Device.X.".into(),
                resolved_path_results: objects,
                ..Default::default()
            }],
        }),
    );
    let bytes = Record::no_session_msg(AGENT, CONTROLLER, &big).encode_to_vec();
    assert!(
        bytes.len() > 40_000 && bytes.len() <= l.max_record_bytes,
        "{}",
        bytes.len()
    );
    let record = decode_record(&bytes, AGENT, &l).unwrap();
    assert_eq!(
        decode_msg(record.no_session_payload().unwrap(), &l).unwrap(),
        big
    );

    // Nested results are bounded in total by max_items.
    let rows: Vec<get_resp::ResolvedPathResult> = (0..200)
        .map(|i| get_resp::ResolvedPathResult {
            resolved_path: format!("Device.X.{i}."),
            result_params: map(&[("A", "1"), ("B", "2")]),
        })
        .collect();
    let resp = Msg::response(
        "r",
        response::RespType::GetResp(GetResp {
            req_path_results: vec![get_resp::RequestedPathResult {
                requested_path: "Device.X.".into(),
                resolved_path_results: rows,
                ..Default::default()
            }],
        }),
    );
    decode_msg(&resp.encode_to_vec(), &l).unwrap();
    let small = Limits {
        max_items: 300,
        ..Limits::default()
    };
    let e = decode_msg(&resp.encode_to_vec(), &small).unwrap_err();
    assert!(e.message.contains("max_items"), "{e}");
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // Nested groups of an unknown field, far past prost's recursion limit.
    let mut deep = vec![0x1b_u8; 100_000]; // field 3, START_GROUP
    deep.extend(vec![0x1c_u8; 100_000]); // END_GROUP
    assert!(decode_record(&deep[..60_000], AGENT, &Limits::default()).is_err());
    let nested_groups = {
        let mut v = [0xfb_u8, 0x01].repeat(5000); // field 31, START_GROUP
        v.extend([0xfc_u8, 0x01].repeat(5000));
        v
    };
    assert!(decode_msg(&nested_groups, &Limits::default()).is_err());
    assert!(decode_record(&nested_groups, AGENT, &Limits::default()).is_err());
    // Messages nested through known fields as deep as the schema allows stay fine.
    let resp = all_msgs()
        .into_iter()
        .find(|m| m.msg_type() == Some(MsgType::SetResp))
        .unwrap();
    decode_msg(&resp.encode_to_vec(), &Limits::default()).unwrap();
}

/// splitmix64: a small seeded generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Decodes like the agent does; every accepted Msg must re-encode to one that decodes equal
/// and still passes the checks.
fn exercise(bytes: &[u8], limits: &Limits) {
    if let Ok(record) = decode_record(bytes, AGENT, limits) {
        if let Ok(RecordContent::Msg(payload)) = record.content() {
            exercise_msg(payload, limits);
        }
    } else {
        let _ = error_reply(bytes, AGENT, limits, &UspError::new(RECORD_NOT_PARSED, "x"));
    }
    exercise_msg(bytes, limits);
}

fn exercise_msg(bytes: &[u8], limits: &Limits) {
    if let Ok(msg) = decode_msg(bytes, limits) {
        let again = decode_msg(&msg.encode_to_vec(), limits).expect("an accepted Msg re-decodes");
        assert_eq!(again, msg);
        assert_eq!(msg.msg_type(), msg.body_msg_type());
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                data.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                data.remove(rng.below(len));
            }
            4 => data.truncate(rng.below(len + 1)),
            5 if len > 1 => {
                // Duplicate a slice: repeated fields, merged oneofs.
                let a = rng.below(len);
                let b = a + rng.below(len - a);
                let chunk = data[a..=b.min(len - 1)].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, chunk);
            }
            _ => {
                // Interesting varint bytes: continuation, max length, zero.
                let i = rng.below(len + 1);
                let v = [0x80, 0xff, 0x00, 0x7f, 0x0f][rng.below(5)];
                data.insert(i, v);
            }
        }
    }
}

#[test]
fn seeded_mutations_never_panic() {
    let limits = Limits::default();
    let seeds: Vec<Vec<u8>> = all_records().iter().map(|r| r.encode_to_vec()).collect();
    let msgs: Vec<Vec<u8>> = all_msgs().iter().map(|m| m.encode_to_vec()).collect();
    let mut rng = Rng(0x5eed_0005);
    let mut accepted = 0usize;
    for round in 0..20_000 {
        let pool = if round % 2 == 0 { &seeds } else { &msgs };
        let mut data = pool[rng.below(pool.len())].clone();
        mutate(&mut rng, &mut data);
        exercise(&data, &limits);
        if decode_record(&data, AGENT, &limits).is_ok() || decode_msg(&data, &limits).is_ok() {
            accepted += 1;
        }
    }
    // Many mutations stay valid (a changed string byte), many do not: both paths ran.
    assert!(accepted > 1000 && accepted < 19_000, "accepted {accepted}");
}

#[test]
fn random_bytes_never_panic() {
    let limits = Limits::default();
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let len = rng.below(300);
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&data, &limits);
    }
}
