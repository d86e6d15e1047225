//! `cpevisor-controller serve`: the long-running loop. It keeps the inventory current (a full
//! Get on an agent's `Boot!`, OnBoardRequest, `DUStateChange!`, ValueChange or MQTT connect,
//! and a bounded periodic sweep), and reconciles: every pass decides (`reconcile::decide`)
//! what the online agents lack of the active deployments, journals each operation before
//! sending it, and records its result with the agent's fault.
//!
//! Replicas on one database share the fleet (`store::shards`): each reconciles, reads and
//! sends operations to the agents of the shards it holds, rebalanced every third of the
//! lease; the holder of the `serve` lease (the coordinator) also steps the rollouts. MQTT: the
//! controller's topic is a shared subscription, and the replica a message reaches forwards it
//! to the one holding its agent's shard (`Connection::open_replica`).
//!
//! Every wait has a deadline (the engine's jobs, the pump's 200 ms); what an agent sends is
//! decoded by the engine under its limits and anything it does not understand is counted and
//! skipped; memory is bounded by the jobs in flight, the event queue and the set of agents
//! waiting for a Get, while the fleet itself lives in the database.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::connection::ReplicaRoute;
use crate::engine::{JobSet, Op};
use crate::http::{self, HttpOptions};
use crate::store::shards::{shard_of, SHARDS};
use crate::store::{now_ms, Location, Store};
use crate::{Connection, CtlConfig};

use super::inventory;
use super::reconcile::Backoff;

/// Notifications kept between two turns of the loop.
const EVENT_QUEUE: usize = 16_384;
/// Agents waiting for an inventory Get; past it, announcements are dropped and the sweep
/// catches up.
const MAX_WANTED: usize = 16_384;
/// Inventory Gets in flight at once.
const MAX_REFRESH_IN_FLIGHT: usize = 64;
/// Agents read from the database per reconciliation page.
const PAGE: usize = 500;

/// How `serve` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// The database.
    pub db: Location,
    /// An online agent's inventory is read again when older than this.
    pub sweep: Duration,
    /// Agents added to the sweep per second at most.
    pub sweep_batch: usize,
    /// Operations (install, update) in flight at most.
    pub max_in_flight: usize,
    /// An operation without a result by then is failed (code 0).
    pub op_timeout: Duration,
    /// An inventory Get without an answer by then marks the agent offline.
    pub get_timeout: Duration,
    /// Back-off of failed operations.
    pub backoff: Backoff,
    /// Time between reconciliation passes.
    pub every: Duration,
    /// The HTTP API and dashboard (`--http`), if served.
    pub http: Option<HttpOptions>,
    /// This replica's name among the `serve`s on one database (`--replica`).
    pub replica: String,
    /// How long a replica's leases (its shards, the coordinator's) last unless renewed
    /// (`--lease-ttl`): the longest a dead replica's shards wait for another.
    pub lease_ttl: Duration,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// This host's name and this process's ID: a replica's name unless `--replica` gives one.
fn default_replica() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

impl ServeOptions {
    /// The defaults, on database `db`.
    pub fn new(db: Location) -> ServeOptions {
        ServeOptions {
            db,
            sweep: Duration::from_secs(300),
            sweep_batch: 64,
            max_in_flight: 32,
            op_timeout: Duration::from_secs(300),
            get_timeout: Duration::from_secs(30),
            backoff: Backoff {
                base_ms: 30_000,
                max_ms: 3_600_000,
            },
            every: Duration::from_secs(1),
            http: None,
            replica: default_replica(),
            lease_ttl: Duration::from_secs(15),
        }
    }
}

macro_rules! note {
    ($($a:tt)*) => { eprintln!("cpevisor-controller serve: {}", format!($($a)*)) };
}

mod ops;
mod pass_plan;
mod rollouts;
mod shards;

enum Kind {
    Get,
    Op(i64),
}

/// Who holds each shard, as the last round of this replica saw it: read by the MQTT receiver
/// to forward an agent's messages to its shard's holder.
type Holders = Arc<RwLock<BTreeMap<u32, String>>>;

