//! TR-181 / USP fault codes used by `Device.SoftwareModules` operations.
//! Every module that can refuse an operation returns a `Fault`; the lifecycle turns it into the
//! `DUStateChange!` event's fault and the USP layer into an Error/OperationComplete.

use std::fmt;

/// A fault code with a human-readable message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: FaultCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// 7004: invalid arguments (including a URL carrying user:password).
    InvalidArguments,
    /// 7005: resources exceeded (internal, e.g. flash full).
    ResourcesExceeded,
    /// 7033: server unreachable / download failure.
    DownloadFailure,
    /// 7034: user authentication failure.
    AuthenticationFailure,
    /// 7035: corrupt data (digest mismatch, truncated, malformed package).
    CorruptData,
    /// 7036: bad or missing signature, untrusted signer.
    SignatureFailure,
    /// 7223: unknown execution environment.
    UnknownExecEnv,
    /// 7225: package does not fit the ExecEnv (architecture or backend).
    DeploymentUnitToExecEnvMismatch,
    /// 7226: duplicate deployment unit.
    DuplicateDeploymentUnit,
    /// 7227: system resources exceeded (memory budget).
    SystemResourcesExceeded,
    /// 7229: invalid deployment unit state for the operation (unknown UUID included).
    InvalidDeploymentUnitState,
    /// 7230: invalid execution environment state.
    InvalidExecEnvState,
}

impl FaultCode {
    pub fn code(self) -> u32 {
        match self {
            FaultCode::InvalidArguments => 7004,
            FaultCode::ResourcesExceeded => 7005,
            FaultCode::DownloadFailure => 7033,
            FaultCode::AuthenticationFailure => 7034,
            FaultCode::CorruptData => 7035,
            FaultCode::SignatureFailure => 7036,
            FaultCode::UnknownExecEnv => 7223,
            FaultCode::DeploymentUnitToExecEnvMismatch => 7225,
            FaultCode::DuplicateDeploymentUnit => 7226,
            FaultCode::SystemResourcesExceeded => 7227,
            FaultCode::InvalidDeploymentUnitState => 7229,
            FaultCode::InvalidExecEnvState => 7230,
        }
    }
}

impl Fault {
    pub fn new(code: FaultCode, message: impl Into<String>) -> Self {
        Fault {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault {}: {}", self.code.code(), self.message)
    }
}

impl std::error::Error for Fault {}
