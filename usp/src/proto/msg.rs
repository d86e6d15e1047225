//! `usp` package of `usp-msg-1-4.proto`: Msg, Header, Body and every request and response.
//! Field numbers, oneof tags and enum values are the schema's; see the parent module's doc.

use std::collections::BTreeMap;

// Each type says which message of usp-msg-1-4.proto it is and what it is for. Its fields and
// variants are that .proto's, one for one, and mean what TR-369 says they mean: a doc line each
// would restate the spec, so the types whose fields or variants have nothing of ours to add carry
// `#[allow(missing_docs)]` (the type's own doc stays; fields with something to add have docs).

/// `usp.Msg`: one USP message, a header and a body.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(message, optional, tag = "1")]
    pub header: Option<Header>,
    #[prost(message, optional, tag = "2")]
    pub body: Option<Body>,
}

/// `usp.Header`: the Msg ID (a response carries its request's) and the Msg type.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub msg_id: String,
    #[prost(enumeration = "header::MsgType", tag = "2")]
    pub msg_type: i32,
}

/// Nested types of [`Header`].
pub mod header {
    /// `Header.MsgType`: the Msg type; it must agree with the body.
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MsgType {
        Error = 0,
        Get = 1,
        GetResp = 2,
        Notify = 3,
        Set = 4,
        SetResp = 5,
        Operate = 6,
        OperateResp = 7,
        Add = 8,
        AddResp = 9,
        Delete = 10,
        DeleteResp = 11,
        GetSupportedDm = 12,
        GetSupportedDmResp = 13,
        GetInstances = 14,
        GetInstancesResp = 15,
        NotifyResp = 16,
        GetSupportedProto = 17,
        GetSupportedProtoResp = 18,
        Register = 19,
        RegisterResp = 20,
        Deregister = 21,
        DeregisterResp = 22,
    }
}

/// `usp.Body`: a request, a response or an error.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Body {
    #[prost(oneof = "body::MsgBody", tags = "1, 2, 3")]
    pub msg_body: Option<body::MsgBody>,
}

/// Nested types of [`Body`].
pub mod body {
    /// `Body.msg_body`: which of the three the body is.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum MsgBody {
        #[prost(message, tag = "1")]
        Request(super::Request),
        #[prost(message, tag = "2")]
        Response(super::Response),
        #[prost(message, tag = "3")]
        Error(super::Error),
    }
}

/// `usp.Request`: a request: from a controller, or a Notify from an agent, or a Register from a
/// USP Service.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(oneof = "request::ReqType", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub req_type: Option<request::ReqType>,
}

/// Nested types of [`Request`].
pub mod request {
    /// `Request.req_type`: which request.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ReqType {
        #[prost(message, tag = "1")]
        Get(super::Get),
        #[prost(message, tag = "2")]
        GetSupportedDm(super::GetSupportedDm),
        #[prost(message, tag = "3")]
        GetInstances(super::GetInstances),
        #[prost(message, tag = "4")]
        Set(super::Set),
        #[prost(message, tag = "5")]
        Add(super::Add),
        #[prost(message, tag = "6")]
        Delete(super::Delete),
        #[prost(message, tag = "7")]
        Operate(super::Operate),
        #[prost(message, tag = "8")]
        Notify(super::Notify),
        #[prost(message, tag = "9")]
        GetSupportedProtocol(super::GetSupportedProtocol),
        #[prost(message, tag = "10")]
        Register(super::Register),
        #[prost(message, tag = "11")]
        Deregister(super::Deregister),
    }
}

/// `usp.Response`: the answer to a request that did not fail as a whole.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(
        oneof = "response::RespType",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
    )]
    pub resp_type: Option<response::RespType>,
}

/// Nested types of [`Response`].
pub mod response {
    /// `Response.resp_type`: which response; it matches the request.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum RespType {
        #[prost(message, tag = "1")]
        GetResp(super::GetResp),
        #[prost(message, tag = "2")]
        GetSupportedDmResp(super::GetSupportedDmResp),
        #[prost(message, tag = "3")]
        GetInstancesResp(super::GetInstancesResp),
        #[prost(message, tag = "4")]
        SetResp(super::SetResp),
        #[prost(message, tag = "5")]
        AddResp(super::AddResp),
        #[prost(message, tag = "6")]
        DeleteResp(super::DeleteResp),
        #[prost(message, tag = "7")]
        OperateResp(super::OperateResp),
        #[prost(message, tag = "8")]
        NotifyResp(super::NotifyResp),
        #[prost(message, tag = "9")]
        GetSupportedProtocolResp(super::GetSupportedProtocolResp),
        #[prost(message, tag = "10")]
        RegisterResp(super::RegisterResp),
        #[prost(message, tag = "11")]
        DeregisterResp(super::DeregisterResp),
    }
}