struct Service {
    store: Store,
    /// The shards this replica holds: the agents it reconciles and reads.
    held: BTreeSet<u32>,
    holders: Holders,
    /// No other replica holds a shard (the receiver forwards nothing).
    alone: Arc<AtomicBool>,
    /// This replica holds the `serve` lease: it steps the rollouts.
    coordinator: bool,
    /// Shards taken while other replicas held some, and when: no operation goes to their
    /// agents until every replica has had time to learn the new holder (`settled`).
    taken_at: HashMap<u32, Instant>,
    /// Operations whose result never came (timeout, or a send that failed), by agent: its
    /// inventory is read before the journal calls them failed.
    unheard: HashMap<String, i64>,
    /// Which agents the next reconciliation pass reads.
    plan: pass_plan::PassPlan,
    opts: ServeOptions,
    set: JobSet,
    kinds: HashMap<String, Kind>,
    wanted: BTreeSet<String>,
    ops_in_flight: usize,
    /// Raised by SIGTERM or SIGINT.
    stop: Arc<AtomicBool>,
}

/// How long a stopping serve waits for its operations in flight; what is still out then stays
/// in the journal, and the next serve resolves it from the agent's inventory.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT ask serve to stop: blocked in this thread (and so in every thread spawned
/// after it) and taken by one thread waiting for them, which raises the flag.
fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|e| format!("blocking SIGTERM and SIGINT: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                note!("{sig} received: stopping");
                flag.store(true, Ordering::Relaxed);
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    Ok(stop)
}

/// Runs the service until SIGTERM or SIGINT (exit code 0, after the operations in flight end
/// or [`STOP_GRACE`]) or until the connection cannot be made or the database fails (2).
pub fn serve(config: &CtlConfig, opts: ServeOptions) -> i32 {
    // Before any thread is spawned: they inherit the blocked mask.
    let stop = match stop_on_signals() {
        Ok(s) => s,
        Err(e) => {
            note!("{e}");
            return 2;
        }
    };
    let mut store = match Store::open(&opts.db) {
        Ok(s) => s,
        Err(e) => {
            note!("{e}");
            return 2;
        }
    };
    store.fence(&opts.replica);
    // Before the broker: a wrong token file or a taken port is said at once.
    if let Some(h) = &opts.http {
        match http::start(h, opts.db.clone()) {
            Ok(addr) => note!("HTTP API and dashboard on http://{addr}/"),
            Err(e) => {
                note!("{e}");
                return 2;
            }
        }
    }
    let holders: Holders = Arc::default();
    let alone = Arc::new(AtomicBool::new(true));
    let route = ReplicaRoute {
        name: opts.replica.clone(),
        alone: alone.clone(),
        named_session: opts.replica != default_replica(),
        owner: {
            let (holders, me) = (holders.clone(), opts.replica.clone());
            Arc::new(move |agent: &str| {
                let h = holders.read().unwrap_or_else(|e| e.into_inner());
                h.get(&shard_of(agent)).filter(|r| **r != me).cloned()
            })
        },
    };
    let mut conn = match Connection::open_replica(config, route) {
        Ok(c) => c,
        Err(e) => {
            note!("{e}");
            return 2;
        }
    };
    conn.controller.collect_events(EVENT_QUEUE);
    note!(
        "connected as {}, database {} (schema {})",
        config.mqtt.endpoint_id,
        opts.db,
        store.version().unwrap_or(0)
    );
    let mut svc = Service {
        store,
        held: BTreeSet::new(),
        holders,
        alone,
        coordinator: false,
        taken_at: HashMap::new(),
        unheard: HashMap::new(),
        plan: pass_plan::PassPlan::new(pass_plan::FULL_PASS_EVERY),
        opts,
        set: JobSet::new(),
        kinds: HashMap::new(),
        wanted: BTreeSet::new(),
        ops_in_flight: 0,
        stop,
    };
    match svc.run(&mut conn) {
        // The others take its shards at once.
        Ok(()) => match svc.store.release_replica(&svc.opts.replica) {
            Ok(()) => 0,
            Err(e) => {
                note!("{e}");
                2
            }
        },
        Err(e) => {
            note!("{e}");
            2
        }
    }
}

