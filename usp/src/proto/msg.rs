//! `usp` package of `usp-msg-1-4.proto`: Msg, Header, Body and every request and response.
//! Field numbers, oneof tags and enum values are the schema's; see the parent module's doc.

use std::collections::BTreeMap;

/// `usp.Msg`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(message, optional, tag = "1")]
    pub header: Option<Header>,
    #[prost(message, optional, tag = "2")]
    pub body: Option<Body>,
}

/// `usp.Header`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub msg_id: String,
    #[prost(enumeration = "header::MsgType", tag = "2")]
    pub msg_type: i32,
}

/// Nested types of [`Header`].
pub mod header {
    /// `Header.MsgType`.
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

/// `usp.Body`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Body {
    #[prost(oneof = "body::MsgBody", tags = "1, 2, 3")]
    pub msg_body: Option<body::MsgBody>,
}

/// Nested types of [`Body`].
pub mod body {
    /// `Body.msg_body`.
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

/// `usp.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(oneof = "request::ReqType", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11")]
    pub req_type: Option<request::ReqType>,
}

/// Nested types of [`Request`].
pub mod request {
    /// `Request.req_type`.
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

/// `usp.Response`.
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
    /// `Response.resp_type`.
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

/// `usp.Error`.
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
    /// `Error.ParamError`.
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

/// `usp.Get`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Get {
    #[prost(string, repeated, tag = "1")]
    pub param_paths: Vec<String>,
    /// 0 means "no limit".
    #[prost(fixed32, tag = "2")]
    pub max_depth: u32,
}

/// `usp.GetResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResp {
    #[prost(message, repeated, tag = "1")]
    pub req_path_results: Vec<get_resp::RequestedPathResult>,
}

/// Nested types of [`GetResp`].
pub mod get_resp {
    use std::collections::BTreeMap;

    /// `GetResp.RequestedPathResult`.
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

    /// `GetResp.ResolvedPathResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResolvedPathResult {
        #[prost(string, tag = "1")]
        pub resolved_path: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub result_params: BTreeMap<String, String>,
    }
}

// -------------------------------------------------------------------- GetSupportedDM

/// `usp.GetSupportedDM`.
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

/// `usp.GetSupportedDMResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedDmResp {
    #[prost(message, repeated, tag = "1")]
    pub req_obj_results: Vec<get_supported_dm_resp::RequestedObjectResult>,
}

/// Nested types of [`GetSupportedDmResp`].
pub mod get_supported_dm_resp {
    /// `GetSupportedDMResp.RequestedObjectResult`.
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

    /// `GetSupportedDMResp.SupportedObjectResult`.
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

    /// `GetSupportedDMResp.SupportedParamResult`.
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

    /// `GetSupportedDMResp.SupportedCommandResult`.
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

    /// `GetSupportedDMResp.SupportedEventResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SupportedEventResult {
        #[prost(string, tag = "1")]
        pub event_name: String,
        #[prost(string, repeated, tag = "2")]
        pub arg_names: Vec<String>,
    }

    /// `GetSupportedDMResp.SupportedUniqueKeySet` (USP 1.4).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SupportedUniqueKeySet {
        #[prost(string, repeated, tag = "1")]
        pub key_names: Vec<String>,
    }

    /// `GetSupportedDMResp.ParamAccessType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ParamAccessType {
        ParamReadOnly = 0,
        ParamReadWrite = 1,
        ParamWriteOnly = 2,
    }

    /// `GetSupportedDMResp.ObjAccessType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ObjAccessType {
        ObjReadOnly = 0,
        ObjAddDelete = 1,
        ObjAddOnly = 2,
        ObjDeleteOnly = 3,
    }

    /// `GetSupportedDMResp.ParamValueType`.
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

    /// `GetSupportedDMResp.ValueChangeType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum ValueChangeType {
        ValueChangeUnknown = 0,
        ValueChangeAllowed = 1,
        ValueChangeWillIgnore = 2,
    }

    /// `GetSupportedDMResp.CmdType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum CmdType {
        CmdUnknown = 0,
        CmdSync = 1,
        CmdAsync = 2,
    }
}

// ---------------------------------------------------------------------- GetInstances

/// `usp.GetInstances`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInstances {
    #[prost(string, repeated, tag = "1")]
    pub obj_paths: Vec<String>,
    #[prost(bool, tag = "2")]
    pub first_level_only: bool,
}

/// `usp.GetInstancesResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetInstancesResp {
    #[prost(message, repeated, tag = "1")]
    pub req_path_results: Vec<get_instances_resp::RequestedPathResult>,
}

/// Nested types of [`GetInstancesResp`].
pub mod get_instances_resp {
    use std::collections::BTreeMap;

    /// `GetInstancesResp.RequestedPathResult`.
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

    /// `GetInstancesResp.CurrInstance`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CurrInstance {
        #[prost(string, tag = "1")]
        pub instantiated_obj_path: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub unique_keys: BTreeMap<String, String>,
    }
}

// -------------------------------------------------------------- GetSupportedProtocol

