//! The reconciliation decision, a pure function: from a page of agents (their inventory), the
//! active deployments and the journal, which operations to send, and which to refuse at
//! placement. `serve` runs it and carries the operations out.

use std::collections::{HashMap, HashSet};

use crate::store::{AgentView, Deployment, JournalState};

use super::selector::Selector;

/// The fault code of a placement refusal for memory, the one the agent would answer
/// (TR-181 7227, SystemResourcesExceeded).
pub const NO_MEMORY: i64 = 7227;

/// How long a failed operation waits before it is tried again: `base` doubled per failure
/// since the last success, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure, ms.
    pub base_ms: i64,
    /// The longest wait, ms.
    pub max_ms: i64,
}

impl Backoff {
    /// The wait after `failures` failures.
    pub fn wait_ms(&self, failures: u32) -> i64 {
        if failures == 0 {
            return 0;
        }
        let shift = (failures - 1).min(30);
        self.base_ms.saturating_mul(1 << shift).min(self.max_ms)
    }
}

/// What to do for one agent and deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `InstallDU` of the deployment's package.
    Install {
        /// The agent.
        agent: String,
        /// The deployment.
        deployment: i64,
        /// The package URL.
        url: String,
        /// The deployment's network override.
        network: Option<String>,
    },
    /// `Update()` of the installed DU of the same name to the deployment's package.
    Update {
        /// The agent.
        agent: String,
        /// The deployment.
        deployment: i64,
        /// The installed DU's UUID.
        du: String,
        /// The package URL.
        url: String,
        /// The deployment's network override (None: the one in force stays).
        network: Option<String>,
    },
    /// Not sent: placement says it cannot fit (journaled as a failure with `code`).
    Refuse {
        /// The agent.
        agent: String,
        /// The deployment.
        deployment: i64,
        /// The fault code.
        code: i64,
        /// Why.
        message: String,
    },
}

impl Action {
    /// The agent it concerns.
    pub fn agent(&self) -> &str {
        match self {
            Action::Install { agent, .. }
            | Action::Update { agent, .. }
            | Action::Refuse { agent, .. } => agent,
        }
    }

    /// The journal's `kind` for it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Update { .. } => "update",
            _ => "install",
        }
    }
}

/// The deployments a rollout holds back, each with the agents it lets through now (see
/// `rollout`); a deployment not in it goes to every agent its selector matches.
pub type Gates = HashMap<i64, HashSet<String>>;

