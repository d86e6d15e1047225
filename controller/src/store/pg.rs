//! PostgreSQL under the store's seam (`db`): tokio-postgres driven by a private current-thread
//! runtime, so that every call, the connection included, has a deadline (the synchronous
//! wrapper `postgres` has none on a query); the store's `?N` placeholders written as `$N`;
//! statements prepared once per connection; parameters and columns converted to and from
//! the store's plain values whatever integer width the server infers.

use std::collections::HashMap;
use std::error::Error;
use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::runtime::Runtime;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, Config, Statement};

use super::pg_tls::connector::PgTls;
use super::pg_tls::Params;
use super::values::{Param, Row, Value};

/// The deadline on connecting (TCP or unix socket, and the server's startup answer).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// The deadline on one call (a query, a migration's batch).
pub const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// How long a cancel request for a call past its deadline may take.
const CANCEL_DEADLINE: Duration = Duration::from_secs(5);

/// A connection to a PostgreSQL server.
pub struct Pg {
    rt: Runtime,
    client: Client,
    statements: HashMap<String, Statement>,
    /// The connection's TLS, again for a cancel request.
    tls: PgTls,
    /// The URL without its password, for errors.
    shown: String,
}

/// A driver error with the server's own words when it has some.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(": ");
            s.push_str(d);
        }
        return s;
    }
    match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// `sql` with `?N` placeholders as PostgreSQL's `$N` (string literals left alone).
pub fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl Pg {
    /// Connects to `url` (shown in errors as `shown`, without its password), over TLS as its
    /// parameters and hosts settle it (`pg_tls`).
    pub fn connect(url: &str, shown: &str) -> Result<Pg, String> {
        let (url, params) = Params::take(url).map_err(|e| format!("{shown}: {e}"))?;
        let mut cfg: Config = url
            .parse()
            .map_err(|e| format!("{shown}: {}", describe(&e)))?;
        let tls = params
            .settle(&mut cfg)
            .and_then(|settled| PgTls::new(&settled))
            .map_err(|e| format!("{shown}: {e}"))?;
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_DEADLINE);
        }
        // A server that vanished from the network is noticed, not waited for.
        cfg.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(CALL_DEADLINE);
        if cfg.get_application_name().is_none() {
            cfg.application_name("cpevisor-controller");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{shown}: runtime: {e}"))?;
        let (client, conn) = rt
            .block_on(async {
                tokio::time::timeout(CONNECT_DEADLINE, cfg.connect(tls.clone())).await
            })
            .map_err(|_| format!("{shown}: no answer within {} s", CONNECT_DEADLINE.as_secs()))?
            .map_err(|e| format!("{shown}: {}", describe(&e)))?;
        // The connection's task runs while a call waits on the runtime (every call does).
        rt.spawn(async move {
            let _ = conn.await;
        });
        Ok(Pg {
            rt,
            client,
            statements: HashMap::new(),
            tls,
            shown: shown.to_string(),
        })
    }

    /// Waits for `call` until [`CALL_DEADLINE`]; past it, asks the server to cancel it.
    fn wait<T>(
        &self,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, String> {
        // The timer is made inside the runtime (it needs its clock).
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_DEADLINE, call).await })
        {
            Ok(r) => r.map_err(|e| format!("database: {}", describe(&e))),
            Err(_) => {
                let token = self.client.cancel_token();
                let _ = self.rt.block_on(async {
                    tokio::time::timeout(CANCEL_DEADLINE, token.cancel_query(self.tls.clone()))
                        .await
                });
                Err(format!(
                    "database {}: no answer within {} s",
                    self.shown,
                    CALL_DEADLINE.as_secs()
                ))
            }
        }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, String> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.wait(self.client.prepare(&placeholders(sql)))?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Runs `sql`; how many rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, String> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.wait(self.client.execute(&st, &refs))
    }

    /// The rows `sql` answers.
    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, String> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.wait(self.client.query(&st, &refs))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<_, Value>(i)
                            .map_err(|e| format!("database: column {i}: {e}"))
                    })
                    .collect::<Result<_, _>>()
                    .map(Row)
            })
            .collect()
    }

    /// Runs statements without parameters.
    pub fn batch(&mut self, sql: &str) -> Result<(), String> {
        self.wait(self.client.batch_execute(sql))
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *self {
            Param::Null => Ok(IsNull::Yes),
            // The width the server inferred for the placeholder (`?2 = 0` is an int4).
            Param::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                _ => Err(format!("an integer where the server wants {ty}").into()),
            },
            Param::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked by `to_sql`, which knows the value.
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL)
            || <String as FromSql>::accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_literals() {
        assert_eq!(
            placeholders("SELECT '?1', a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT '?1', a FROM t WHERE b = $1 AND c = $12"
        );
    }
}
