//! USP error codes (TR-369, "Error Codes"). 7000-7099 are for Msgs, 7100-7199 for Records;
//! 7200-7299 belong to the data model (TR-181 `Device.SoftwareModules` uses 7220-7230).

/// A USP error: a code and a human-readable message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UspError {
    /// The error code: one of the constants below, or a data model code (7200-7299).
    pub code: u32,
    /// What was wrong, for a human; goes into `err_msg`.
    pub message: String,
}

impl UspError {
    /// An error with this code and message.
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

// TR-369's Msg (7000-7027) and Record (7100-7104) codes; `name` gives their standard names.

/// 7000 Message failed: the Msg could not be processed, no more specific code (`err_msg` says why).
pub const MESSAGE_FAILED: u32 = 7000;
/// 7001 Message not supported: the receiving endpoint does not understand this Msg type.
pub const MESSAGE_NOT_SUPPORTED: u32 = 7001;
/// 7002 Request denied (no reason specified): the endpoint cannot or will not process the Msg.
pub const REQUEST_DENIED: u32 = 7002;
/// 7003 Internal error: the Msg failed for internal hardware or software reasons.
pub const INTERNAL_ERROR: u32 = 7003;
/// 7004 Invalid arguments: the Msg carries invalid values.
pub const INVALID_ARGUMENTS: u32 = 7004;
/// 7005 Resources exceeded: memory or processing limits of the receiving endpoint.
pub const RESOURCES_EXCEEDED: u32 = 7005;
/// 7006 Permission denied: the sender is not authorized to use this Msg.
pub const PERMISSION_DENIED: u32 = 7006;
/// 7007 Invalid configuration: processing the Msg would leave the endpoint unusable.
pub const INVALID_CONFIGURATION: u32 = 7007;
/// 7008 Invalid path syntax: a path in the Msg is not well-formed.
pub const INVALID_PATH_SYNTAX: u32 = 7008;
/// 7009 Parameter action failed: a parameter failed to update, for a reason in `err_msg`.
pub const PARAMETER_ACTION_FAILED: u32 = 7009;
/// 7010 Unsupported parameter: a ParamError / ParameterError path matched no instantiated
/// parameter.
pub const UNSUPPORTED_PARAMETER: u32 = 7010;
/// 7011 Invalid type: the value is not of the parameter's data type.
pub const INVALID_TYPE: u32 = 7011;
/// 7012 Invalid value: the value is outside what the parameter accepts.
pub const INVALID_VALUE: u32 = 7012;
/// 7013 Attempt to update non-writeable parameter: the parameter is read-only.
pub const NOT_WRITABLE: u32 = 7013;
/// 7014 Value conflict: the value would make the configuration invalid given other parameters.
pub const VALUE_CONFLICT: u32 = 7014;
/// 7015 Operation error: creating, updating or deleting an object failed (`err_msg` says why).
pub const OPERATION_ERROR: u32 = 7015;
/// 7016 Object does not exist: the addressed object instance is not there.
pub const OBJECT_DOES_NOT_EXIST: u32 = 7016;
/// 7017 Object could not be created: Add failed to create an instance of the table.
pub const OBJECT_NOT_CREATED: u32 = 7017;
/// 7018 Object is not a table: the path names a single-instance object where a table is needed.
pub const NOT_A_TABLE: u32 = 7018;
/// 7019 Attempt to create non-creatable object: the table does not allow Add.
pub const NOT_CREATABLE: u32 = 7019;
/// 7020 Object could not be updated: a Set failed on this object.
pub const OBJECT_NOT_UPDATED: u32 = 7020;
/// 7021 Required parameter failed: a parameter marked `required` failed, so its object failed
/// (the parameters are in ParameterError).
pub const REQUIRED_PARAMETER_FAILED: u32 = 7021;
/// 7022 Command failure: a command started by Operate failed (`err_msg` says why).
pub const COMMAND_FAILURE: u32 = 7022;
/// 7023 Command canceled: an asynchronous command was canceled (`Cancel()`) before it completed.
pub const COMMAND_CANCELED: u32 = 7023;
/// 7024 Delete failure: the object instance could not be deleted.
pub const DELETE_FAILURE: u32 = 7024;
/// 7025 Object exists with duplicate key: Add would create an instance whose unique keys are taken.
pub const DUPLICATE_KEY: u32 = 7025;
/// 7026 Invalid path: the path matches nothing in the agent's supported data model.
pub const INVALID_PATH: u32 = 7026;
/// 7027 Invalid command arguments: Operate named invalid or unknown input arguments.
pub const INVALID_COMMAND_ARGUMENTS: u32 = 7027;
/// 7100 Record could not be parsed: the received Record is not a valid `usp_record.Record`.
pub const RECORD_NOT_PARSED: u32 = 7100;
/// 7101 Secure session required: the Record needs a USP layer secure session context.
pub const SECURE_SESSION_REQUIRED: u32 = 7101;
/// 7102 Secure session not supported: the receiver does not do USP layer secure sessions.
pub const SECURE_SESSION_NOT_SUPPORTED: u32 = 7102;
/// 7103 Segmentation and reassembly not supported by the receiving endpoint.
pub const SEGMENTATION_NOT_SUPPORTED: u32 = 7103;
/// 7104 Invalid record value: at least one Record field has an invalid value.
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
