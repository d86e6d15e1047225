//! What lets DU operations run side by side: no lock is held across a download (a slow package
//! server must not stall the operations on other apps), so several operations may be in flight.
//! Each one reserves its DU in the model (`Model::transient`) for the steps that touch the DU's
//! files; this module holds what they share besides: the journal entries (one file for all),
//! the blobs each one stores before it commits (kept by GC), and the downloads in progress (one
//! per URL: the URL names the file a download resumes from).

use std::collections::{HashMap, HashSet};
// AtomicU32: 32-bit MIPS routers have no 64-bit atomics.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use super::state::{Journal, StateFiles};
use crate::fault::{Fault, FaultCode};
use crate::store::persist_point;
use crate::supervise::lock;

pub(super) struct InFlight {
    /// Mirrors `journal.json`; the lock orders its writes.
    journals: Mutex<Vec<Journal>>,
    next_op: AtomicU32,
    /// Blobs per operation that it is storing and has not committed. GC runs with this lock
    /// held, so a pin is never taken between GC's choice and its removals.
    pins: Mutex<HashMap<u32, Vec<String>>>,
    /// URLs being downloaded.
    downloads: Mutex<HashSet<String>>,
}

/// A URL being downloaded by one operation; released when dropped.
pub(super) struct DownloadClaim<'a> {
    inflight: &'a InFlight,
    url: String,
}

impl Drop for DownloadClaim<'_> {
    fn drop(&mut self) {
        lock(&self.inflight.downloads).remove(&self.url);
    }
}

impl InFlight {
    pub fn new() -> InFlight {
        InFlight {
            journals: Mutex::new(Vec::new()),
            next_op: AtomicU32::new(1),
            pins: Mutex::new(HashMap::new()),
            downloads: Mutex::new(HashSet::new()),
        }
    }

    /// Takes over the operations a crash cut (recovery finishes them one by one).
    pub fn adopt(&self, recovered: Vec<Journal>) {
        let last = recovered.iter().map(|j| j.op_id).max().unwrap_or(0);
        self.next_op
            .fetch_max(last.wrapping_add(1), Ordering::Relaxed);
        *lock(&self.journals) = recovered;
    }

    pub fn new_op(&self) -> u32 {
        self.next_op.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds or replaces `j`'s entry and writes the journal; on failure nothing changed.
    pub fn save(&self, files: &StateFiles, j: &Journal) -> Result<(), Fault> {
        let mut js = lock(&self.journals);
        let mut next = js.clone();
        match next.iter_mut().find(|e| e.op_id == j.op_id) {
            Some(e) => *e = j.clone(),
            None => next.push(j.clone()),
        }
        files.save_journals(&next)?;
        *js = next;
        Ok(())
    }

    /// Removes `op_id`'s entry (the journal file with the last one).
    pub fn remove(&self, files: &StateFiles, op_id: u32) -> Result<(), Fault> {
        let mut js = lock(&self.journals);
        let before = js.len();
        js.retain(|e| e.op_id != op_id);
        if js.len() == before {
            return Ok(());
        }
        files.save_journals(&js)?;
        if !js.is_empty() {
            // `clear_journal` marks the same step when the entry was the last one.
            persist_point("lifecycle:journal:cleared");
        }
        Ok(())
    }

    /// The entries recovered at open (or left by an operation whose removal failed).
    pub fn entries(&self) -> Vec<Journal> {
        lock(&self.journals).clone()
    }

    pub fn pin(&self, op_id: u32, blobs: Vec<String>) {
        lock(&self.pins).insert(op_id, blobs);
    }

    pub fn unpin(&self, op_id: u32) {
        lock(&self.pins).remove(&op_id);
    }

    /// Runs `gc` with the pinned blobs, holding the pins' lock throughout.
    pub fn with_pins<R>(&self, gc: impl FnOnce(&HashSet<String>) -> R) -> R {
        let pins = lock(&self.pins);
        let pinned: HashSet<String> = pins.values().flatten().cloned().collect();
        gc(&pinned)
    }

    /// Claims `url` for one download: a second operation on the same URL would write the same
    /// partial file, so it is refused (7229) until the first is over.
    pub fn claim_download(&self, url: &str) -> Result<DownloadClaim<'_>, Fault> {
        if !lock(&self.downloads).insert(url.to_string()) {
            return Err(Fault::new(
                FaultCode::InvalidDeploymentUnitState,
                format!("{url} is being downloaded by another operation; retry when it is over"),
            ));
        }
        Ok(DownloadClaim {
            inflight: self,
            url: url.to_string(),
        })
    }

    /// URLs other operations are downloading (their files are not stale).
    pub fn busy_downloads(&self) -> Vec<String> {
        lock(&self.downloads).iter().cloned().collect()
    }
}
