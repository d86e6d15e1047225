//! Why the lifecycle could not start an EU (its own module so that `fault::map`, which decides
//! its fault code, depends on nothing else of the lifecycle).

use crate::fault::Fault;
use crate::supervise::StartError;

/// Why the lifecycle could not start an EU: what it lacked, or the supervisor's refusal. Its
/// fault code is decided in `fault::map`.
#[derive(Debug)]
pub enum StartEuError {
    /// The DU (its UUID) has no EU.
    NoEu(String),
    /// No backend serves the EU's ExecEnv (its name).
    NoBackend(String),
    /// The DU's data directory is unusable.
    DataDir(Fault),
    /// The EU's run directory could not be made.
    RunDir(std::io::Error),
    /// The supervisor did not start the backend.
    Start(StartError),
    /// The app's network rules were refused (a port taken, no nft): the fault as decided.
    Network(Fault),
}

impl std::fmt::Display for StartEuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartEuError::NoEu(du) => write!(f, "DU {du} has no execution unit"),
            StartEuError::NoBackend(env) => write!(f, "no backend for ExecEnv {env}"),
            StartEuError::DataDir(fault) => f.write_str(&fault.message),
            StartEuError::RunDir(e) => write!(f, "{e}"),
            StartEuError::Start(e) => write!(f, "{e}"),
            StartEuError::Network(fault) => f.write_str(&fault.message),
        }
    }
}

impl std::error::Error for StartEuError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartEuError::RunDir(e) => Some(e),
            StartEuError::Start(e) => Some(e),
            StartEuError::NoEu(_)
            | StartEuError::NoBackend(_)
            | StartEuError::DataDir(_)
            | StartEuError::Network(_) => None,
        }
    }
}
