//! The controller's storage: inventory, desired state and the operations journal, in SQLite
//! (bundled into the binary: nothing to install) or, for operators who outgrow one controller,
//! PostgreSQL (`--db postgres://...`). Callers see plain Rust types only, never a database
//! type; the queries are written once for both.
//!
//! `schema` holds the migrations; `db` the seam between the queries and the two databases
//! (`pg` the PostgreSQL side); `location` what `--db` names; this module the queries.

mod db;
pub mod labels;
pub mod leases;
pub mod location;
mod pg;
mod pg_tls;
pub mod rollouts;
mod schema;
mod shard_key;
pub mod shards;
#[cfg(any(test, feature = "test-postgres"))]
pub mod test_postgres;
mod values;
pub mod views;

use std::collections::{BTreeMap, HashMap};

use db::{p, Db, Row};
pub use location::Location;
pub use schema::{latest as schema_version, MIGRATIONS};
pub use shard_key::fnv1a;

/// The lease of the coordinating `serve` (`leases`): the one replica that steps rollouts.
pub const SERVE_LEASE: &str = "serve";

/// Milliseconds since the Unix epoch: every time in the store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What an agent says it is (DeviceInfo, and its ExecEnvs' board and architecture).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// `DeviceInfo.Manufacturer`.
    pub manufacturer: Option<String>,
    /// `DeviceInfo.ModelName`.
    pub model: Option<String>,
    /// `DeviceInfo.SoftwareVersion`.
    pub software_version: Option<String>,
    /// `DeviceInfo.SerialNumber`.
    pub serial: Option<String>,
    /// The board, when the agent reports one.
    pub board: Option<String>,
    /// The CPU architecture its apps run on, when the agent reports one.
    pub arch: Option<String>,
}

/// An ExecEnv as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecEnv {
    /// Its instance path, `Device.SoftwareModules.ExecEnv.1.`.
    pub path: String,
    /// `Name`.
    pub name: String,
    /// `Type` (`kvm`, `jail`): the backend.
    pub env_type: Option<String>,
    /// `Status`.
    pub status: Option<String>,
    /// The architecture of the apps it runs, when reported.
    pub arch: Option<String>,
    /// `AllocatedMemory`, KiB: the app memory budget.
    pub budget_kib: Option<i64>,
    /// `AvailableMemory`, KiB: what is left of it.
    pub available_kib: Option<i64>,
}

/// A deployment unit as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Du {
    /// Its instance path.
    pub path: String,
    /// `UUID`.
    pub uuid: String,
    /// `Name`: the app's name.
    pub name: String,
    /// `Version`.
    pub version: String,
    /// `URL` it came from.
    pub url: Option<String>,
    /// `Status` (`Installed`, `Failed`, ...).
    pub status: Option<String>,
    /// `ExecutionEnvRef`.
    pub exec_env: Option<String>,
}

/// An execution unit as last seen, with its fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eu {
    /// Its instance path.
    pub path: String,
    /// `EUID`.
    pub euid: String,
    /// `Name`.
    pub name: Option<String>,
    /// `Status` (`Active`, `Idle`, ...).
    pub status: Option<String>,
    /// `ExecutionFaultCode`.
    pub fault_code: Option<String>,
    /// `ExecutionFaultMessage`.
    pub fault_message: Option<String>,
}

/// Everything one full Get of an agent tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// DeviceInfo and the rest.
    pub facts: DeviceFacts,
    /// Its ExecEnvs.
    pub exec_envs: Vec<ExecEnv>,
    /// Its deployment units.
    pub dus: Vec<Du>,
    /// Its execution units.
    pub eus: Vec<Eu>,
}

