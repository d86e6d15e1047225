//! Read-only queries for the operator's views (the `--json` commands and the HTTP API): one
//! agent, the execution units of a page of agents, an agent's journal, and the fleet's
//! totals. Nothing here writes.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::{err, AgentView, Eu, Operation, Store};

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
            .conn
            .query_row(
                "SELECT max(endpoint_id) FROM agents WHERE endpoint_id < ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?
            .flatten();
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
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id, endpoint_id, deployment_id, kind, state, fault_code, fault_message,
                        created, finished, purpose
                 FROM operations WHERE (?1 IS NULL OR endpoint_id = ?1)
                   AND (?2 = 0 OR state IN ('failed', 'lost'))
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(err)?;
        let rows = st
            .query_map(params![agent, failed_only, limit as i64], |r| {
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
                })
            })
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// Agents known and online, and the apps at each version across the fleet.
    pub fn fleet_totals(&self) -> Result<FleetTotals, String> {
        let (agents, online) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(online), 0) FROM agents",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name, version, count(DISTINCT endpoint_id),
                        count(DISTINCT CASE WHEN coalesce(status, '') <> 'Installed'
                                            THEN endpoint_id END)
                 FROM dus GROUP BY name, version ORDER BY name, version",
            )
            .map_err(err)?;
        let apps = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(FleetTotals {
            agents,
            online,
            apps,
        })
    }
}
