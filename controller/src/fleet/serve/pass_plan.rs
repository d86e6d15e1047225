//! Which agents a reconciliation pass reads. A decision about an agent changes only when its
//! inventory or the desired state changes (or time passes a back-off), so after one whole pass
//! the next ones read only the agents whose inventory was read since; the desired state
//! changing, a pass cut short by the operations budget, too many agents to remember, or the
//! interval of whole passes passing (labels, back-offs, another replica's writes) makes the
//! next pass whole again. A fleet at rest then costs a whole read every `FULL_PASS_EVERY`,
//! not every second.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::store::Deployment;

/// The longest between two whole passes.
pub const FULL_PASS_EVERY: Duration = Duration::from_secs(30);
/// Agents remembered between passes; past it the next pass is whole.
const MAX_TOUCHED: usize = 16_384;

/// What the desired state was at a whole pass: the active deployments (id, state) and the
/// rollouts' gates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    deployments: Vec<(i64, String)>,
    gates: Vec<(i64, Vec<String>)>,
}

impl Desired {
    /// The desired state as the pass reads it.
    pub fn of(deployments: &[Deployment], gates: &HashMap<i64, HashSet<String>>) -> Desired {
        let mut d: Vec<(i64, String)> = deployments
            .iter()
            .map(|d| (d.id, d.state.clone()))
            .collect();
        d.sort();
        let mut g: Vec<(i64, Vec<String>)> = gates
            .iter()
            .map(|(id, set)| {
                let mut agents: Vec<String> = set.iter().cloned().collect();
                agents.sort();
                (*id, agents)
            })
            .collect();
        g.sort();
        Desired {
            deployments: d,
            gates: g,
        }
    }
}

/// What the next pass reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Every agent of the replica's shards.
    Whole,
    /// Only these (endpoint ID order).
    Agents(Vec<String>),
}

/// The state between passes.
#[derive(Debug)]
pub struct PassPlan {
    touched: BTreeSet<String>,
    overflow: bool,
    /// The desired state at the last whole pass that ran to its end; None: none has.
    desired: Option<Desired>,
    next_whole: Instant,
    every: Duration,
}

impl PassPlan {
    /// A plan whose first pass is whole; then whole at least every `every`.
    pub fn new(every: Duration) -> PassPlan {
        PassPlan {
            touched: BTreeSet::new(),
            overflow: false,
            desired: None,
            next_whole: Instant::now(),
            every,
        }
    }

    /// `agent`'s inventory was read (or must be decided on again).
    pub fn touched(&mut self, agent: &str) {
        if self.touched.len() >= MAX_TOUCHED {
            self.overflow = true;
        } else {
            self.touched.insert(agent.to_string());
        }
    }

    /// The pass to run now, with the desired state as it is.
    pub fn next(&mut self, desired: &Desired, now: Instant) -> Pass {
        if self.overflow || now >= self.next_whole || self.desired.as_ref() != Some(desired) {
            return Pass::Whole;
        }
        Pass::Agents(std::mem::take(&mut self.touched).into_iter().collect())
    }

    /// A whole pass ended: `complete` when it read every agent (not cut short by the
    /// operations budget), with the desired state it decided by.
    pub fn whole_done(&mut self, desired: Desired, complete: bool, now: Instant) {
        if complete {
            self.desired = Some(desired);
            self.touched.clear();
            self.overflow = false;
            self.next_whole = now + self.every;
        } else {
            self.desired = None;
        }
    }

    /// An agent pass ran out of operations budget: the next pass is whole.
    pub fn cut_short(&mut self) {
        self.desired = None;
    }

    /// Agents of the nothing-desired state: nothing to decide, nothing to remember.
    pub fn idle(&mut self) {
        self.touched.clear();
        self.overflow = false;
        self.desired = None;
    }

    /// Keeps only the agents `mine` says are still this replica's.
    pub fn retain(&mut self, mine: impl Fn(&str) -> bool) {
        self.touched.retain(|a| mine(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(n: i64) -> Desired {
        Desired {
            deployments: vec![(n, "active".into())],
            gates: Vec::new(),
        }
    }

    #[test]
    fn after_a_whole_pass_only_the_touched_agents_are_read() {
        let t0 = Instant::now();
        let mut p = PassPlan::new(Duration::from_secs(30));
        assert_eq!(p.next(&desired(1), t0), Pass::Whole);
        p.whole_done(desired(1), true, t0);
        assert_eq!(p.next(&desired(1), t0), Pass::Agents(vec![]));
        p.touched("os::b");
        p.touched("os::a");
        p.touched("os::b");
        assert_eq!(
            p.next(&desired(1), t0),
            Pass::Agents(vec!["os::a".into(), "os::b".into()])
        );
        // Read once: gone from the next.
        assert_eq!(p.next(&desired(1), t0), Pass::Agents(vec![]));
    }

    #[test]
    fn the_desired_state_time_a_cut_short_pass_or_too_many_agents_make_it_whole() {
        let t0 = Instant::now();
        let every = Duration::from_secs(30);
        let mut p = PassPlan::new(every);
        p.whole_done(desired(1), true, t0);
        assert_eq!(p.next(&desired(2), t0), Pass::Whole, "a new deployment");
        p.whole_done(desired(2), true, t0);
        assert_eq!(p.next(&desired(2), t0 + every), Pass::Whole, "the interval");
        p.whole_done(desired(2), false, t0);
        assert_eq!(
            p.next(&desired(2), t0),
            Pass::Whole,
            "the last one was cut short"
        );
        p.whole_done(desired(2), true, t0);
        p.cut_short();
        assert_eq!(
            p.next(&desired(2), t0),
            Pass::Whole,
            "an agent pass cut short"
        );
        p.whole_done(desired(2), true, t0);
        for i in 0..=MAX_TOUCHED {
            p.touched(&format!("os::{i}"));
        }
        assert_eq!(p.next(&desired(2), t0), Pass::Whole, "too many to remember");
        p.whole_done(desired(2), true, t0);
        assert_eq!(p.next(&desired(2), t0), Pass::Agents(vec![]));
    }

    #[test]
    fn gates_are_part_of_the_desired_state_in_any_order() {
        let d = |agents: &[&str]| {
            let gates = HashMap::from([(7, agents.iter().map(|a| a.to_string()).collect())]);
            Desired::of(&[], &gates)
        };
        assert_eq!(d(&["a", "b"]), d(&["b", "a"]));
        assert_ne!(d(&["a"]), d(&["a", "b"]));
    }

    #[test]
    fn agents_no_longer_ours_are_forgotten() {
        let t0 = Instant::now();
        let mut p = PassPlan::new(Duration::from_secs(30));
        p.whole_done(desired(1), true, t0);
        p.touched("os::a");
        p.touched("os::b");
        p.retain(|a| a == "os::b");
        assert_eq!(p.next(&desired(1), t0), Pass::Agents(vec!["os::b".into()]));
    }
}