/// `usp.Error`: the answer to a request that failed as a whole: a code, a message and the
/// parameters that failed.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    #[prost(fixed32, tag = "1")]
    pub err_code: u32,
    #[prost(string, tag = "2")]
    pub err_msg: String,
    #[prost(message, repeated, tag = "3")]
    pub param_errs: Vec<error::ParamError>,
}

/// Nested types of [`Error`].
pub mod error {
    /// `Error.ParamError`: one parameter that failed, and why.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParamError {
        #[prost(string, tag = "1")]
        pub param_path: String,
        #[prost(fixed32, tag = "2")]
        pub err_code: u32,
        #[prost(string, tag = "3")]
        pub err_msg: String,
    }
}

// ------------------------------------------------------------------------------- Get

/// `usp.Get`: read the parameters under the given paths, down to `max_depth`.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Get {
    #[prost(string, repeated, tag = "1")]
    pub param_paths: Vec<String>,
    /// 0 means "no limit".
    #[prost(fixed32, tag = "2")]
    pub max_depth: u32,
}

/// `usp.GetResp`: the answer to Get, one result per requested path.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResp {
    #[prost(message, repeated, tag = "1")]
    pub req_path_results: Vec<get_resp::RequestedPathResult>,
}

/// Nested types of [`GetResp`].
pub mod get_resp {
    use std::collections::BTreeMap;

    /// `GetResp.RequestedPathResult`: one requested path: an error, or the objects it resolved to.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestedPathResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(fixed32, tag = "2")]
        pub err_code: u32,
        #[prost(string, tag = "3")]
        pub err_msg: String,
        #[prost(message, repeated, tag = "4")]
        pub resolved_path_results: Vec<ResolvedPathResult>,
    }

    /// `GetResp.ResolvedPathResult`: one object a requested path resolved to, with its parameters
    /// (relative name to value).
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResolvedPathResult {
        #[prost(string, tag = "1")]
        pub resolved_path: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub result_params: BTreeMap<String, String>,
    }
}

// -------------------------------------------------------------------- GetSupportedDM

/// `usp.GetSupportedDM`: ask which objects, parameters, commands and events the agent's data model
/// supports under the given paths.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedDm {
    #[prost(string, repeated, tag = "1")]
    pub obj_paths: Vec<String>,
    #[prost(bool, tag = "2")]
    pub first_level_only: bool,
    #[prost(bool, tag = "3")]
    pub return_commands: bool,
    #[prost(bool, tag = "4")]
    pub return_events: bool,
    #[prost(bool, tag = "5")]
    pub return_params: bool,
    #[prost(bool, tag = "6")]
    pub return_unique_key_sets: bool,
}

/// `usp.GetSupportedDMResp`: the answer to GetSupportedDM, one result per requested path.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedDmResp {
    #[prost(message, repeated, tag = "1")]
    pub req_obj_results: Vec<get_supported_dm_resp::RequestedObjectResult>,
}

