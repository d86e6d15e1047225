//! The agent's balloon work: every tick it reads the board's free memory and each running
//! microVM's balloon figures, asks the policy (`policy`) for new targets within each app's
//! declared memory, and sets them through the VMMs' control sockets (`client`). It runs on a
//! thread of its own and holds no lock while it talks to a VMM, so a slow or broken VMM costs
//! at most its deadline per tick and delays nothing else.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::{self, BalloonFigures};
use super::policy::{self, AppFigures, BalloonSettings, PolicyState};
use crate::supervise::cgroup::AppCgroup;
use crate::supervise::shared::lock;

/// How long one exchange with a VMM may take.
const VMM_DEADLINE: Duration = Duration::from_millis(500);

struct Vm {
    socket: PathBuf,
    declared_mib: u32,
    cgroup: Arc<Mutex<Option<AppCgroup>>>,
    /// The figures of the last tick.
    figures: Option<BalloonFigures>,
}

/// The running microVM apps with a control socket, and their balloons' last figures.
#[derive(Default, Clone)]
pub struct BalloonBoard(Arc<Mutex<HashMap<String, Vm>>>);

impl BalloonBoard {
    /// A run of `eu_id` with its VMM's control socket at `socket`.
    pub(in crate::supervise) fn register(
        &self,
        eu_id: &str,
        socket: PathBuf,
        declared_mib: u32,
        cgroup: Arc<Mutex<Option<AppCgroup>>>,
    ) {
        lock(&self.0).insert(
            eu_id.to_string(),
            Vm {
                socket,
                declared_mib,
                cgroup,
                figures: None,
            },
        );
    }

    /// The run of `eu_id` ended.
    pub(in crate::supervise) fn unregister(&self, eu_id: &str) {
        lock(&self.0).remove(eu_id);
    }

    /// Every running microVM app's balloon figures of the last tick, by EUID.
    pub fn figures_all(&self) -> HashMap<String, BalloonFigures> {
        lock(&self.0)
            .iter()
            .filter_map(|(id, vm)| vm.figures.map(|f| (id.clone(), f)))
            .collect()
    }
}

/// The balloon thread; stopped (and joined) when dropped.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the balloon work over `board` with `settings` (None when disabled or when no
    /// thread can be had: logged).
    pub fn start(board: BalloonBoard, settings: BalloonSettings) -> Option<Ticker> {
        if !settings.enable {
            crate::log_info!("balloon targets: off (config)");
            return None;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("balloon".into())
            .stack_size(128 * 1024)
            .spawn(move || run(&board, &settings, &flag));
        match spawned {
            Ok(t) => Some(Ticker {
                stop,
                thread: Some(t),
            }),
            Err(e) => {
                crate::log_warn!("balloon targets: off, no thread: {e}");
                None
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(board: &BalloonBoard, settings: &BalloonSettings, stop: &(Mutex<bool>, Condvar)) {
    let tick = Duration::from_millis(settings.tick_ms);
    let mut state = PolicyState::default();
    // Said once, at start: a line logged at a later tick is a write while the agent idles.
    let mut policy = meminfo().map(|mem| settled_policy(settings, mem.total_mib));
    loop {
        let until = Instant::now() + tick;
        let mut stopped = lock(&stop.0);
        while !*stopped {
            let now = Instant::now();
            if now >= until {
                break;
            }
            stopped = stop
                .1
                .wait_timeout(stopped, until - now)
                .map(|g| g.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if *stopped {
            return;
        }
        drop(stopped);
        let Some(mem) = meminfo() else {
            crate::log_debug!("balloon: /proc/meminfo unreadable, skipping a tick");
            continue;
        };
        let p = *policy.get_or_insert_with(|| settled_policy(settings, mem.total_mib));
        tick_once(board, &p, mem.available_mib, &mut state);
    }
}

/// The policy for a board of `total_mib`, said in the log.
fn settled_policy(settings: &BalloonSettings, total_mib: u64) -> policy::Policy {
    let p = settings.policy(total_mib);
    crate::log_info!(
        "balloon targets: inflate below {} MiB free, release above {} MiB, {} MiB steps",
        p.low_mib,
        p.high_mib,
        p.step_mib
    );
    p
}

/// One decision: read every VMM, decide, set the targets that changed.
pub fn tick_once(
    board: &BalloonBoard,
    p: &policy::Policy,
    available_mib: u64,
    state: &mut PolicyState,
) {
    // The list is copied out: no lock is held while a VMM is asked.
    let vms: Vec<(String, PathBuf, u32, Option<u64>)> = lock(&board.0)
        .iter()
        .map(|(id, vm)| {
            let current = lock(&vm.cgroup).as_ref().and_then(|cg| cg.memory_current());
            (id.clone(), vm.socket.clone(), vm.declared_mib, current)
        })
        .collect();
    let mut apps = Vec::new();
    let mut seen = HashMap::new();
    for (id, socket, declared, current) in vms {
        match client::status(&socket, VMM_DEADLINE) {
            Ok(Some(f)) => {
                seen.insert(id.clone(), f);
                apps.push(AppFigures {
                    eu_id: id,
                    declared_mib: u64::from(declared),
                    target_mib: f.target_mib,
                    actual_mib: f.actual_mib,
                    memory_current_kib: current.map(|b| b / 1024),
                });
            }
            Ok(None) => {}
            // Starting, stopping, or broken: its run says so; not this tick.
            Err(e) => crate::log_debug!("{id}: balloon: {}: {e}", socket.display()),
        }
    }
    let sockets: HashMap<String, PathBuf> = lock(&board.0)
        .iter()
        .map(|(id, vm)| (id.clone(), vm.socket.clone()))
        .collect();
    for c in policy::decide(p, available_mib, &apps, state) {
        let Some(socket) = sockets.get(&c.eu_id) else {
            continue;
        };
        match client::set_target(socket, c.target_mib, VMM_DEADLINE) {
            Ok(f) => {
                crate::log_info!(
                    "{}: balloon target {} MiB ({:?}; {available_mib} MiB free; actual {} MiB)",
                    c.eu_id,
                    c.target_mib,
                    c.why,
                    f.actual_mib
                );
                seen.insert(c.eu_id.clone(), f);
            }
            Err(e) => crate::log_warn!("{}: balloon target {} MiB: {e}", c.eu_id, c.target_mib),
        }
    }
    let mut b = lock(&board.0);
    for (id, f) in seen {
        if let Some(vm) = b.get_mut(&id) {
            vm.figures = Some(f);
        }
    }
}

/// The board's memory: `MemTotal` and `MemAvailable`, MiB.
struct MemInfo {
    total_mib: u64,
    available_mib: u64,
}

fn meminfo() -> Option<MemInfo> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(MemInfo {
        total_mib: field("MemTotal")? / 1024,
        available_mib: field("MemAvailable")? / 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields() {
        let m = parse_meminfo(
            "MemTotal:       486532 kB\nMemFree:   1 kB\nMemAvailable:   444420 kB\n",
        )
        .unwrap();
        assert_eq!((m.total_mib, m.available_mib), (475, 434));
        assert!(parse_meminfo("MemTotal: 5 kB\n").is_none());
        assert!(meminfo().is_some(), "this host's /proc/meminfo");
    }
}