impl Service {
    fn run(&mut self, conn: &mut Connection) -> Result<(), String> {
        // Every agent the database says is online is read again as its shard is taken
        // (`balance`), at the start too: a start-time sweep over the whole fleet would stall
        // on the other replicas' agents, which they keep current on their own schedule.
        let mut next_sweep = Instant::now();
        let mut next_pass = Instant::now();
        let mut stopping: Option<Instant> = None;
        let mut next_renew = Instant::now();
        loop {
            if Instant::now() >= next_renew {
                self.balance()?;
                next_renew = Instant::now() + self.renew_every();
            }
            let ctl = &mut conn.controller;
            for o in ctl.pump(&mut self.set, Duration::from_millis(200)) {
                self.ended(o)?;
            }
            let (events, dropped) = ctl.take_events();
            if dropped > 0 {
                note!("{dropped} notifications dropped (queue full); the sweep catches up");
            }
            let now = now_ms();
            for (agent, ev) in events {
                self.store.seen(&agent, now)?;
                let relevant = matches!(
                    ev.kind.as_str(),
                    "Boot!" | "OnBoardRequest" | "DUStateChange!" | "ValueChange" | "MQTTConnect"
                );
                if relevant && self.mine(&agent) && self.wanted.len() < MAX_WANTED {
                    self.wanted.insert(agent);
                }
            }
            if Instant::now() >= next_sweep {
                let before = now - self.opts.sweep.as_millis() as i64;
                // The fleet's stalest, of which this replica's shards hold about their share.
                let share = SHARDS as usize / self.held.len().max(1);
                let limit = (self.opts.sweep_batch * share).min(MAX_WANTED);
                let ids = self.store.stale_agents(before, limit)?;
                let mine: Vec<String> = ids.into_iter().filter(|a| self.mine(a)).collect();
                for a in mine {
                    if self.wanted.len() < MAX_WANTED {
                        self.wanted.insert(a);
                    }
                }
                next_sweep = Instant::now() + Duration::from_secs(1);
            }
            if self.stop.load(Ordering::Relaxed) {
                // Nothing new is started; results of what is out are still taken above.
                let deadline = *stopping.get_or_insert_with(|| Instant::now() + STOP_GRACE);
                if self.ops_in_flight == 0 || Instant::now() >= deadline {
                    note!(
                        "stopped, {} operations left in flight (the next serve resolves them)",
                        self.ops_in_flight
                    );
                    return Ok(());
                }
                continue;
            }
            self.start_gets(ctl);
            if Instant::now() >= next_pass {
                self.expire_lost()?;
                self.step_rollouts(ctl)?;
                self.reconcile(ctl)?;
                next_pass = Instant::now() + self.opts.every;
            }
        }
    }

    fn start_gets(&mut self, ctl: &mut crate::engine::Controller) {
        let gets = self
            .kinds
            .values()
            .filter(|k| matches!(k, Kind::Get))
            .count();
        let free = MAX_REFRESH_IN_FLIGHT.saturating_sub(gets);
        // Agents of shards given up meanwhile are their new holder's to read.
        self.wanted.retain(|a| self.held.contains(&shard_of(a)));
        let ready: Vec<String> = self
            .wanted
            .iter()
            .filter(|a| !self.set.busy(a))
            .take(free)
            .cloned()
            .collect();
        for a in ready {
            self.wanted.remove(&a);
            let op = Op::Get {
                paths: inventory::PATHS.iter().map(|p| p.to_string()).collect(),
                max_depth: 0,
            };
            if ctl.begin(&mut self.set, &a, op, self.opts.get_timeout) {
                self.kinds.insert(a, Kind::Get);
            }
        }
    }
}
