//! The schema as one list of migrations for both databases, applied in order: the database's
//! schema version (SQLite's `PRAGMA user_version`, PostgreSQL's `schema_version` table) says
//! how many have been applied, each runs in its own transaction with the version bump, so a
//! database is always at one version of the list and a newer controller brings an older
//! database up to date at open. The list is written in SQLite's words; `pg_dialect` says the
//! few that PostgreSQL spells otherwise.

use super::db::{p, Db};

/// The migrations, version N+1 being `MIGRATIONS[N]`. Append only: a released migration never
/// changes (databases in the field are already past it). Only words `pg_dialect` knows, or
/// that both databases read alike.
pub const MIGRATIONS: &[&str] = &[
    // 1: inventory, desired state and the operations journal.
    "CREATE TABLE agents (
        endpoint_id TEXT PRIMARY KEY,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        online INTEGER NOT NULL DEFAULT 0,
        manufacturer TEXT, model TEXT, software_version TEXT, serial TEXT,
        board TEXT, arch TEXT,
        inventory_at INTEGER
    );
    CREATE TABLE exec_envs (
        endpoint_id TEXT NOT NULL REFERENCES agents(endpoint_id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT, status TEXT, arch TEXT,
        budget_kib INTEGER, available_kib INTEGER,
        PRIMARY KEY (endpoint_id, path)
    );
    CREATE TABLE dus (
        endpoint_id TEXT NOT NULL REFERENCES agents(endpoint_id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        uuid TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
        url TEXT, status TEXT, exec_env TEXT,
        PRIMARY KEY (endpoint_id, path)
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        digest TEXT,
        version TEXT NOT NULL,
        selector TEXT NOT NULL,
        created INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'superseded', 'removed'))
    );
    CREATE UNIQUE INDEX deployments_one_active ON deployments(name) WHERE state = 'active';
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint_id TEXT NOT NULL,
        deployment_id INTEGER NOT NULL REFERENCES deployments(id),
        kind TEXT NOT NULL CHECK (kind IN ('install', 'update', 'uninstall')),
        state TEXT NOT NULL CHECK (state IN ('sent', 'done', 'failed', 'lost')),
        fault_code INTEGER, fault_message TEXT,
        created INTEGER NOT NULL, finished INTEGER
    );
    -- The journal's rule: one operation in flight per agent and deployment, whatever runs it.
    CREATE UNIQUE INDEX operations_one_in_flight ON operations(endpoint_id, deployment_id)
        WHERE state = 'sent';
    CREATE INDEX operations_by_agent ON operations(endpoint_id, deployment_id, id);",
    // 2: execution units with their faults, the package's memory need for placement, and the
    // index the reconciliation pages online agents by.
    "CREATE TABLE eus (
        endpoint_id TEXT NOT NULL REFERENCES agents(endpoint_id) ON DELETE CASCADE,
        path TEXT NOT NULL,
        euid TEXT NOT NULL, name TEXT, status TEXT,
        fault_code TEXT, fault_message TEXT,
        PRIMARY KEY (endpoint_id, path)
    );
    ALTER TABLE deployments ADD COLUMN memory_mib INTEGER;
    CREATE INDEX agents_online ON agents(online, endpoint_id);",
    // 3: rollouts (a deployment sent in a canary and waves) and their targets; an operation's
    // purpose, so that a rollback's update or uninstall is told from the reconciliation's.
    "ALTER TABLE operations ADD COLUMN purpose TEXT CHECK (purpose IN ('rollback'));
    CREATE TABLE rollouts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        deployment_id INTEGER NOT NULL UNIQUE REFERENCES deployments(id),
        previous_id INTEGER REFERENCES deployments(id),
        canary INTEGER NOT NULL CHECK (canary >= 1),
        wave_size INTEGER NOT NULL CHECK (wave_size >= 1),
        max_in_flight INTEGER NOT NULL CHECK (max_in_flight >= 1),
        max_failure_pct INTEGER NOT NULL CHECK (max_failure_pct BETWEEN 0 AND 100),
        state TEXT NOT NULL CHECK (state IN ('running', 'paused', 'done', 'aborted',
                                             'rolling_back', 'rolled_back')),
        wave INTEGER NOT NULL DEFAULT -1,
        accepted_wave INTEGER NOT NULL DEFAULT -1,
        reason TEXT,
        created INTEGER NOT NULL,
        updated INTEGER NOT NULL
    );
    CREATE INDEX rollouts_live ON rollouts(state);
    CREATE TABLE rollout_targets (
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        endpoint_id TEXT NOT NULL,
        wave INTEGER,
        state TEXT NOT NULL CHECK (state IN ('pending', 'queued', 'active', 'done', 'failed',
                                             'rollback', 'rolled_back', 'rollback_failed')),
        prev_version TEXT, prev_url TEXT,
        fault_code INTEGER, fault_message TEXT,
        updated INTEGER NOT NULL,
        PRIMARY KEY (rollout_id, endpoint_id)
    );",
    // 4: leases: the one `serve` among replicas on one database that sends operations.
    "CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires INTEGER NOT NULL
    );",
    // 5: a deployment's network override (`X_CPEVISOR_NetworkConfig`, compact JSON: an object
    // or `null`), sent with each of its InstallDU and Update; NULL: none.
    "ALTER TABLE deployments ADD COLUMN network TEXT;",
    // 6: a rollout pass reads its targets by state (the queued and active ones, the pending
    // ones in endpoint ID order) and counts its current wave's, never the whole rollout.
    "CREATE INDEX rollout_targets_by_state ON rollout_targets(rollout_id, state, endpoint_id);
    CREATE INDEX rollout_targets_by_wave ON rollout_targets(rollout_id, wave, state);",
    // 7: the `serve` replica that journaled (and so sent) an operation; NULL: a command's.
    "ALTER TABLE operations ADD COLUMN replica TEXT;",
    // 8: operator-assigned labels on agents (`store::labels`), read by selectors.
    "CREATE TABLE agent_labels (
        endpoint_id TEXT NOT NULL REFERENCES agents(endpoint_id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (endpoint_id, name)
    );",
];

