//! The seam between the store's queries and its two databases: SQLite (embedded) and
//! PostgreSQL (`pg`). The queries are written once, in the SQL both speak, with `?N`
//! placeholders; parameters and rows are the few plain types the store uses (integers, text,
//! NULL), converted here; a transaction is a guard that rolls back unless committed. What the
//! two dialects differ in is said here and in `schema::pg_dialect`, nowhere else.

use std::cell::RefCell;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::location::Location;
use super::pg::Pg;
pub(crate) use super::values::p;
pub use super::values::{Param, Row, ToParam, Value};

/// How long a SQLite writer waits for another process's write to end.
pub const SQLITE_BUSY: Duration = Duration::from_secs(10);

/// A connection to either database.
pub enum Db {
    /// An embedded SQLite database.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL server (in a cell: its client needs `&mut` for a call, the store's readers
    /// take `&self`; a store is used from one thread).
    Pg(RefCell<Pg>),
}

fn sqlite_err(e: rusqlite::Error) -> String {
    format!("database: {e}")
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn sqlite_value(v: ValueRef<'_>) -> Result<Value, String> {
    match v {
        ValueRef::Null => Ok(Value::Null),
        ValueRef::Integer(i) => Ok(Value::Int(i)),
        ValueRef::Text(t) => String::from_utf8(t.to_vec())
            .map(Value::Text)
            .map_err(|_| "database: text that is not UTF-8".to_string()),
        other => Err(format!(
            "database: a {:?} value, which the store never writes",
            other.data_type()
        )),
    }
}

impl Db {
    /// Opens the database `loc` names: a SQLite file (created if absent, WAL mode) or a
    /// PostgreSQL server (within `pg::CONNECT_DEADLINE`).
    pub fn open(loc: &Location) -> Result<Db, String> {
        match loc {
            Location::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Db::sqlite(conn)
            }
            Location::Postgres(url) => {
                Ok(Db::Pg(RefCell::new(Pg::connect(url, &loc.to_string())?)))
            }
        }
    }

    /// SQLite in memory (tests).
    pub fn sqlite_in_memory() -> Result<Db, String> {
        Db::sqlite(rusqlite::Connection::open_in_memory().map_err(sqlite_err)?)
    }

    fn sqlite(conn: rusqlite::Connection) -> Result<Db, String> {
        // First: switching a new file to WAL takes a lock that another opener may hold.
        conn.busy_timeout(SQLITE_BUSY).map_err(sqlite_err)?;
        // WAL: `serve` writes while `deployments`/`agents` read, neither blocks the other.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| format!("WAL: {}", sqlite_err(e)))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite_err)?;
        Ok(Db::Sqlite(conn))
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Runs `sql`; how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, String> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql).map_err(sqlite_err)?;
                st.execute(rusqlite::params_from_iter(params.iter()))
                    .map(|n| n as u64)
                    .map_err(sqlite_err)
            }
            Db::Pg(pg) => pg.borrow_mut().execute(sql, params),
        }
    }

    /// The rows `sql` answers.
    pub fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, String> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql).map_err(sqlite_err)?;
                let n = st.column_count();
                let mut rows = st
                    .query(rusqlite::params_from_iter(params.iter()))
                    .map_err(sqlite_err)?;
                let mut out = Vec::new();
                while let Some(r) = rows.next().map_err(sqlite_err)? {
                    let row = (0..n)
                        .map(|i| sqlite_value(r.get_ref(i).map_err(sqlite_err)?))
                        .collect::<Result<_, _>>()?;
                    out.push(Row(row));
                }
                Ok(out)
            }
            Db::Pg(pg) => pg.borrow_mut().query(sql, params),
        }
    }

    /// The first row `sql` answers, if any.
    pub fn query_opt(&self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, String> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The row `sql` answers (an error if none).
    pub fn query_one(&self, sql: &str, params: &[Param<'_>]) -> Result<Row, String> {
        self.query_opt(sql, params)?
            .ok_or_else(|| format!("database: no row for {sql}"))
    }

    /// Runs statements without parameters (a migration, a transaction's BEGIN).
    pub fn batch(&self, sql: &str) -> Result<(), String> {
        match self {
            Db::Sqlite(c) => c.execute_batch(sql).map_err(sqlite_err),
            Db::Pg(pg) => pg.borrow_mut().batch(sql),
        }
    }

    /// Begins a transaction: the guard's `commit` ends it; dropped, it rolls back.
    pub fn begin(&self) -> Result<Tx<'_>, String> {
        self.batch("BEGIN")?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }

    /// Begins a transaction that writes from its start: SQLite takes its write lock now, so
    /// what it reads first is not changed by another writer before it writes (PostgreSQL's
    /// row and advisory locks do that there).
    pub fn begin_write(&self) -> Result<Tx<'_>, String> {
        self.batch(match self {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Pg(_) => "BEGIN",
        })?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }
}

/// A transaction on a [`Db`]: the queries go through it (it derefs to the connection).
pub struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    /// Commits.
    pub fn commit(mut self) -> Result<(), String> {
        self.open = false;
        self.db.batch("COMMIT")
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // The error that ended the transaction early is the one the caller reports.
            let _ = self.db.batch("ROLLBACK");
        }
    }
}