/// Nested types of [`GetSupportedDmResp`].
pub mod get_supported_dm_resp {
    /// `GetSupportedDMResp.RequestedObjectResult`: one requested path: an error, or the supported
    /// objects under it.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestedObjectResult {
        #[prost(string, tag = "1")]
        pub req_obj_path: String,
        #[prost(fixed32, tag = "2")]
        pub err_code: u32,
        #[prost(string, tag = "3")]
        pub err_msg: String,
        #[prost(string, tag = "4")]
        pub data_model_inst_uri: String,
        #[prost(message, repeated, tag = "5")]
        pub supported_objs: Vec<SupportedObjectResult>,
    }

    /// `GetSupportedDMResp.SupportedObjectResult`: one supported object (`{i}` path) with its
    /// access, parameters, commands, events and unique keys.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SupportedObjectResult {
        #[prost(string, tag = "1")]
        pub supported_obj_path: String,
        #[prost(enumeration = "ObjAccessType", tag = "2")]
        pub access: i32,
        #[prost(bool, tag = "3")]
        pub is_multi_instance: bool,
        #[prost(message, repeated, tag = "4")]
        pub supported_commands: Vec<SupportedCommandResult>,
        #[prost(message, repeated, tag = "5")]
        pub supported_events: Vec<SupportedEventResult>,
        #[prost(message, repeated, tag = "6")]
        pub supported_params: Vec<SupportedParamResult>,
        #[prost(string, repeated, tag = "7")]
        pub divergent_paths: Vec<String>,
        #[prost(message, repeated, tag = "8")]
        pub unique_key_sets: Vec<SupportedUniqueKeySet>,
    }

    /// `GetSupportedDMResp.SupportedParamResult`: one supported parameter: its access, type and
    /// whether value changes are reported.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SupportedParamResult {
        #[prost(string, tag = "1")]
        pub param_name: String,
        #[prost(enumeration = "ParamAccessType", tag = "2")]
        pub access: i32,
        #[prost(enumeration = "ParamValueType", tag = "3")]
        pub value_type: i32,
        #[prost(enumeration = "ValueChangeType", tag = "4")]
        pub value_change: i32,
    }

    /// `GetSupportedDMResp.SupportedCommandResult`: one supported command: its arguments and
    /// whether it runs synchronously.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SupportedCommandResult {
        #[prost(string, tag = "1")]
        pub command_name: String,
        #[prost(string, repeated, tag = "2")]
        pub input_arg_names: Vec<String>,
        #[prost(string, repeated, tag = "3")]
        pub output_arg_names: Vec<String>,
        #[prost(enumeration = "CmdType", tag = "4")]
        pub command_type: i32,
    }

    /// `GetSupportedDMResp.SupportedEventResult`: one supported event and its arguments.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SupportedEventResult {
        #[prost(string, tag = "1")]
        pub event_name: String,
        #[prost(string, repeated, tag = "2")]
        pub arg_names: Vec<String>,
    }

    /// `GetSupportedDMResp.SupportedUniqueKeySet` (USP 1.4): parameters that together identify an
    /// instance of a table.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SupportedUniqueKeySet {
        #[prost(string, repeated, tag = "1")]
        pub key_names: Vec<String>,
    }

    /// `GetSupportedDMResp.ParamAccessType`: whether a parameter can be read, written or both.
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ParamAccessType {
        ParamReadOnly = 0,
        ParamReadWrite = 1,
        ParamWriteOnly = 2,
    }

    /// `GetSupportedDMResp.ObjAccessType`: whether a table's instances can be added, deleted, both
    /// or neither.
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ObjAccessType {
        ObjReadOnly = 0,
        ObjAddDelete = 1,
        ObjAddOnly = 2,
        ObjDeleteOnly = 3,
    }

    /// `GetSupportedDMResp.ParamValueType`: a parameter's data type (the TR-106 types).
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ParamValueType {
        ParamUnknown = 0,
        ParamBase64 = 1,
        ParamBoolean = 2,
        ParamDateTime = 3,
        ParamDecimal = 4,
        ParamHexBinary = 5,
        ParamInt = 6,
        ParamLong = 7,
        ParamString = 8,
        ParamUnsignedInt = 9,
        ParamUnsignedLong = 10,
    }

    /// `GetSupportedDMResp.ValueChangeType`: whether a parameter's changes can be subscribed to
    /// (ValueChange).
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ValueChangeType {
        ValueChangeUnknown = 0,
        ValueChangeAllowed = 1,
        ValueChangeWillIgnore = 2,
    }

    /// `GetSupportedDMResp.CmdType`: whether a command runs synchronously or asynchronously.
    #[allow(missing_docs)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum CmdType {
        CmdUnknown = 0,
        CmdSync = 1,
        CmdAsync = 2,
    }
}

// ---------------------------------------------------------------------- GetInstances

/// `usp.GetInstances`: list the instances of the given objects (and of their sub-tables unless
/// `first_level_only`).
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInstances {
    #[prost(string, repeated, tag = "1")]
    pub obj_paths: Vec<String>,
    #[prost(bool, tag = "2")]
    pub first_level_only: bool,
}

/// `usp.GetInstancesResp`: the answer to GetInstances, one result per requested path.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInstancesResp {
    #[prost(message, repeated, tag = "1")]
    pub req_path_results: Vec<get_instances_resp::RequestedPathResult>,
}

