//! The rollouts' queries: a rollout with its deployment and targets recorded in one
//! transaction, the targets read with what the decision needs (inventory, last operation),
//! a step's changes stored in one transaction, the operator's commands, and the gates the
//! reconciliation obeys.

use std::collections::{HashMap, HashSet};

use super::db::{p, Row};
use super::{insert_deployment, NewDeployment, Store};
use crate::fleet::rollout::{LastOp, Rollout, RolloutState, Step, TargetState, TargetView, Unread};

/// How a new rollout goes, counts resolved (a percentage of the targets made a count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewRollout {
    /// Agents in the canary.
    pub canary: i64,
    /// Agents per later wave.
    pub wave_size: i64,
    /// Targets active at once at most.
    pub max_in_flight: i64,
    /// The failure share (percent) of a wave that pauses the rollout.
    pub max_failure_pct: i64,
}

/// A target as the rollout starts: the agent and the version of the app it has then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutTarget {
    /// The agent.
    pub endpoint_id: String,
    /// Its version of the app (None: it has none).
    pub prev_version: Option<String>,
    /// Where that version came from.
    pub prev_url: Option<String>,
}

/// An operator's command on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutCommand {
    /// Running → paused.
    Pause,
    /// Paused → running, the current wave's failures accepted.
    Resume,
    /// Running or paused → aborted: nothing more is sent.
    Abort,
    /// → rolling back: the deployment is removed, its agents sent back.
    Rollback,
}

impl RolloutCommand {
    /// Its word on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutCommand::Pause => "pause",
            RolloutCommand::Resume => "resume",
            RolloutCommand::Abort => "abort",
            RolloutCommand::Rollback => "rollback",
        }
    }
}

/// Whether target `t`'s agent has the rollout's app (`?2`) at its version (`?3`).
const HAS_NEW: &str = "EXISTS (SELECT 1 FROM dus u WHERE u.endpoint_id = t.endpoint_id
                                AND u.name = ?2 AND u.version = ?3)";

const ROLLOUT_COLUMNS: &str = "id, deployment_id, previous_id, canary, wave_size, max_in_flight,
     max_failure_pct, state, wave, accepted_wave, reason, created, updated";

fn rollout_row(r: &Row) -> Result<Rollout, String> {
    let state: String = r.get(7)?;
    Ok(Rollout {
        id: r.get(0)?,
        deployment_id: r.get(1)?,
        previous_id: r.get(2)?,
        canary: r.get(3)?,
        wave_size: r.get(4)?,
        max_in_flight: r.get(5)?,
        max_failure_pct: r.get(6)?,
        // The schema's CHECK admits only the words `parse` knows.
        state: RolloutState::parse(&state).unwrap_or(RolloutState::Aborted),
        wave: r.get(8)?,
        accepted_wave: r.get(9)?,
        reason: r.get(10)?,
        created: r.get(11)?,
        updated: r.get(12)?,
    })
}