/// An agent's row with what the reconciliation needs of its inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentView {
    /// Its endpoint ID.
    pub endpoint_id: String,
    /// Whether it was heard from and answered last.
    pub online: bool,
    /// First and last time heard from (ms).
    pub first_seen: i64,
    /// Last time heard from (ms).
    pub last_seen: i64,
    /// When its inventory was last read whole (ms); None: never.
    pub inventory_at: Option<i64>,
    /// What it says it is.
    pub facts: DeviceFacts,
    /// Its ExecEnvs.
    pub exec_envs: Vec<ExecEnv>,
    /// Its deployment units.
    pub dus: Vec<Du>,
    /// The operator's labels on it (`labels`).
    pub labels: BTreeMap<String, String>,
}

/// A deployment: an app at a version, wanted on every agent its selector matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Its number.
    pub id: i64,
    /// The app's name (the DU Name agents report).
    pub name: String,
    /// The package URL.
    pub url: String,
    /// The package digest, when given.
    pub digest: Option<String>,
    /// The app's version (the DU Version agents report).
    pub version: String,
    /// key=value pairs an agent must all match (`fleet::selector`).
    pub selector: BTreeMap<String, String>,
    /// The package's memory need, MiB, when given: placement checks it against ExecEnvs.
    pub memory_mib: Option<u32>,
    /// The operator's network override sent with its InstallDU and Update (`crate::network`:
    /// compact JSON, an object or `null`); None: none sent.
    pub network: Option<String>,
    /// When it was recorded (ms).
    pub created: i64,
    /// `active`, `superseded` (a newer deployment of the same name), `removed`.
    pub state: String,
}

/// What a new deployment says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewDeployment {
    /// The app's name.
    pub name: String,
    /// The package URL.
    pub url: String,
    /// The package digest.
    pub digest: Option<String>,
    /// The app's version.
    pub version: String,
    /// key=value pairs.
    pub selector: BTreeMap<String, String>,
    /// The package's memory need, MiB.
    pub memory_mib: Option<u32>,
    /// The network override, checked by `crate::network::check`.
    pub network: Option<String>,
}

/// One line of the operations journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its number.
    pub id: i64,
    /// The agent.
    pub endpoint_id: String,
    /// The deployment it serves.
    pub deployment_id: i64,
    /// `install`, `update` or `uninstall`.
    pub kind: String,
    /// `sent` (in flight), `done`, `failed`, `lost` (no result came).
    pub state: String,
    /// The agent's fault code (7227, ...), or the controller's placement refusal's.
    pub fault_code: Option<i64>,
    /// Its message.
    pub fault_message: Option<String>,
    /// When it was recorded (ms).
    pub created: i64,
    /// When it ended (ms).
    pub finished: Option<i64>,
    /// `rollback` for a rollout's rollback; None for the reconciliation's.
    pub purpose: Option<String>,
    /// The `serve` replica that sent it (None: recorded by a command, or a refusal).
    pub replica: Option<String>,
}

/// The journal's word on one agent and deployment, for the reconciliation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalState {
    /// An operation is in flight.
    pub in_flight: bool,
    /// Failures since the last success (lost operations are not the agent's and do not
    /// count).
    pub failures: u32,
    /// When the last operation ended (ms).
    pub last_finished: Option<i64>,
    /// The last operation that ended succeeded.
    pub last_ok: bool,
}

/// The store: one SQLite database in WAL mode, or one connection to a PostgreSQL server.
pub struct Store {
    db: Db,
    /// The replica this store journals operations for: only for agents whose shard's lease
    /// it holds (`shards`).
    fence: Option<String>,
}

/// In `tx`: the active deployment of `d.name` superseded, `d` recorded as the active one at
/// `now`; its number.
fn insert_deployment(tx: &Db, d: &NewDeployment, now: i64) -> Result<i64, String> {
    let selector = serde_json::to_string(&d.selector).map_err(|e| e.to_string())?;
    tx.execute(
        "UPDATE deployments SET state = 'superseded' WHERE name = ?1 AND state = 'active'",
        &p![d.name],
    )?;
    tx.query_one(
        "INSERT INTO deployments (name, url, digest, version, selector, created, state,
                                  memory_mib, network)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8) RETURNING id",
        &p![
            d.name,
            d.url,
            d.digest,
            d.version,
            selector,
            now,
            opt_i64(d.memory_mib),
            d.network
        ],
    )?
    .get(0)
}