/// Why an agent needs nothing, or what it needs, for one deployment; `budget` caps the
/// Install/Update actions returned (refusals are not sent and do not count).
pub fn decide(
    agents: &[AgentView],
    deployments: &[Deployment],
    gates: &Gates,
    journal: &HashMap<(String, i64), JournalState>,
    backoff: Backoff,
    now: i64,
    budget: usize,
) -> Vec<Action> {
    let mut out = Vec::new();
    let mut sent = 0;
    // Each selector read once for the page (a list of endpoint IDs is read into a set).
    let active: Vec<(&Deployment, Selector)> = deployments
        .iter()
        .filter(|d| d.state == "active")
        .map(|d| (d, Selector::new(&d.selector, &d.name)))
        .collect();
    // At most one operation per agent per pass: the engine runs one job per agent at a time.
    for agent in agents
        .iter()
        .filter(|a| a.online && a.inventory_at.is_some())
    {
        for (d, sel) in &active {
            if !sel.matches(agent)
                || gates
                    .get(&d.id)
                    .is_some_and(|let_in| !let_in.contains(&agent.endpoint_id))
            {
                continue;
            }
            if agent
                .dus
                .iter()
                .any(|u| u.name == d.name && u.version == d.version)
            {
                continue;
            }
            let j = journal
                .get(&(agent.endpoint_id.clone(), d.id))
                .copied()
                .unwrap_or_default();
            if j.in_flight {
                continue;
            }
            // The last operation succeeded, yet the inventory read after it lacks the version:
            // the package is not what the deployment says (name or version). Retrying at once
            // would loop; wait as long as the longest back-off.
            if j.last_ok
                && j.last_finished
                    .is_some_and(|t| now < t.saturating_add(backoff.max_ms))
            {
                continue;
            }
            if j.failures > 0
                && j.last_finished
                    .is_some_and(|t| now < t.saturating_add(backoff.wait_ms(j.failures)))
            {
                continue;
            }
            // Memory, where both the need and what the ExecEnvs have left are known; else the
            // agent's own admission decides (and its refusal is journaled).
            if let Some(need) = d.memory_mib {
                let known: Vec<i64> = agent
                    .exec_envs
                    .iter()
                    .filter_map(|e| e.available_kib)
                    .collect();
                let need_kib = i64::from(need) * 1024;
                if !known.is_empty()
                    && known.len() == agent.exec_envs.len()
                    && known.iter().all(|k| *k < need_kib)
                {
                    out.push(Action::Refuse {
                        agent: agent.endpoint_id.clone(),
                        deployment: d.id,
                        code: NO_MEMORY,
                        message: format!(
                            "placement: needs {need} MiB, the ExecEnvs have {} KiB left at most",
                            known.iter().max().copied().unwrap_or(0)
                        ),
                    });
                    break;
                }
            }
            if sent >= budget {
                return out;
            }
            sent += 1;
            out.push(match agent.dus.iter().find(|u| u.name == d.name) {
                Some(old) => Action::Update {
                    agent: agent.endpoint_id.clone(),
                    deployment: d.id,
                    du: old.uuid.clone(),
                    url: d.url.clone(),
                    network: d.network.clone(),
                },
                None => Action::Install {
                    agent: agent.endpoint_id.clone(),
                    deployment: d.id,
                    url: d.url.clone(),
                    network: d.network.clone(),
                },
            });
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::selector;
    use crate::store::{DeviceFacts, Du, ExecEnv};
    use std::collections::BTreeMap;

    const B: Backoff = Backoff {
        base_ms: 1000,
        max_ms: 60_000,
    };

    fn agent(id: &str, model: &str, dus: &[(&str, &str)], avail_kib: Option<i64>) -> AgentView {
        AgentView {
            endpoint_id: id.into(),
            online: true,
            inventory_at: Some(1),
            facts: DeviceFacts {
                model: Some(model.into()),
                ..DeviceFacts::default()
            },
            exec_envs: vec![ExecEnv {
                available_kib: avail_kib,
                ..ExecEnv::default()
            }],
            dus: dus
                .iter()
                .map(|(n, v)| Du {
                    uuid: format!("u-{n}-{v}"),
                    name: n.to_string(),
                    version: v.to_string(),
                    ..Du::default()
                })
                .collect(),
            ..AgentView::default()
        }
    }

    fn dep(
        id: i64,
        name: &str,
        version: &str,
        sel: &[(&str, &str)],
        mem: Option<u32>,
    ) -> Deployment {
        Deployment {
            id,
            name: name.into(),
            url: format!("http://h/{name}-{version}.cpkg"),
            digest: None,
            version: version.into(),
            selector: sel
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            memory_mib: mem,
            network: None,
            created: 0,
            state: "active".into(),
        }
    }

    fn agents_of(actions: &[Action]) -> Vec<&str> {
        actions.iter().map(Action::agent).collect()
    }

    #[test]
    fn installs_where_the_selector_matches_and_the_app_is_missing() {
        let agents = [
            agent("os::a", "cpe-a", &[], None),
            agent("os::b", "cpe-b", &[], None),
            agent("os::c", "cpe-a", &[("app", "1.0")], None),
            AgentView {
                online: false,
                ..agent("os::d", "cpe-a", &[], None)
            },
            AgentView {
                inventory_at: None,
                ..agent("os::e", "cpe-a", &[], None)
            },
        ];
        let deps = [dep(1, "app", "1.0", &[("model", "cpe-a")], None)];
        let got = decide(&agents, &deps, &Gates::new(), &HashMap::new(), B, 0, 32);
        assert_eq!(
            got,
            vec![Action::Install {
                agent: "os::a".into(),
                deployment: 1,
                url: "http://h/app-1.0.cpkg".into(),
                network: None,
            }]
        );
    }

    #[test]
    fn another_version_installed_is_updated() {
        let agents = [agent(
            "os::a",
            "cpe-a",
            &[("app", "0.9"), ("other", "1")],
            None,
        )];
        // The deployment's network override goes with its operation.
        let net = r#"{"mode":"none"}"#;
        let deps = [Deployment {
            network: Some(net.into()),
            ..dep(2, "app", "1.0", &[], None)
        }];
        let got = decide(&agents, &deps, &Gates::new(), &HashMap::new(), B, 0, 32);
        assert_eq!(
            got,
            vec![Action::Update {
                agent: "os::a".into(),
                deployment: 2,
                du: "u-app-0.9".into(),
                url: "http://h/app-1.0.cpkg".into(),
                network: Some(net.into()),
            }]
        );
        assert_eq!(got[0].kind(), "update");
    }

    #[test]
    fn the_journal_prevents_duplicates_and_backs_failures_off() {
        let agents = [agent("os::a", "m", &[], None)];
        let deps = [dep(1, "app", "1.0", &[], None)];
        let key = ("os::a".to_string(), 1);
        let mut j = HashMap::new();
        j.insert(
            key.clone(),
            JournalState {
                in_flight: true,
                ..JournalState::default()
            },
        );
        assert!(
            decide(&agents, &deps, &Gates::new(), &j, B, 0, 32).is_empty(),
            "in flight"
        );
        j.insert(
            key.clone(),
            JournalState {
                in_flight: false,
                failures: 3,
                last_finished: Some(10_000),
                last_ok: false,
            },
        );
        // Three failures: 4 s of back-off.
        assert!(decide(&agents, &deps, &Gates::new(), &j, B, 13_999, 32).is_empty());
        assert_eq!(
            decide(&agents, &deps, &Gates::new(), &j, B, 14_000, 32).len(),
            1
        );
        // Succeeded, yet the inventory lacks it: not again before the longest back-off.
        j.insert(
            key.clone(),
            JournalState {
                in_flight: false,
                failures: 0,
                last_finished: Some(10_000),
                last_ok: true,
            },
        );
        assert!(decide(&agents, &deps, &Gates::new(), &j, B, 69_999, 32).is_empty());
        assert_eq!(
            decide(&agents, &deps, &Gates::new(), &j, B, 70_000, 32).len(),
            1
        );
        assert_eq!(B.wait_ms(0), 0);
        assert_eq!(B.wait_ms(1), 1000);
        assert_eq!(B.wait_ms(40), 60_000);
    }

    #[test]
    fn placement_refuses_what_cannot_fit_and_lets_the_agent_decide_otherwise() {
        let agents = [
            agent("os::a", "m", &[], Some(8 * 1024)),
            agent("os::b", "m", &[], Some(64 * 1024)),
            agent("os::c", "m", &[], None),
        ];
        let got = decide(
            &agents,
            &[dep(1, "app", "1.0", &[], Some(16))],
            &Gates::new(),
            &HashMap::new(),
            B,
            0,
            32,
        );
        assert!(
            matches!(&got[0], Action::Refuse { agent, code: NO_MEMORY, .. } if agent == "os::a")
        );
        assert_eq!(agents_of(&got), ["os::a", "os::b", "os::c"]);
        assert!(matches!(got[1], Action::Install { .. }));
        assert!(
            matches!(got[2], Action::Install { .. }),
            "unknown memory: the agent decides"
        );
        // No need given: every agent gets it.
        let got = decide(
            &agents,
            &[dep(1, "app", "1.0", &[], None)],
            &Gates::new(),
            &HashMap::new(),
            B,
            0,
            32,
        );
        assert!(got.iter().all(|a| matches!(a, Action::Install { .. })));
    }

    #[test]
    fn the_budget_bounds_operations_not_refusals() {
        let agents: Vec<AgentView> = (0..10)
            .map(|i| {
                agent(
                    &format!("os::{i}"),
                    "m",
                    &[],
                    Some(if i < 3 { 0 } else { 1 << 20 }),
                )
            })
            .collect();
        let got = decide(
            &agents,
            &[dep(1, "app", "1.0", &[], Some(1))],
            &Gates::new(),
            &HashMap::new(),
            B,
            0,
            4,
        );
        let refusals = got
            .iter()
            .filter(|a| matches!(a, Action::Refuse { .. }))
            .count();
        assert_eq!(refusals, 3);
        assert_eq!(got.len() - refusals, 4);
        assert!(decide(
            &agents,
            &[dep(1, "app", "1.0", &[], None)],
            &Gates::new(),
            &HashMap::new(),
            B,
            0,
            0
        )
        .is_empty());
    }

    #[test]
    fn a_gated_deployment_goes_only_to_the_agents_its_rollout_lets_in() {
        let agents = [
            agent("os::a", "m", &[("app", "1.0")], None),
            agent("os::b", "m", &[("app", "1.0")], None),
            agent("os::c", "m", &[], None),
        ];
        let deps = [
            dep(2, "app", "2.0", &[], None),
            dep(1, "other", "1", &[], None),
        ];
        let mut gates = Gates::new();
        gates.insert(2, HashSet::from(["os::b".to_string()]));
        let got = decide(&agents, &deps, &gates, &HashMap::new(), B, 0, 32);
        // b is let in; a and c get only the ungated deployment.
        assert_eq!(agents_of(&got), ["os::a", "os::b", "os::c"]);
        assert!(matches!(&got[0], Action::Install { deployment: 1, .. }));
        assert!(matches!(&got[1], Action::Update { deployment: 2, .. }));
        assert!(matches!(&got[2], Action::Install { deployment: 1, .. }));
        // A paused rollout lets nobody in.
        gates.insert(2, HashSet::new());
        let got = decide(&agents, &deps, &gates, &HashMap::new(), B, 0, 32);
        assert!(
            got.iter().all(|a| !matches!(a, Action::Update { .. })),
            "{got:?}"
        );
    }

    /// From the store as `serve` reads it: the inventory's agents with their labels, the
    /// active deployments, the journal; a label selector reaches the labelled agents only.
    #[test]
    fn a_label_selector_reaches_the_labelled_agents_through_the_store() {
        use crate::store::labels::LabelChange;
        use crate::store::{Inventory, NewDeployment, Store};
        let mut s = Store::open_in_memory().unwrap();
        for a in ["os::a", "os::b", "os::c", "os::d"] {
            s.save_inventory(a, &Inventory::default(), 1).unwrap();
        }
        let label = |s: &mut Store, a: &str, set: &[&str], rm: &[&str]| {
            let set: Vec<String> = set.iter().map(|w| w.to_string()).collect();
            let rm: Vec<String> = rm.iter().map(|w| w.to_string()).collect();
            s.change_labels(a, &LabelChange::new(&set, &rm).unwrap())
                .unwrap();
        };
        label(&mut s, "os::a", &["site=paris"], &[]);
        label(&mut s, "os::c", &["site=lyon"], &[]);
        label(&mut s, "os::d", &["site=nice"], &[]);
        let words = ["label.site=paris,lyon".to_string()];
        s.add_deployment(
            &NewDeployment {
                name: "app".into(),
                url: "http://h/app.cpkg".into(),
                version: "1".into(),
                selector: selector::parse(&words).unwrap(),
                ..NewDeployment::default()
            },
            2,
        )
        .unwrap();
        let pass = |s: &Store| {
            let page = s.agents_page("", 500, true).unwrap();
            let journal = s.journal("os::a", "os::d").unwrap();
            let deps = s.deployments(true).unwrap();
            let got = decide(&page, &deps, &Gates::new(), &journal, B, 3, 32);
            assert!(got.iter().all(|a| matches!(a, Action::Install { .. })));
            got.iter()
                .map(|a| a.agent().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(pass(&s), ["os::a", "os::c"]);
        // The operator moves agents: the next pass follows the labels.
        label(&mut s, "os::c", &[], &["site"]);
        label(&mut s, "os::d", &["site=paris"], &[]);
        assert_eq!(pass(&s), ["os::a", "os::d"]);
    }

    #[test]
    fn one_operation_per_agent_per_pass() {
        let agents = [agent("os::a", "m", &[], None)];
        let deps = [dep(2, "b", "1", &[], None), dep(1, "a", "1", &[], None)];
        let got = decide(&agents, &deps, &Gates::new(), &HashMap::new(), B, 0, 32);
        assert_eq!(got.len(), 1);
    }
}
