//! The balloon work of a build without microVMs: nothing registers, nothing ticks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::settings::BalloonSettings;
use crate::model::BalloonFigures;
use crate::supervise::cgroup::AppCgroup;

/// No microVM runs here: the board stays empty.
#[derive(Default, Clone)]
pub struct BalloonBoard;

impl BalloonBoard {
    /// Only microVM backends have a control socket; none is built here.
    pub(in crate::supervise) fn register(
        &self,
        _eu_id: &str,
        _socket: PathBuf,
        _declared_mib: u32,
        _cgroup: Arc<Mutex<Option<AppCgroup>>>,
    ) {
    }

    /// Nothing to forget.
    pub(in crate::supervise) fn unregister(&self, _eu_id: &str) {}

    /// No microVM, no figures.
    pub fn figures_all(&self) -> HashMap<String, BalloonFigures> {
        HashMap::new()
    }
}

/// No balloon thread.
pub struct Ticker;

impl Ticker {
    /// Nothing to start: a jail-only build has no balloons.
    pub fn start(_board: BalloonBoard, _settings: BalloonSettings) -> Option<Ticker> {
        None
    }
}
