//! The balloon policy: from the board's free memory and each microVM app's figures, the new
//! balloon targets. Pure: no I/O; what it must remember between ticks is in `PolicyState`.
//!
//! Below the low watermark of free memory it inflates, in steps of `step_mib` per app and tick,
//! the balloons of the apps that hold the most above their floor, until the shortfall is
//! covered; above the high watermark it lets them go, step by step, no more per tick than the
//! memory above the high watermark; between the two it holds (hysteresis). A target never
//! leaves `declared - floor`, the floor being `max(floor_mib, floor_percent of declared)`.
//!
//! A guest that takes pages back from its balloon (DEFLATE_ON_OOM: it needed them) keeps them:
//! its target follows its `actual` down, and its balloon is not inflated above that again until
//! its cgroup's memory has fallen by a step (the guest freed memory since). Without that, the
//! driver would inflate again to the old target and the guest would be squeezed in a loop.

use std::collections::HashMap;

pub use super::settings::{BalloonSettings, MAX_STEP_MIB, MAX_TICK_MS, MIN_TICK_MS};

impl BalloonSettings {
    /// The policy on a machine whose kernel manages `mem_total_mib`.
    pub fn policy(&self, mem_total_mib: u64) -> Policy {
        let low = self.low_watermark_mib.map_or(mem_total_mib / 16, u64::from);
        let high = self
            .high_watermark_mib
            .map_or(low.saturating_mul(2).max(low + 1), u64::from);
        // A high watermark given alone may be below the derived low one: keep them ordered.
        let low = if high <= low { high / 2 } else { low };
        Policy {
            low_mib: low,
            high_mib: high,
            step_mib: u64::from(self.step_mib),
            floor_mib: u64::from(self.floor_mib),
            floor_percent: u64::from(self.floor_percent),
        }
    }
}

/// The resolved policy: watermarks in MiB, step, floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Inflate below this much free memory, MiB.
    pub low_mib: u64,
    /// Release above this much free memory, MiB.
    pub high_mib: u64,
    /// The most one target moves per tick, MiB.
    pub step_mib: u64,
    /// The least a guest keeps, MiB ...
    pub floor_mib: u64,
    /// ... or this percentage of its declared memory.
    pub floor_percent: u64,
}

impl Policy {
    /// The largest balloon an app of `declared_mib` may have: declared less its floor.
    pub fn max_target_mib(&self, declared_mib: u64) -> u64 {
        let floor = self.floor_mib.max(declared_mib * self.floor_percent / 100);
        declared_mib.saturating_sub(floor)
    }
}

/// One running microVM app as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFigures {
    /// EUID.
    pub eu_id: String,
    /// Its declared memory, MiB (the guest's RAM).
    pub declared_mib: u64,
    /// The balloon target the VMM holds now, MiB.
    pub target_mib: u64,
    /// What the guest's driver says its balloon holds, MiB.
    pub actual_mib: u64,
    /// Its cgroup's `memory.current`, KiB (None: not known).
    pub memory_current_kib: Option<u64>,
}

/// Why a target changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Free memory is below the low watermark.
    Pressure,
    /// Free memory is above the high watermark.
    Release,
    /// The guest took pages back from its balloon: the target follows.
    GuestNeed,
}

/// A new target for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// EUID.
    pub eu_id: String,
    /// The new target, MiB.
    pub target_mib: u64,
    /// Why.
    pub why: Why,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Memo {
    /// The target the VMM should hold after the last tick.
    target_mib: u64,
    /// The guest's `actual` at the last tick.
    actual_mib: u64,
    /// After the guest took pages back: no inflation above `.0` MiB until `memory.current`
    /// falls a step below `.1` KiB.
    ceiling: Option<(u64, u64)>,
}

/// What the policy remembers between ticks, per app.
#[derive(Debug, Default)]
pub struct PolicyState(HashMap<String, Memo>);