/// `usp.GetSupportedProtocol`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedProtocol {
    /// Comma-separated versions, e.g. "1.3,1.4".
    #[prost(string, tag = "1")]
    pub controller_supported_protocol_versions: String,
}

/// `usp.GetSupportedProtocolResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetSupportedProtocolResp {
    #[prost(string, tag = "1")]
    pub agent_supported_protocol_versions: String,
}

// ------------------------------------------------------------------------------- Add

/// `usp.Add`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Add {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(message, repeated, tag = "2")]
    pub create_objs: Vec<add::CreateObject>,
}

/// Nested types of [`Add`].
pub mod add {
    /// `Add.CreateObject`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateObject {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_settings: Vec<CreateParamSetting>,
    }

    /// `Add.CreateParamSetting`.
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

/// `usp.AddResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddResp {
    #[prost(message, repeated, tag = "1")]
    pub created_obj_results: Vec<add_resp::CreatedObjectResult>,
}

/// Nested types of [`AddResp`].
pub mod add_resp {
    /// `AddResp.CreatedObjectResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreatedObjectResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<created_object_result::OperationStatus>,
    }

    /// Nested types of [`CreatedObjectResult`].
    pub mod created_object_result {
        /// `AddResp.CreatedObjectResult.OperationStatus`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            use std::collections::BTreeMap;

            /// `OperationStatus.oper_status`.
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `OperationStatus.OperationFailure`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `OperationStatus.OperationSuccess`.
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

    /// `AddResp.ParameterError`.
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

/// `usp.Delete`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delete {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(string, repeated, tag = "2")]
    pub obj_paths: Vec<String>,
}

/// `usp.DeleteResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteResp {
    #[prost(message, repeated, tag = "1")]
    pub deleted_obj_results: Vec<delete_resp::DeletedObjectResult>,
}

/// Nested types of [`DeleteResp`].
pub mod delete_resp {
    /// `DeleteResp.DeletedObjectResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeletedObjectResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<deleted_object_result::OperationStatus>,
    }

    /// Nested types of [`DeletedObjectResult`].
    pub mod deleted_object_result {
        /// `DeleteResp.DeletedObjectResult.OperationStatus`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `OperationStatus.oper_status`.
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `OperationStatus.OperationFailure`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `OperationStatus.OperationSuccess`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(string, repeated, tag = "1")]
                pub affected_paths: Vec<String>,
                #[prost(message, repeated, tag = "2")]
                pub unaffected_path_errs: Vec<super::super::UnaffectedPathError>,
            }
        }
    }

    /// `DeleteResp.UnaffectedPathError`.
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

/// `usp.Set`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Set {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(message, repeated, tag = "2")]
    pub update_objs: Vec<set::UpdateObject>,
}

/// Nested types of [`Set`].
pub mod set {
    /// `Set.UpdateObject`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdateObject {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_settings: Vec<UpdateParamSetting>,
    }

    /// `Set.UpdateParamSetting`.
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

/// `usp.SetResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetResp {
    #[prost(message, repeated, tag = "1")]
    pub updated_obj_results: Vec<set_resp::UpdatedObjectResult>,
}

/// Nested types of [`SetResp`].
pub mod set_resp {
    use std::collections::BTreeMap;

    /// `SetResp.UpdatedObjectResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdatedObjectResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<updated_object_result::OperationStatus>,
    }

    /// Nested types of [`UpdatedObjectResult`].
    pub mod updated_object_result {
        /// `SetResp.UpdatedObjectResult.OperationStatus`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `OperationStatus.oper_status`.
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `OperationStatus.OperationFailure`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
                #[prost(message, repeated, tag = "3")]
                pub updated_inst_failures: Vec<super::super::UpdatedInstanceFailure>,
            }

            /// `OperationStatus.OperationSuccess`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(message, repeated, tag = "1")]
                pub updated_inst_results: Vec<super::super::UpdatedInstanceResult>,
            }
        }
    }

    /// `SetResp.UpdatedInstanceFailure`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdatedInstanceFailure {
        #[prost(string, tag = "1")]
        pub affected_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_errs: Vec<ParameterError>,
    }

    /// `SetResp.UpdatedInstanceResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct UpdatedInstanceResult {
        #[prost(string, tag = "1")]
        pub affected_path: String,
        #[prost(message, repeated, tag = "2")]
        pub param_errs: Vec<ParameterError>,
        #[prost(btree_map = "string, string", tag = "3")]
        pub updated_params: BTreeMap<String, String>,
    }

    /// `SetResp.ParameterError`.
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

/// `usp.Operate`.
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

/// `usp.OperateResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperateResp {
    #[prost(message, repeated, tag = "1")]
    pub operation_results: Vec<operate_resp::OperationResult>,
}

/// Nested types of [`OperateResp`].
pub mod operate_resp {
    /// `OperateResp.OperationResult`.
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

