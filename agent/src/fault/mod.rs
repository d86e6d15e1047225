//! TR-181 / USP fault codes used by `Device.SoftwareModules` operations.
//! Every module that can refuse an operation returns a `Fault`; the lifecycle puts it in the
//! `DUStateChange!` event and the API reply, and the USP layer turns it into an
//! Error/OperationComplete (`From<Fault> for UspError`, below).
//! The modules' own error types map to fault codes in `map` and nowhere else (a child, so that
//! this module stays a leaf every other module can use).

mod map;

use std::fmt;

use cpevisor_usp::errors::UspError;
use serde::{Deserialize, Serialize};

/// A fault code with a human-readable message naming what was wrong.
/// On the wire (API replies, events): `{"code": 7004, "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "WireFault", try_from = "WireFault")]
pub struct Fault {
    /// Which fault.
    pub code: FaultCode,
    /// What was wrong, naming the field, file or value.
    pub message: String,
}

/// The TR-181 / TR-369 fault codes an operation can end with (7000-7999, vendor range included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// 7003: internal error, for outcomes no TR-181 fault describes (an operation cut by a
    /// restart of the agent, a backend that cannot start).
    Internal,
    /// 7006: permission denied (a local client the API socket does not serve).
    PermissionDenied,
    /// 7025: unique key conflict (USP): a value that must be unique is held by another
    /// instance, e.g. a router port another app's mapping already takes.
    UniqueKeyConflict,
    /// 7022: command failure (a USP command such as Reboot() that did not run).
    CommandFailure,
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
    /// 7227: system resources exceeded (memory or flash budget).
    SystemResourcesExceeded,
    /// 7229: invalid deployment unit state for the operation (unknown UUID included).
    InvalidDeploymentUnitState,
    /// 7230: invalid execution environment state.
    InvalidExecEnvState,
}

impl FaultCode {
    /// The numeric code (`7004`, ...).
    pub fn code(self) -> u32 {
        match self {
            FaultCode::Internal => 7003,
            FaultCode::PermissionDenied => 7006,
            FaultCode::CommandFailure => 7022,
            FaultCode::UniqueKeyConflict => 7025,
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

    const ALL: [FaultCode; 16] = [
        FaultCode::Internal,
        FaultCode::InvalidArguments,
        FaultCode::ResourcesExceeded,
        FaultCode::PermissionDenied,
        FaultCode::CommandFailure,
        FaultCode::UniqueKeyConflict,
        FaultCode::DownloadFailure,
        FaultCode::AuthenticationFailure,
        FaultCode::CorruptData,
        FaultCode::SignatureFailure,
        FaultCode::UnknownExecEnv,
        FaultCode::DeploymentUnitToExecEnvMismatch,
        FaultCode::DuplicateDeploymentUnit,
        FaultCode::SystemResourcesExceeded,
        FaultCode::InvalidDeploymentUnitState,
        FaultCode::InvalidExecEnvState,
    ];
}

/// A numeric code no `FaultCode` stands for (a reply from another build, a corrupt line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownFaultCode(pub u32);

impl fmt::Display for UnknownFaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown fault code {}", self.0)
    }
}

impl std::error::Error for UnknownFaultCode {}

impl TryFrom<u32> for FaultCode {
    type Error = UnknownFaultCode;
    fn try_from(code: u32) -> Result<Self, UnknownFaultCode> {
        FaultCode::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .ok_or(UnknownFaultCode(code))
    }
}

/// The wire form of a `Fault`: the numeric code, as events and API replies carry it.
#[derive(Serialize, Deserialize)]
struct WireFault {
    code: u32,
    message: String,
}

impl From<Fault> for WireFault {
    fn from(f: Fault) -> Self {
        WireFault {
            code: f.code.code(),
            message: f.message,
        }
    }
}

impl TryFrom<WireFault> for Fault {
    type Error = UnknownFaultCode;
    fn try_from(w: WireFault) -> Result<Self, UnknownFaultCode> {
        Ok(Fault::new(FaultCode::try_from(w.code)?, w.message))
    }
}

/// The USP layer reports a refused operation with the same code and message.
impl From<Fault> for UspError {
    fn from(f: Fault) -> Self {
        UspError::new(f.code.code(), f.message)
    }
}

impl Fault {
    /// A fault with `code` and `message`.
    pub fn new(code: FaultCode, message: impl Into<String>) -> Self {
        Fault {
            code,
            message: message.into(),
        }
    }

    /// The same fault, its message led by `what: ` (the file or board it concerns).
    pub fn prefixed(self, what: impl fmt::Display) -> Self {
        Fault {
            code: self.code,
            message: format!("{what}: {}", self.message),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault {}: {}", self.code.code(), self.message)
    }
}

impl std::error::Error for Fault {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_numeric_code_and_message() {
        let f = Fault::new(FaultCode::CorruptData, "bad");
        let s = serde_json::to_string(&f).unwrap();
        assert_eq!(s, r#"{"code":7035,"message":"bad"}"#);
        assert_eq!(serde_json::from_str::<Fault>(&s).unwrap(), f);
        let e = serde_json::from_str::<Fault>(r#"{"code":1234,"message":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown fault code 1234"), "{e}");
    }

    #[test]
    fn every_code_round_trips() {
        for c in FaultCode::ALL {
            assert_eq!(FaultCode::try_from(c.code()), Ok(c));
        }
        let u: UspError = Fault::new(FaultCode::Internal, "cut").into();
        assert_eq!((u.code, u.message.as_str()), (7003, "cut"));
    }
}
