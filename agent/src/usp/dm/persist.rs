//! What the USP layer keeps on flash (`usp.json` in the state directory): instance numbers per
//! table (stable across reboots, never reused), persistent subscriptions, and the boot facts
//! for `Boot!` and OnBoardRequest. Written atomically, and only when something changed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::fault::Fault;
use crate::store::{read_json, write_json};

/// Name of the USP layer's file in the state directory.
pub const USP_STATE_FILE: &str = "usp.json";
const MAX_STATE_BYTES: u64 = 256 * 1024;

/// A subscription as TR-181 `LocalAgent.Subscription.{i}` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Instance number in `LocalAgent.Subscription.{i}`.
    pub instance: u32,
    /// `Enable`.
    pub enable: bool,
    /// `ID`: the controller's name for it, unique per controller.
    pub id: String,
    /// The controller's endpoint ID (Recipient is shown as its Controller path).
    pub recipient: String,
    /// `NotifType` (one of `schema::NOTIF_TYPES`).
    pub notif_type: String,
    /// `ReferenceList`: the paths it covers (at most `MAX_REFERENCES`).
    pub reference_list: Vec<String>,
    /// `Persistent`: saved to flash and kept across reboots; others live only in memory.
    pub persistent: bool,
    /// `CreationDate`, RFC 3339 UTC.
    pub creation_date: String,
}

/// `usp.json`: what the USP layer keeps across reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Persisted {
    /// table name -> key (UUID, EUID, ExecEnv name, endpoint ID) -> instance number.
    pub instances: BTreeMap<String, BTreeMap<String, u32>>,
    /// table name -> last number handed out.
    pub last: BTreeMap<String, u32>,
    /// The subscriptions controllers created.
    pub subscriptions: Vec<Subscription>,
    /// The Reboot() CommandKey, reported in the next `Boot!` (Cause RemoteReboot).
    #[serde(default)]
    pub reboot_command_key: Option<String>,
    /// Controllers that got their OnBoardRequest.
    #[serde(default)]
    pub onboarded: Vec<String>,
    /// Controllers disabled through `Controller.{i}.Enable` (endpoint IDs).
    #[serde(default)]
    pub disabled_controllers: Vec<String>,
}

/// `usp.json` and its contents, saved only when they changed since the last save.
pub struct UspStore {
    path: PathBuf,
    /// The current contents; callers change them, then call `save_if_changed`.
    pub data: Persisted,
    saved: Persisted,
}

impl UspStore {
    /// Loads `usp.json` from `state_dir` (empty when there is none yet).
    pub fn open(state_dir: &std::path::Path) -> Result<UspStore, Fault> {
        let path = state_dir.join(USP_STATE_FILE);
        let data: Persisted = read_json(&path, MAX_STATE_BYTES)?.unwrap_or_default();
        Ok(UspStore {
            path,
            saved: data.clone(),
            data,
        })
    }

    /// The instance number of `key` in `table`, handing out the next one when it is new.
    pub fn number(&mut self, table: &str, key: &str) -> u32 {
        if let Some(n) = self.data.instances.get(table).and_then(|m| m.get(key)) {
            return *n;
        }
        let n = self.next(table);
        self.data
            .instances
            .entry(table.to_string())
            .or_default()
            .insert(key.to_string(), n);
        n
    }

    /// A fresh number in `table` (subscriptions).
    pub fn next(&mut self, table: &str) -> u32 {
        let last = self.data.last.entry(table.to_string()).or_insert(0);
        *last = last.saturating_add(1);
        *last
    }

    /// Forgets the keys of `table` not in `live` (their numbers are not reused); returns them.
    pub fn retain(&mut self, table: &str, live: &[&str]) -> Vec<(String, u32)> {
        let mut gone = Vec::new();
        if let Some(m) = self.data.instances.get_mut(table) {
            m.retain(|k, n| {
                let keep = live.contains(&k.as_str());
                if !keep {
                    gone.push((k.clone(), *n));
                }
                keep
            });
        }
        gone
    }

    /// The number `key` has in `table`, without handing out a new one.
    pub fn lookup(&self, table: &str, key: &str) -> Option<u32> {
        self.data
            .instances
            .get(table)
            .and_then(|m| m.get(key))
            .copied()
    }

    /// Writes `usp.json` when its content differs from what is on flash.
    pub fn save_if_changed(&mut self) -> Result<(), Fault> {
        if self.data == self.saved {
            return Ok(());
        }
        write_json(&self.path, &self.data)?;
        self.saved = self.data.clone();
        Ok(())
    }
}
