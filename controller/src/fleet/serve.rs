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
use crate::engine::{JobSet, Op, Outcome};
use crate::http::{self, HttpOptions};
use crate::store::leases::SERVE;
use crate::store::shards::{shard_of, SHARDS};
use crate::store::{now_ms, Deployment, Location, Store};
use crate::{Connection, CtlConfig};

use super::inventory;
use super::reconcile::{self, Action, Backoff};
use super::rollout::{self, RolloutState, Step, Unread};

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

/// Whether lease holder `holder` is a default-named replica of this host whose process is
/// gone (a `serve` that died here): its lease need not be waited out. A PID taken again by
/// another process only makes us wait.
fn dead_here(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    host == host_name()
        && pid.parse::<u32>().is_ok_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
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

fn lease_ms(opts: &ServeOptions) -> i64 {
    opts.lease_ttl.as_millis() as i64
}

/// A third of the lease: two renewals may fail (a slow database) before it expires.
fn renew_every(opts: &ServeOptions) -> Duration {
    opts.lease_ttl / 3
}

/// How long a replica that took a shard from others waits before it sends operations to the
/// shard's agents: two rounds of every replica's `balance`. An agent's OperationComplete goes
/// to the shared topic and may reach any replica, which forwards it by the holders it saw at
/// its last round; until that round has come it still names the old holder (or nobody) and
/// the result would be lost.
fn settle_time(opts: &ServeOptions) -> Duration {
    renew_every(opts) * 2
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
                next_renew = Instant::now() + renew_every(&self.opts);
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

    /// Whether `agent` is in a shard this replica holds.
    fn mine(&self, agent: &str) -> bool {
        self.held.contains(&shard_of(agent))
    }

    /// Whether operations may go to `agent`: its shard is ours, and the other replicas have
    /// had time to learn that (`settle_time`).
    fn settled(&self, agent: &str) -> bool {
        let n = shard_of(agent);
        self.held.contains(&n)
            && self
                .taken_at
                .get(&n)
                .is_none_or(|t| t.elapsed() >= settle_time(&self.opts))
    }

    /// A round of the shards (`Store::balance_shards`) and of the coordinator's lease; the
    /// agents of shards just taken are read again (what their last holder left in flight is
    /// settled by it).
    fn balance(&mut self) -> Result<(), String> {
        let me = self.opts.replica.clone();
        let now = now_ms();
        // A shard with an operation of ours in flight stays until its result is in (or its
        // agent's inventory has told it).
        let busy: BTreeSet<u32> = self
            .kinds
            .iter()
            .filter(|(_, k)| matches!(k, Kind::Op(_)))
            .map(|(a, _)| shard_of(a))
            .chain(self.unheard.keys().map(|a| shard_of(a)))
            .collect();
        let b = self
            .store
            .balance_shards(&me, now, lease_ms(&self.opts), dead_here, |n| {
                !busy.contains(&n)
            })?;
        for g in &b.gone {
            note!("replica {me}: replica {g} is gone from this host: taking over its shards");
        }
        let lost: Vec<u32> = self
            .held
            .iter()
            .filter(|n| !b.held.contains(n) && !b.released.contains(n))
            .copied()
            .collect();
        if !b.taken.is_empty() || !b.released.is_empty() || !lost.is_empty() {
            note!(
                "replica {me}: holds {} of {SHARDS} shards {} ({} live replicas; took {}, released {}{})",
                b.held.len(),
                ranges(b.held.iter().copied()),
                b.live,
                b.taken.len(),
                b.released.len(),
                if lost.is_empty() {
                    String::new()
                } else {
                    format!(", lost {} (too slow to renew)", ranges(lost.iter().copied()))
                }
            );
        }
        if !b.taken.is_empty() {
            let taken: BTreeSet<u32> = b.taken.iter().copied().collect();
            // Bounded: past MAX_WANTED the periodic sweep catches up.
            for a in self.store.stale_agents(now, MAX_WANTED)? {
                if taken.contains(&shard_of(&a)) && self.wanted.len() < MAX_WANTED {
                    self.wanted.insert(a);
                }
            }
        }
        self.held = b.held;
        // A shard lost while an operation's result was being looked for: its new holder
        // settles it (the inventory it reads, or `expire_lost`).
        self.unheard.retain(|a, _| self.held.contains(&shard_of(a)));
        let alone = b.holders.values().all(|h| *h == me);
        // Alone, nobody forwards: what reaches the shared topic is ours.
        let settle = settle_time(&self.opts);
        self.taken_at
            .retain(|n, t| self.held.contains(n) && t.elapsed() < settle);
        if !alone {
            let at = Instant::now();
            self.taken_at.extend(b.taken.iter().map(|n| (*n, at)));
        }
        *self.holders.write().unwrap_or_else(|e| e.into_inner()) = b.holders;
        self.alone.store(alone, Ordering::Relaxed);
        let l = self
            .store
            .take_lease(SERVE, &me, now, lease_ms(&self.opts))?;
        let coordinator = l.holder == me;
        if !coordinator && dead_here(&l.holder) {
            // Gone from this host: the next round takes it.
            note!(
                "replica {me}: coordinator {} is gone from this host: taking over",
                l.holder
            );
            self.store.release_lease(SERVE, &l.holder)?;
        }
        if coordinator != self.coordinator {
            if coordinator {
                note!("replica {me}: coordinator (steps the rollouts)");
            } else {
                note!("replica {me}: no longer the coordinator ({} is)", l.holder);
            }
            self.coordinator = coordinator;
        }
        Ok(())
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

    fn ended(&mut self, o: Outcome) -> Result<(), String> {
        let now = now_ms();
        match self.kinds.remove(&o.agent) {
            Some(Kind::Get) => {
                // Only a whole answer replaces the inventory: a part missing (an error on one
                // path) would read as apps gone and be installed again.
                if o.ok {
                    let inv = inventory::from_rows(&o.rows);
                    let settled = self.store.save_inventory(&o.agent, &inv, now)?;
                    if settled > 0 {
                        note!("{}: {settled} operation(s) found done", o.agent);
                    }
                } else if o.fault.as_ref().is_some_and(|f| f.code == 0) {
                    // No answer in time: offline until it is heard from again.
                    self.store.set_offline(&o.agent)?;
                } else {
                    self.store.seen(&o.agent, now)?;
                }
                if let Some(id) = self.unheard.remove(&o.agent) {
                    // Not settled by the inventory just saved (nor read at all): failed.
                    let m = "no result in time, and the agent's inventory does not show it done";
                    if self.store.finish_op(id, Some((0, m)), now)? {
                        note!("{}: operation {id} failed: 0 {m}", o.agent);
                    } else {
                        note!("{}: operation {id} done (found in its inventory)", o.agent);
                    }
                }
            }
            Some(Kind::Op(id)) if local_failure(&o) && self.wanted.len() < MAX_WANTED => {
                // The agent may have done it and its result been lost on the way (a broker,
                // a replica forwarding by a holder it has not seen change): its inventory
                // says. Until read, the operation stays in flight and blocks another.
                self.ops_in_flight = self.ops_in_flight.saturating_sub(1);
                note!(
                    "{}: operation {id}: {}; reading the agent's inventory",
                    o.agent,
                    o.fault.as_ref().map(|f| f.message.as_str()).unwrap_or("")
                );
                self.unheard.insert(o.agent.clone(), id);
                self.wanted.insert(o.agent);
            }
            Some(Kind::Op(id)) => {
                self.ops_in_flight = self.ops_in_flight.saturating_sub(1);
                let fault = o
                    .fault
                    .as_ref()
                    .map(|f| (i64::from(f.code), f.message.as_str()));
                match fault {
                    None if o.ok => note!("{}: operation {id} done", o.agent),
                    _ => note!(
                        "{}: operation {id} failed: {}",
                        o.agent,
                        fault.map(|(c, m)| format!("{c} {m}")).unwrap_or_default()
                    ),
                }
                let fault = if o.ok {
                    None
                } else {
                    Some(fault.unwrap_or((0, "failed without a fault")))
                };
                self.store.finish_op(id, fault, now)?;
                // What it changed is read back before the next decision about this agent.
                if self.wanted.len() < MAX_WANTED {
                    self.wanted.insert(o.agent);
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Operations journaled as sent that nobody follows any more (sent by an earlier run of
    /// the controller) are lost once past the operation timeout; until then they block a
    /// second one (the agent may still be installing).
    fn expire_lost(&mut self) -> Result<(), String> {
        let now = now_ms();
        let limit = self.opts.op_timeout.as_millis() as i64;
        // Only in the shards held: another replica's are its own to follow.
        for (id, agent, _, created) in self.store.in_flight()? {
            if !self.mine(&agent) {
                continue;
            }
            let ours = matches!(self.kinds.get(&agent), Some(Kind::Op(x)) if *x == id)
                || self.unheard.get(&agent) == Some(&id);
            if !ours && created < now - limit {
                self.store
                    .lose_op(id, "no result: the controller that sent it stopped", now)?;
                // The agent may have carried it out unheard: its inventory is read again
                // before anything more is decided for it (a lost operation is sent again).
                if self.wanted.len() < MAX_WANTED {
                    self.wanted.insert(agent);
                }
            }
        }
        Ok(())
    }

    fn reconcile(&mut self, ctl: &mut crate::engine::Controller) -> Result<(), String> {
        let deployments = self.store.deployments(true)?;
        if deployments.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let gates = self.store.rollout_gates()?;
        let mut after = String::new();
        loop {
            let budget = self.opts.max_in_flight.saturating_sub(self.ops_in_flight);
            let page = self.store.agents_page(&after, PAGE, true)?;
            let (Some(first), Some(last)) = (page.first(), page.last()) else {
                return Ok(());
            };
            let (first, last) = (first.endpoint_id.clone(), last.endpoint_id.clone());
            let journal = self.store.journal(&first, &last)?;
            // Agents being read, or busy, have no current inventory to decide on; other
            // replicas' shards are theirs.
            let page: Vec<_> = page
                .into_iter()
                .filter(|a| {
                    self.settled(&a.endpoint_id)
                        && !self.wanted.contains(&a.endpoint_id)
                        && !self.set.busy(&a.endpoint_id)
                })
                .collect();
            after = last;
            let actions = reconcile::decide(
                &page,
                &deployments,
                &gates,
                &journal,
                self.opts.backoff,
                now,
                budget,
            );
            for a in actions {
                self.act(ctl, a, now)?;
            }
            if self.ops_in_flight >= self.opts.max_in_flight {
                return Ok(());
            }
        }
    }

    /// One step of every rollout not ended (`rollout::step`), stored by the coordinator
    /// alone (one writer of a rollout's state), and the rollback operations it asks for sent
    /// by every replica to the agents of its shards (journaled first, like the
    /// reconciliation's: the journal decides them, so replicas computing the same step send
    /// each at most once).
    fn step_rollouts(&mut self, ctl: &mut crate::engine::Controller) -> Result<(), String> {
        let mut live = self.store.rollouts(true)?;
        if !self.coordinator {
            live.retain(|r| r.state == RolloutState::RollingBack);
        }
        if live.is_empty() {
            return Ok(());
        }
        let deployments: HashMap<i64, _> = self
            .store
            .deployments(false)?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        let now = now_ms();
        for r in live {
            let Some(d) = deployments.get(&r.deployment_id) else {
                continue;
            };
            // A rollback may send any target back: it reads them all. Forward, a pass reads
            // only the targets its step may change.
            let (targets, unread) = if r.state == RolloutState::RollingBack {
                let all = self.store.rollout_targets(&r, &d.name, &d.version)?;
                (all, Unread::default())
            } else {
                self.store.rollout_pass(&r, &d.name, &d.version)?
            };
            let active = d.state == "active";
            let step = rollout::step_of(&r, active, &d.name, &d.version, &targets, &unread);
            if step == Step::default() {
                continue;
            }
            if self.coordinator {
                self.apply_step(&r, &step, now)?;
            }
            for rb in step.rollbacks {
                // Busy (its inventory being read): the next step asks again. Another
                // replica's agent: that replica sends it.
                if self.ops_in_flight >= self.opts.max_in_flight
                    || self.set.busy(&rb.agent)
                    || !self.settled(&rb.agent)
                {
                    continue;
                }
                let (kind, op) = match rb.url {
                    Some(url) => (
                        "update",
                        Op::Update {
                            du: rb.du,
                            url: Some(url),
                            network: rollback_network(
                                d,
                                r.previous_id.and_then(|p| deployments.get(&p)),
                            ),
                        },
                    ),
                    None => ("uninstall", Op::Uninstall { du: rb.du }),
                };
                let Some(id) =
                    self.store
                        .begin_rollback_op(&rb.agent, r.deployment_id, kind, now)?
                else {
                    continue;
                };
                if ctl.begin(&mut self.set, &rb.agent, op, self.opts.op_timeout) {
                    note!(
                        "{}: operation {id} ({kind}, rollback of rollout {}) sent",
                        rb.agent,
                        r.id
                    );
                    self.kinds.insert(rb.agent, Kind::Op(id));
                    self.ops_in_flight += 1;
                } else {
                    self.store.lose_op(id, "agent busy", now)?;
                }
            }
        }
        Ok(())
    }

    /// Stores rollout `r`'s `step` and says what changed.
    fn apply_step(&mut self, r: &rollout::Rollout, step: &Step, now: i64) -> Result<(), String> {
        self.store.apply_rollout_step(r, step, now)?;
        for c in &step.targets {
            match &c.fault {
                Some((code, m)) => note!(
                    "rollout {}: {} {} ({code} {m})",
                    r.id,
                    c.endpoint_id,
                    c.state.as_str()
                ),
                None => note!("rollout {}: {} {}", r.id, c.endpoint_id, c.state.as_str()),
            }
        }
        if let Some((state, wave, reason)) = &step.rollout {
            note!(
                "rollout {}: {} at wave {wave}{}",
                r.id,
                state.as_str(),
                reason
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
        }
        Ok(())
    }

    fn act(
        &mut self,
        ctl: &mut crate::engine::Controller,
        a: Action,
        now: i64,
    ) -> Result<(), String> {
        let kind = a.kind();
        let (agent, deployment, op) = match a {
            Action::Refuse {
                agent,
                deployment,
                code,
                message,
            } => {
                note!("{agent}: deployment {deployment} refused: {code} {message}");
                return self
                    .store
                    .record_refusal(&agent, deployment, kind, code, &message, now);
            }
            Action::Install {
                agent,
                deployment,
                url,
                network,
            } => (
                agent,
                deployment,
                Op::Install {
                    url,
                    env: None,
                    network,
                },
            ),
            Action::Update {
                agent,
                deployment,
                du,
                url,
                network,
            } => (
                agent,
                deployment,
                Op::Update {
                    du,
                    url: Some(url),
                    network,
                },
            ),
        };
        // Journaled first: a crash after this line leaves an operation in flight that blocks
        // a duplicate, never a sent operation that nobody knows of.
        let Some(id) = self.store.begin_op(&agent, deployment, kind, now)? else {
            return Ok(());
        };
        if ctl.begin(&mut self.set, &agent, op, self.opts.op_timeout) {
            note!("{agent}: operation {id} ({kind} of deployment {deployment}) sent");
            self.kinds.insert(agent, Kind::Op(id));
            self.ops_in_flight += 1;
        } else {
            self.store.lose_op(id, "agent busy", now)?;
        }
        Ok(())
    }
}

/// A failure of ours, not the agent's (fault code 0): no result in time, or the send failed.
fn local_failure(o: &Outcome) -> bool {
    !o.ok && o.fault.as_ref().is_none_or(|f| f.code == 0)
}

/// Shard numbers, ascending, as runs: `0-5,9,12-13` (`-` for none).
fn ranges(ns: impl Iterator<Item = u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for n in ns {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == n => *hi = n,
            _ => runs.push((n, n)),
        }
    }
    if runs.is_empty() {
        return "-".into();
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The network argument of a rollback's Update of deployment `d` back to the version of
/// `previous` (the deployment it superseded, if any): `previous`'s override; where that had
/// none and `d` had one, `null`, back to the package's own section (the override in force is
/// `d`'s); otherwise none, whatever is in force stays.
fn rollback_network(d: &Deployment, previous: Option<&Deployment>) -> Option<String> {
    match (previous.and_then(|p| p.network.clone()), &d.network) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => Some("null".into()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_sends_the_previous_override_or_drops_the_rolled_back_one() {
        let dep = |network: Option<&str>| Deployment {
            id: 1,
            name: "a".into(),
            url: "u".into(),
            digest: None,
            version: "1".into(),
            selector: Default::default(),
            memory_mib: None,
            network: network.map(String::from),
            created: 0,
            state: "removed".into(),
        };
        let (net, other) = (Some(r#"{"mode":"none"}"#), Some(r#"{"mode":"nat"}"#));
        assert_eq!(
            rollback_network(&dep(net), Some(&dep(other))).as_deref(),
            other
        );
        assert_eq!(
            rollback_network(&dep(None), Some(&dep(other))).as_deref(),
            other
        );
        assert_eq!(
            rollback_network(&dep(net), Some(&dep(None))).as_deref(),
            Some("null")
        );
        assert_eq!(rollback_network(&dep(net), None).as_deref(), Some("null"));
        assert_eq!(rollback_network(&dep(None), Some(&dep(None))), None);
        assert_eq!(rollback_network(&dep(None), None), None);
    }

    #[test]
    fn shard_lists_read_as_runs() {
        assert_eq!(ranges([].into_iter()), "-");
        assert_eq!(ranges([0, 1, 2, 5, 7, 8].into_iter()), "0-2,5,7-8");
    }

    #[test]
    fn only_a_gone_process_of_this_host_gives_its_lease_up() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let gone = c.id();
        c.wait().unwrap();
        assert!(dead_here(&format!("{}:{gone}", host_name())));
        assert!(!dead_here(&default_replica()), "this process");
        assert!(!dead_here(&format!("{}:1", host_name())), "alive");
        assert!(!dead_here(&format!("elsewhere-{}:{gone}", host_name())));
        assert!(!dead_here("r1"));
    }
}
