//! Writes the fuzz seed corpus (one Record or Msg of every type) into `usp/fuzz/seeds/`.
//! Run after changing the samples: `cargo test -p cpevisor-usp --test proto_corpus -- --ignored`.

mod proto_support;

use std::path::Path;

use prost::Message;

#[test]
#[ignore = "rewrites usp/fuzz/seeds; run by hand after changing the samples"]
fn write_fuzz_seeds() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let sets = [
        (
            "record",
            proto_support::all_records()
                .iter()
                .map(Message::encode_to_vec)
                .collect::<Vec<_>>(),
        ),
        (
            "msg",
            proto_support::all_msgs()
                .iter()
                .map(Message::encode_to_vec)
                .collect(),
        ),
    ];
    for (target, items) in sets {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, bytes) in items.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).unwrap();
        }
    }
}
