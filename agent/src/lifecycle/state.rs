//! What the lifecycle keeps on flash: one state file (`state.json`, rewritten atomically on every
//! change of what must survive a reboot) and one operation journal (`journal.json`, written before
//! a DU operation does any work and removed once its event was published).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::packages::{AppSpec, InstalledFiles};
use crate::fault::Fault;
use crate::model::{DeploymentUnit, DuStateChange, ExecutionUnit, Operation};
use crate::store::{self, persist_point};

/// Name of the persisted model in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the operations-in-flight journal in the state directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// Bounds what we read back from flash (a few hundred apps at most on a router).
const MAX_STATE_BYTES: u64 = 4 << 20;
const MAX_JOURNAL_BYTES: u64 = 1 << 20;

/// One installed DeploymentUnit with what it was installed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuRecord {
    /// The DU as published.
    pub du: DeploymentUnit,
    /// The app config it was installed with.
    pub spec: AppSpec,
    /// Where its files are.
    pub files: InstalledFiles,
    /// The operator's `X_CPEVISOR_NetworkConfig` in force, if any: `spec.network` is this
    /// (not the package's section), and an update keeps it unless given another. Absent in
    /// state files from before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_override: Option<crate::package::network::NetworkConfig>,
}

/// `state.json`: everything the lifecycle keeps across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Installed DUs.
    pub dus: Vec<DuRecord>,
    /// Their EUs.
    pub eus: Vec<ExecutionUnit>,
    /// ExecEnvs disabled by the operator (ExecEnv.Enable = false).
    pub disabled_envs: Vec<String>,
    /// ExecEnvs enabled by the operator although the config disables them.
    #[serde(default)]
    pub enabled_envs: Vec<String>,
    /// Number of the last EUID handed out (`eu-<n>`): the next is one more, so none is reused.
    pub next_eu: u64,
    /// The LAN address of each bridged app's EU (`lanpool`): kept so it stays the same.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lan_addresses: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
}

/// An operation in flight. Recovery reads it to roll back or complete the operation and to
/// publish its event exactly once. Operations on different DUs run side by side (their network
/// I/O holds no lock), so `journal.json` holds every one in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Tells this operation's entry from the others' (unique within one run of the agent).
    #[serde(default)]
    pub op_id: u32,
    /// Install, Update or Uninstall.
    pub operation: Operation,
    /// When the operation started, RFC 3339 UTC (`DUStateChange!` `StartTime`).
    pub start_time: String,
    /// Package URL (Install, Update).
    pub url: String,
    /// Empty until the package config names the app (install).
    pub uuid: String,
    /// Version being installed (empty until known), or the version being removed.
    pub version: String,
    /// Name of the ExecEnv it runs in.
    pub exec_env: String,
    /// Store directory of the version being installed ("" before unpack starts).
    pub app_id: String,
    /// Uninstall: keep the app's data directory.
    pub keep_data: bool,
    /// Update: the installed version being replaced.
    pub previous: Option<DuRecord>,
    /// Set once the outcome is decided, just before the event is published.
    pub outcome: Option<DuStateChange>,
    /// Install: this operation created the DU's private data disk (a rollback removes it;
    /// one that existed before, kept by an uninstall, is left alone).
    #[serde(default)]
    pub disk_created: bool,
}

/// `journal.json`: the operations in flight (an agent before concurrent operations wrote one).
enum JournalFile {
    Many(Vec<Journal>),
    One(Box<Journal>),
}

/// A list or one object, told by the first token. Not `#[serde(untagged)]`: that buffers the
/// file in serde's `Content` and instantiates every type inside a journal (the DU, its app
/// config, its files) a second time for reading from the buffer: 64 KiB of mipsel code
/// (docs/flash.md, section 9).
impl<'de> Deserialize<'de> for JournalFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FileVisitor;
        impl<'de> serde::de::Visitor<'de> for FileVisitor {
            type Value = JournalFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of operations or one operation")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<JournalFile, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(JournalFile::Many)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<JournalFile, A::Error> {
                Journal::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|j| JournalFile::One(Box::new(j)))
            }
        }
        d.deserialize_any(FileVisitor)
    }
}

