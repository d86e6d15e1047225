//! An agent's shard and the name of its lease: all the journal's fence needs of `shards`
//! (a leaf, so the store's queries and `shards`' replica rounds share it without a cycle),
//! and the one fixed hash the controller spreads agents with (a selector's `percent` too).

/// Shards the fleet is split into: a replica count up to this spreads evenly. Changing it
/// moves agents between shards, so every replica of a database must agree on it.
pub const SHARDS: u32 = 64;

pub(super) const SHARD_PREFIX: &str = "shard/";

/// 64-bit FNV-1a of `bytes`, fixed here (not the standard library's hasher, which may change
/// between builds, and replicas of different builds share a database).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The shard of agent `endpoint_id`.
pub fn shard_of(endpoint_id: &str) -> u32 {
    (fnv1a(endpoint_id.bytes()) % u64::from(SHARDS)) as u32
}

/// The name of shard `n`'s lease.
pub fn lease_name(n: u32) -> String {
    format!("{SHARD_PREFIX}{n}")
}
