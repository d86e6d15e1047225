//! What a replica does about its agents: reconciliation passes that send operations
//! (journaled first), their results, and operations nobody follows any more.

use std::collections::HashMap;
use std::time::Instant;

use crate::engine::{Op, Outcome};
use crate::store::shards::shard_of;
use crate::store::{now_ms, AgentView, Deployment, JournalState};

use super::super::inventory;
use super::super::reconcile::{self, Action, Gates};
use super::pass_plan::{Desired, Pass};
use super::{Kind, Service, MAX_WANTED, PAGE};

impl Service {
    pub(super) fn ended(&mut self, o: Outcome) -> Result<(), String> {
        let now = now_ms();
        match self.kinds.remove(&o.agent) {
            Some(Kind::Get) => {
                // Decided on again at the next pass, whatever the answer.
                self.plan.touched(&o.agent);
                // Only a whole answer replaces the inventory: a part missing (an error on one
                // path) would read as apps gone and be installed again.
                if o.ok {
                    let inv = inventory::from_rows(&o.rows);
                    let settled = self.store.save_inventory(&o.agent, &inv, now)?;
                    if settled > 0 {
                        note!("{}: {settled} operation(s) found done", o.agent);
                    }
                } else if o.fault.as_ref().is_some_and(|f| f.code == 0) {
                    // No answer in time: offline until it is heard from again.
                    self.store.set_offline(&o.agent)?;
                } else {
                    self.store.seen(&o.agent, now)?;
                }
                if let Some(id) = self.unheard.remove(&o.agent) {
                    // Not settled by the inventory just saved (nor read at all): failed.
                    let m = "no result in time, and the agent's inventory does not show it done";
                    if self.store.finish_op(id, Some((0, m)), now)? {
                        note!("{}: operation {id} failed: 0 {m}", o.agent);
                    } else {
                        note!("{}: operation {id} done (found in its inventory)", o.agent);
                    }
                }
            }
            Some(Kind::Op(id)) if local_failure(&o) && self.wanted.len() < MAX_WANTED => {
                // The agent may have done it and its result been lost on the way (a broker,
                // a replica forwarding by a holder it has not seen change): its inventory
                // says. Until read, the operation stays in flight and blocks another.
                self.ops_in_flight = self.ops_in_flight.saturating_sub(1);
                note!(
                    "{}: operation {id}: {}; reading the agent's inventory",
                    o.agent,
                    o.fault.as_ref().map(|f| f.message.as_str()).unwrap_or("")
                );
                self.unheard.insert(o.agent.clone(), id);
                self.wanted.insert(o.agent);
            }
            Some(Kind::Op(id)) => {
                self.ops_in_flight = self.ops_in_flight.saturating_sub(1);
                let fault = o
                    .fault
                    .as_ref()
                    .map(|f| (i64::from(f.code), f.message.as_str()));
                match fault {
                    None if o.ok => note!("{}: operation {id} done", o.agent),
                    _ => note!(
                        "{}: operation {id} failed: {}",
                        o.agent,
                        fault.map(|(c, m)| format!("{c} {m}")).unwrap_or_default()
                    ),
                }
                let fault = if o.ok {
                    None
                } else {
                    Some(fault.unwrap_or((0, "failed without a fault")))
                };
                self.store.finish_op(id, fault, now)?;
                // What it changed is read back before the next decision about this agent.
                if self.wanted.len() < MAX_WANTED {
                    self.wanted.insert(o.agent);
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Operations journaled as sent that nobody follows any more (sent by an earlier run of
    /// the controller) are lost once past the operation timeout; until then they block a
    /// second one (the agent may still be installing).
    pub(super) fn expire_lost(&mut self) -> Result<(), String> {
        let now = now_ms();
        let limit = self.opts.op_timeout.as_millis() as i64;
        // Only in the shards held: another replica's are its own to follow.
        for (id, agent, _, created) in self.store.in_flight()? {
            if !self.mine(&agent) {
                continue;
            }
            let ours = matches!(self.kinds.get(&agent), Some(Kind::Op(x)) if *x == id)
                || self.unheard.get(&agent) == Some(&id);
            if !ours && created < now - limit {
                self.store
                    .lose_op(id, "no result: the controller that sent it stopped", now)?;
                // The agent may have carried it out unheard: its inventory is read again
                // before anything more is decided for it (a lost operation is sent again).
                if self.wanted.len() < MAX_WANTED {
                    self.wanted.insert(agent);
                }
            }
        }
        Ok(())
    }

    /// A reconciliation pass: every agent of this replica's shards, or only those whose
    /// inventory was read since the last (`pass_plan`).
    pub(super) fn reconcile(&mut self, ctl: &mut crate::engine::Controller) -> Result<(), String> {
        let deployments = self.store.deployments(true)?;
        if deployments.is_empty() {
            self.plan.idle();
            return Ok(());
        }
        let gates = self.store.rollout_gates()?;
        let desired = Desired::of(&deployments, &gates);
        let at = Instant::now();
        // Agents of shards given up meanwhile are their new holder's.
        let held = &self.held;
        self.plan.retain(|a| held.contains(&shard_of(a)));
        let plan = self.plan.next(&desired, at);
        let (deployments, gates) = (&deployments, &gates);
        match plan {
            Pass::Whole => {
                let complete = self.whole_pass(ctl, deployments, gates)?;
                self.plan.whole_done(desired, complete, at);
            }
            Pass::Agents(ids) => self.agents_pass(ctl, ids, deployments, gates)?,
        }
        Ok(())
    }

    /// Agents being read, or busy, have no current inventory to decide on (they are read
    /// again, and so decided on again, once free); other replicas' shards are theirs.
    fn decidable(&self, agent: &str) -> bool {
        self.settled(agent) && !self.wanted.contains(agent) && !self.set.busy(agent)
    }

    /// Every agent, in pages; false when the operations budget ran out first.
    fn whole_pass(
        &mut self,
        ctl: &mut crate::engine::Controller,
        deployments: &[Deployment],
        gates: &Gates,
    ) -> Result<bool, String> {
        let mut after = String::new();
        loop {
            let page = self.store.agents_page(&after, PAGE, true)?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                return Ok(true);
            };
            let (first, last) = (first.endpoint_id.clone(), last.endpoint_id.clone());
            let journal = self.store.journal(&first, &last)?;
            let page: Vec<_> = page
                .into_iter()
                .filter(|a| self.decidable(&a.endpoint_id))
                .collect();
            after = last;
            if !self.decide(ctl, &page, deployments, gates, &journal)? {
                return Ok(false);
            }
        }
    }

    /// Decides on `page` and sends what it says; false when the operations budget is spent.
    fn decide(
        &mut self,
        ctl: &mut crate::engine::Controller,
        page: &[AgentView],
        deployments: &[Deployment],
        gates: &Gates,
        journal: &HashMap<(String, i64), JournalState>,
    ) -> Result<bool, String> {
        let now = now_ms();
        let budget = self.opts.max_in_flight.saturating_sub(self.ops_in_flight);
        let actions = reconcile::decide(
            page,
            deployments,
            gates,
            journal,
            self.opts.backoff,
            now,
            budget,
        );
        for a in actions {
            self.act(ctl, a, now)?;
        }
        Ok(self.ops_in_flight < self.opts.max_in_flight)
    }

    /// The agents `ids` only; one not decidable yet is kept for the next pass.
    fn agents_pass(
        &mut self,
        ctl: &mut crate::engine::Controller,
        ids: Vec<String>,
        deployments: &[Deployment],
        gates: &Gates,
    ) -> Result<(), String> {
        let mut page = Vec::new();
        let mut journal = HashMap::new();
        for id in ids {
            if !self.decidable(&id) {
                self.plan.touched(&id);
                continue;
            }
            if let Some(a) = self.store.agent(&id)?.filter(|a| a.online) {
                journal.extend(self.store.journal(&id, &id)?);
                page.push(a);
            }
        }
        // Some may have gone undecided for want of budget: all are read at the next pass.
        if !page.is_empty() && !self.decide(ctl, &page, deployments, gates, &journal)? {
            self.plan.cut_short();
        }
        Ok(())
    }

    fn act(
        &mut self,
        ctl: &mut crate::engine::Controller,
        a: Action,
        now: i64,
    ) -> Result<(), String> {
        let kind = a.kind();
        let (agent, deployment, op) = match a {
            Action::Refuse {
                agent,
                deployment,
                code,
                message,
            } => {
                note!("{agent}: deployment {deployment} refused: {code} {message}");
                return self
                    .store
                    .record_refusal(&agent, deployment, kind, code, &message, now);
            }
            Action::Install {
                agent,
                deployment,
                url,
                network,
            } => (
                agent,
                deployment,
                Op::Install {
                    url,
                    env: None,
                    network,
                },
            ),
            Action::Update {
                agent,
                deployment,
                du,
                url,
                network,
            } => (
                agent,
                deployment,
                Op::Update {
                    du,
                    url: Some(url),
                    network,
                },
            ),
        };
        // Journaled first: a crash after this line leaves an operation in flight that blocks
        // a duplicate, never a sent operation that nobody knows of.
        let Some(id) = self.store.begin_op(&agent, deployment, kind, now)? else {
            return Ok(());
        };
        if ctl.begin(&mut self.set, &agent, op, self.opts.op_timeout) {
            note!("{agent}: operation {id} ({kind} of deployment {deployment}) sent");
            self.kinds.insert(agent, Kind::Op(id));
            self.ops_in_flight += 1;
        } else {
            self.store.lose_op(id, "agent busy", now)?;
        }
        Ok(())
    }
}

/// A failure of ours, not the agent's (fault code 0): no result in time, or the send failed.
fn local_failure(o: &Outcome) -> bool {
    !o.ok && o.fault.as_ref().is_none_or(|f| f.code == 0)
}