fn opt_i64(v: Option<u32>) -> Option<i64> {
    v.map(i64::from)
}

const OPERATION_COLUMNS: &str = "id, endpoint_id, deployment_id, kind, state, fault_code,
     fault_message, created, finished, purpose, replica";

/// A row of [`OPERATION_COLUMNS`].
fn operation_row(r: &Row) -> Result<Operation, String> {
    Ok(Operation {
        id: r.get(0)?,
        endpoint_id: r.get(1)?,
        deployment_id: r.get(2)?,
        kind: r.get(3)?,
        state: r.get(4)?,
        fault_code: r.get(5)?,
        fault_message: r.get(6)?,
        created: r.get(7)?,
        finished: r.get(8)?,
        purpose: r.get(9)?,
        replica: r.get(10)?,
    })
}

impl Store {
    /// Opens the database `loc` names (a SQLite file is created if absent) and brings its
    /// schema up to date.
    pub fn open(loc: &Location) -> Result<Store, String> {
        // SQLite answers "locked" at once, without waiting out its busy timeout, where waiting
        // could deadlock (seen with four controllers opening one new file at once, under load):
        // opening and migrating are idempotent, so begin again, within the same bound.
        let deadline = std::time::Instant::now() + db::SQLITE_BUSY;
        loop {
            match Db::open(loc).and_then(Store::setup) {
                Err(e)
                    if matches!(loc, Location::Sqlite(_))
                        && e.contains("database is locked")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => return r,
            }
        }
    }

    /// A database in memory (tests).
    pub fn open_in_memory() -> Result<Store, String> {
        Store::setup(Db::sqlite_in_memory()?)
    }

    fn setup(db: Db) -> Result<Store, String> {
        schema::migrate(&db)?;
        Ok(Store { db, fence: None })
    }

    /// The schema version the database is at.
    pub fn version(&self) -> Result<u32, String> {
        schema::version(&self.db)
    }

    /// Notes that `agent` was heard from at `now`: it is online.
    pub fn seen(&self, agent: &str, now: i64) -> Result<(), String> {
        self.db
            .execute(
                "INSERT INTO agents (endpoint_id, first_seen, last_seen, online)
                 VALUES (?1, ?2, ?2, 1)
                 ON CONFLICT (endpoint_id) DO UPDATE SET last_seen = ?2, online = 1",
                &p![agent, now],
            )
            .map(|_| ())
    }

    /// Notes that `agent` did not answer: offline until heard from again.
    pub fn set_offline(&self, agent: &str) -> Result<(), String> {
        self.db
            .execute(
                "UPDATE agents SET online = 0 WHERE endpoint_id = ?1",
                &p![agent],
            )
            .map(|_| ())
    }

