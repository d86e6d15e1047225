//! The agent's side of a VMM's control socket (vmm/src/control.rs), for the balloon: one
//! request line, one answer line, within a deadline. The path must be a socket itself (a link
//! is refused), the connect never waits (a VMM whose backlog is full is an error, not a hang),
//! the answer is read into a bounded buffer with the deadline on every read, and anything but
//! the expected JSON is an error naming what came.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub use crate::model::BalloonFigures;

/// The longest answer read: a status line is a few hundred bytes.
pub const MAX_ANSWER: usize = 4096;

/// Reads the balloon's figures (`status`). Ok(None): the VM has no balloon.
pub fn status(socket: &Path, timeout: Duration) -> io::Result<Option<BalloonFigures>> {
    let v = exchange(socket, br#"{"cmd":"status"}"#, timeout)?;
    if v.get("balloon").is_some_and(|b| b.is_null()) {
        return Ok(None);
    }
    figures(&v["balloon"]).map(Some)
}

/// Sets the balloon's target (`balloon`); answers the figures after it.
pub fn set_target(socket: &Path, target_mib: u64, timeout: Duration) -> io::Result<BalloonFigures> {
    let req = format!(r#"{{"cmd":"balloon","target_mib":{target_mib}}}"#);
    figures(&exchange(socket, req.as_bytes(), timeout)?)
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn figures(v: &serde_json::Value) -> io::Result<BalloonFigures> {
    serde_json::from_value(v.clone())
        .map_err(|e| bad(format!("no balloon figures in the answer: {e}")))
}

/// Sends one request line and reads one answer line, `{"ok":true,...}`, within `timeout`.
fn exchange(socket: &Path, request: &[u8], timeout: Duration) -> io::Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    let md = std::fs::symlink_metadata(socket)?;
    if !md.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a socket (a link or a file: refused)",
                socket.display()
            ),
        ));
    }
    let mut s = connect_now(socket)?;
    s.set_nonblocking(false)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer within the deadline"))
    };
    s.set_write_timeout(Some(left()?))?;
    let mut line = request.to_vec();
    line.push(b'\n');
    s.write_all(&line)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let end = loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            break nl;
        }
        if buf.len() > MAX_ANSWER {
            return Err(bad(format!("answer longer than {MAX_ANSWER} bytes")));
        }
        s.set_read_timeout(Some(left()?))?;
        match s.read(&mut chunk) {
            Ok(0) => return Err(bad("closed without a whole answer line".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer within the deadline",
                ))
            }
            Err(e) => return Err(e),
        }
    };
    let text = &buf[..end];
    let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
        let shown = String::from_utf8_lossy(&text[..text.len().min(80)]).into_owned();
        bad(format!("not a JSON answer ({e}): {shown:?}"))
    })?;
    if v["ok"] != true {
        let why = v["error"].as_str().unwrap_or("no reason given");
        return Err(io::Error::other(format!(
            "the VMM refused: {}",
            why.chars().take(200).collect::<String>()
        )));
    }
    Ok(v)
}

/// Connects without waiting: a nonblocking connect on a Unix socket either succeeds at once
/// or fails (EAGAIN when the listener's backlog is full), where a blocking one could wait for
/// a hung VMM forever.
fn connect_now(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not usable as a socket address", path.display()),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    // SAFETY: socket(2) takes no pointers; the descriptor is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid, initialised sockaddr_un of `len` bytes that outlives the call.
    let rc = unsafe { libc::connect(fd, std::ptr::addr_of!(addr).cast(), len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: the VMM is not accepting connections", path.display()),
            ));
        }
        return Err(e);
    }
    Ok(UnixStream::from(owned))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
