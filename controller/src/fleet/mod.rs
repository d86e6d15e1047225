//! The controller as a service (issue 13): `serve` keeps an inventory of the fleet and drives
//! it toward the deployments recorded with `deploy`; `deployments`, `agents --db` and
//! `operations` read the database. Everything is in the store (`crate::store`).
//!
//! Split by concern: `selector` (which agents a deployment is for), `inventory` (an agent's
//! Get read into rows), `reconcile` (the pure decision), `serve` (the loop), `print` (the
//! commands' tables and JSON), `command` (their command lines); this module runs them.

mod command;
pub mod inventory;
mod print;
pub mod reconcile;
pub mod refusal;
pub mod rollout;
pub mod rollout_cli;
pub mod selector;
pub mod serve;
pub mod views;

use crate::store::Store;

pub use command::{is_fleet, parse, FleetCmd, USAGE};
pub use serve::{serve, ServeOptions};

/// Runs a service command; returns the exit code.
pub fn run(cmd: FleetCmd) -> i32 {
    let db = match &cmd {
        FleetCmd::Serve(config, opts) => return serve(config, opts.clone()),
        FleetCmd::Deploy(db, ..)
        | FleetCmd::Deployments(db, _)
        | FleetCmd::Agents(db, _)
        | FleetCmd::Operations(db, ..)
        | FleetCmd::Replicas(db, _)
        | FleetCmd::Label(db, ..)
        | FleetCmd::Rollout(db, ..) => db.clone(),
    };
    let mut store = match Store::open(&db) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cpevisor-controller: {e}");
            return 2;
        }
    };
    match print::print(&mut store, cmd) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cpevisor-controller: {e}");
            2
        }
    }
}