    /// Replaces what is known of `agent` with `inv`, read at `now`; operations in flight
    /// whose deployment the agent now has (name and version) are marked done (one sent by an
    /// earlier run of the controller ends here). Returns how many were.
    pub fn save_inventory(
        &mut self,
        agent: &str,
        inv: &Inventory,
        now: i64,
    ) -> Result<usize, String> {
        let tx = self.db.begin()?;
        let f = &inv.facts;
        tx.execute(
            "INSERT INTO agents (endpoint_id, first_seen, last_seen, online, manufacturer, model,
                                 software_version, serial, board, arch, inventory_at)
             VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?2)
             ON CONFLICT (endpoint_id) DO UPDATE SET last_seen = ?2, online = 1,
                 manufacturer = ?3, model = ?4, software_version = ?5, serial = ?6, board = ?7,
                 arch = ?8, inventory_at = ?2",
            &p![
                agent,
                now,
                f.manufacturer,
                f.model,
                f.software_version,
                f.serial,
                f.board,
                f.arch
            ],
        )?;
        for table in ["exec_envs", "dus", "eus"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE endpoint_id = ?1"),
                &p![agent],
            )?;
        }
        // An instance path twice in one answer: the last one stands.
        for e in &inv.exec_envs {
            tx.execute(
                "INSERT INTO exec_envs (endpoint_id, path, name, type, status, arch, budget_kib,
                                        available_kib)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (endpoint_id, path) DO UPDATE SET name = ?3, type = ?4,
                     status = ?5, arch = ?6, budget_kib = ?7, available_kib = ?8",
                &p![
                    agent,
                    e.path,
                    e.name,
                    e.env_type,
                    e.status,
                    e.arch,
                    e.budget_kib,
                    e.available_kib
                ],
            )?;
        }
        for d in &inv.dus {
            tx.execute(
                "INSERT INTO dus (endpoint_id, path, uuid, name, version, url, status, exec_env)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (endpoint_id, path) DO UPDATE SET uuid = ?3, name = ?4,
                     version = ?5, url = ?6, status = ?7, exec_env = ?8",
                &p![agent, d.path, d.uuid, d.name, d.version, d.url, d.status, d.exec_env],
            )?;
        }
        for u in &inv.eus {
            tx.execute(
                "INSERT INTO eus (endpoint_id, path, euid, name, status, fault_code,
                                  fault_message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (endpoint_id, path) DO UPDATE SET euid = ?3, name = ?4,
                     status = ?5, fault_code = ?6, fault_message = ?7",
                &p![
                    agent,
                    u.path,
                    u.euid,
                    u.name,
                    u.status,
                    u.fault_code,
                    u.fault_message
                ],
            )?;
        }
        let settled = tx.execute(
            "UPDATE operations SET state = 'done', finished = ?2
             WHERE endpoint_id = ?1 AND state = 'sent' AND kind IN ('install', 'update')
               AND purpose IS NULL AND EXISTS (SELECT 1 FROM deployments d JOIN dus u
                           ON u.name = d.name AND u.version = d.version
                           WHERE d.id = operations.deployment_id AND u.endpoint_id = ?1)",
            &p![agent, now],
        )?;
        // A rollback's operation ends when the agent no longer has the version it rolls back.
        let settled = settled
            + tx.execute(
                "UPDATE operations SET state = 'done', finished = ?2
                 WHERE endpoint_id = ?1 AND state = 'sent' AND purpose = 'rollback'
                   AND NOT EXISTS (SELECT 1 FROM deployments d JOIN dus u
                                   ON u.name = d.name AND u.version = d.version
                                   WHERE d.id = operations.deployment_id
                                     AND u.endpoint_id = ?1)",
                &p![agent, now],
            )?;
        tx.commit()?;
        Ok(settled as usize)
    }

    fn agent_row(r: &Row) -> Result<AgentView, String> {
        Ok(AgentView {
            endpoint_id: r.get(0)?,
            online: r.get(1)?,
            first_seen: r.get(2)?,
            last_seen: r.get(3)?,
            inventory_at: r.get(4)?,
            facts: DeviceFacts {
                manufacturer: r.get(5)?,
                model: r.get(6)?,
                software_version: r.get(7)?,
                serial: r.get(8)?,
                board: r.get(9)?,
                arch: r.get(10)?,
            },
            exec_envs: Vec::new(),
            dus: Vec::new(),
            labels: BTreeMap::new(),
        })
    }

    /// Up to `limit` agents after `after` in endpoint ID order (online ones only when
    /// `online_only`), with their ExecEnvs and DUs: a page, so that a large fleet is never
    /// held in memory whole.
    pub fn agents_page(
        &self,
        after: &str,
        limit: usize,
        online_only: bool,
    ) -> Result<Vec<AgentView>, String> {
        let mut page: Vec<AgentView> = self
            .db
            .query(
                "SELECT endpoint_id, online, first_seen, last_seen, inventory_at, manufacturer,
                        model, software_version, serial, board, arch
                 FROM agents WHERE endpoint_id > ?1 AND (online = 1 OR ?2 = 0)
                 ORDER BY endpoint_id LIMIT ?3",
                &p![after, online_only, limit as i64],
            )?
            .iter()
            .map(Store::agent_row)
            .collect::<Result<_, _>>()?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(page);
        };
        let (first, last) = (first.endpoint_id.clone(), last.endpoint_id.clone());
        let index: HashMap<String, usize> = page
            .iter()
            .enumerate()
            .map(|(i, a)| (a.endpoint_id.clone(), i))
            .collect();
        let envs = self.rows_by_agent(
            "SELECT endpoint_id, path, name, type, status, arch, budget_kib, available_kib
             FROM exec_envs WHERE endpoint_id BETWEEN ?1 AND ?2 ORDER BY endpoint_id, path",
            (&first, &last),
            |r| {
                Ok(ExecEnv {
                    path: r.get(1)?,
                    name: r.get(2)?,
                    env_type: r.get(3)?,
                    status: r.get(4)?,
                    arch: r.get(5)?,
                    budget_kib: r.get(6)?,
                    available_kib: r.get(7)?,
                })
            },
        )?;
        for (a, e) in envs {
            if let Some(&i) = index.get(&a) {
                page[i].exec_envs.push(e);
            }
        }
        let dus = self.rows_by_agent(
            "SELECT endpoint_id, path, uuid, name, version, url, status, exec_env
             FROM dus WHERE endpoint_id BETWEEN ?1 AND ?2 ORDER BY endpoint_id, path",
            (&first, &last),
            |r| {
                Ok(Du {
                    path: r.get(1)?,
                    uuid: r.get(2)?,
                    name: r.get(3)?,
                    version: r.get(4)?,
                    url: r.get(5)?,
                    status: r.get(6)?,
                    exec_env: r.get(7)?,
                })
            },
        )?;
        for (a, d) in dus {
            if let Some(&i) = index.get(&a) {
                page[i].dus.push(d);
            }
        }
        for (a, (name, value)) in self.labels_between(&first, &last)? {
            if let Some(&i) = index.get(&a) {
                page[i].labels.insert(name, value);
            }
        }
        Ok(page)
    }

    /// The rows of `sql` (its first column the agent's endpoint ID, `?1` and `?2` the first and
    /// last agent of a page), each as (endpoint ID, `row`'s value), in the query's order: one
    /// shape for an agent page's ExecEnvs, DUs and EUs.
    pub(crate) fn rows_by_agent<T>(
        &self,
        sql: &str,
        (first, last): (&str, &str),
        row: impl Fn(&Row) -> Result<T, String>,
    ) -> Result<Vec<(String, T)>, String> {
        self.db
            .query(sql, &p![first, last])?
            .iter()
            .map(|r| Ok((r.get::<String>(0)?, row(r)?)))
            .collect()
    }

    /// Up to `limit` online agents whose inventory is oldest (never read first) and older than
    /// `before` (ms): the periodic sweep's next batch.
    pub fn stale_agents(&self, before: i64, limit: usize) -> Result<Vec<String>, String> {
        self.db
            .query(
                "SELECT endpoint_id FROM agents
                 WHERE online = 1 AND (inventory_at IS NULL OR inventory_at < ?1)
                 ORDER BY inventory_at IS NOT NULL, inventory_at, endpoint_id LIMIT ?2",
                &p![before, limit as i64],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Records a deployment at `now`; an active one of the same name is superseded by it.
    pub fn add_deployment(&mut self, d: &NewDeployment, now: i64) -> Result<i64, String> {
        let tx = self.db.begin()?;
        let id = insert_deployment(&tx, d, now)?;
        tx.commit()?;
        Ok(id)
    }

    /// The deployments, newest first (only the active ones when `active_only`).
    pub fn deployments(&self, active_only: bool) -> Result<Vec<Deployment>, String> {
        self.db
            .query(
                "SELECT id, name, url, digest, version, selector, memory_mib, created, state,
                        network
                 FROM deployments WHERE state = 'active' OR ?1 = 0 ORDER BY id DESC",
                &p![active_only],
            )?
            .iter()
            .map(|r| {
                let sel: String = r.get(5)?;
                Ok(Deployment {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    url: r.get(2)?,
                    digest: r.get(3)?,
                    version: r.get(4)?,
                    selector: serde_json::from_str(&sel).unwrap_or_default(),
                    memory_mib: r.get::<Option<i64>>(6)?.map(|m| m as u32),
                    created: r.get(7)?,
                    state: r.get(8)?,
                    network: r.get(9)?,
                })
            })
            .collect()
    }

    /// The journal's word on every (agent, deployment) of the agents from `first` to `last`
    /// (endpoint ID order): a page of the reconciliation.
    pub fn journal(
        &self,
        first: &str,
        last: &str,
    ) -> Result<HashMap<(String, i64), JournalState>, String> {
        let rows = self.db.query(
            "SELECT endpoint_id, deployment_id, state, finished FROM operations
             WHERE endpoint_id BETWEEN ?1 AND ?2 ORDER BY id",
            &p![first, last],
        )?;
        let mut out: HashMap<(String, i64), JournalState> = HashMap::new();
        for row in rows {
            let (agent, dep, state, finished): (String, i64, String, Option<i64>) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            let j = out.entry((agent, dep)).or_default();
            match state.as_str() {
                "sent" => j.in_flight = true,
                "done" => j.failures = 0,
                // No result because the controller that sent it stopped (or the agent was
                // busy): not the agent's failure, nothing to back off from.
                "lost" => {}
                _ => j.failures += 1,
            }
            if finished.is_some() {
                j.last_finished = finished;
                j.last_ok = state == "done";
            }
        }
        Ok(out)
    }

    /// Journals an operation as sent; None when one is already in flight for this agent and
    /// deployment (the journal's uniqueness rule: the caller must not send it).
    pub fn begin_op(
        &self,
        agent: &str,
        deployment: i64,
        kind: &str,
        now: i64,
    ) -> Result<Option<i64>, String> {
        self.insert_op(agent, deployment, kind, now, None)
    }

    /// [`Store::begin_op`] with the operation's `purpose` (NULL or `rollback`).
    fn insert_op(
        &self,
        agent: &str,
        deployment: i64,
        kind: &str,
        now: i64,
        purpose: Option<&str>,
    ) -> Result<Option<i64>, String> {
        // The unique index on operations in flight turns a second one into no row; so does
        // a replica's not holding the current lease of the agent's shard (`shards`): one that
        // lost it, or never had it, sends nothing for the agent.
        let shard = shard_key::lease_name(shard_key::shard_of(agent));
        self.db
            .query_opt(
                "INSERT INTO operations (endpoint_id, deployment_id, kind, state, created,
                                         purpose, replica)
                 SELECT CAST(?1 AS TEXT), CAST(?2 AS BIGINT), CAST(?3 AS TEXT), 'sent',
                        CAST(?4 AS BIGINT), CAST(?5 AS TEXT), CAST(?6 AS TEXT)
                 WHERE CAST(?6 AS TEXT) IS NULL
                    OR EXISTS (SELECT 1 FROM leases WHERE name = ?7 AND holder = ?6
                                                      AND expires >= ?4)
                 ON CONFLICT DO NOTHING RETURNING id",
                &p![agent, deployment, kind, now, purpose, self.fence, shard],
            )?
            .map(|r| r.get(0))
            .transpose()
    }

    /// Ends operation `id` (if still in flight): done, or failed with the agent's fault.
    /// False when it had ended already (settled by the agent's inventory meanwhile).
    pub fn finish_op(&self, id: i64, fault: Option<(i64, &str)>, now: i64) -> Result<bool, String> {
        let (state, code, msg) = match fault {
            None => ("done", None, None),
            Some((c, m)) => ("failed", Some(c), Some(m)),
        };
        self.db
            .execute(
                "UPDATE operations SET state = ?2, fault_code = ?3, fault_message = ?4,
                                       finished = ?5
                 WHERE id = ?1 AND state = 'sent'",
                &p![id, state, code, msg, now],
            )
            .map(|n| n > 0)
    }

    /// Journals an operation the controller did not send because placement refused it.
    pub fn record_refusal(
        &self,
        agent: &str,
        deployment: i64,
        kind: &str,
        code: i64,
        message: &str,
        now: i64,
    ) -> Result<(), String> {
        self.db
            .execute(
                "INSERT INTO operations (endpoint_id, deployment_id, kind, state, fault_code,
                                         fault_message, created, finished)
                 VALUES (?1, ?2, ?3, 'failed', ?4, ?5, ?6, ?6)",
                &p![agent, deployment, kind, code, message, now],
            )
            .map(|_| ())
    }

    /// Operations in flight, with their agent, deployment and start.
    pub fn in_flight(&self) -> Result<Vec<(i64, String, i64, i64)>, String> {
        self.db
            .query(
                "SELECT id, endpoint_id, deployment_id, created FROM operations
                 WHERE state = 'sent' ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .collect()
    }

    /// Marks `lost` an operation in flight that no result ended (its controller stopped).
    pub fn lose_op(&self, id: i64, message: &str, now: i64) -> Result<(), String> {
        self.db
            .execute(
                "UPDATE operations SET state = 'lost', fault_code = 0, fault_message = ?2,
                                       finished = ?3
                 WHERE id = ?1 AND state = 'sent'",
                &p![id, message, now],
            )
            .map(|_| ())
    }

    /// The journal, newest first, at most `limit` lines.
    pub fn operations(&self, limit: usize) -> Result<Vec<Operation>, String> {
        self.db
            .query(
                &format!("SELECT {OPERATION_COLUMNS} FROM operations ORDER BY id DESC LIMIT ?1"),
                &p![limit as i64],
            )?
            .iter()
            .map(operation_row)
            .collect()
    }

    /// Per deployment: agents that have it (name and version) and, by the state of each
    /// agent's last operation for it, how many agents are in that state.
    pub fn deployment_counts(&self) -> Result<HashMap<i64, BTreeMap<String, i64>>, String> {
        let mut out: HashMap<i64, BTreeMap<String, i64>> = HashMap::new();
        let rows = self.db.query(
            "SELECT d.id, count(DISTINCT u.endpoint_id) FROM deployments d
             JOIN dus u ON u.name = d.name AND u.version = d.version GROUP BY d.id",
            &[],
        )?;
        for row in rows {
            let (d, n): (i64, i64) = (row.get(0)?, row.get(1)?);
            out.entry(d).or_default().insert("installed".into(), n);
        }
        let rows = self.db.query(
            "SELECT o.deployment_id, o.state, count(*) FROM operations o
             WHERE o.id = (SELECT max(id) FROM operations
                           WHERE endpoint_id = o.endpoint_id
                             AND deployment_id = o.deployment_id)
             GROUP BY o.deployment_id, o.state",
            &[],
        )?;
        for row in rows {
            let (d, state, n): (i64, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
            out.entry(d).or_default().insert(state, n);
        }
        Ok(out)
    }

    /// The last journal line of `agent` for `deployment`, if any.
    pub fn last_op(&self, agent: &str, deployment: i64) -> Result<Option<Operation>, String> {
        self.db
            .query_opt(
                &format!(
                    "SELECT {OPERATION_COLUMNS} FROM operations
                     WHERE endpoint_id = ?1 AND deployment_id = ?2 ORDER BY id DESC LIMIT 1"
                ),
                &p![agent, deployment],
            )?
            .as_ref()
            .map(operation_row)
            .transpose()
    }
}

#[cfg(test)]
mod tests;
