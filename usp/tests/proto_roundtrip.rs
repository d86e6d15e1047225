//! Every Msg and Record type survives encode -> decode_record -> decode_msg unchanged, and the
//! builders keep the header msg_type consistent with the body.

mod proto_support;

use cpevisor_usp::proto::header::MsgType;
use cpevisor_usp::proto::*;
use cpevisor_usp::record::{decode_msg, decode_record, encode_record, Limits, RecordContent};
use prost::Message;
use proto_support::*;

#[test]
fn every_msg_type_round_trips_through_a_record() {
    let limits = Limits::default();
    let msgs = all_msgs();
    for msg in &msgs {
        let record = Record::no_session_msg(AGENT, CONTROLLER, msg);
        let bytes = encode_record(&record, &limits).unwrap();
        let back = decode_record(&bytes, AGENT, &limits).unwrap();
        assert_eq!(back, record);
        let RecordContent::Msg(payload) = back.content().unwrap() else {
            panic!("a no-session Record carries a Msg");
        };
        let decoded = decode_msg(payload, &limits)
            .unwrap_or_else(|e| panic!("{} did not decode: {e}", msg.msg_id()));
        assert_eq!(&decoded, msg);
    }
    // Every schema MsgType is covered by the samples.
    let mut seen: Vec<MsgType> = msgs.iter().filter_map(Msg::msg_type).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 23, "types covered: {seen:?}");
}

#[test]
fn builders_keep_header_and_body_consistent() {
    for msg in all_msgs() {
        assert!(!msg.msg_id().is_empty());
        assert_eq!(msg.msg_type(), msg.body_msg_type(), "{}", msg.msg_id());
        let kinds = [
            msg.request_body().is_some(),
            msg.response_body().is_some(),
            msg.error_body().is_some(),
        ];
        assert_eq!(kinds.iter().filter(|k| **k).count(), 1);
        let t = msg.msg_type().unwrap();
        assert_eq!(t.is_request(), msg.request_body().is_some());
    }
}

#[test]
fn connect_and_disconnect_records_round_trip() {
    let limits = Limits::default();
    for record in all_records()
        .into_iter()
        .filter(|r| r.no_session_payload().is_none())
    {
        let bytes = record.encode_to_vec();
        let back = decode_record(&bytes, AGENT, &limits).unwrap();
        assert_eq!(back, record);
        match back.content() {
            Ok(RecordContent::MqttConnect {
                version,
                subscribed_topic,
            }) => {
                assert_eq!(version, mqtt_connect_record::MqttVersion::V5);
                assert_eq!(subscribed_topic, "usp/agent/1");
            }
            Ok(RecordContent::WebSocketConnect) => {}
            Ok(RecordContent::Disconnect {
                reason,
                reason_code,
            }) => {
                assert_eq!((reason, reason_code), ("shutting down", 7105));
            }
            Err(e) => assert_eq!(e.code, cpevisor_usp::record::SESSION_CONTEXT_NOT_ALLOWED),
            other => panic!("unexpected content {other:?}"),
        }
    }
}

#[test]
fn operate_results_cover_sync_async_and_failure() {
    use operate_resp::operation_result::OperationResp;
    let msg = all_msgs()
        .into_iter()
        .find(|m| m.msg_type() == Some(MsgType::OperateResp))
        .unwrap();
    let Some(response::RespType::OperateResp(o)) = msg.response_body() else {
        panic!("not an OperateResp");
    };
    let kinds: Vec<_> = o
        .operation_results
        .iter()
        .map(|r| match r.operation_resp.as_ref().unwrap() {
            OperationResp::ReqObjPath(_) => "async",
            OperationResp::ReqOutputArgs(_) => "sync",
            OperationResp::CmdFailure(f) => {
                assert_eq!(f.err_code, cpevisor_usp::errors::COMMAND_FAILURE);
                "failure"
            }
        })
        .collect();
    assert_eq!(kinds, ["async", "sync", "failure"]);
}

#[test]
fn error_msg_carries_the_usp_error() {
    let e = cpevisor_usp::errors::UspError::new(7016, "Device.X.9. does not exist");
    let msg = Msg::from_usp_error("m-9", &e);
    assert_eq!(msg.msg_type(), Some(MsgType::Error));
    let body = msg.error_body().unwrap();
    assert_eq!(
        (body.err_code, body.err_msg.as_str()),
        (7016, "Device.X.9. does not exist")
    );
    assert_eq!(MsgType::Get.response_type(), Some(MsgType::GetResp));
    assert_eq!(MsgType::GetResp.response_type(), None);
}
