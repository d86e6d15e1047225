//! Rollouts: a deployment that goes to its agents in stages — a canary, then waves — instead
//! of to all of them at once. The decision of the next step is a pure function (`step`) over
//! what the store holds (the rollout, its targets with their inventory and last operation);
//! `serve` applies what it returns and the reconciliation (`reconcile::decide`) sends the
//! installs and updates, gated to the targets a running rollout has made active.
//!
//! A target goes `pending` (in no wave yet) → `queued` (in the current wave) → `active` (the
//! reconciliation may send it the operation; at most `max_in_flight` at once) → `done` or
//! `failed` (with the agent's fault). A wave is judged as its targets end: once its failures
//! pass `max_failure_pct` of it, the rollout pauses by itself (before the next wave, and with
//! no more of this wave's targets made active). Rollback sends the targets whose agent reports
//! the new version back to the version they had (`update` to the URL recorded when the rollout
//! started) or uninstalls the app where they had none; the others are left alone.

/// A rollout's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    /// Waves go on.
    Running,
    /// No target is made active; operations in flight end and are recorded.
    Paused,
    /// Every target online was served (offline ones are left to the reconciliation).
    Done,
    /// Stopped for good by the operator (or its deployment was superseded): nothing more is
    /// sent for it, the agents keep what they have.
    Aborted,
    /// Agents that took the new version are sent back.
    RollingBack,
    /// The rollback ended.
    RolledBack,
}

impl RolloutState {
    /// The store's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Done => "done",
            RolloutState::Aborted => "aborted",
            RolloutState::RollingBack => "rolling_back",
            RolloutState::RolledBack => "rolled_back",
        }
    }

    /// From the store's word.
    pub fn parse(s: &str) -> Option<RolloutState> {
        Some(match s {
            "running" => RolloutState::Running,
            "paused" => RolloutState::Paused,
            "done" => RolloutState::Done,
            "aborted" => RolloutState::Aborted,
            "rolling_back" => RolloutState::RollingBack,
            "rolled_back" => RolloutState::RolledBack,
            _ => return None,
        })
    }

    /// Whether `serve` still has steps to take for it.
    pub fn live(self) -> bool {
        matches!(
            self,
            RolloutState::Running | RolloutState::Paused | RolloutState::RollingBack
        )
    }
}

/// A target's state in its rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// In no wave yet.
    Pending,
    /// In the current wave, waiting for room in flight.
    Queued,
    /// The reconciliation may send it the operation.
    Active,
    /// It reports the new version.
    Done,
    /// Its operation failed (fault recorded).
    Failed,
    /// Being sent back to its previous version.
    Rollback,
    /// Back on its previous version (or the app uninstalled).
    RolledBack,
    /// Its rollback failed (fault recorded).
    RollbackFailed,
}

impl TargetState {
    /// The store's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Queued => "queued",
            TargetState::Active => "active",
            TargetState::Done => "done",
            TargetState::Failed => "failed",
            TargetState::Rollback => "rollback",
            TargetState::RolledBack => "rolled_back",
            TargetState::RollbackFailed => "rollback_failed",
        }
    }

    /// From the store's word.
    pub fn parse(s: &str) -> Option<TargetState> {
        Some(match s {
            "pending" => TargetState::Pending,
            "queued" => TargetState::Queued,
            "active" => TargetState::Active,
            "done" => TargetState::Done,
            "failed" => TargetState::Failed,
            "rollback" => TargetState::Rollback,
            "rolled_back" => TargetState::RolledBack,
            "rollback_failed" => TargetState::RollbackFailed,
            _ => return None,
        })
    }
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Its number.
    pub id: i64,
    /// The deployment it rolls out.
    pub deployment_id: i64,
    /// The active deployment of the same app it superseded, if any.
    pub previous_id: Option<i64>,
    /// Agents in the canary (wave 0).
    pub canary: i64,
    /// Agents per later wave.
    pub wave_size: i64,
    /// Targets active at once at most.
    pub max_in_flight: i64,
    /// A wave whose failures pass this share (percent) of it pauses the rollout.
    pub max_failure_pct: i64,
    /// Its state.
    pub state: RolloutState,
    /// The current wave (0 the canary); -1 before the first.
    pub wave: i64,
    /// Waves up to this one are not judged again: the operator resumed past their failures.
    pub accepted_wave: i64,
    /// Why it paused, aborted or ended, when it says.
    pub reason: Option<String>,
    /// When it was created (ms).
    pub created: i64,
    /// When it last changed (ms).
    pub updated: i64,
}

