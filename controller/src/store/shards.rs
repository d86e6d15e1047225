//! The fleet split among `serve` replicas: every agent belongs to one of [`SHARDS`] shards (a
//! stable hash of its EndpointID), every shard has a lease (`shard/<n>`, the `leases` table),
//! and a replica reconciles, and may journal operations for (`Store::fence`), only the agents
//! of the shards whose current lease it holds. Live replicas announce themselves with a lease
//! of their own (`replica/<name>`); each round a replica takes free or expired shards up to
//! its fair share (`ceil(SHARDS / live replicas)`) and gives up what it holds beyond it, so a
//! joining replica gets shards from the others and a dead one's are taken once they expire.

use std::collections::{BTreeMap, BTreeSet};

use super::db::p;
use super::shard_key::SHARD_PREFIX;
pub use super::shard_key::{lease_name, shard_of, SHARDS};
use super::Store;

const REPLICA_PREFIX: &str = "replica/";

/// A replica's share with `live` replicas.
pub fn fair_share(live: usize) -> usize {
    (SHARDS as usize).div_ceil(live.max(1))
}

/// What a round of [`Store::balance_shards`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Balance {
    /// The shards this replica holds after the round.
    pub held: BTreeSet<u32>,
    /// Taken in this round.
    pub taken: Vec<u32>,
    /// Given up in this round (beyond the fair share).
    pub released: Vec<u32>,
    /// Holders whose leases were released because `gone` said they are dead.
    pub gone: BTreeSet<String>,
    /// Live replicas, this one included.
    pub live: usize,
    /// The holder of every shard held by a current lease, this replica's included.
    pub holders: BTreeMap<u32, String>,
}

/// One live replica and the shards it holds (`cpevisor-controller replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    /// Its name.
    pub name: String,
    /// When its announcement expires unless renewed (ms).
    pub expires: i64,
    /// The shards whose current lease it holds.
    pub shards: Vec<u32>,
}

fn shard_number(name: &str) -> Option<u32> {
    name.strip_prefix(SHARD_PREFIX)?
        .parse()
        .ok()
        .filter(|n| *n < SHARDS)
}

impl Store {
    /// One round for replica `me` at `now`: announces it and renews its shards until
    /// `now + ttl_ms`; releases the leases of holders `gone` says are dead; gives up held
    /// shards beyond its fair share (only those `may_release` allows: none with an operation
    /// of its own in flight); takes free or expired ones up to it.
    pub fn balance_shards(
        &self,
        me: &str,
        now: i64,
        ttl_ms: i64,
        gone: impl Fn(&str) -> bool,
        may_release: impl Fn(u32) -> bool,
    ) -> Result<Balance, String> {
        let until = now + ttl_ms;
        self.take_lease(&format!("{REPLICA_PREFIX}{me}"), me, now, ttl_ms)?;
        // Only what it still holds: one that expired and was taken is the taker's.
        self.db.execute(
            "UPDATE leases SET expires = ?2 WHERE holder = ?1 AND name LIKE 'shard/%'",
            &p![me, until],
        )?;
        let mut live = 0;
        let mut holders = BTreeMap::new();
        let mut dead = BTreeSet::new();
        for r in self.db.query(
            "SELECT name, holder, expires FROM leases
             WHERE name LIKE 'shard/%' OR name LIKE 'replica/%'",
            &[],
        )? {
            let (name, holder, expires): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if holder != me && gone(&holder) {
                self.release_lease(&name, &holder)?;
                dead.insert(holder);
                continue;
            }
            if expires < now {
                continue;
            }
            if name.starts_with(REPLICA_PREFIX) {
                live += 1;
            } else if let Some(n) = shard_number(&name) {
                holders.insert(n, holder);
            }
        }
        let fair = fair_share(live);
        let mut out = Balance {
            held: holders
                .iter()
                .filter(|(_, h)| h.as_str() == me)
                .map(|(n, _)| *n)
                .collect(),
            live,
            gone: dead,
            ..Balance::default()
        };
        // The highest first, so the ones kept stay put across rounds.
        let extra: Vec<u32> = out.held.iter().rev().copied().collect();
        for n in extra {
            if out.held.len() <= fair {
                break;
            }
            if may_release(n) {
                self.release_lease(&lease_name(n), me)?;
                out.held.remove(&n);
                holders.remove(&n);
                out.released.push(n);
            }
        }
        // Free shards, from a point of the ring that depends on the name: replicas starting
        // at once mostly try different ones.
        let start = shard_of(me);
        for i in 0..SHARDS {
            if out.held.len() >= fair {
                break;
            }
            let n = (start + i) % SHARDS;
            if holders.contains_key(&n) {
                continue;
            }
            let l = self.take_lease(&lease_name(n), me, now, ttl_ms)?;
            if l.holder == me {
                out.held.insert(n);
                out.taken.push(n);
            }
            holders.insert(n, l.holder);
        }
        out.holders = holders;
        Ok(out)
    }

    /// Gives up every lease of replica `me`: its shards, its announcement and the
    /// coordinator's if it holds it (a clean stop: the others take them at once).
    pub fn release_replica(&self, me: &str) -> Result<(), String> {
        self.db
            .execute("DELETE FROM leases WHERE holder = ?1", &p![me])
            .map(|_| ())
    }

    /// The live replicas at `now` with the shards each holds, by name; shards held by a
    /// holder that has no live announcement are listed under it too.
    pub fn replicas(&self, now: i64) -> Result<Vec<ReplicaView>, String> {
        let mut out: BTreeMap<String, ReplicaView> = BTreeMap::new();
        for r in self.db.query(
            "SELECT name, holder, expires FROM leases
             WHERE (name LIKE 'shard/%' OR name LIKE 'replica/%') AND expires >= ?1
             ORDER BY name",
            &p![now],
        )? {
            let (name, holder, expires): (String, String, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let v = out.entry(holder.clone()).or_insert_with(|| ReplicaView {
                name: holder,
                expires: 0,
                shards: Vec::new(),
            });
            if name.starts_with(REPLICA_PREFIX) {
                v.expires = expires;
            } else if let Some(n) = shard_number(&name) {
                v.shards.push(n);
            }
        }
        let mut v: Vec<ReplicaView> = out.into_values().collect();
        for r in &mut v {
            r.shards.sort_unstable();
        }
        Ok(v)
    }
}
