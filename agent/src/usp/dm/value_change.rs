//! ValueChange for every parameter an enabled ValueChange subscription references (TR-181
//! `Subscription.{i}.NotifType`), found by comparing each poll's values with the last poll's.
//! A parameter seen for the first time is a baseline, not a change. `ExecutionUnit.{i}.Status`
//! is left to the agent's events (they see every step, a poll only the last), and parameters
//! that change on their own all the time are not watched: GetSupportedDM reports them as
//! VALUE_CHANGE_WILL_IGNORE.

use std::collections::BTreeMap;

use cpevisor_usp::path::{Leaf, Path};

use super::model::DataModel;
use super::notify::NotifyBody;
use super::tree::{self, Obj, Tree};

/// Most parameter values remembered between polls (all subscriptions together).
pub const MAX_WATCHED: usize = 4096;

/// Parameters whose value moves by itself (seconds, free memory): ValueChange on them is
/// ignored.
pub fn ignores_value_change(param: &str) -> bool {
    matches!(
        param,
        "UpTime"
            | "Free"
            | "AvailableMemory"
            | "MemoryInUse"
            | "AvailableDiskSpace"
            | "DiskSpaceInUse"
    )
}

fn watchable(o: &Obj, param: &str) -> bool {
    let eu_status = o.desc.name == "ExecutionUnit" && param == "Status";
    !(ignores_value_change(param) || eu_status)
}

impl DataModel {
    /// The ValueChange notifications since the last call; remembers the values for the next.
    pub(super) fn value_changes(&mut self, tree: &Tree) -> Vec<NotifyBody> {
        let mut now: BTreeMap<String, String> = BTreeMap::new();
        let mut watch = |o: &Obj, name: &str, value: &str| {
            if now.len() < MAX_WATCHED && watchable(o, name) {
                now.insert(format!("{}{name}", o.path), value.to_string());
            }
        };
        let refs = self
            .subs
            .iter()
            .filter(|s| s.enable && s.notif_type == "ValueChange")
            .flat_map(|s| s.reference_list.iter());
        for r in refs {
            let Ok(path) = Path::parse(r) else { continue };
            if tree::schema_of(&path).is_err() {
                continue;
            }
            for root in tree.resolve(&path) {
                match &path.leaf {
                    Leaf::Param(p) => {
                        if let Some(v) = root.param(p) {
                            watch(root, p, v);
                        }
                    }
                    Leaf::Object => {
                        for o in tree.objs.iter().filter(|o| o.path.starts_with(&root.path)) {
                            for (name, value) in &o.params {
                                watch(o, name, value);
                            }
                        }
                    }
                    Leaf::Command(_) | Leaf::Event(_) => {}
                }
            }
        }
        let changes = now
            .iter()
            .filter(|(path, value)| self.watched.get(*path).is_some_and(|old| old != *value))
            .map(|(path, value)| NotifyBody::ValueChange {
                param_path: path.clone(),
                param_value: value.clone(),
            })
            .collect();
        self.watched = now;
        changes
    }
}