/// The last operation of a target's agent for the rollout's deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastOp {
    /// A rollback's (else the reconciliation's install or update).
    pub rollback: bool,
    /// `sent`, `done`, `failed`, `lost`.
    pub state: String,
    /// The agent's fault code.
    pub fault_code: Option<i64>,
    /// Its message.
    pub fault_message: Option<String>,
    /// When it ended (ms).
    pub finished: Option<i64>,
}

/// A target with what the decision needs of its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetView {
    /// The agent.
    pub endpoint_id: String,
    /// Its wave, once in one.
    pub wave: Option<i64>,
    /// Its state.
    pub state: TargetState,
    /// Whether the agent is online.
    pub online: bool,
    /// When its inventory was last read (ms).
    pub inventory_at: Option<i64>,
    /// The inventory has the app at the rollout's version.
    pub has_new: bool,
    /// The UUID of its DU of the app, whatever the version.
    pub du: Option<String>,
    /// The version it had when the rollout started (None: it had no such app).
    pub prev_version: Option<String>,
    /// Where that version came from.
    pub prev_url: Option<String>,
    /// The last operation for the rollout's deployment.
    pub op: Option<LastOp>,
}

/// A change of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetChange {
    /// The agent.
    pub endpoint_id: String,
    /// Its new state.
    pub state: TargetState,
    /// Its wave.
    pub wave: Option<i64>,
    /// The fault, when it failed.
    pub fault: Option<(i64, String)>,
}

/// An operation that sends an agent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackOp {
    /// The agent.
    pub agent: String,
    /// Its DU of the app.
    pub du: String,
    /// `Some(url)`: update to the previous package; None: uninstall (it had none).
    pub url: Option<String>,
}

/// What one step decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Targets that change.
    pub targets: Vec<TargetChange>,
    /// The rollout's new state, wave and reason, when they change.
    pub rollout: Option<(RolloutState, i64, Option<String>)>,
    /// Rollback operations to send.
    pub rollbacks: Vec<RollbackOp>,
}

/// The agent answered with a fault, or gave no answer in time. A `lost` operation (no result
/// because the controller that sent it stopped, or never sent) is not one: it is sent again.
fn failed(op: &LastOp) -> bool {
    op.state == "failed"
}

fn fault_of(op: &LastOp) -> (i64, String) {
    (
        op.fault_code.unwrap_or(0),
        op.fault_message
            .clone()
            .unwrap_or_else(|| format!("operation {}", op.state)),
    )
}

/// The inventory was read after `op` ended: what it says is the operation's effect.
fn read_after(t: &TargetView, op: &LastOp) -> bool {
    matches!((t.inventory_at, op.finished), (Some(i), Some(f)) if i > f)
}

/// What a running or paused rollout's step needs of the targets it is not given: counts. Those
/// are the targets this step cannot change (`store::rollouts::rollout_pass` reads the others:
/// the active ones, those whose agent has the new version, the queued ones it may make active,
/// and the next wave's candidates), so that a pass does not read the whole rollout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unread {
    /// Of them, in the rollout's current wave.
    pub in_wave: i64,
    /// Of those, failed.
    pub in_wave_failed: i64,
    /// Of them, pending.
    pub pending: i64,
}

/// The next step of rollout `r` of app `name` at `version`, whose deployment is still the
/// active one of that app (`deployment_active`), over all its `targets`.
pub fn step(
    r: &Rollout,
    deployment_active: bool,
    name: &str,
    version: &str,
    targets: &[TargetView],
) -> Step {
    step_of(
        r,
        deployment_active,
        name,
        version,
        targets,
        &Unread::default(),
    )
}

/// [`step`] given only some of the targets (in endpoint ID order), with the counts of the
/// others (`unread`): the same step when those are the targets it cannot change. A rollback
/// needs them all (`unread` must be zero then).
pub fn step_of(
    r: &Rollout,
    deployment_active: bool,
    name: &str,
    version: &str,
    targets: &[TargetView],
    unread: &Unread,
) -> Step {
    match r.state {
        RolloutState::Running | RolloutState::Paused if !deployment_active => Step {
            rollout: Some((
                RolloutState::Aborted,
                r.wave,
                Some("its deployment is no longer the active one (superseded)".into()),
            )),
            ..Step::default()
        },
        RolloutState::Running | RolloutState::Paused => forward(r, name, version, targets, unread),
        RolloutState::RollingBack => rollback(r, version, targets),
        _ => Step::default(),
    }
}