/// Nested types of [`GetInstancesResp`].
pub mod get_instances_resp {
    use std::collections::BTreeMap;

    /// `GetInstancesResp.RequestedPathResult`: one requested path: an error, or its current
    /// instances.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RequestedPathResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(fixed32, tag = "2")]
        pub err_code: u32,
        #[prost(string, tag = "3")]
        pub err_msg: String,
        #[prost(message, repeated, tag = "4")]
        pub curr_insts: Vec<CurrInstance>,
    }

    /// `GetInstancesResp.CurrInstance`: one instance: its path and its unique keys.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CurrInstance {
        #[prost(string, tag = "1")]
        pub instantiated_obj_path: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub unique_keys: BTreeMap<String, String>,
    }
}

// -------------------------------------------------------------- GetSupportedProtocol

/// `usp.GetSupportedProtocol`: ask which USP versions the agent speaks, naming the controller's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedProtocol {
    /// Comma-separated versions, e.g. "1.3,1.4".
    #[prost(string, tag = "1")]
    pub controller_supported_protocol_versions: String,
}

/// `usp.GetSupportedProtocolResp`: the USP versions the agent speaks.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedProtocolResp {
    /// Comma-separated versions, e.g. "1.3,1.4".
    #[prost(string, tag = "1")]
    pub agent_supported_protocol_versions: String,
}

// ------------------------------------------------------------------------------- Add

/// `usp.Add`: create instances of tables, with their first parameter values.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Add {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(message, repeated, tag = "2")]
    pub create_objs: Vec<add::CreateObject>,
}

/// Nested types of [`Add`].
pub mod add {
    /// `Add.CreateObject`: one table to add an instance to, and the new instance's parameters.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateObject {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_settings: Vec<CreateParamSetting>,
    }

    /// `Add.CreateParamSetting`: one parameter of a new instance; if `required` fails, the object
    /// fails.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateParamSetting {
        #[prost(string, tag = "1")]
        pub param: String,
        #[prost(string, tag = "2")]
        pub value: String,
        #[prost(bool, tag = "3")]
        pub required: bool,
    }
}

/// `usp.AddResp`: the answer to Add, one result per object to create.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddResp {
    #[prost(message, repeated, tag = "1")]
    pub created_obj_results: Vec<add_resp::CreatedObjectResult>,
}

/// Nested types of [`AddResp`].
pub mod add_resp {
    /// `AddResp.CreatedObjectResult`: one object to create and the outcome.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreatedObjectResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<created_object_result::OperationStatus>,
    }

    /// Nested types of [`CreatedObjectResult`].
    pub mod created_object_result {
        /// `AddResp.CreatedObjectResult.OperationStatus`: whether the object was created.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            use std::collections::BTreeMap;

            /// `AddResp.CreatedObjectResult.OperationStatus.oper_status`: failure or success.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `AddResp.CreatedObjectResult.OperationStatus.OperationFailure`: the object was not
            /// created, and why.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `AddResp.CreatedObjectResult.OperationStatus.OperationSuccess`: the new instance's
            /// path and unique keys, and the optional parameters that could not be set.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(string, tag = "1")]
                pub instantiated_path: String,
                #[prost(message, repeated, tag = "2")]
                pub param_errs: Vec<super::super::ParameterError>,
                #[prost(btree_map = "string, string", tag = "3")]
                pub unique_keys: BTreeMap<String, String>,
            }
        }
    }

    /// `AddResp.ParameterError`: an optional parameter of a created instance that could not be set,
    /// and why.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParameterError {
        #[prost(string, tag = "1")]
        pub param: String,
        #[prost(fixed32, tag = "2")]
        pub err_code: u32,
        #[prost(string, tag = "3")]
        pub err_msg: String,
    }
}

// ---------------------------------------------------------------------------- Delete

/// `usp.Delete`: delete the object instances the paths match.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delete {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(string, repeated, tag = "2")]
    pub obj_paths: Vec<String>,
}

/// `usp.DeleteResp`: the answer to Delete, one result per requested path.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteResp {
    #[prost(message, repeated, tag = "1")]
    pub deleted_obj_results: Vec<delete_resp::DeletedObjectResult>,
}

