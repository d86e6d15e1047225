//! Golden bytes assembled by hand from the field numbers of usp-msg-1-4.proto and
//! usp-record-1-4.proto: a wrong field number, wire type or oneof tag in `proto` fails here.

use std::collections::BTreeMap;

use cpevisor_usp::proto::mqtt_connect_record::MqttVersion;
use cpevisor_usp::proto::*;
use prost::Message;

/// Concatenates byte pieces, so each field of the golden vectors can be written on its own.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn assert_golden<M: Message + Default + PartialEq + std::fmt::Debug>(value: &M, golden: &[u8]) {
    assert_eq!(
        value.encode_to_vec(),
        golden,
        "encoding differs from the schema"
    );
    assert_eq!(&M::decode(golden).unwrap(), value, "decoding differs");
}

#[test]
fn get_request() {
    let msg = Msg::get("1", ["Device.DeviceInfo."], 2);
    let golden = cat(&[
        // Msg.header (1, LEN 5): msg_id (1) "1", msg_type (2) = GET (1)
        &[0x0a, 0x05, 0x0a, 0x01, b'1', 0x10, 0x01],
        // Msg.body (2, LEN 29) > Body.request (1, LEN 27) > Request.get (1, LEN 25)
        &[0x12, 0x1d, 0x0a, 0x1b, 0x0a, 0x19],
        // Get.param_paths (1, LEN 18)
        &[0x0a, 0x12],
        b"Device.DeviceInfo.",
        // Get.max_depth (2, fixed32) = 2
        &[0x15, 0x02, 0x00, 0x00, 0x00],
    ]);
    assert_golden(&msg, &golden);
}

#[test]
fn error_with_param_errs() {
    let msg = Msg::error(
        "7",
        Error {
            err_code: 7004,
            err_msg: "bad".into(),
            param_errs: vec![error::ParamError {
                param_path: "A.".into(),
                err_code: 7010,
                err_msg: "x".into(),
            }],
        },
    );
    let golden = cat(&[
        // header: msg_id "7"; msg_type ERROR = 0 is the default and not written
        &[0x0a, 0x03, 0x0a, 0x01, b'7'],
        // body (2, LEN 26) > Body.error (3, LEN 24)
        &[0x12, 0x1a, 0x1a, 0x18],
        // Error.err_code (1, fixed32) 7004 = 0x1b5c; err_msg (2) "bad"
        &[0x0d, 0x5c, 0x1b, 0x00, 0x00, 0x12, 0x03],
        b"bad",
        // Error.param_errs (3, LEN 12): param_path (1) "A.", err_code (2) 7010, err_msg (3) "x"
        &[
            0x1a, 0x0c, 0x0a, 0x02, b'A', b'.', 0x15, 0x62, 0x1b, 0x00, 0x00, 0x1a, 0x01, b'x',
        ],
    ]);
    assert_golden(&msg, &golden);
}

#[test]
fn notify_event_with_a_map() {
    let mut params = BTreeMap::new();
    params.insert("Results".to_string(), "ok".to_string());
    let msg = Msg::notify_event(
        "n",
        "sub",
        false,
        "Device.SoftwareModules.",
        "DUStateChange!",
        params,
    );
    let golden = cat(&[
        // header: msg_id "n", msg_type NOTIFY (3)
        &[0x0a, 0x05, 0x0a, 0x01, b'n', 0x10, 0x03],
        // body (LEN 67) > request (1, LEN 65) > Request.notify (8, LEN 63)
        &[0x12, 0x43, 0x0a, 0x41, 0x42, 0x3f],
        // Notify.subscription_id (1) "sub"; send_resp false not written
        &[0x0a, 0x03],
        b"sub",
        // Notify.event (3, LEN 56) > Event.obj_path (1, LEN 23)
        &[0x1a, 0x38, 0x0a, 0x17],
        b"Device.SoftwareModules.",
        // Event.event_name (2, LEN 14)
        &[0x12, 0x0e],
        b"DUStateChange!",
        // Event.params (3): one map entry (LEN 13) with key (1) and value (2)
        &[0x1a, 0x0d, 0x0a, 0x07],
        b"Results",
        &[0x12, 0x02],
        b"ok",
    ]);
    assert_golden(&msg, &golden);
}