fn forward(
    r: &Rollout,
    name: &str,
    version: &str,
    targets: &[TargetView],
    unread: &Unread,
) -> Step {
    let mut out = Step::default();
    // The state of every target after this step's changes.
    let mut now: Vec<(TargetState, Option<i64>)> =
        targets.iter().map(|t| (t.state, t.wave)).collect();
    // One change per target: a later one in this step replaces an earlier one.
    let mut changes: Vec<Option<TargetChange>> = vec![None; targets.len()];
    let set = |changes: &mut Vec<Option<TargetChange>>,
               now: &mut Vec<(TargetState, Option<i64>)>,
               i: usize,
               s: TargetState,
               wave: Option<i64>,
               fault: Option<(i64, String)>| {
        now[i] = (s, wave);
        changes[i] = Some(TargetChange {
            endpoint_id: targets[i].endpoint_id.clone(),
            state: s,
            wave,
            fault,
        });
    };
    // 1. Outcomes.
    for (i, t) in targets.iter().enumerate() {
        let op = t.op.as_ref().filter(|o| !o.rollback);
        match t.state {
            // Already there (before its wave, or a failure that was not one: an operation
            // lost by a restarted controller that the agent carried out).
            TargetState::Pending | TargetState::Queued | TargetState::Failed if t.has_new => {
                set(&mut changes, &mut now, i, TargetState::Done, t.wave, None)
            }
            TargetState::Active if t.has_new => {
                set(&mut changes, &mut now, i, TargetState::Done, t.wave, None)
            }
            TargetState::Active => match op {
                Some(o) if failed(o) => {
                    let f = fault_of(o);
                    set(
                        &mut changes,
                        &mut now,
                        i,
                        TargetState::Failed,
                        t.wave,
                        Some(f),
                    )
                }
                Some(o) if o.state == "done" && read_after(t, o) => {
                    let f = (
                        0,
                        format!("the agent does not report {name} {version} after the operation"),
                    );
                    set(
                        &mut changes,
                        &mut now,
                        i,
                        TargetState::Failed,
                        t.wave,
                        Some(f),
                    )
                }
                // Nothing sent (or lost) and the agent is gone: back to the pool, a later
                // wave takes it when it is online again.
                _ if !t.online && op.is_none_or(|o| o.state == "lost") => {
                    set(&mut changes, &mut now, i, TargetState::Pending, None, None)
                }
                _ => {}
            },
            _ => {}
        }
    }
    let mut state = r.state;
    let mut wave = r.wave;
    let mut reason = r.reason.clone();
    // 2. The current wave's judgement (unless the operator accepted it).
    if state == RolloutState::Running && wave >= 0 && wave > r.accepted_wave {
        let in_wave = now.iter().filter(|(_, w)| *w == Some(wave));
        let (total, failed) = in_wave
            .fold((unread.in_wave, unread.in_wave_failed), |(n, f), (s, _)| {
                (n + 1, f + i64::from(*s == TargetState::Failed))
            });
        if total > 0 && failed * 100 > r.max_failure_pct * total {
            state = RolloutState::Paused;
            reason = Some(format!(
                "wave {wave}: {failed} of {total} failed, over {}%",
                r.max_failure_pct
            ));
        }
    }
    if state == RolloutState::Running {
        // 3. The next wave, once this one has nothing left to send.
        let open = |now: &[(TargetState, Option<i64>)], w: i64| {
            now.iter().any(|(s, x)| {
                *x == Some(w) && matches!(s, TargetState::Queued | TargetState::Active)
            })
        };
        if wave < 0 || !open(&now, wave) {
            let size = if wave < 0 { r.canary } else { r.wave_size };
            let next: Vec<usize> = (0..targets.len())
                .filter(|&i| now[i].0 == TargetState::Pending && targets[i].online)
                .take(size.max(1) as usize)
                .collect();
            if next.is_empty() {
                let offline = unread.pending
                    + now
                        .iter()
                        .filter(|(s, _)| *s == TargetState::Pending)
                        .count() as i64;
                state = RolloutState::Done;
                reason = (offline > 0)
                    .then(|| format!("{offline} target(s) offline, left to the reconciliation"));
            } else {
                wave += 1;
                for i in next {
                    set(
                        &mut changes,
                        &mut now,
                        i,
                        TargetState::Queued,
                        Some(wave),
                        None,
                    );
                }
            }
        }
        // 4. Room in flight for the wave's queued targets.
        let mut active = now
            .iter()
            .filter(|(s, _)| *s == TargetState::Active)
            .count() as i64;
        for i in 0..targets.len() {
            if active >= r.max_in_flight {
                break;
            }
            if now[i] == (TargetState::Queued, Some(wave)) {
                set(
                    &mut changes,
                    &mut now,
                    i,
                    TargetState::Active,
                    Some(wave),
                    None,
                );
                active += 1;
            }
        }
    }
    if (state, wave, &reason) != (r.state, r.wave, &r.reason) {
        out.rollout = Some((state, wave, reason));
    }
    out.targets = changes.into_iter().flatten().collect();
    out
}

