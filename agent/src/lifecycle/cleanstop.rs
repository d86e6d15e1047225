//! The clean-stop record (`clean-stop.json` in the state directory). A daemon shutdown writes
//! it once every app has stopped; the next start reads and removes it before it starts any app.
//! Found: the last run ended cleanly (a router's `reboot` through its init), nothing is reported.
//! Missing: the agent ended without stopping its apps (power loss, crash, `reboot -f`); each EU
//! that was requested Active was killed with it and is reported FailureWhileActive, once, in
//! the log and as an event. Either way the usual recovery follows: the EUs requested Active
//! with AutoStart start again.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fault::Fault;
use crate::model::{
    now_secs, rfc3339, EuStatus, EuValueChange, ExecutionFaultCode, ExecutionUnit, RequestedState,
};
use crate::store;

pub const CLEAN_STOP_FILE: &str = "clean-stop.json";
const MAX_RECORD_BYTES: u64 = 64 << 10;
/// ExecutionFaultMessage of an EU that was running when the agent ended without a clean stop.
pub const UNCLEAN_STOP_MESSAGE: &str =
    "the agent ended without stopping the app (power loss, crash or forced reboot)";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanStop {
    /// RFC 3339 time of the stop.
    pub time: String,
    /// The EUs that were running and were stopped.
    pub stopped: Vec<String>,
}

/// Writes the record durably (atomic replace, fsync'd): the shutdown is complete.
pub fn record(state_dir: &Path, stopped: Vec<String>) -> Result<(), Fault> {
    let rec = CleanStop {
        time: rfc3339(now_secs()),
        stopped,
    };
    store::write_json(&state_dir.join(CLEAN_STOP_FILE), &rec)
}

/// Reads and removes the record (durably, so a crash of this run is not taken for a clean stop).
/// An unreadable record counts as missing.
pub fn take(state_dir: &Path) -> Option<CleanStop> {
    let path = state_dir.join(CLEAN_STOP_FILE);
    let rec = match store::read_json::<CleanStop>(&path, MAX_RECORD_BYTES) {
        Ok(r) => r,
        Err(f) => {
            crate::log_warn!("{f}; taken as an unclean stop");
            None
        }
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if let Err(f) = store::fsync_dir(state_dir) {
                crate::log_warn!("{f}");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => crate::log_warn!("removing {}: {e}", path.display()),
    }
    rec
}

/// After a start without a clean-stop record: marks the EUs that were requested Active (they
/// were running, or restarting, when the agent ended) FailureWhileActive and returns the
/// events to publish. `eus` come with their runtime fields already reset.
pub fn mark_unclean(eus: &mut [ExecutionUnit]) -> Vec<EuValueChange> {
    let mut events = Vec::new();
    for eu in eus
        .iter_mut()
        .filter(|e| e.requested_state == RequestedState::Active)
    {
        crate::log_warn!("{}: {UNCLEAN_STOP_MESSAGE}", eu.eu_id);
        eu.execution_fault_code = ExecutionFaultCode::FailureWhileActive;
        eu.execution_fault_message = UNCLEAN_STOP_MESSAGE.to_string();
        events.push(EuValueChange {
            eu_id: eu.eu_id.clone(),
            status: EuStatus::Idle,
            execution_fault_code: ExecutionFaultCode::FailureWhileActive,
            execution_fault_message: UNCLEAN_STOP_MESSAGE.to_string(),
            time: rfc3339(now_secs()),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_taken_once() {
        let dir = std::env::temp_dir().join(format!("cpv-cleanstop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(take(&dir), None);
        record(&dir, vec!["eu-1".into()]).unwrap();
        let rec = take(&dir).expect("the record just written");
        assert_eq!(rec.stopped, vec!["eu-1".to_string()]);
        // Taken: a crash of the run that took it reads as unclean.
        assert_eq!(take(&dir), None);
        std::fs::write(dir.join(CLEAN_STOP_FILE), b"{ torn").unwrap();
        assert_eq!(take(&dir), None);
        assert!(!dir.join(CLEAN_STOP_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