/// Nested types of [`DeleteResp`].
pub mod delete_resp {
    /// `DeleteResp.DeletedObjectResult`: one requested path and the outcome.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeletedObjectResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<deleted_object_result::OperationStatus>,
    }

    /// Nested types of [`DeletedObjectResult`].
    pub mod deleted_object_result {
        /// `DeleteResp.DeletedObjectResult.OperationStatus`: whether the instances were deleted.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `DeleteResp.DeletedObjectResult.OperationStatus.oper_status`: failure or success.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `DeleteResp.DeletedObjectResult.OperationStatus.OperationFailure`: nothing was
            /// deleted, and why.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `DeleteResp.DeletedObjectResult.OperationStatus.OperationSuccess`: the instances
            /// deleted, and those matched but not deleted.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(string, repeated, tag = "1")]
                pub affected_paths: Vec<String>,
                #[prost(message, repeated, tag = "2")]
                pub unaffected_path_errs: Vec<super::super::UnaffectedPathError>,
            }
        }
    }

    /// `DeleteResp.UnaffectedPathError`: an instance that could not be deleted, and why.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UnaffectedPathError {
        #[prost(string, tag = "1")]
        pub unaffected_path: String,
        #[prost(fixed32, tag = "2")]
        pub err_code: u32,
        #[prost(string, tag = "3")]
        pub err_msg: String,
    }
}

// ------------------------------------------------------------------------------- Set

/// `usp.Set`: change parameters of existing objects.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Set {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(message, repeated, tag = "2")]
    pub update_objs: Vec<set::UpdateObject>,
}

/// Nested types of [`Set`].
pub mod set {
    /// `Set.UpdateObject`: one object path (it may match several instances) and the parameters to
    /// set.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateObject {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_settings: Vec<UpdateParamSetting>,
    }

    /// `Set.UpdateParamSetting`: one parameter to set; if `required` fails, the object fails.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateParamSetting {
        #[prost(string, tag = "1")]
        pub param: String,
        #[prost(string, tag = "2")]
        pub value: String,
        #[prost(bool, tag = "3")]
        pub required: bool,
    }
}

/// `usp.SetResp`: the answer to Set, one result per object to update.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetResp {
    #[prost(message, repeated, tag = "1")]
    pub updated_obj_results: Vec<set_resp::UpdatedObjectResult>,
}

/// Nested types of [`SetResp`].
pub mod set_resp {
    use std::collections::BTreeMap;

    /// `SetResp.UpdatedObjectResult`: one requested object path and the outcome.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdatedObjectResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<updated_object_result::OperationStatus>,
    }

    /// Nested types of [`UpdatedObjectResult`].
    pub mod updated_object_result {
        /// `SetResp.UpdatedObjectResult.OperationStatus`: whether the instances were updated.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `SetResp.UpdatedObjectResult.OperationStatus.oper_status`: failure or success.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `SetResp.UpdatedObjectResult.OperationStatus.OperationFailure`: the object was not
            /// updated: why, and the instances that failed.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
                #[prost(message, repeated, tag = "3")]
                pub updated_inst_failures: Vec<super::super::UpdatedInstanceFailure>,
            }

            /// `SetResp.UpdatedObjectResult.OperationStatus.OperationSuccess`: the instances
            /// updated.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(message, repeated, tag = "1")]
                pub updated_inst_results: Vec<super::super::UpdatedInstanceResult>,
            }
        }
    }

    /// `SetResp.UpdatedInstanceFailure`: one instance that failed to update, with its parameter
    /// errors.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdatedInstanceFailure {
        #[prost(string, tag = "1")]
        pub affected_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_errs: Vec<ParameterError>,
    }

    /// `SetResp.UpdatedInstanceResult`: one updated instance: the parameters set, and the optional
    /// ones that failed.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdatedInstanceResult {
        #[prost(string, tag = "1")]
        pub affected_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_errs: Vec<ParameterError>,
        #[prost(btree_map = "string, string", tag = "3")]
        pub updated_params: BTreeMap<String, String>,
    }

    /// `SetResp.ParameterError`: one parameter that could not be set, and why.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParameterError {
        #[prost(string, tag = "1")]
        pub param: String,
        #[prost(fixed32, tag = "2")]
        pub err_code: u32,
        #[prost(string, tag = "3")]
        pub err_msg: String,
    }
}

// --------------------------------------------------------------------------- Operate