/// The JSON files of the state directory (`state.json`, `journal.json`), written atomically.
pub struct StateFiles {
    dir: PathBuf,
}

impl StateFiles {
    /// The files under `dir` (nothing is read or created yet).
    pub fn new(dir: &Path) -> Self {
        StateFiles {
            dir: dir.to_path_buf(),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The persisted state; the default (nothing installed) when there is no file yet.
    pub fn load_state(&self) -> Result<PersistedState, Fault> {
        Ok(store::read_json(&self.dir.join(STATE_FILE), MAX_STATE_BYTES)?.unwrap_or_default())
    }

    /// Replaces `state.json` with `s`.
    pub fn save_state(&self, s: &PersistedState) -> Result<(), Fault> {
        store::write_json(&self.dir.join(STATE_FILE), s)
    }

    /// Every operation in flight when the agent stopped (none when there is no journal).
    pub fn load_journals(&self) -> Result<Vec<Journal>, Fault> {
        let file: Option<JournalFile> =
            store::read_json(&self.dir.join(JOURNAL_FILE), MAX_JOURNAL_BYTES)?;
        Ok(match file {
            None => Vec::new(),
            Some(JournalFile::Many(v)) => v,
            Some(JournalFile::One(j)) => vec![*j],
        })
    }

    /// Writes the operations in flight; none removes the journal.
    pub fn save_journals(&self, js: &[Journal]) -> Result<(), Fault> {
        if js.is_empty() {
            return self.clear_journal();
        }
        store::write_json(&self.dir.join(JOURNAL_FILE), &js)
    }

    /// Renames an unreadable journal to `journal.json.bad` (kept for diagnosis).
    pub fn set_journal_aside(&self) -> Result<(), Fault> {
        let from = self.dir.join(JOURNAL_FILE);
        let to = self.dir.join(format!("{JOURNAL_FILE}.bad"));
        std::fs::rename(&from, &to).map_err(|e| store::io_fault("rename", &from, e))?;
        store::fsync_dir(&self.dir)
    }

    /// Removes the journal durably: the operation is over and its event published.
    pub fn clear_journal(&self) -> Result<(), Fault> {
        let path = self.dir.join(JOURNAL_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(store::io_fault("remove", &path, e)),
        }
        store::fsync_dir(&self.dir)?;
        persist_point("lifecycle:journal:cleared");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultCode;

    fn journal(op_id: u32) -> Journal {
        Journal {
            op_id,
            operation: Operation::Install,
            start_time: "2026-12-07T00:00:00Z".into(),
            url: "https://h/p.cpkg".into(),
            uuid: String::new(),
            version: String::new(),
            exec_env: "jail0".into(),
            app_id: String::new(),
            keep_data: false,
            previous: None,
            outcome: None,
            disk_created: false,
        }
    }

    #[test]
    fn journals_load_as_a_list_or_as_the_one_object_older_agents_wrote() {
        let dir = std::env::temp_dir().join(format!("cpevisor-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = StateFiles::new(&dir);
        assert_eq!(files.load_journals().unwrap(), Vec::new());
        files.save_journals(&[journal(1), journal(2)]).unwrap();
        assert_eq!(files.load_journals().unwrap(), vec![journal(1), journal(2)]);
        let one = serde_json::to_vec(&journal(7)).unwrap();
        std::fs::write(dir.join(JOURNAL_FILE), one).unwrap();
        assert_eq!(files.load_journals().unwrap(), vec![journal(7)]);
        // Neither: refused as corrupt (recovery sets it aside), naming what was expected.
        for bad in [
            &b"3"[..],
            b"\"x\"",
            b"[{\"op_id\": 1}]",
            b"{\"operation\": 5}",
        ] {
            std::fs::write(dir.join(JOURNAL_FILE), bad).unwrap();
            let err = files.load_journals().unwrap_err();
            assert_eq!(err.code, FaultCode::CorruptData, "{}", err.message);
            assert!(err.message.contains("journal.json"), "{}", err.message);
        }
        std::fs::write(dir.join(JOURNAL_FILE), b"3").unwrap();
        let err = files.load_journals().unwrap_err();
        assert!(
            err.message
                .contains("a list of operations or one operation"),
            "{}",
            err.message
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
