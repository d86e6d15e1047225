//! `balloon` in the agent config: its fields and bounds. Read on every build (the config is
//! the same for every board); the policy that uses them (`policy`) only where microVMs run.

use serde::{Deserialize, Serialize};

/// `balloon` in the agent config: whether and how the agent sets microVM apps' balloon targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalloonSettings {
    /// Whether the agent sets balloon targets at all (free page reporting works without).
    pub enable: bool,
    /// How often the agent reads the figures and decides, ms (`MIN_TICK_MS..=MAX_TICK_MS`).
    pub tick_ms: u64,
    /// Below this much free memory (`MemAvailable`), MiB, balloons inflate. None: 1/16 of the
    /// RAM the kernel manages (`MemTotal`).
    pub low_watermark_mib: Option<u32>,
    /// Above this much free memory, MiB, balloons are let go. None: twice the low watermark.
    pub high_watermark_mib: Option<u32>,
    /// The most one app's target moves per tick, MiB (1..=`MAX_STEP_MIB`).
    pub step_mib: u32,
    /// The least memory a guest keeps outside its balloon, MiB ...
    pub floor_mib: u32,
    /// ... or this percentage of its declared memory when that is more (0..=100).
    pub floor_percent: u8,
}

/// Shortest tick: a decision reads every microVM's control socket.
pub const MIN_TICK_MS: u64 = 500;
/// Longest tick.
pub const MAX_TICK_MS: u64 = 600_000;
/// Largest step per app and tick.
pub const MAX_STEP_MIB: u32 = 1024;

impl Default for BalloonSettings {
    fn default() -> Self {
        // 5 s: Linux's driver inflates a few MiB in well under a second, and free page
        // reporting itself waits 2 s; 4 MiB steps: the reporting block size of the minimal
        // kernel's default order. The floor: the minimal guest kernel with its apps uses ~6-7
        // MiB of a 16 MiB guest (docs/density.md), so 16 MiB is left alone entirely.
        BalloonSettings {
            enable: true,
            tick_ms: 5_000,
            low_watermark_mib: None,
            high_watermark_mib: None,
            step_mib: 4,
            floor_mib: 16,
            floor_percent: 25,
        }
    }
}

impl BalloonSettings {
    /// Checks the bounds; the error names the field (`balloon.<field>`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(MIN_TICK_MS..=MAX_TICK_MS).contains(&self.tick_ms) {
            return Err((
                "tick_ms",
                format!("{} is not in {MIN_TICK_MS}..={MAX_TICK_MS}", self.tick_ms),
            ));
        }
        if !(1..=MAX_STEP_MIB).contains(&self.step_mib) {
            return Err((
                "step_mib",
                format!("{} is not in 1..={MAX_STEP_MIB}", self.step_mib),
            ));
        }
        if self.floor_percent > 100 {
            return Err((
                "floor_percent",
                format!("{} is more than 100", self.floor_percent),
            ));
        }
        if let (Some(low), Some(high)) = (self.low_watermark_mib, self.high_watermark_mib) {
            if high <= low {
                return Err((
                    "high_watermark_mib",
                    format!("{high} must be above low_watermark_mib {low}"),
                ));
            }
        }
        Ok(())
    }
}