#[test]
fn async_operate_response() {
    let msg = Msg::response(
        "o",
        response::RespType::OperateResp(OperateResp {
            operation_results: vec![operate_resp::OperationResult::started(
                "Device.X.Y()",
                "Device.LocalAgent.Request.1.",
            )],
        }),
    );
    let golden = cat(&[
        // header: msg_id "o", msg_type OPERATE_RESP (7)
        &[0x0a, 0x05, 0x0a, 0x01, b'o', 0x10, 0x07],
        // body (LEN 50) > Body.response (2, LEN 48) > Response.operate_resp (7, LEN 46)
        &[0x12, 0x32, 0x12, 0x30, 0x3a, 0x2e],
        // OperateResp.operation_results (1, LEN 44) > executed_command (1, LEN 12)
        &[0x0a, 0x2c, 0x0a, 0x0c],
        b"Device.X.Y()",
        // OperationResult.req_obj_path (2, LEN 28): the oneof's string arm
        &[0x12, 0x1c],
        b"Device.LocalAgent.Request.1.",
    ]);
    assert_golden(&msg, &golden);
}

#[test]
fn no_session_record() {
    let record = Record::no_session("proto::agent", "proto::ctl", vec![0xaa]);
    let golden = cat(&[
        // version (1) "1.4"
        &[0x0a, 0x03],
        b"1.4",
        // to_id (2), from_id (3)
        &[0x12, 0x0c],
        b"proto::agent",
        &[0x1a, 0x0a],
        b"proto::ctl",
        // payload_security PLAINTEXT = 0 not written; no_session_context (7, LEN 3) >
        // NoSessionContextRecord.payload (2, LEN 1)
        &[0x3a, 0x03, 0x12, 0x01, 0xaa],
    ]);
    assert_golden(&record, &golden);
}

#[test]
fn mqtt_connect_and_disconnect_records() {
    let record = Record::mqtt_connect("ctl", "agent", MqttVersion::V5, "usp/agent");
    let golden = cat(&[
        &[0x0a, 0x03],
        b"1.4",
        &[0x12, 0x03],
        b"ctl",
        &[0x1a, 0x05],
        b"agent",
        // mqtt_connect (10, LEN 13) > version (1) = V5 (1), subscribed_topic (2)
        &[0x52, 0x0d, 0x08, 0x01, 0x12, 0x09],
        b"usp/agent",
    ]);
    assert_golden(&record, &golden);

    let record = Record::disconnect("c", "a", "bye", 7105);
    let golden = cat(&[
        &[0x0a, 0x03],
        b"1.4",
        &[0x12, 0x01, b'c', 0x1a, 0x01, b'a'],
        // disconnect (12, LEN 10) > reason (1) "bye", reason_code (2, fixed32) 7105 = 0x1bc1
        &[0x62, 0x0a, 0x0a, 0x03],
        b"bye",
        &[0x15, 0xc1, 0x1b, 0x00, 0x00],
    ]);
    assert_golden(&record, &golden);
}

#[test]
fn session_context_and_websocket_record_tags() {
    // websocket_connect (9) is an empty message: tag 0x4a, LEN 0.
    let ws = Record::websocket_connect("c", "a");
    assert!(ws.encode_to_vec().ends_with(&[0x4a, 0x00]));
    // session_context (8, LEN 10): session_id (1) 5, sequence_id (2) 6, expected_id (3) 7,
    // payload_sar_state (5) COMPLETE (3), payload (7) [0x01].
    let golden = [
        0x42, 0x0b, 0x08, 0x05, 0x10, 0x06, 0x18, 0x07, 0x28, 0x03, 0x3a, 0x01, 0x01,
    ];
    let mut r = Record::no_session("c", "a", vec![]);
    r.record_type = Some(record::RecordType::SessionContext(SessionContextRecord {
        session_id: 5,
        sequence_id: 6,
        expected_id: 7,
        retransmit_id: 0,
        payload_sar_state: session_context_record::PayloadSarState::Complete as i32,
        payloadrec_sar_state: 0,
        payload: vec![vec![0x01]],
    }));
    assert!(
        r.encode_to_vec().ends_with(&golden),
        "{:02x?}",
        r.encode_to_vec()
    );
}

