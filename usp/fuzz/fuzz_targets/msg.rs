//! Fuzzes `decode_msg` alone (the payload inside a Record), with its bounds and R-ENC.3 checks.

#![no_main]

use cpevisor_usp::record::{decode_msg, Limits};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    for limits in [
        Limits::default(),
        Limits {
            strict_msg_type: true,
            max_items: 64,
            max_paths: 4,
            max_params: 4,
            ..Limits::default()
        },
    ] {
        if let Ok(msg) = decode_msg(data, &limits) {
            let again = decode_msg(&msg.encode_to_vec(), &limits).expect("re-decodes");
            assert_eq!(again, msg);
            assert_eq!(msg.msg_type(), msg.body_msg_type());
        }
    }
});