impl Store {
    /// Records deployment `d` with rollout `r` over `targets`, at `now`: the active deployment
    /// of the same app is superseded (and remembered as the rollout's previous one). Returns
    /// the deployment's and the rollout's numbers.
    pub fn add_rollout(
        &mut self,
        d: &NewDeployment,
        r: &NewRollout,
        targets: &[RolloutTarget],
        now: i64,
    ) -> Result<(i64, i64), String> {
        let tx = self.db.begin()?;
        let previous: Option<i64> = tx
            .query_opt(
                "SELECT id FROM deployments WHERE name = ?1 AND state = 'active'",
                &p![d.name],
            )?
            .map(|r| r.get(0))
            .transpose()?;
        let dep = insert_deployment(&tx, d, now)?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO rollouts (deployment_id, previous_id, canary, wave_size,
                                       max_in_flight, max_failure_pct, state, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?7) RETURNING id",
                &p![
                    dep,
                    previous,
                    r.canary,
                    r.wave_size,
                    r.max_in_flight,
                    r.max_failure_pct,
                    now
                ],
            )?
            .get(0)?;
        for t in targets {
            tx.execute(
                "INSERT INTO rollout_targets (rollout_id, endpoint_id, state, prev_version,
                                              prev_url, updated)
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5)",
                &p![id, t.endpoint_id, t.prev_version, t.prev_url, now],
            )?;
        }
        tx.commit()?;
        Ok((dep, id))
    }

    /// The rollouts, newest first (only those `serve` still steps when `live_only`).
    pub fn rollouts(&self, live_only: bool) -> Result<Vec<Rollout>, String> {
        self.db
            .query(
                &format!(
                    "SELECT {ROLLOUT_COLUMNS} FROM rollouts
                     WHERE ?1 = 0 OR state IN ('running', 'paused', 'rolling_back')
                     ORDER BY id DESC"
                ),
                &p![live_only],
            )?
            .iter()
            .map(rollout_row)
            .collect()
    }

    /// Rollout `id`.
    pub fn rollout(&self, id: i64) -> Result<Option<Rollout>, String> {
        self.db
            .query_opt(
                &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1"),
                &p![id],
            )?
            .as_ref()
            .map(rollout_row)
            .transpose()
    }

    /// The targets of rollout `r` (whose deployment is app `name` at `version`), in endpoint
    /// ID order, each with its agent's inventory and last operation for the deployment.
    pub fn rollout_targets(
        &self,
        r: &Rollout,
        name: &str,
        version: &str,
    ) -> Result<Vec<TargetView>, String> {
        self.target_views(r, name, version, "1 = 1", i64::MAX)
    }

    /// What a pass over running or paused rollout `r` reads for `rollout::step_of`: the
    /// targets its step may change, in endpoint ID order (the active ones, the pending, queued
    /// and failed ones whose agent has the new version, the current wave's first
    /// `max_in_flight` queued ones, and, when none is left queued, the first online pending
    /// ones the next wave would take), and the counts of the others. A done target is never
    /// read: a pass costs what moves in the rollout, not its size.
    pub fn rollout_pass(
        &self,
        r: &Rollout,
        name: &str,
        version: &str,
    ) -> Result<(Vec<TargetView>, Unread), String> {
        let mut read = self.target_views(r, name, version, "t.state = 'active'", i64::MAX)?;
        // One state at a time: each a range of the state index, in endpoint ID order (with
        // `IN`, SQLite walks every target of the rollout in key order instead).
        for state in ["pending", "queued", "failed"] {
            read.extend(self.target_views(
                r,
                name,
                version,
                &format!("t.state = '{state}' AND {HAS_NEW}"),
                i64::MAX,
            )?);
        }
        // The current wave's queued ones the step may make active: the first, in endpoint ID
        // order (it takes them in that order, at most `max_in_flight`).
        let queued = self.target_views(
            r,
            name,
            version,
            &format!(
                "t.state = 'queued' AND t.wave = {} AND NOT {HAS_NEW}",
                r.wave
            ),
            r.max_in_flight.max(1),
        )?;
        // One of them left keeps the wave open: no next wave in this step, no candidates.
        let open = !queued.is_empty();
        read.extend(queued);
        if r.state == RolloutState::Running && !open {
            let next = if r.wave < 0 { r.canary } else { r.wave_size }.max(1);
            read.extend(self.target_views(
                r,
                name,
                version,
                &format!("t.state = 'pending' AND a.online = 1 AND NOT {HAS_NEW}"),
                next,
            )?);
        }
        read.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        // An agent's inventory saved between two of the queries may put a target in two.
        read.dedup_by(|a, b| a.endpoint_id == b.endpoint_id);
        let (mut in_wave, mut in_wave_failed) = (0, 0);
        for row in self.db.query(
            "SELECT state, count(*) FROM rollout_targets WHERE rollout_id = ?1 AND wave = ?2
             GROUP BY state",
            &p![r.id, r.wave],
        )? {
            let (state, n): (String, i64) = (row.get(0)?, row.get(1)?);
            in_wave += n;
            if state == TargetState::Failed.as_str() {
                in_wave_failed += n;
            }
        }
        let pending: i64 = self
            .db
            .query_one(
                "SELECT count(*) FROM rollout_targets WHERE rollout_id = ?1 AND state = 'pending'",
                &p![r.id],
            )?
            .get(0)?;
        // The counts were of every target: those read are counted by the step itself.
        let mut unread = Unread {
            in_wave,
            in_wave_failed,
            pending,
        };
        for t in &read {
            if t.wave == Some(r.wave) {
                unread.in_wave -= 1;
                unread.in_wave_failed -= i64::from(t.state == TargetState::Failed);
            }
            unread.pending -= i64::from(t.state == TargetState::Pending);
        }
        Ok((read, unread))
    }

    /// Up to `limit` targets of rollout `r` that `filter` (SQL over `t`, the target, and `a`,
    /// its agent) admits, in endpoint ID order, with what the step needs of each: one query
    /// says what a target's view is, whichever targets are read.
    fn target_views(
        &self,
        r: &Rollout,
        name: &str,
        version: &str,
        filter: &str,
        limit: i64,
    ) -> Result<Vec<TargetView>, String> {
        let rows = self.db.query(
            &format!(
                "SELECT t.endpoint_id, t.wave, t.state, t.prev_version, t.prev_url,
                        coalesce(a.online, 0), a.inventory_at,
                        (SELECT uuid FROM dus u WHERE u.endpoint_id = t.endpoint_id
                           AND u.name = ?2 ORDER BY u.path LIMIT 1),
                        {HAS_NEW},
                        o.id, o.purpose, o.state, o.fault_code, o.fault_message, o.finished
                 FROM rollout_targets t
                 LEFT JOIN agents a ON a.endpoint_id = t.endpoint_id
                 LEFT JOIN operations o ON o.id = (SELECT max(id) FROM operations
                                                   WHERE endpoint_id = t.endpoint_id
                                                     AND deployment_id = ?4)
                 WHERE t.rollout_id = ?1 AND ({filter}) ORDER BY t.endpoint_id LIMIT ?5"
            ),
            &p![r.id, name, version, r.deployment_id, limit],
        )?;
        rows.iter()
            .map(|row| {
                let state: String = row.get(2)?;
                let op_id: Option<i64> = row.get(9)?;
                let op = match op_id {
                    None => None,
                    Some(_) => Some(LastOp {
                        rollback: row.get::<Option<String>>(10)?.is_some(),
                        state: row.get(11)?,
                        fault_code: row.get(12)?,
                        fault_message: row.get(13)?,
                        finished: row.get(14)?,
                    }),
                };
                Ok(TargetView {
                    endpoint_id: row.get(0)?,
                    wave: row.get(1)?,
                    state: TargetState::parse(&state).unwrap_or(TargetState::Failed),
                    prev_version: row.get(3)?,
                    prev_url: row.get(4)?,
                    online: row.get(5)?,
                    inventory_at: row.get(6)?,
                    du: row.get(7)?,
                    has_new: row.get(8)?,
                    op,
                })
            })
            .collect()
    }

    /// The faults recorded on rollout `id`'s targets, by endpoint ID.
    pub fn rollout_faults(&self, id: i64) -> Result<HashMap<String, (i64, String)>, String> {
        self.db
            .query(
                "SELECT endpoint_id, fault_code, fault_message FROM rollout_targets
                 WHERE rollout_id = ?1 AND fault_code IS NOT NULL",
                &p![id],
            )?
            .iter()
            .map(|r| {
                Ok((
                    r.get::<String>(0)?,
                    (
                        r.get::<i64>(1)?,
                        r.get::<Option<String>>(2)?.unwrap_or_default(),
                    ),
                ))
            })
            .collect()
    }

    /// Stores what `step` decided for rollout `r`, in one transaction; a rollback that ended
    /// makes the previous deployment the active one again (unless another one is).
    pub fn apply_rollout_step(&mut self, r: &Rollout, step: &Step, now: i64) -> Result<(), String> {
        let tx = self.db.begin()?;
        for c in &step.targets {
            let (code, msg) = match &c.fault {
                Some((c, m)) => (Some(*c), Some(m.as_str())),
                None => (None, None),
            };
            tx.execute(
                "UPDATE rollout_targets SET state = ?3, wave = ?4,
                     fault_code = CASE WHEN ?3 IN ('done', 'rolled_back') THEN NULL
                                       ELSE coalesce(?5, fault_code) END,
                     fault_message = CASE WHEN ?3 IN ('done', 'rolled_back') THEN NULL
                                          ELSE coalesce(?6, fault_message) END,
                     updated = ?7
                 WHERE rollout_id = ?1 AND endpoint_id = ?2",
                &p![
                    r.id,
                    c.endpoint_id,
                    c.state.as_str(),
                    c.wave,
                    code,
                    msg,
                    now
                ],
            )?;
        }
        if let Some((state, wave, reason)) = &step.rollout {
            // Only from the state the step was decided on: an operator's command that came in
            // between wins.
            tx.execute(
                "UPDATE rollouts SET state = ?2, wave = ?3, reason = ?4, updated = ?5
                 WHERE id = ?1 AND state = ?6",
                &p![r.id, state.as_str(), wave, reason, now, r.state.as_str()],
            )?;
            if *state == RolloutState::RolledBack {
                if let Some(prev) = r.previous_id {
                    tx.execute(
                        "UPDATE deployments SET state = 'active'
                         WHERE id = ?1 AND state = 'superseded'
                           AND NOT EXISTS (SELECT 1 FROM deployments d
                                           WHERE d.name = deployments.name
                                             AND d.state = 'active')",
                        &p![prev],
                    )?;
                }
            }
        }
        tx.commit()
    }

    /// Applies an operator's command to rollout `id`; refused (with why) where its state
    /// does not allow it.
    pub fn rollout_command(
        &mut self,
        id: i64,
        cmd: RolloutCommand,
        now: i64,
    ) -> Result<Rollout, String> {
        let tx = self.db.begin()?;
        let r = tx
            .query_opt(
                &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1"),
                &p![id],
            )?
            .as_ref()
            .map(rollout_row)
            .transpose()?
            .ok_or_else(|| format!("no rollout {id}"))?;
        use RolloutState as S;
        let (to, reason, accepted) = match (cmd, r.state) {
            (RolloutCommand::Pause, S::Running) => {
                (S::Paused, Some("paused by the operator"), r.accepted_wave)
            }
            (RolloutCommand::Resume, S::Paused) => (S::Running, None, r.wave),
            (RolloutCommand::Abort, S::Running | S::Paused) => {
                (S::Aborted, Some("aborted by the operator"), r.accepted_wave)
            }
            (RolloutCommand::Rollback, S::Running | S::Paused | S::Aborted | S::Done) => {
                let active: bool = tx
                    .query_one(
                        "SELECT state = 'active' FROM deployments WHERE id = ?1",
                        &p![r.deployment_id],
                    )?
                    .get(0)?;
                if !active {
                    return Err(format!(
                        "rollout {id}: its deployment {} is no longer the active one; a rollback would undo a newer one",
                        r.deployment_id
                    ));
                }
                tx.execute(
                    "UPDATE deployments SET state = 'removed' WHERE id = ?1",
                    &p![r.deployment_id],
                )?;
                (
                    S::RollingBack,
                    Some("rolled back by the operator"),
                    r.accepted_wave,
                )
            }
            (c, s) => {
                return Err(format!(
                    "rollout {id} is {}: {} does not apply",
                    s.as_str(),
                    c.as_str()
                ))
            }
        };
        tx.execute(
            "UPDATE rollouts SET state = ?2, reason = ?3, accepted_wave = ?4, updated = ?5
             WHERE id = ?1",
            &p![id, to.as_str(), reason, accepted, now],
        )?;
        tx.commit()?;
        Ok(Rollout {
            state: to,
            reason: reason.map(str::to_string),
            accepted_wave: accepted,
            updated: now,
            ..r
        })
    }

    /// The deployments that rollouts gate, each with the agents the reconciliation may send
    /// it to now: a running rollout's active targets; none for one paused, aborted or rolling
    /// back. Deployments not in the map are not gated.
    pub fn rollout_gates(&self) -> Result<HashMap<i64, HashSet<String>>, String> {
        let rows = self.db.query(
            "SELECT r.deployment_id, t.endpoint_id FROM rollouts r
             LEFT JOIN rollout_targets t ON t.rollout_id = r.id AND t.state = 'active'
                                        AND r.state = 'running'
             WHERE r.state NOT IN ('done', 'rolled_back')",
            &[],
        )?;
        let mut out: HashMap<i64, HashSet<String>> = HashMap::new();
        for row in rows {
            let (d, agent): (i64, Option<String>) = (row.get(0)?, row.get(1)?);
            let set = out.entry(d).or_default();
            if let Some(a) = agent {
                set.insert(a);
            }
        }
        Ok(out)
    }

    /// Journals a rollback's operation (`update` or `uninstall`) as sent; None when one is
    /// already in flight for this agent and deployment.
    pub fn begin_rollback_op(
        &self,
        agent: &str,
        deployment: i64,
        kind: &str,
        now: i64,
    ) -> Result<Option<i64>, String> {
        self.insert_op(agent, deployment, kind, now, Some("rollback"))
    }
}
