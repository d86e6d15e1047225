//! Which fault code each module's error is: the one place that decides it. Nothing imports
//! this module (trait impls need no import), so the error types' modules may use `Fault`
//! without a cycle.

use super::{Fault, FaultCode};
use crate::lifecycle::config::ConfigError;
use crate::lifecycle::start_error::StartEuError;
use crate::package::oci::OciError;
use crate::usp::config::UspConfigError;

/// A USP config (endpoint IDs, controllers) the data model cannot run with.
impl From<UspConfigError> for Fault {
    fn from(e: UspConfigError) -> Self {
        Fault::new(FaultCode::InvalidArguments, e.to_string())
    }
}

/// Package metadata beyond the bounds: a malformed package.
impl From<OciError> for Fault {
    fn from(e: OciError) -> Self {
        Fault::new(FaultCode::CorruptData, e.to_string())
    }
}

/// A config the agent cannot run with: invalid arguments, whatever the cause.
impl From<ConfigError> for Fault {
    fn from(e: ConfigError) -> Self {
        Fault::new(FaultCode::InvalidArguments, e.to_string())
    }
}

/// An EU the lifecycle could not start (no EU, no backend, its directories, the supervisor's
/// refusal): the agent's own failure, whatever the step; the EU's ExecutionFaultCode is set by
/// the supervisor.
impl From<StartEuError> for Fault {
    fn from(e: StartEuError) -> Self {
        match e {
            // Already decided: a port another app holds is 7025, not an internal error.
            StartEuError::Network(f) => f,
            e => Fault::new(FaultCode::Internal, e.to_string()),
        }
    }
}
