//! Crash injection: `CPEVISOR_CRASH_AT=<name>` or `<name>#<n>` makes the process SIGKILL itself
//! at the named (n-th) persistence step, the closest a test gets to pulling the power cord.
//! `CPEVISOR_CRASH_TRACE=<file>` appends `<name>#<n>` for every step passed, so a test can first
//! record all the steps of an operation and then crash at each one in turn.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Environment variable naming the persistence step to crash at (`<name>` or `<name>#<n>`).
pub const CRASH_AT_ENV: &str = "CPEVISOR_CRASH_AT";
/// Environment variable naming the file that records every persistence step passed.
pub const CRASH_TRACE_ENV: &str = "CPEVISOR_CRASH_TRACE";

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CrashTarget {
    pub name: String,
    /// 1-based hit number; 1 when the variable carries no `#n`.
    pub nth: u32,
}

/// Parses `<name>` or `<name>#<n>`; `None` for an empty or malformed value (crash injection is a
/// test facility: a typo must not kill a device, so it is ignored).
pub(crate) fn parse_crash_target(value: &str) -> Option<CrashTarget> {
    let value = value.trim();
    let (name, nth) = match value.rsplit_once('#') {
        Some((name, n)) => (name, n.parse::<u32>().ok().filter(|n| *n >= 1)?),
        None => (value, 1),
    };
    if name.is_empty() {
        return None;
    }
    Some(CrashTarget {
        name: name.to_string(),
        nth,
    })
}

struct CrashConfig {
    target: Option<CrashTarget>,
    trace: Option<std::path::PathBuf>,
    hits: Mutex<HashMap<String, u32>>,
}

fn config() -> Option<&'static CrashConfig> {
    static CONFIG: OnceLock<Option<CrashConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let target = std::env::var(CRASH_AT_ENV)
                .ok()
                .and_then(|v| parse_crash_target(&v));
            let trace = std::env::var_os(CRASH_TRACE_ENV)
                .filter(|v| !v.is_empty())
                .map(std::path::PathBuf::from);
            if target.is_none() && trace.is_none() {
                return None;
            }
            Some(CrashConfig {
                target,
                trace,
                hits: Mutex::new(HashMap::new()),
            })
        })
        .as_ref()
}

/// Marks a persistence step. Call it at every point where a power loss leaves a distinct state
/// on flash. Costs one atomic load when crash injection is off.
pub fn persist_point(name: &str) {
    let Some(cfg) = config() else { return };
    let hit = {
        let mut hits = cfg.hits.lock().unwrap_or_else(|p| p.into_inner());
        let n = hits.entry(name.to_string()).or_insert(0);
        *n += 1;
        *n
    };
    if let Some(trace) = &cfg.trace {
        // Best effort: the trace is a test aid, a failure to write it must not change behaviour.
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(trace)
        {
            let _ = writeln!(f, "{name}#{hit}");
        }
    }
    if let Some(target) = &cfg.target {
        if target.name == name && target.nth == hit {
            kill_self();
        }
    }
}

fn kill_self() -> ! {
    // SAFETY: kill(2) on our own pid with a constant signal number touches no memory; SIGKILL
    // cannot be caught, so the process ends here without running destructors or flushing.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // Unreachable in practice; abort keeps the "no clean shutdown" property if it were not.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_hit_number() {
        assert_eq!(
            parse_crash_target("store.blob.renamed"),
            Some(CrashTarget {
                name: "store.blob.renamed".into(),
                nth: 1
            })
        );
        assert_eq!(
            parse_crash_target("atomic_write:state.json:synced#3"),
            Some(CrashTarget {
                name: "atomic_write:state.json:synced".into(),
                nth: 3
            })
        );
        assert_eq!(parse_crash_target(""), None);
        assert_eq!(parse_crash_target("x#0"), None);
        assert_eq!(parse_crash_target("x#y"), None);
        assert_eq!(parse_crash_target("#2"), None);
    }
}