/// The schema version this build writes.
pub fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// The few words of `MIGRATIONS` that PostgreSQL spells otherwise, each with why.
const PG_WORDS: &[(&str, &str)] = &[
    // SQLite's auto-numbered key: PostgreSQL's identity column.
    (
        "INTEGER PRIMARY KEY AUTOINCREMENT",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    // SQLite's INTEGER is 64 bits; PostgreSQL's is 32 (times are milliseconds).
    ("INTEGER", "BIGINT"),
    // Endpoint IDs order bytewise, as in SQLite, whatever the database's locale: the agent
    // pages go by endpoint ID order.
    ("endpoint_id TEXT", "endpoint_id TEXT COLLATE \"C\""),
];

/// A migration in PostgreSQL's words.
pub fn pg_dialect(sql: &str) -> String {
    PG_WORDS
        .iter()
        .fold(sql.to_string(), |s, (from, to)| s.replace(from, to))
}

/// The schema version `db` is at (0: empty).
pub fn version(db: &Db) -> Result<u32, String> {
    let v: i64 = match db {
        Db::Sqlite(c) => c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| format!("schema version: {e}"))?,
        Db::Pg(_) => db
            .query_one(
                "SELECT CAST(coalesce(max(version), 0) AS BIGINT) FROM schema_version",
                &[],
            )?
            .get(0)?,
    };
    u32::try_from(v).map_err(|_| format!("schema version {v}: not a version"))
}

/// Records that `db` is at version `v` (in the migration's transaction).
pub(crate) fn set_version(db: &Db, v: u32) -> Result<(), String> {
    match db {
        Db::Sqlite(c) => c
            .pragma_update(None, "user_version", v)
            .map_err(|e| format!("schema version: {e}")),
        Db::Pg(_) => {
            db.execute("DELETE FROM schema_version", &[])?;
            db.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                &p![i64::from(v)],
            )
            .map(|_| ())
        }
    }
}

/// Applies the migrations `db` has not had yet, each in a transaction; returns the version
/// it was at. A database newer than this build is refused (its schema is not ours to guess).
pub fn migrate(db: &Db) -> Result<u32, String> {
    migrate_to(db, latest())
}

/// [`migrate`] up to version `to` only (tests build older databases with it).
pub fn migrate_to(db: &Db, to: u32) -> Result<u32, String> {
    if !db.is_postgres() {
        return migrate_locked(db, to);
    }
    // Replicas opening one database at once: one creates the version table and migrates, the
    // others wait for it and find it done (a session lock, released whatever happened).
    db.batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
    let r = db
        .batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .and_then(|_| migrate_locked(db, to));
    let unlocked = db.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
    let at = r?;
    unlocked.map(|_| at)
}

/// PostgreSQL's advisory lock key of the migrations (any number, the same in every build).
const MIGRATION_LOCK: i64 = 0x6370_6576_6973_6f72; // "cpevisor"

fn migrate_locked(db: &Db, to: u32) -> Result<u32, String> {
    let at = version(db).map_err(|e| format!("schema version: {e}"))?;
    if at > latest() {
        return Err(format!(
            "database schema version {at} is newer than this controller's ({})",
            latest()
        ));
    }
    for v in at + 1..=to.min(latest()) {
        let tx = db
            .begin_write()
            .map_err(|e| format!("begin migration {v}: {e}"))?;
        // Another controller opening the same SQLite file may have done it meanwhile.
        if version(&tx)? >= v {
            continue;
        }
        let sql = MIGRATIONS[v as usize - 1];
        let sql = if tx.is_postgres() {
            pg_dialect(sql)
        } else {
            sql.to_string()
        };
        tx.batch(&sql)
            .and_then(|_| set_version(&tx, v))
            .and_then(|_| tx.commit())
            .map_err(|e| format!("migration {v}: {e}"))?;
    }
    Ok(at)
}