fn rollback(r: &Rollout, version: &str, targets: &[TargetView]) -> Step {
    let mut out = Step::default();
    let mut busy = targets
        .iter()
        .filter(|t| {
            t.op.as_ref()
                .is_some_and(|o| o.rollback && o.state == "sent")
        })
        .count() as i64;
    let mut unfinished = 0;
    for t in targets {
        let op = t.op.as_ref();
        let change = |s, fault| TargetChange {
            endpoint_id: t.endpoint_id.clone(),
            state: s,
            wave: t.wave,
            fault,
        };
        // An operation in flight (an install sent before the rollback, or the rollback's own)
        // ends first.
        if op.is_some_and(|o| o.state == "sent") {
            unfinished += 1;
            continue;
        }
        // An install or update answered, its effect not read yet: the inventory decides.
        if op.is_some_and(|o| !o.rollback && o.state == "done" && !read_after(t, o)) {
            unfinished += 1;
            continue;
        }
        // It had this version before the rollout: not one the rollout gave it.
        if t.has_new && t.prev_version.as_deref() == Some(version) {
            continue;
        }
        // A lost rollback is sent again.
        let rb = op.filter(|o| o.rollback && o.state != "lost");
        if !t.has_new {
            // Back on the old version (or never left it): only the ones sent back change.
            if matches!(t.state, TargetState::Rollback | TargetState::RollbackFailed)
                && rb.is_none_or(|o| read_after(t, o))
            {
                out.targets.push(change(TargetState::RolledBack, None));
            }
            continue;
        }
        match rb {
            Some(o) if failed(o) => {
                if t.state != TargetState::RollbackFailed {
                    out.targets
                        .push(change(TargetState::RollbackFailed, Some(fault_of(o))));
                }
            }
            // Done, yet the inventory read after it still has the new version.
            Some(o) if read_after(t, o) => {
                if t.state != TargetState::RollbackFailed {
                    let f = (0, "the agent still reports the new version".to_string());
                    out.targets
                        .push(change(TargetState::RollbackFailed, Some(f)));
                }
            }
            // Done, the inventory not read since: wait for it.
            Some(_) => unfinished += 1,
            None if !t.online => {}
            None => {
                let Some(du) = t.du.clone() else { continue };
                unfinished += 1;
                if busy >= r.max_in_flight {
                    continue;
                }
                let url = match (&t.prev_version, &t.prev_url) {
                    (None, _) => None,
                    (Some(_), Some(u)) => Some(u.clone()),
                    (Some(v), None) => {
                        let f = (0, format!("the URL of version {v} is not known"));
                        out.targets
                            .push(change(TargetState::RollbackFailed, Some(f)));
                        unfinished -= 1;
                        continue;
                    }
                };
                busy += 1;
                if t.state != TargetState::Rollback {
                    out.targets.push(change(TargetState::Rollback, None));
                }
                out.rollbacks.push(RollbackOp {
                    agent: t.endpoint_id.clone(),
                    du,
                    url,
                });
            }
        }
    }
    if unfinished == 0 {
        let left = targets
            .iter()
            .filter(|t| {
                t.has_new
                    && !t.online
                    && t.prev_version.as_deref() != Some(version)
                    && t.op.as_ref().is_none_or(|o| !o.rollback)
            })
            .count();
        out.rollout = Some((
            RolloutState::RolledBack,
            r.wave,
            (left > 0).then(|| format!("{left} target(s) with the new version were offline")),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