/// `usp.Operate`: run a command (`Name()`) with input arguments; `command_key` comes back in
/// OperationComplete.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operate {
    #[prost(string, tag = "1")]
    pub command: String,
    #[prost(string, tag = "2")]
    pub command_key: String,
    #[prost(bool, tag = "3")]
    pub send_resp: bool,
    #[prost(btree_map = "string, string", tag = "4")]
    pub input_args: BTreeMap<String, String>,
}

/// `usp.OperateResp`: the answer to Operate, one result per command instance the path matched.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperateResp {
    #[prost(message, repeated, tag = "1")]
    pub operation_results: Vec<operate_resp::OperationResult>,
}

/// Nested types of [`OperateResp`].
pub mod operate_resp {
    /// `OperateResp.OperationResult`: one command run and its outcome.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperationResult {
        #[prost(string, tag = "1")]
        pub executed_command: String,
        #[prost(oneof = "operation_result::OperationResp", tags = "2, 3, 4")]
        pub operation_resp: Option<operation_result::OperationResp>,
    }

    /// Nested types of [`OperationResult`].
    pub mod operation_result {
        use std::collections::BTreeMap;

        /// `OperateResp.OperationResult.operation_resp`: an asynchronous command answers with the
        /// path of its `Request` object, a synchronous one with its output or its failure.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum OperationResp {
            #[prost(string, tag = "2")]
            ReqObjPath(String),
            #[prost(message, tag = "3")]
            ReqOutputArgs(OutputArgs),
            #[prost(message, tag = "4")]
            CmdFailure(CommandFailure),
        }

        /// `OperateResp.OperationResult.OutputArgs`: a synchronous command's output arguments.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OutputArgs {
            #[prost(btree_map = "string, string", tag = "1")]
            pub output_args: BTreeMap<String, String>,
        }

        /// `OperateResp.OperationResult.CommandFailure`: why a synchronous command failed.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct CommandFailure {
            #[prost(fixed32, tag = "1")]
            pub err_code: u32,
            #[prost(string, tag = "2")]
            pub err_msg: String,
        }
    }
}

// ---------------------------------------------------------------------------- Notify

/// `usp.Notify`: a notification for a subscription (or an on-board request); `send_resp` asks for a
/// NotifyResp.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Notify {
    #[prost(string, tag = "1")]
    pub subscription_id: String,
    #[prost(bool, tag = "2")]
    pub send_resp: bool,
    #[prost(oneof = "notify::Notification", tags = "3, 4, 5, 6, 7, 8")]
    pub notification: Option<notify::Notification>,
}

/// Nested types of [`Notify`].
pub mod notify {
    use std::collections::BTreeMap;

    /// `Notify.notification`: which notification.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Notification {
        #[prost(message, tag = "3")]
        Event(Event),
        #[prost(message, tag = "4")]
        ValueChange(ValueChange),
        #[prost(message, tag = "5")]
        ObjCreation(ObjectCreation),
        #[prost(message, tag = "6")]
        ObjDeletion(ObjectDeletion),
        #[prost(message, tag = "7")]
        OperComplete(OperationComplete),
        #[prost(message, tag = "8")]
        OnBoardReq(OnBoardRequest),
    }

    /// `Notify.Event`: an event (`Name!`) fired, with its arguments.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(string, tag = "2")]
        pub event_name: String,
        #[prost(btree_map = "string, string", tag = "3")]
        pub params: BTreeMap<String, String>,
    }

    /// `Notify.ValueChange`: a subscribed parameter has a new value.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueChange {
        #[prost(string, tag = "1")]
        pub param_path: String,
        #[prost(string, tag = "2")]
        pub param_value: String,
    }

    /// `Notify.ObjectCreation`: an instance was created, with its unique keys.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ObjectCreation {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub unique_keys: BTreeMap<String, String>,
    }

    /// `Notify.ObjectDeletion`: an instance was deleted.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ObjectDeletion {
        #[prost(string, tag = "1")]
        pub obj_path: String,
    }

    /// `Notify.OperationComplete`: the end of an asynchronous command, with its output or its
    /// failure.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperationComplete {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(string, tag = "2")]
        pub command_name: String,
        #[prost(string, tag = "3")]
        pub command_key: String,
        #[prost(oneof = "operation_complete::OperationResp", tags = "4, 5")]
        pub operation_resp: Option<operation_complete::OperationResp>,
    }

    /// Nested types of [`OperationComplete`].
    pub mod operation_complete {
        use std::collections::BTreeMap;

        /// `Notify.OperationComplete.operation_resp`: how the command ended.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum OperationResp {
            #[prost(message, tag = "4")]
            ReqOutputArgs(OutputArgs),
            #[prost(message, tag = "5")]
            CmdFailure(CommandFailure),
        }

        /// `Notify.OperationComplete.OutputArgs`: the command's output arguments.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OutputArgs {
            #[prost(btree_map = "string, string", tag = "1")]
            pub output_args: BTreeMap<String, String>,
        }

        /// `Notify.OperationComplete.CommandFailure`: why the command failed.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct CommandFailure {
            #[prost(fixed32, tag = "1")]
            pub err_code: u32,
            #[prost(string, tag = "2")]
            pub err_msg: String,
        }
    }

    /// `Notify.OnBoardRequest`: an agent asks a controller to on-board it, naming its device (OUI,
    /// product class, serial number) and USP versions.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OnBoardRequest {
        #[prost(string, tag = "1")]
        pub oui: String,
        #[prost(string, tag = "2")]
        pub product_class: String,
        #[prost(string, tag = "3")]
        pub serial_number: String,
        #[prost(string, tag = "4")]
        pub agent_supported_protocol_versions: String,
    }
}

