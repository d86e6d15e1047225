//! `WsError`: a leaf, so that the handshake can return it without importing `ws`, which
//! uses the handshake.

use std::fmt;
use std::io;

/// Why a WebSocket operation failed.
#[derive(Debug)]
pub enum WsError {
    /// The connection (TCP or TLS) failed or ended.
    Io(io::Error),
    /// The opening handshake failed; the text says how.
    Handshake(String),
    /// The peer broke RFC 6455 (or sent what USP does not use); we sent close `code`.
    Protocol {
        /// The close status code we sent.
        code: u16,
        /// What the peer did wrong.
        why: String,
    },
    /// The peer closed the connection with `code` and `reason`.
    Closed {
        /// The peer's close status code (1005 No Status Received when it gave none).
        code: u16,
        /// The peer's close reason (may be empty).
        reason: String,
    },
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Io(e) => write!(f, "WebSocket connection: {e}"),
            WsError::Handshake(why) => write!(f, "WebSocket handshake: {why}"),
            WsError::Protocol { code, why } => {
                write!(f, "WebSocket protocol error (closed with {code}): {why}")
            }
            WsError::Closed { code, reason } => {
                write!(f, "WebSocket closed by the peer ({code}): {reason}")
            }
        }
    }
}

impl std::error::Error for WsError {}

impl From<io::Error> for WsError {
    fn from(e: io::Error) -> Self {
        WsError::Io(e)
    }
}
