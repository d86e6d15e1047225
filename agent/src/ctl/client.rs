//! Client side of the daemon socket: one request, progress lines, one final reply.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::api::{Progress, ReplyLine, Request, MAX_REPLY_BYTES};
use crate::fault::{Fault, FaultCode};

/// Sends `req` and waits for the final line; `on_progress` sees each progress line.
/// Outer Err: the daemon could not be reached or broke the protocol.
pub fn call(
    socket: &Path,
    req: &Request,
    on_progress: &mut dyn FnMut(&Progress),
) -> io::Result<Result<serde_json::Value, Fault>> {
    let mut stream = UnixStream::connect(socket)?;
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut buf = Vec::new();
        (&mut reader)
            .take(MAX_REPLY_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection without a reply",
            ));
        }
        if buf.len() > MAX_REPLY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply too large",
            ));
        }
        let reply: ReplyLine = serde_json::from_slice(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {e}")))?;
        match reply {
            ReplyLine::Progress { progress } => on_progress(&progress),
            ReplyLine::Done {
                ok: true, result, ..
            } => return Ok(Ok(result.unwrap_or(serde_json::Value::Null))),
            ReplyLine::Done { fault, .. } => {
                return Ok(Err(fault.unwrap_or_else(|| {
                    Fault::new(
                        FaultCode::Internal,
                        "the daemon reported a failure without a fault",
                    )
                })))
            }
        }
    }
}