/// The new targets, from the board's free memory (`available_mib`) and every running microVM
/// app's figures.
pub fn decide(
    p: &Policy,
    available_mib: u64,
    apps: &[AppFigures],
    state: &mut PolicyState,
) -> Vec<Change> {
    state.0.retain(|id, _| apps.iter().any(|a| &a.eu_id == id));
    let mut targets: Vec<u64> = apps.iter().map(|a| a.target_mib).collect();
    let mut changes: Vec<Option<Why>> = vec![None; apps.len()];
    let mut limits: Vec<u64> = Vec::with_capacity(apps.len());
    for (i, a) in apps.iter().enumerate() {
        let memo = state.0.entry(a.eu_id.clone()).or_default();
        if memo.target_mib != a.target_mib {
            // A new run of the VMM (its target starts at 0), or a target the agent did not
            // set: what was remembered is about something else.
            *memo = Memo {
                target_mib: a.target_mib,
                actual_mib: a.actual_mib,
                ceiling: None,
            };
        }
        if a.actual_mib < memo.actual_mib && a.actual_mib < a.target_mib {
            // The guest deflated on its own: it needed the pages.
            targets[i] = a.actual_mib;
            changes[i] = Some(Why::GuestNeed);
            memo.ceiling = Some((a.actual_mib, a.memory_current_kib.unwrap_or(0)));
        } else if let (Some((_, at)), Some(now)) = (memo.ceiling, a.memory_current_kib) {
            if now.saturating_add(p.step_mib * 1024) < at {
                memo.ceiling = None;
            }
        }
        let mut limit = p.max_target_mib(a.declared_mib);
        if let Some((ceiling, _)) = memo.ceiling {
            limit = limit.min(ceiling);
        }
        limits.push(limit);
    }
    if available_mib < p.low_mib {
        let mut need = p.low_mib - available_mib;
        // The apps that hold the most above their floor first.
        let mut order: Vec<usize> = (0..apps.len()).collect();
        let above_floor = |a: &AppFigures| {
            let floor_kib = (a.declared_mib - p.max_target_mib(a.declared_mib)) * 1024;
            a.memory_current_kib.unwrap_or(0).saturating_sub(floor_kib)
        };
        order.sort_by(|&x, &y| {
            above_floor(&apps[y])
                .cmp(&above_floor(&apps[x]))
                .then_with(|| apps[x].eu_id.cmp(&apps[y].eu_id))
        });
        for i in order {
            let a = &apps[i];
            // Still inflating toward its last target, or just deflated: not this tick.
            if need == 0 || a.actual_mib < a.target_mib || changes[i].is_some() {
                continue;
            }
            let up = p
                .step_mib
                .min(limits[i].saturating_sub(targets[i]))
                .min(need);
            if up > 0 {
                targets[i] += up;
                need -= up;
                changes[i] = Some(Why::Pressure);
            }
        }
    } else if available_mib > p.high_mib {
        // Let go no more than the memory above the high watermark, so the guests taking it
        // back cannot push free memory under the low one in one tick.
        let mut spare = available_mib - p.high_mib;
        let mut order: Vec<usize> = (0..apps.len()).collect();
        order.sort_by(|&x, &y| {
            targets[y]
                .cmp(&targets[x])
                .then_with(|| apps[x].eu_id.cmp(&apps[y].eu_id))
        });
        for i in order {
            let down = p.step_mib.min(targets[i]).min(spare);
            if down > 0 && changes[i].is_none() {
                targets[i] -= down;
                spare -= down;
                changes[i] = Some(Why::Release);
            }
        }
    }
    let mut out = Vec::new();
    for (i, a) in apps.iter().enumerate() {
        // Within declared memory whatever happened before (a smaller floor in an older config).
        let target = targets[i].min(a.declared_mib);
        if let Some(memo) = state.0.get_mut(&a.eu_id) {
            memo.target_mib = target;
            memo.actual_mib = a.actual_mib;
        }
        if let (Some(why), true) = (changes[i], target != a.target_mib) {
            out.push(Change {
                eu_id: a.eu_id.clone(),
                target_mib: target,
                why,
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
