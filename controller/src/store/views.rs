//! Read-only queries for the operator's views (the `--json` commands and the HTTP API): one
//! agent, the execution units of a page of agents, an agent's journal, and the fleet's
//! totals. Nothing here writes.

use std::collections::HashMap;

use super::db::p;
use super::{operation_row, AgentView, Eu, Operation, Store, OPERATION_COLUMNS};

/// What the fleet adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetTotals {
    /// Agents known.
    pub agents: i64,
    /// Of them, online.
    pub online: i64,
    /// (app, version, agents that have it, of them with a DU status other than Installed).
    pub apps: Vec<(String, String, i64, i64)>,
}

impl Store {
    /// Agent `id` with its ExecEnvs and DUs, if known.
    pub fn agent(&self, id: &str) -> Result<Option<AgentView>, String> {
        // The page after the ID just below it starts at `id` when `id` is known: the same
        // query as every page (one place says what an agent's view is).
        let before: Option<String> = self
            .db
            .query_one(
                "SELECT max(endpoint_id) FROM agents WHERE endpoint_id < ?1",
                &p![id],
            )?
            .get(0)?;
        let page = self.agents_page(before.as_deref().unwrap_or(""), 1, false)?;
        Ok(page.into_iter().find(|a| a.endpoint_id == id))
    }

    /// The execution units of the agents from `first` to `last` (endpoint ID order), by agent.
    pub fn eus_between(&self, first: &str, last: &str) -> Result<HashMap<String, Vec<Eu>>, String> {
        let rows = self.rows_by_agent(
            "SELECT endpoint_id, path, euid, name, status, fault_code, fault_message
             FROM eus WHERE endpoint_id BETWEEN ?1 AND ?2 ORDER BY endpoint_id, path",
            (first, last),
            |r| {
                Ok(Eu {
                    path: r.get(1)?,
                    euid: r.get(2)?,
                    name: r.get(3)?,
                    status: r.get(4)?,
                    fault_code: r.get(5)?,
                    fault_message: r.get(6)?,
                })
            },
        )?;
        let mut out: HashMap<String, Vec<Eu>> = HashMap::new();
        for (a, u) in rows {
            out.entry(a).or_default().push(u);
        }
        Ok(out)
    }

    /// The journal of one agent, or only its failures (`failed_only`, every agent when
    /// `agent` is None), newest first, at most `limit` lines.
    pub fn operations_of(
        &self,
        agent: Option<&str>,
        failed_only: bool,
        limit: usize,
    ) -> Result<Vec<Operation>, String> {
        self.db
            .query(
                &format!(
                    "SELECT {OPERATION_COLUMNS} FROM operations
                     WHERE (CAST(?1 AS TEXT) IS NULL OR endpoint_id = ?1)
                       AND (?2 = 0 OR state IN ('failed', 'lost'))
                     ORDER BY id DESC LIMIT ?3"
                ),
                &p![agent, failed_only, limit as i64],
            )?
            .iter()
            .map(operation_row)
            .collect()
    }

    /// Agents known and online, and the apps at each version across the fleet.
    pub fn fleet_totals(&self) -> Result<FleetTotals, String> {
        // PostgreSQL's sum of integers is a numeric: cast back.
        let row = self.db.query_one(
            "SELECT count(*), CAST(coalesce(sum(online), 0) AS BIGINT) FROM agents",
            &[],
        )?;
        let (agents, online) = (row.get(0)?, row.get(1)?);
        let apps = self
            .db
            .query(
                "SELECT name, version, count(DISTINCT endpoint_id),
                        count(DISTINCT CASE WHEN coalesce(status, '') <> 'Installed'
                                            THEN endpoint_id END)
                 FROM dus GROUP BY name, version ORDER BY name, version",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .collect::<Result<_, String>>()?;
        Ok(FleetTotals {
            agents,
            online,
            apps,
        })
    }
}