        /// `OperationResult.operation_resp`: an asynchronous command answers with the path of
        /// its `Request` object, a synchronous one with its output or its failure.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum OperationResp {
            #[prost(string, tag = "2")]
            ReqObjPath(String),
            #[prost(message, tag = "3")]
            ReqOutputArgs(OutputArgs),
            #[prost(message, tag = "4")]
            CmdFailure(CommandFailure),
        }

        /// `OperationResult.OutputArgs`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OutputArgs {
            #[prost(btree_map = "string, string", tag = "1")]
            pub output_args: BTreeMap<String, String>,
        }

        /// `OperationResult.CommandFailure`.
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

/// `usp.Notify`.
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

    /// `Notify.notification`.
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

    /// `Notify.Event`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(string, tag = "2")]
        pub event_name: String,
        #[prost(btree_map = "string, string", tag = "3")]
        pub params: BTreeMap<String, String>,
    }

    /// `Notify.ValueChange`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueChange {
        #[prost(string, tag = "1")]
        pub param_path: String,
        #[prost(string, tag = "2")]
        pub param_value: String,
    }

    /// `Notify.ObjectCreation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ObjectCreation {
        #[prost(string, tag = "1")]
        pub obj_path: String,
        #[prost(btree_map = "string, string", tag = "2")]
        pub unique_keys: BTreeMap<String, String>,
    }

    /// `Notify.ObjectDeletion`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ObjectDeletion {
        #[prost(string, tag = "1")]
        pub obj_path: String,
    }

    /// `Notify.OperationComplete`: the end of an asynchronous command.
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

        /// `OperationComplete.operation_resp`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum OperationResp {
            #[prost(message, tag = "4")]
            ReqOutputArgs(OutputArgs),
            #[prost(message, tag = "5")]
            CmdFailure(CommandFailure),
        }

        /// `OperationComplete.OutputArgs`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OutputArgs {
            #[prost(btree_map = "string, string", tag = "1")]
            pub output_args: BTreeMap<String, String>,
        }

        /// `OperationComplete.CommandFailure`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct CommandFailure {
            #[prost(fixed32, tag = "1")]
            pub err_code: u32,
            #[prost(string, tag = "2")]
            pub err_msg: String,
        }
    }

    /// `Notify.OnBoardRequest`.
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

/// `usp.NotifyResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NotifyResp {
    #[prost(string, tag = "1")]
    pub subscription_id: String,
}

// ------------------------------------------------------------------ Register (1.3)

/// `usp.Register`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Register {
    #[prost(bool, tag = "1")]
    pub allow_partial: bool,
    #[prost(message, repeated, tag = "2")]
    pub reg_paths: Vec<register::RegistrationPath>,
}

/// Nested types of [`Register`].
pub mod register {
    /// `Register.RegistrationPath`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RegistrationPath {
        #[prost(string, tag = "1")]
        pub path: String,
    }
}

/// `usp.RegisterResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterResp {
    #[prost(message, repeated, tag = "1")]
    pub registered_path_results: Vec<register_resp::RegisteredPathResult>,
}

/// Nested types of [`RegisterResp`].
pub mod register_resp {
    /// `RegisterResp.RegisteredPathResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RegisteredPathResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<registered_path_result::OperationStatus>,
    }

    /// Nested types of [`RegisteredPathResult`].
    pub mod registered_path_result {
        /// `RegisterResp.RegisteredPathResult.OperationStatus`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `OperationStatus.oper_status`.
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `OperationStatus.OperationFailure`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `OperationStatus.OperationSuccess`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(string, tag = "1")]
                pub registered_path: String,
            }
        }
    }
}

/// `usp.Deregister`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Deregister {
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

/// `usp.DeregisterResp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeregisterResp {
    #[prost(message, repeated, tag = "1")]
    pub deregistered_path_results: Vec<deregister_resp::DeregisteredPathResult>,
}

/// Nested types of [`DeregisterResp`].
pub mod deregister_resp {
    /// `DeregisterResp.DeregisteredPathResult`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeregisteredPathResult {
        #[prost(string, tag = "1")]
        pub requested_path: String,
        #[prost(message, optional, tag = "2")]
        pub oper_status: Option<deregistered_path_result::OperationStatus>,
    }

    /// Nested types of [`DeregisteredPathResult`].
    pub mod deregistered_path_result {
        /// `DeregisterResp.DeregisteredPathResult.OperationStatus`.
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct OperationStatus {
            #[prost(oneof = "operation_status::OperStatus", tags = "1, 2")]
            pub oper_status: Option<operation_status::OperStatus>,
        }

        /// Nested types of [`OperationStatus`].
        pub mod operation_status {
            /// `OperationStatus.oper_status`.
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum OperStatus {
                #[prost(message, tag = "1")]
                OperFailure(OperationFailure),
                #[prost(message, tag = "2")]
                OperSuccess(OperationSuccess),
            }

            /// `OperationStatus.OperationFailure`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationFailure {
                #[prost(fixed32, tag = "1")]
                pub err_code: u32,
                #[prost(string, tag = "2")]
                pub err_msg: String,
            }

            /// `OperationStatus.OperationSuccess`.
            #[derive(Clone, PartialEq, prost::Message)]
            pub struct OperationSuccess {
                #[prost(string, repeated, tag = "1")]
                pub deregistered_path: Vec<String>,
            }
        }
    }
}
