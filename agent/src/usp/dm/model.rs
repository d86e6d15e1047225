//! The data model's state ([`DataModel`]), how it opens, and the helpers every object area
//! and message kind uses. The tree itself is built per area (`device_info`, `local_agent`,
//! `software_modules`); each message kind has its own file.

use std::collections::{BTreeSet, HashMap};
use std::path::Path as FsPath;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use cpevisor_usp::errors::*;

use super::persist::{Subscription, UspStore};
use super::schema;
use super::tree::{Obj, Tree, TreeBuilder};
use super::types::{Completion, RebootHook, Request, MAX_REQUESTS};
use crate::fault::Fault;
use crate::lifecycle::Agent;
use crate::model::Event;
use crate::usp::config::UspConfig;

/// How many gone objects keep their number in RAM for late events.
pub(super) const RECENTLY_GONE: usize = 64;

/// The agent's TR-181 data model over USP: the live tree, subscriptions, asynchronous requests and
/// instance numbering.
pub struct DataModel {
    pub(super) agent: Arc<Agent>,
    pub(super) cfg: UspConfig,
    pub(super) store: UspStore,
    pub(super) subs: Vec<Subscription>,
    /// Fixed at MAX_REQUESTS, inline: the bound is the type's.
    pub(super) requests: heapless::Vec<Request, MAX_REQUESTS>,
    pub(super) next_request: u32,
    pub(super) completions_tx: Sender<Completion>,
    pub(super) completions_rx: Receiver<Completion>,
    pub(super) events_rx: Receiver<(u64, Event)>,
    pub(super) reboot: RebootHook,
    /// Instance paths seen at the last poll, for ObjectCreation/ObjectDeletion.
    pub(super) known: BTreeSet<String>,
    /// DU UUID -> its EUIDs as last seen (DUStateChange! of an uninstall names them).
    pub(super) du_eus: HashMap<String, Vec<String>>,
    /// (table, key, number) of objects recently gone: events about them may arrive after the
    /// poll that saw them go. A fixed ring: the oldest is forgotten first.
    pub(super) recently_gone: heapless::Deque<(String, String, u32), RECENTLY_GONE>,
    pub(super) boot_sent: bool,
    /// A controller changed something since the last poll (objects may have come or gone
    /// without an agent event: subscriptions, ExecEnv state).
    pub(super) touched: bool,
    /// Parameter values ValueChange subscriptions watch, as of the last poll.
    pub(super) watched: std::collections::BTreeMap<String, String>,
}

/// Appends `item` to a fixed ring, forgetting the oldest entry when it is full; true when one
/// was forgotten.
pub(super) fn push_dropping_oldest<T, const N: usize>(
    ring: &mut heapless::Deque<T, N>,
    item: T,
) -> bool {
    let dropped = ring.is_full() && ring.pop_front().is_some();
    // Cannot fail: a full ring just made room (N > 0 for every ring used here).
    let pushed = ring.push_back(item);
    debug_assert!(pushed.is_ok());
    dropped
}

pub(super) fn fault_err(f: Fault) -> UspError {
    UspError::new(INTERNAL_ERROR, f.to_string())
}

pub(super) fn b(v: bool) -> String {
    if v { "true" } else { "false" }.to_string()
}

pub(super) fn kib(v: u64) -> String {
    v.min(i32::MAX as u64).to_string()
}

pub(super) fn instance_paths(tree: &Tree) -> BTreeSet<String> {
    tree.objs
        .iter()
        .filter(|o| o.instance().is_some() && o.desc.name != "Request")
        .map(|o| o.path.clone())
        .collect()
}

pub(super) fn unique_keys(o: &Obj) -> Vec<(String, String)> {
    schema::unique_key_names(o.desc)
        .iter()
        .map(|n| (n.to_string(), o.param(n).unwrap_or_default().to_string()))
        .collect()
}

impl DataModel {
    /// `state_dir` holds `usp.json`. `reboot` is what `Device.Reboot()` runs.
    pub fn open(
        agent: Arc<Agent>,
        cfg: UspConfig,
        state_dir: &FsPath,
        reboot: RebootHook,
    ) -> Result<DataModel, Fault> {
        cfg.validate()?;
        let store = UspStore::open(state_dir)?;
        let (completions_tx, completions_rx) = channel();
        let events_rx = agent.events().subscribe();
        let mut dm = DataModel {
            subs: store.data.subscriptions.clone(),
            agent,
            cfg,
            store,
            requests: heapless::Vec::new(),
            next_request: 0,
            completions_tx,
            completions_rx,
            events_rx,
            reboot,
            known: BTreeSet::new(),
            du_eus: HashMap::new(),
            recently_gone: heapless::Deque::new(),
            boot_sent: false,
            touched: false,
            watched: Default::default(),
        };
        let tree = dm.materialize();
        dm.known = instance_paths(&tree);
        Ok(dm)
    }

    /// The USP configuration it was made with.
    pub fn config(&self) -> &UspConfig {
        &self.cfg
    }

    /// The agent whose objects it shows.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// False once `Controller.{i}.Enable` was set false: its Records are ignored.
    pub fn controller_enabled(&self, endpoint_id: &str) -> bool {
        !self
            .store
            .data
            .disabled_controllers
            .iter()
            .any(|c| c == endpoint_id)
    }

    /// The number of an object that exists or went away recently; never a new one.
    pub(super) fn known_number(&self, table: &str, key: &str) -> Option<u32> {
        self.store.lookup(table, key).or_else(|| {
            self.recently_gone
                .iter()
                .find(|(t, k, _)| t == table && k == key)
                .map(|(_, _, n)| *n)
        })
    }

    pub(super) fn controller_path(&mut self, endpoint_id: &str) -> String {
        let n = self.store.number("Controller", endpoint_id);
        format!("Device.LocalAgent.Controller.{n}")
    }

    /// The instantiated model as of now. New instances get their numbers here (persisted).
    pub fn materialize(&mut self) -> Tree {
        use schema::DEVICE;
        let snap = self.agent.snapshot();
        let mut t = TreeBuilder::default();
        let dev = t.object(None, &DEVICE, Vec::new());
        self.device_info(&mut t, &dev);
        self.local_agent(&mut t, &dev);
        self.software_modules(&mut t, &dev, &snap);
        if let Err(f) = self.store.save_if_changed() {
            crate::log_warn!("usp: instance numbers not saved: {f}");
        }
        Tree::new(t.objs)
    }

    pub(super) fn save_subs(&mut self) -> Result<(), Fault> {
        self.store.data.subscriptions =
            self.subs.iter().filter(|s| s.persistent).cloned().collect();
        self.store.save_if_changed()
    }
}

#[cfg(test)]
mod tests {
    use super::{push_dropping_oldest, RECENTLY_GONE};

    #[test]
    fn recently_gone_keeps_the_newest_within_its_bound() {
        let mut ring: heapless::Deque<(String, String, u32), RECENTLY_GONE> =
            heapless::Deque::new();
        for n in 0..RECENTLY_GONE as u32 {
            assert!(!push_dropping_oldest(
                &mut ring,
                ("DU".into(), format!("k{n}"), n)
            ));
        }
        assert!(push_dropping_oldest(
            &mut ring,
            ("DU".into(), "new".into(), 999)
        ));
        assert_eq!(ring.len(), RECENTLY_GONE);
        assert_eq!(ring.front().map(|e| e.2), Some(1), "the oldest went first");
        assert_eq!(ring.back().map(|e| e.2), Some(999));
    }
}
