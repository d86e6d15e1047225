//! Leases: a name held by one holder until a time, taken over by another once it has expired.
//! `serve` replicas on one database share the fleet by them (`shards`): each holds the
//! leases of some shards and alone reconciles their agents; operations are fenced by the
//! shard's lease (`Store::fence`). [`SERVE`] names the coordinator, the one replica that
//! steps rollouts; one that dies stops renewing and another takes over when it expires.

use super::db::p;
use super::Store;

/// The lease of the coordinating `serve`.
pub use super::SERVE_LEASE as SERVE;

/// Who holds a lease, until when (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder.
    pub holder: String,
    /// When it expires unless renewed (ms).
    pub expires: i64,
}

impl Store {
    /// Takes lease `name` for `holder` until `now + ttl_ms`, or renews it, unless another
    /// holder's is current; returns the holder after (`holder` itself when it got it).
    pub fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<Lease, String> {
        let until = now + ttl_ms;
        self.db.execute(
            "INSERT INTO leases (name, holder, expires) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = ?2, expires = ?3
             WHERE leases.holder = ?2 OR leases.expires < ?4",
            &p![name, holder, until, now],
        )?;
        let r = self.db.query_one(
            "SELECT holder, expires FROM leases WHERE name = ?1",
            &p![name],
        )?;
        Ok(Lease {
            holder: r.get(0)?,
            expires: r.get(1)?,
        })
    }

    /// Lease `name`, current or expired, if any.
    pub fn lease(&self, name: &str) -> Result<Option<Lease>, String> {
        self.db
            .query_opt(
                "SELECT holder, expires FROM leases WHERE name = ?1",
                &p![name],
            )?
            .map(|r| {
                Ok(Lease {
                    holder: r.get(0)?,
                    expires: r.get(1)?,
                })
            })
            .transpose()
    }

    /// Gives lease `name` up if `holder` holds it (a replica that stops cleanly: another
    /// takes over at once).
    pub fn release_lease(&self, name: &str, holder: &str) -> Result<(), String> {
        self.db
            .execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                &p![name, holder],
            )
            .map(|_| ())
    }

    /// Journals operations as replica `replica` from now on: only for agents of the shards
    /// whose current lease it holds.
    pub fn fence(&mut self, replica: &str) {
        self.fence = Some(replica.to_string());
    }
}
