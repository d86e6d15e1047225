//! Rollouts as `serve` steps them: the coordinator stores each step, and every replica sends
//! the rollback operations of its own agents.

use std::collections::HashMap;

use crate::engine::Op;
use crate::store::{now_ms, Deployment};

use super::super::rollout::{self, RolloutState, Step, Unread};
use super::{Kind, Service};

impl Service {
    /// One step of every rollout not ended (`rollout::step`), stored by the coordinator
    /// alone (one writer of a rollout's state), and the rollback operations it asks for sent
    /// by every replica to the agents of its shards (journaled first, like the
    /// reconciliation's: the journal decides them, so replicas computing the same step send
    /// each at most once).
    pub(super) fn step_rollouts(
        &mut self,
        ctl: &mut crate::engine::Controller,
    ) -> Result<(), String> {
        let mut live = self.store.rollouts(true)?;
        if !self.coordinator {
            live.retain(|r| r.state == RolloutState::RollingBack);
        }
        if live.is_empty() {
            return Ok(());
        }
        let deployments: HashMap<i64, _> = self
            .store
            .deployments(false)?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        let now = now_ms();
        for r in live {
            let Some(d) = deployments.get(&r.deployment_id) else {
                continue;
            };
            // A rollback may send any target back: it reads them all. Forward, a pass reads
            // only the targets its step may change.
            let (targets, unread) = if r.state == RolloutState::RollingBack {
                let all = self.store.rollout_targets(&r, &d.name, &d.version)?;
                (all, Unread::default())
            } else {
                self.store.rollout_pass(&r, &d.name, &d.version)?
            };
            let active = d.state == "active";
            let step = rollout::step_of(&r, active, &d.name, &d.version, &targets, &unread);
            if step == Step::default() {
                continue;
            }
            if self.coordinator {
                self.apply_step(&r, &step, now)?;
            }
            for rb in step.rollbacks {
                // Busy (its inventory being read): the next step asks again. Another
                // replica's agent: that replica sends it.
                if self.ops_in_flight >= self.opts.max_in_flight
                    || self.set.busy(&rb.agent)
                    || !self.settled(&rb.agent)
                {
                    continue;
                }
                let (kind, op) = match rb.url {
                    Some(url) => (
                        "update",
                        Op::Update {
                            du: rb.du,
                            url: Some(url),
                            network: rollback_network(
                                d,
                                r.previous_id.and_then(|p| deployments.get(&p)),
                            ),
                        },
                    ),
                    None => ("uninstall", Op::Uninstall { du: rb.du }),
                };
                let Some(id) =
                    self.store
                        .begin_rollback_op(&rb.agent, r.deployment_id, kind, now)?
                else {
                    continue;
                };
                if ctl.begin(&mut self.set, &rb.agent, op, self.opts.op_timeout) {
                    note!(
                        "{}: operation {id} ({kind}, rollback of rollout {}) sent",
                        rb.agent,
                        r.id
                    );
                    self.kinds.insert(rb.agent, Kind::Op(id));
                    self.ops_in_flight += 1;
                } else {
                    self.store.lose_op(id, "agent busy", now)?;
                }
            }
        }
        Ok(())
    }

    /// Stores rollout `r`'s `step` and says what changed.
    fn apply_step(&mut self, r: &rollout::Rollout, step: &Step, now: i64) -> Result<(), String> {
        self.store.apply_rollout_step(r, step, now)?;
        for c in &step.targets {
            match &c.fault {
                Some((code, m)) => note!(
                    "rollout {}: {} {} ({code} {m})",
                    r.id,
                    c.endpoint_id,
                    c.state.as_str()
                ),
                None => note!("rollout {}: {} {}", r.id, c.endpoint_id, c.state.as_str()),
            }
        }
        if let Some((state, wave, reason)) = &step.rollout {
            note!(
                "rollout {}: {} at wave {wave}{}",
                r.id,
                state.as_str(),
                reason
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }
}

/// The network argument of a rollback's Update of deployment `d` back to the version of
/// `previous` (the deployment it superseded, if any): `previous`'s override; where that had
/// none and `d` had one, `null`, back to the package's own section (the override in force is
/// `d`'s); otherwise none, whatever is in force stays.
fn rollback_network(d: &Deployment, previous: Option<&Deployment>) -> Option<String> {
    match (previous.and_then(|p| p.network.clone()), &d.network) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => Some("null".into()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_sends_the_previous_override_or_drops_the_rolled_back_one() {
        let dep = |network: Option<&str>| Deployment {
            id: 1,
            name: "a".into(),
            url: "u".into(),
            digest: None,
            version: "1".into(),
            selector: Default::default(),
            memory_mib: None,
            network: network.map(String::from),
            created: 0,
            state: "removed".into(),
        };
        let (net, other) = (Some(r#"{"mode":"none"}"#), Some(r#"{"mode":"nat"}"#));
        assert_eq!(
            rollback_network(&dep(net), Some(&dep(other))).as_deref(),
            other
        );
        assert_eq!(
            rollback_network(&dep(None), Some(&dep(other))).as_deref(),
            other
        );
        assert_eq!(
            rollback_network(&dep(net), Some(&dep(None))).as_deref(),
            Some("null")
        );
        assert_eq!(rollback_network(&dep(net), None).as_deref(), Some("null"));
        assert_eq!(rollback_network(&dep(None), Some(&dep(None))), None);
        assert_eq!(rollback_network(&dep(None), None), None);
    }
}
