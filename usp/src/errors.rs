//! USP error codes (TR-369, "Error Codes"). 7000-7099 are for Msgs, 7100-7199 for Records;
//! 7200-7299 belong to the data model (TR-181 `Device.SoftwareModules` uses 7220-7230).

/// A USP error: a code and a human-readable message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UspError {
    pub code: u32,
    pub message: String,
}

impl UspError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        UspError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for UspError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, name(self.code), self.message)
    }
}

impl std::error::Error for UspError {}

pub const MESSAGE_FAILED: u32 = 7000;
pub const MESSAGE_NOT_SUPPORTED: u32 = 7001;
pub const REQUEST_DENIED: u32 = 7002;
pub const INTERNAL_ERROR: u32 = 7003;
pub const INVALID_ARGUMENTS: u32 = 7004;
pub const RESOURCES_EXCEEDED: u32 = 7005;
pub const PERMISSION_DENIED: u32 = 7006;
pub const INVALID_CONFIGURATION: u32 = 7007;
pub const INVALID_PATH_SYNTAX: u32 = 7008;
pub const PARAMETER_ACTION_FAILED: u32 = 7009;
pub const UNSUPPORTED_PARAMETER: u32 = 7010;
pub const INVALID_TYPE: u32 = 7011;
pub const INVALID_VALUE: u32 = 7012;
pub const NOT_WRITABLE: u32 = 7013;
pub const VALUE_CONFLICT: u32 = 7014;
pub const OPERATION_ERROR: u32 = 7015;
pub const OBJECT_DOES_NOT_EXIST: u32 = 7016;
pub const OBJECT_NOT_CREATED: u32 = 7017;
pub const NOT_A_TABLE: u32 = 7018;
pub const NOT_CREATABLE: u32 = 7019;
pub const OBJECT_NOT_UPDATED: u32 = 7020;
pub const REQUIRED_PARAMETER_FAILED: u32 = 7021;
pub const COMMAND_FAILURE: u32 = 7022;
pub const COMMAND_CANCELED: u32 = 7023;
pub const DELETE_FAILURE: u32 = 7024;
pub const DUPLICATE_KEY: u32 = 7025;
pub const INVALID_PATH: u32 = 7026;
pub const INVALID_COMMAND_ARGUMENTS: u32 = 7027;
pub const RECORD_NOT_PARSED: u32 = 7100;
pub const SECURE_SESSION_REQUIRED: u32 = 7101;
pub const SECURE_SESSION_NOT_SUPPORTED: u32 = 7102;
pub const SEGMENTATION_NOT_SUPPORTED: u32 = 7103;
pub const INVALID_RECORD_VALUE: u32 = 7104;

/// The standard name of a code, for messages and tables; "" for codes the spec leaves open.
pub fn name(code: u32) -> &'static str {
    match code {
        MESSAGE_FAILED => "Message failed",
        MESSAGE_NOT_SUPPORTED => "Message not supported",
        REQUEST_DENIED => "Request denied",
        INTERNAL_ERROR => "Internal error",
        INVALID_ARGUMENTS => "Invalid arguments",
        RESOURCES_EXCEEDED => "Resources exceeded",
        PERMISSION_DENIED => "Permission denied",
        INVALID_CONFIGURATION => "Invalid configuration",
        INVALID_PATH_SYNTAX => "Invalid path syntax",
        PARAMETER_ACTION_FAILED => "Parameter action failed",
        UNSUPPORTED_PARAMETER => "Unsupported parameter",
        INVALID_TYPE => "Invalid type",
        INVALID_VALUE => "Invalid value",
        NOT_WRITABLE => "Attempt to update non-writeable parameter",
        VALUE_CONFLICT => "Value conflict",
        OPERATION_ERROR => "Operation error",
        OBJECT_DOES_NOT_EXIST => "Object does not exist",
        OBJECT_NOT_CREATED => "Object could not be created",
        NOT_A_TABLE => "Object is not a table",
        NOT_CREATABLE => "Attempt to create non-creatable object",
        OBJECT_NOT_UPDATED => "Object could not be updated",
        REQUIRED_PARAMETER_FAILED => "Required parameter failed",
        COMMAND_FAILURE => "Command failure",
        COMMAND_CANCELED => "Command canceled",
        DELETE_FAILURE => "Delete failure",
        DUPLICATE_KEY => "Object exists with duplicate key",
        INVALID_PATH => "Invalid path",
        INVALID_COMMAND_ARGUMENTS => "Invalid command arguments",
        RECORD_NOT_PARSED => "Record could not be parsed",
        SECURE_SESSION_REQUIRED => "Secure session required",
        SECURE_SESSION_NOT_SUPPORTED => "Secure session not supported",
        SEGMENTATION_NOT_SUPPORTED => "Segmentation and reassembly not supported",
        INVALID_RECORD_VALUE => "Invalid record value",
        7033 | 7034 | 7035 | 7036 | 7223 | 7225 | 7226 | 7227 | 7229 | 7230 => {
            "Software module fault"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_code() {
        let e = UspError::new(INVALID_PATH, "Device.Nope. does not exist");
        assert_eq!(
            e.to_string(),
            "7026 (Invalid path): Device.Nope. does not exist"
        );
    }
}
