//! The balloons of microVM apps: the agent sets each guest's balloon target from the board's
//! free memory. Its settings (`balloon` in the agent config) are read on every build; the work
//! itself (the ticker, the policy, the VMM client) only where microVMs run (`cfg(microvm)`,
//! agent/build.rs). A jail-only build has `none`'s stand-ins: no microVM ever registers there.

pub mod settings;
pub use settings::BalloonSettings;

#[cfg(microvm)]
pub mod client;
#[cfg(microvm)]
pub mod policy;
#[cfg(microvm)]
mod ticker;
#[cfg(microvm)]
pub use ticker::{BalloonBoard, Ticker};

#[cfg(not(microvm))]
mod none;
#[cfg(not(microvm))]
pub use none::{BalloonBoard, Ticker};

pub use crate::model::BalloonFigures;