#[test]
fn request_oneof_tags_match_the_schema() {
    // Request.req_type tags 1..=11 in schema order; Response.resp_type likewise.
    use request::ReqType as R;
    let reqs: Vec<(u8, R)> = vec![
        (1, R::Get(Get::default())),
        (2, R::GetSupportedDm(GetSupportedDm::default())),
        (3, R::GetInstances(GetInstances::default())),
        (4, R::Set(Set::default())),
        (5, R::Add(Add::default())),
        (6, R::Delete(Delete::default())),
        (7, R::Operate(Operate::default())),
        (8, R::Notify(Notify::default())),
        (9, R::GetSupportedProtocol(GetSupportedProtocol::default())),
        (10, R::Register(Register::default())),
        (11, R::Deregister(Deregister::default())),
    ];
    for (tag, r) in reqs {
        let bytes = Request { req_type: Some(r) }.encode_to_vec();
        assert_eq!(bytes, [tag << 3 | 2, 0], "Request tag {tag}");
    }
    use response::RespType as P;
    let resps: Vec<(u8, P)> = vec![
        (1, P::GetResp(GetResp::default())),
        (2, P::GetSupportedDmResp(GetSupportedDmResp::default())),
        (3, P::GetInstancesResp(GetInstancesResp::default())),
        (4, P::SetResp(SetResp::default())),
        (5, P::AddResp(AddResp::default())),
        (6, P::DeleteResp(DeleteResp::default())),
        (7, P::OperateResp(OperateResp::default())),
        (8, P::NotifyResp(NotifyResp::default())),
        (
            9,
            P::GetSupportedProtocolResp(GetSupportedProtocolResp::default()),
        ),
        (10, P::RegisterResp(RegisterResp::default())),
        (11, P::DeregisterResp(DeregisterResp::default())),
    ];
    for (tag, r) in resps {
        let bytes = Response { resp_type: Some(r) }.encode_to_vec();
        assert_eq!(bytes, [tag << 3 | 2, 0], "Response tag {tag}");
    }
}

#[test]
fn notify_oneof_tags_match_the_schema() {
    use notify::Notification as N;
    let cases: Vec<(u8, N)> = vec![
        (3, N::Event(Default::default())),
        (4, N::ValueChange(Default::default())),
        (5, N::ObjCreation(Default::default())),
        (6, N::ObjDeletion(Default::default())),
        (7, N::OperComplete(Default::default())),
        (8, N::OnBoardReq(Default::default())),
    ];
    for (tag, n) in cases {
        let bytes = Notify {
            notification: Some(n),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(bytes, [tag << 3 | 2, 0], "Notify tag {tag}");
    }
}

#[test]
fn nested_field_numbers_of_set_add_and_supported_dm() {
    // Set: allow_partial (1) true, update_objs (2) > obj_path (1) "A.",
    // param_settings (2) > param (1) "p", value (2) "v", required (3) true.
    let set = Set {
        allow_partial: true,
        update_objs: vec![set::UpdateObject {
            obj_path: "A.".into(),
            param_settings: vec![set::UpdateParamSetting {
                param: "p".into(),
                value: "v".into(),
                required: true,
            }],
        }],
    };
    let golden = [
        0x08, 0x01, 0x12, 0x0e, 0x0a, 0x02, b'A', b'.', 0x12, 0x08, 0x0a, 0x01, b'p', 0x12, 0x01,
        b'v', 0x18, 0x01,
    ];
    assert_golden(&set, &golden);

    // AddResp success: created_obj_results (1) > requested_path (1) "A.", oper_status (2) >
    // oper_success (2) > instantiated_path (1) "A.1.", unique_keys (3) {"k": "v"}.
    use add_resp::created_object_result::{operation_status as st, OperationStatus};
    let resp = AddResp {
        created_obj_results: vec![add_resp::CreatedObjectResult {
            requested_path: "A.".into(),
            oper_status: Some(OperationStatus {
                oper_status: Some(st::OperStatus::OperSuccess(st::OperationSuccess {
                    instantiated_path: "A.1.".into(),
                    param_errs: vec![],
                    unique_keys: [("k".to_string(), "v".to_string())].into(),
                })),
            }),
        }],
    };
    let golden = [
        0x0a, 0x16, 0x0a, 0x02, b'A', b'.', 0x12, 0x10, 0x12, 0x0e, 0x0a, 0x04, b'A', b'.', b'1',
        b'.', 0x1a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v',
    ];
    assert_golden(&resp, &golden);

    // SupportedParamResult: param_name (1) "n", access (2) READ_WRITE (1), value_type (3)
    // PARAM_UNSIGNED_INT (9), value_change (4) WILL_IGNORE (2).
    use get_supported_dm_resp as g;
    let p = g::SupportedParamResult {
        param_name: "n".into(),
        access: g::ParamAccessType::ParamReadWrite as i32,
        value_type: g::ParamValueType::ParamUnsignedInt as i32,
        value_change: g::ValueChangeType::ValueChangeWillIgnore as i32,
    };
    assert_golden(&p, &[0x0a, 0x01, b'n', 0x10, 0x01, 0x18, 0x09, 0x20, 0x02]);
    // SupportedObjectResult.unique_key_sets (8) and divergent_paths (7), USP 1.4.
    let o = g::SupportedObjectResult {
        divergent_paths: vec!["d".into()],
        unique_key_sets: vec![g::SupportedUniqueKeySet {
            key_names: vec!["k".into()],
        }],
        ..Default::default()
    };
    assert_golden(&o, &[0x3a, 0x01, b'd', 0x42, 0x03, 0x0a, 0x01, b'k']);
}