/// `usp.NotifyResp`: acknowledges a Notify that asked for it.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct NotifyResp {
    #[prost(string, tag = "1")]
    pub subscription_id: String,
}

// ------------------------------------------------------------------ Register (1.3)

/// `usp.Register` (USP 1.3): a USP Service registers the data model paths it provides at a USP
/// Broker.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Register {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(message, repeated, tag = "2")]
    pub reg_paths: Vec<register::RegistrationPath>,
}

/// Nested types of [`Register`].
pub mod register {
    /// `Register.RegistrationPath`: one path to register.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RegistrationPath {
        #[prost(string, tag = "1")]
        pub path: String,
    }
}

/// `usp.RegisterResp`: the answer to Register, one result per path.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterResp {
    #[prost(message, repeated, tag = "1")]
    pub registered_path_results: Vec<register_resp::RegisteredPathResult>,
}

/// Nested types of [`RegisterResp`].
pub mod register_resp {
    /// `RegisterResp.RegisteredPathResult`: one requested path and the outcome.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RegisteredPathResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<registered_path_result::OperationStatus>,
    }

    /// Nested types of [`RegisteredPathResult`].
    pub mod registered_path_result {
        /// `RegisterResp.RegisteredPathResult.OperationStatus`: whether the path was registered.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `RegisterResp.RegisteredPathResult.OperationStatus.oper_status`: failure or success.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `RegisterResp.RegisteredPathResult.OperationStatus.OperationFailure`: not
            /// registered, and why.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `RegisterResp.RegisteredPathResult.OperationStatus.OperationSuccess`: the path
            /// registered.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(string, tag = "1")]
                pub registered_path: String,
            }
        }
    }
}

/// `usp.Deregister` (USP 1.3): a USP Service withdraws paths it registered.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct Deregister {
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

/// `usp.DeregisterResp`: the answer to Deregister, one result per path.
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeregisterResp {
    #[prost(message, repeated, tag = "1")]
    pub deregistered_path_results: Vec<deregister_resp::DeregisteredPathResult>,
}

/// Nested types of [`DeregisterResp`].
pub mod deregister_resp {
    /// `DeregisterResp.DeregisteredPathResult`: one requested path and the outcome.
    #[allow(missing_docs)]
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeregisteredPathResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<deregistered_path_result::OperationStatus>,
    }

    /// Nested types of [`DeregisteredPathResult`].
    pub mod deregistered_path_result {
        /// `DeregisterResp.DeregisteredPathResult.OperationStatus`: whether the path was
        /// deregistered.
        #[allow(missing_docs)]
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `DeregisterResp.DeregisteredPathResult.OperationStatus.oper_status`: failure or
            /// success.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `DeregisterResp.DeregisteredPathResult.OperationStatus.OperationFailure`: not
            /// deregistered, and why.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `DeregisterResp.DeregisteredPathResult.OperationStatus.OperationSuccess`: the paths
            /// deregistered.
            #[allow(missing_docs)]
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(string, repeated, tag = "1")]
                pub deregistered_path: Vec<String>,
            }
        }
    }
}
