//! The fleet shared between replicas, as one replica sees it: its rounds of the shard leases
//! (`Store::balance_shards`) and the coordinator's, which agents are its own, and when it may
//! send operations to a shard it took.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::store::leases::SERVE;
use crate::store::now_ms;
use crate::store::shards::{shard_of, SHARDS};

use super::{host_name, Kind, ServeOptions, Service, MAX_WANTED};

/// Whether lease holder `holder` is a default-named replica of this host whose process is
/// gone (a `serve` that died here): its lease need not be waited out. A PID taken again by
/// another process only makes us wait.
pub(super) fn dead_here(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    host == host_name()
        && pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
}

fn lease_ms(opts: &ServeOptions) -> i64 {
    opts.lease_ttl.as_millis() as i64
}

/// A third of the lease: two renewals may fail (a slow database) before it expires.
fn renew_every(opts: &ServeOptions) -> Duration {
    opts.lease_ttl / 3
}

/// How long a replica that took a shard from others waits before it sends operations to the
/// shard's agents: two rounds of every replica's `balance`. An agent's OperationComplete goes
/// to the shared topic and may reach any replica, which forwards it by the holders it saw at
/// its last round; until that round has come it still names the old holder (or nobody) and
/// the result would be lost.
fn settle_time(opts: &ServeOptions) -> Duration {
    renew_every(opts) * 2
}

impl Service {
    /// How often its leases are renewed (`balance`).
    pub(super) fn renew_every(&self) -> Duration {
        renew_every(&self.opts)
    }

    /// Whether `agent` is in a shard this replica holds.
    pub(super) fn mine(&self, agent: &str) -> bool {
        self.held.contains(&shard_of(agent))
    }

    /// Whether operations may go to `agent`: its shard is ours, and the other replicas have
    /// had time to learn that (`settle_time`).
    pub(super) fn settled(&self, agent: &str) -> bool {
        let n = shard_of(agent);
        self.held.contains(&n)
            && self
                .taken_at
                .get(&n)
                .is_none_or(|t| t.elapsed() >= settle_time(&self.opts))
    }

    /// A round of the shards (`Store::balance_shards`) and of the coordinator's lease; the
    /// agents of shards just taken are read again (what their last holder left in flight is
    /// settled by it).
    pub(super) fn balance(&mut self) -> Result<(), String> {
        let me = self.opts.replica.clone();
        let now = now_ms();
        // A shard with an operation of ours in flight stays until its result is in (or its
        // agent's inventory has told it).
        let busy: BTreeSet<u32> = self
            .kinds
            .iter()
            .filter(|(_, k)| matches!(k, Kind::Op(_)))
            .map(|(a, _)| shard_of(a))
            .chain(self.unheard.keys().map(|a| shard_of(a)))
            .collect();
        let b = self
            .store
            .balance_shards(&me, now, lease_ms(&self.opts), dead_here, |n| {
                !busy.contains(&n)
            })?;
        for g in &b.gone {
            note!("replica {me}: replica {g} is gone from this host: taking over its shards");
        }
        let lost: Vec<u32> = self
            .held
            .iter()
            .filter(|n| !b.held.contains(n) && !b.released.contains(n))
            .copied()
            .collect();
        if !b.taken.is_empty() || !b.released.is_empty() || !lost.is_empty() {
            note!(
                "replica {me}: holds {} of {SHARDS} shards {} ({} live replicas; took {}, released {}{})",
                b.held.len(),
                ranges(b.held.iter().copied()),
                b.live,
                b.taken.len(),
                b.released.len(),
                if lost.is_empty() {
                    String::new()
                } else {
                    format!(", lost {} (too slow to renew)", ranges(lost.iter().copied()))
                }
            );
        }
        if !b.taken.is_empty() {
            let taken: BTreeSet<u32> = b.taken.iter().copied().collect();
            // Bounded: past MAX_WANTED the periodic sweep catches up.
            for a in self.store.stale_agents(now, MAX_WANTED)? {
                if taken.contains(&shard_of(&a)) && self.wanted.len() < MAX_WANTED {
                    self.wanted.insert(a);
                }
            }
        }
        self.held = b.held;
        // A shard lost while an operation's result was being looked for: its new holder
        // settles it (the inventory it reads, or `expire_lost`).
        self.unheard.retain(|a, _| self.held.contains(&shard_of(a)));
        let alone = b.holders.values().all(|h| *h == me);
        // Alone, nobody forwards: what reaches the shared topic is ours.
        let settle = settle_time(&self.opts);
        self.taken_at
            .retain(|n, t| self.held.contains(n) && t.elapsed() < settle);
        if !alone {
            let at = Instant::now();
            self.taken_at.extend(b.taken.iter().map(|n| (*n, at)));
        }
        *self.holders.write().unwrap_or_else(|e| e.into_inner()) = b.holders;
        self.alone.store(alone, Ordering::Relaxed);
        let l = self
            .store
            .take_lease(SERVE, &me, now, lease_ms(&self.opts))?;
        let coordinator = l.holder == me;
        if !coordinator && dead_here(&l.holder) {
            // Gone from this host: the next round takes it.
            note!(
                "replica {me}: coordinator {} is gone from this host: taking over",
                l.holder
            );
            self.store.release_lease(SERVE, &l.holder)?;
        }
        if coordinator != self.coordinator {
            if coordinator {
                note!("replica {me}: coordinator (steps the rollouts)");
            } else {
                note!("replica {me}: no longer the coordinator ({} is)", l.holder);
            }
            self.coordinator = coordinator;
        }
        Ok(())
    }
}

/// Shard numbers, ascending, as runs: `0-5,9,12-13` (`-` for none).
fn ranges(ns: impl Iterator<Item = u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for n in ns {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => runs.push((n, n)),
        }
    }
    if runs.is_empty() {
        return "-".into();
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::super::default_replica;
    use super::*;

    #[test]
    fn shard_lists_read_as_runs() {
        assert_eq!(ranges([].into_iter()), "-");
        assert_eq!(ranges([0, 1, 2, 5, 7, 8].into_iter()), "0-2,5,7-8");
    }

    #[test]
    fn only_a_gone_process_of_this_host_gives_its_lease_up() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let gone = c.id();
        c.wait().unwrap();
        assert!(dead_here(&format!("{}:{gone}", host_name())));
        assert!(!dead_here(&default_replica()), "this process");
        assert!(!dead_here(&format!("{}:1", host_name())), "alive");
        assert!(!dead_here(&format!("elsewhere-{}:{gone}", host_name())));
        assert!(!dead_here("r1"));
    }
}
