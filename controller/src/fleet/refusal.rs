//! Why an operator's request (a command or an API call) was not carried out, by kind: the
//! command line prints the message, the API answers with the status of its kind.

/// Why an operator's request was not carried out; the API's status follows the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request is wrong (HTTP 400).
    Invalid(String),
    /// What it names does not exist (404).
    NotFound(String),
    /// The state of what it names does not allow it (409).
    Conflict(String),
    /// The database failed (500).
    Failed(String),
}

impl Refusal {
    /// Its message.
    pub fn message(&self) -> &str {
        match self {
            Refusal::Invalid(m)
            | Refusal::NotFound(m)
            | Refusal::Conflict(m)
            | Refusal::Failed(m) => m,
        }
    }
}

impl From<String> for Refusal {
    fn from(m: String) -> Refusal {
        Refusal::Failed(m)
    }
}
