//! Fuzzes the path every received Record takes in the agent: `decode_record`, `content`,
//! `decode_msg` on the payload, and `error_reply` for the refused ones.

#![no_main]

use cpevisor_usp::record::{decode_msg, decode_record, error_reply, Limits, RecordContent};
use libfuzzer_sys::fuzz_target;
use prost::Message;

const OWN_ID: &str = "proto::cpevisor-agent-0001";

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    match decode_record(data, OWN_ID, &limits) {
        Ok(record) => match record.content() {
            Ok(RecordContent::Msg(payload)) => {
                if let Ok(msg) = decode_msg(payload, &limits) {
                    // An accepted Msg re-encodes to one that decodes equal (no lossy paths).
                    let again = decode_msg(&msg.encode_to_vec(), &limits).expect("re-decodes");
                    assert_eq!(again, msg);
                    assert_eq!(msg.msg_type(), msg.body_msg_type());
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = error_reply(data, OWN_ID, &limits, &e);
            }
        },
        Err(e) => {
            if let Some(reply) = error_reply(data, OWN_ID, &limits, &e) {
                // A reply only ever goes back to the sender, from us.
                assert_eq!(reply.from_id, OWN_ID);
                assert!(!reply.to_id.is_empty());
            }
        }
    }
});
