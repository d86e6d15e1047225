//! The control socket: a Unix stream socket speaking line-delimited JSON.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"pause"}`, `{"cmd":"resume"}`, `{"cmd":"stop"}` (at
//! once), `{"cmd":"shutdown"}` (the guest's power button, then stop at `shutdown_timeout_ms`;
//! state `shutting-down` until the VM ends), `{"cmd":"balloon","target_mib":N}` (the MiB the
//! guest should hold in its balloon, at most its memory; answers the balloon's figures).
//! Replies (one line each): `{"ok":true,...}` or `{"ok":false,"error":"..."}`. `status` answers
//! `state`, `uptime_ms`, `memory` (`guest_mib`, `rss_kib`), `boot_ready_ms` (null until the
//! guest signalled) and `balloon` (null without one: `target_mib`, `actual_mib`,
//! `discarded_mib`, the guest RAM given back to the host so far). The server never blocks the VMM: it is driven by the VMM's event loop, lines
//! and client counts are bounded, and a client that does not read its replies is dropped.
//!
//! A second VMM pointed at a socket a live VMM serves is refused (connect succeeds); a stale socket
//! file left by a killed VMM (connect refused) is replaced. The file is removed when the server is
//! dropped, if it is still the one this process created.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::devices::virtio::balloon::BalloonHandle;

/// Longest request line accepted; anything longer is an error and the client is dropped.
pub const MAX_LINE: usize = 4096;
/// Concurrent clients; more are accepted and closed at once with an error line.
pub const MAX_CLIENTS: usize = 8;
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the control socket could not be set up.
#[derive(Debug)]
pub enum ControlError {
    /// Another VMM answers on this path.
    InUse(PathBuf),
    /// Something other than a socket is at this path.
    NotASocket(PathBuf),
    /// A system call on this path failed.
    Io(PathBuf, io::Error),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::InUse(p) => write!(
                f,
                "control socket {}: another VMM is listening on it",
                p.display()
            ),
            ControlError::NotASocket(p) => write!(
                f,
                "control socket {}: path exists and is not a socket",
                p.display()
            ),
            ControlError::Io(p, e) => write!(f, "control socket {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ControlError {}

/// What the control socket can ask of the VM.
pub trait VmControl {
    /// The run state's name (`RunState::as_str`, or `shutting-down`).
    fn state(&self) -> &'static str;
    /// Milliseconds since the VMM started.
    fn uptime_ms(&self) -> u64;
    /// Guest RAM in MiB.
    fn guest_memory_mib(&self) -> u64;
    /// When the guest signalled boot-ready, in ms since the VMM started.
    fn boot_ready_ms(&self) -> Option<f64>;
    /// Returns the state after the request.
    fn pause(&self) -> &'static str;
    /// Resumes the vCPUs; returns the new state.
    fn resume(&self) -> &'static str;
    /// Stops the VM at once.
    fn stop(&self);
    /// Presses the guest's power button (graceful shutdown, as on SIGTERM); returns the state.
    fn shutdown(&self) -> &'static str;
    /// The VM's virtio-balloon, if it has one.
    fn balloon(&self) -> Option<&BalloonHandle>;
    /// Test hook: `thread` ("main" or "vcpu") makes a syscall its filter forbids.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    fn test_forbidden_syscall(&self, thread: &str) -> Result<i64, String>;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    cmd: String,
    /// `balloon`'s new target.
    #[serde(default)]
    target_mib: Option<u64>,
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    #[serde(default)]
    thread: String,
}

/// A client's unanswered bytes: at most one request line of `MAX_LINE` plus its newline, held
/// inline so reading requests never allocates.
const LINE_BUF: usize = MAX_LINE + 1;

struct Client {
    stream: UnixStream,
    buf: heapless::Vec<u8, LINE_BUF>,
}

/// The listening control socket and its clients.
pub struct ControlServer {
    path: PathBuf,
    /// (device, inode) of the socket file this process bound, to remove only our own file.
    ident: (u64, u64),
    listener: UnixListener,
    clients: Vec<Client>,
    /// False once the VMM is confined: the path is out of its reach (the supervisor, or the
    /// next VMM on that path as with any stale socket, removes the file).
    remove_on_drop: bool,
}

impl ControlServer {
    /// Binds `path`, replacing a stale socket but not a live one.
    pub fn bind(path: &Path) -> Result<ControlServer, ControlError> {
        let io_err = |e| ControlError::Io(path.to_path_buf(), e);
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.file_type().is_socket() {
                    return Err(ControlError::NotASocket(path.to_path_buf()));
                }
                match UnixStream::connect(path) {
                    Ok(_) => return Err(ControlError::InUse(path.to_path_buf())),
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        crate::log(&format!(
                            "replacing stale control socket {}",
                            path.display()
                        ));
                        std::fs::remove_file(path).map_err(io_err)?;
                    }
                    Err(e) => return Err(io_err(e)),
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = bind_listening(path).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            ident: (meta.dev(), meta.ino()),
            listener,
            clients: Vec::new(),
            remove_on_drop: true,
        })
    }

    /// The socket file stays when the server is dropped (a confined VMM cannot reach it).
    pub fn leave_file_on_exit(&mut self) {
        self.remove_on_drop = false;
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every fd the event loop should poll for readability.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v = vec![self.listener.as_raw_fd()];
        v.extend(self.clients.iter().map(|c| c.stream.as_raw_fd()));
        v
    }

    /// Handles readiness on `fd` (one of `fds()`).
    pub fn on_readable(&mut self, fd: RawFd, vm: &dyn VmControl) {
        if fd == self.listener.as_raw_fd() {
            self.accept();
            return;
        }
        let Some(i) = self.clients.iter().position(|c| c.stream.as_raw_fd() == fd) else {
            return;
        };
        if !serve(&mut self.clients[i], vm) {
            self.clients.swap_remove(i);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                    if self.clients.len() >= MAX_CLIENTS {
                        let _ = reply(&mut stream, &error("too many control clients"));
                        continue;
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Client {
                        stream,
                        buf: heapless::Vec::new(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::log(&format!("control socket accept: {e}"));
                    return;
                }
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.ident {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn error(msg: &str) -> Value {
    json!({"ok": false, "error": msg})
}

fn reply(stream: &mut UnixStream, v: &Value) -> io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    // Replies are short; a blocking write with a timeout keeps a slow reader from growing a
    // queue in the VMM.
    stream.set_nonblocking(false)?;
    let r = stream.write_all(line.as_bytes());
    stream.set_nonblocking(true)?;
    r
}

/// Reads what is available and answers complete lines. False: drop the client.
fn serve(client: &mut Client, vm: &dyn VmControl) -> bool {
    loop {
        // Read straight into the free tail of the line buffer.
        let filled = client.buf.len();
        if client.buf.resize(LINE_BUF, 0).is_err() {
            return false;
        }
        let read = client.stream.read(&mut client.buf[filled..]);
        client
            .buf
            .truncate(filled + read.as_ref().map_or(0, |n| *n));
        match read {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        while let Some(nl) = client.buf.iter().position(|&b| b == b'\n') {
            let answer = handle_line(&client.buf[..nl], vm);
            client.buf.drain(..=nl);
            if reply(&mut client.stream, &answer).is_err() {
                return false;
            }
        }
        if client.buf.is_full() {
            // MAX_LINE + 1 bytes and no newline: the request is longer than MAX_LINE.
            let _ = reply(
                &mut client.stream,
                &error(&format!("request longer than {MAX_LINE} bytes")),
            );
            return false;
        }
    }
}

/// Answers one request line.
pub fn handle_line(line: &[u8], vm: &dyn VmControl) -> Value {
    let line = match std::str::from_utf8(line) {
        Ok(s) => s.trim(),
        Err(_) => return error("request is not UTF-8"),
    };
    if line.is_empty() {
        return error("empty request");
    }
    let req: Request = match serde_json::from_slice(line.as_bytes()) {
        Ok(r) => r,
        Err(e) => return error(&format!("bad request: {e}")),
    };
    match req.cmd.as_str() {
        "status" => json!({
            "ok": true,
            "state": vm.state(),
            "uptime_ms": vm.uptime_ms(),
            "memory": {"guest_mib": vm.guest_memory_mib(), "rss_kib": process_rss_kib()},
            "boot_ready_ms": vm.boot_ready_ms(),
            "balloon": vm.balloon().map(balloon_figures),
        }),
        "balloon" => {
            let Some(balloon) = vm.balloon() else {
                return error("this VM has no balloon");
            };
            let Some(mib) = req.target_mib else {
                return error("balloon: target_mib missing");
            };
            if mib > vm.guest_memory_mib() {
                return error(&format!(
                    "balloon: target_mib {mib} is more than the guest's {} MiB",
                    vm.guest_memory_mib()
                ));
            }
            balloon.set_target_mib(mib);
            let mut answer = balloon_figures(balloon);
            answer["ok"] = json!(true);
            answer
        }
        "pause" => json!({"ok": true, "state": vm.pause()}),
        "resume" => json!({"ok": true, "state": vm.resume()}),
        "stop" => {
            vm.stop();
            json!({"ok": true, "state": "stopping"})
        }
        "shutdown" => {
            let state = vm.shutdown();
            json!({"ok": true, "state": state})
        }
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        "test-forbidden-syscall" => match vm.test_forbidden_syscall(&req.thread) {
            Ok(rc) => json!({"ok": true, "returned": rc}),
            Err(e) => error(&e),
        },
        other => error(&format!(
            "unknown cmd '{}': expected status, pause, resume, stop, shutdown or balloon",
            other.chars().take(64).collect::<String>()
        )),
    }
}

fn balloon_figures(b: &BalloonHandle) -> Value {
    json!({
        "target_mib": b.target_mib(),
        "actual_mib": b.actual_mib(),
        "discarded_mib": b.discarded_bytes() >> 20,
    })
}

/// Binds a listening socket that appears at `path` only once it accepts connections: std's
/// `UnixListener::bind` creates the file in bind() before listen(), and a client that sees the
/// file in between (the agent right after starting a VMM, a test) gets ECONNREFUSED. So bind under
/// a temporary name in the same directory and rename it into place. A temporary name too long for
/// a socket address falls back to binding `path` directly.
fn bind_listening(path: &Path) -> std::io::Result<UnixListener> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = match UnixListener::bind(&tmp) {
        Ok(listener) => listener,
        Err(_) => return UnixListener::bind(path),
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// /proc/self/smaps_rollup opened before the VMM confined itself (its root is empty after).
static RSS_SOURCE: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Opens this process's memory counters for `process_rss_kib` while /proc is still reachable.
pub fn keep_rss_source() -> io::Result<()> {
    let f = std::fs::File::open("/proc/self/smaps_rollup")?;
    let _ = RSS_SOURCE.set(f);
    Ok(())
}

/// The whole of a /proc file, regenerated by reading from offset 0 (pread: no seek, no stat).
fn read_from_start(f: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// Resident set size of this process in KiB (0 if unavailable). `Rss:` of smaps_rollup first: it
/// walks the page tables, while statm/VmRSS come from per-thread counters that Linux before 6.2
/// syncs lazily, so a process with vCPU threads can read far too low there (8 KiB was seen for a
/// ~1.8 MiB daemon on the boards' 6.1 kernel). statm is the fallback.
pub fn process_rss_kib() -> u64 {
    let rollup = match RSS_SOURCE.get() {
        Some(f) => read_from_start(f),
        None => std::fs::read_to_string("/proc/self/smaps_rollup").ok(),
    };
    if let Some(kib) = rollup.as_deref().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    }) {
        return kib;
    }
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    s.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |pages| pages * page / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::{BufRead, BufReader};

    struct FakeVm {
        paused: Cell<bool>,
        stopped: Cell<bool>,
        shutdown: Cell<bool>,
        balloon: Option<BalloonHandle>,
    }

    impl VmControl for FakeVm {
        fn state(&self) -> &'static str {
            if self.paused.get() {
                "paused"
            } else {
                "running"
            }
        }
        fn uptime_ms(&self) -> u64 {
            42
        }
        fn guest_memory_mib(&self) -> u64 {
            64
        }
        fn boot_ready_ms(&self) -> Option<f64> {
            None
        }
        fn pause(&self) -> &'static str {
            self.paused.set(true);
            self.state()
        }
        fn resume(&self) -> &'static str {
            self.paused.set(false);
            self.state()
        }
        fn stop(&self) {
            self.stopped.set(true);
        }
        fn shutdown(&self) -> &'static str {
            self.shutdown.set(true);
            "shutting-down"
        }
        fn balloon(&self) -> Option<&BalloonHandle> {
            self.balloon.as_ref()
        }
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        fn test_forbidden_syscall(&self, thread: &str) -> Result<i64, String> {
            Err(format!("no thread {thread}"))
        }
    }

    fn fake() -> FakeVm {
        FakeVm {
            paused: Cell::new(false),
            stopped: Cell::new(false),
            shutdown: Cell::new(false),
            balloon: None,
        }
    }

    #[test]
    fn balloon_target() {
        let vm = fake();
        let r = handle_line(br#"{"cmd":"balloon","target_mib":8}"#, &vm);
        assert_eq!(r["error"], "this VM has no balloon");
        assert!(handle_line(br#"{"cmd":"status"}"#, &vm)["balloon"].is_null());
        let balloon = crate::devices::virtio::balloon::Balloon::new(
            crate::devices::virtio::balloon::BalloonOptions {
                deflate_on_oom: true,
                free_page_reporting: true,
                target_mib: 0,
            },
        );
        let vm = FakeVm {
            balloon: Some(balloon.handle()),
            ..fake()
        };
        let r = handle_line(br#"{"cmd":"balloon","target_mib":8}"#, &vm);
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!((&r["target_mib"], &r["actual_mib"]), (&json!(8), &json!(0)));
        let s = handle_line(br#"{"cmd":"status"}"#, &vm);
        assert_eq!(s["balloon"]["target_mib"], 8);
        assert_eq!(s["balloon"]["discarded_mib"], 0);
        // More than the guest has (64 MiB here), or no target: refused, target unchanged.
        for bad in [
            &br#"{"cmd":"balloon","target_mib":65}"#[..],
            br#"{"cmd":"balloon"}"#,
            br#"{"cmd":"balloon","target_mib":-1}"#,
        ] {
            assert_eq!(handle_line(bad, &vm)["ok"], false);
        }
        assert_eq!(balloon.handle().target_mib(), 8);
    }

    #[test]
    fn commands() {
        let vm = fake();
        let s = handle_line(br#"{"cmd":"status"}"#, &vm);
        assert_eq!(s["ok"], true);
        assert_eq!(s["state"], "running");
        assert_eq!(s["memory"]["guest_mib"], 64);
        assert!(s["memory"]["rss_kib"].as_u64().unwrap() > 0);
        assert!(s["boot_ready_ms"].is_null());
        assert_eq!(handle_line(br#"{"cmd":"pause"}"#, &vm)["state"], "paused");
        assert_eq!(handle_line(br#"{"cmd":"resume"}"#, &vm)["state"], "running");
        let r = handle_line(br#"{"cmd":"shutdown"}"#, &vm);
        assert_eq!(
            (&r["ok"], &r["state"]),
            (&json!(true), &json!("shutting-down"))
        );
        assert!(
            vm.shutdown.get() && !vm.stopped.get(),
            "shutdown is not stop"
        );
        handle_line(br#"{"cmd":"stop"}"#, &vm);
        assert!(vm.stopped.get());
        for bad in [
            &b"{"[..],
            b"{\"cmd\":\"reboot\"}",
            b"",
            b"\xff",
            b"{\"cmd\":1}",
        ] {
            let r = handle_line(bad, &vm);
            assert_eq!(r["ok"], false, "{r}");
            assert!(!r["error"].as_str().unwrap().is_empty());
        }
    }

    fn sock_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("cpv-ctl-{tag}-{}.sock", std::process::id()))
    }

    #[test]
    fn live_socket_is_not_stolen_and_stale_is_replaced() {
        let p = sock_path("live");
        let _ = std::fs::remove_file(&p);
        let first = ControlServer::bind(&p).unwrap();
        assert!(matches!(
            ControlServer::bind(&p),
            Err(ControlError::InUse(_))
        ));
        drop(first);
        assert!(!p.exists(), "socket removed on drop");
        // A stale socket: bound, then the listener closed without removing the file.
        let stale = UnixListener::bind(&p).unwrap();
        drop(stale);
        assert!(p.exists());
        let again = ControlServer::bind(&p).unwrap();
        drop(again);
        std::fs::write(&p, b"not a socket").unwrap();
        assert!(matches!(
            ControlServer::bind(&p),
            Err(ControlError::NotASocket(_))
        ));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn serves_lines_and_bounds_them() {
        let p = sock_path("serve");
        let _ = std::fs::remove_file(&p);
        let mut server = ControlServer::bind(&p).unwrap();
        let vm = fake();
        let mut c = UnixStream::connect(&p).unwrap();
        let pump = |server: &mut ControlServer| {
            for fd in server.fds() {
                server.on_readable(fd, &vm);
            }
        };
        pump(&mut server);
        c.write_all(b"{\"cmd\":\"status\"}\n{\"cmd\":\"pause\"}\n")
            .unwrap();
        pump(&mut server);
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"uptime_ms\":42"), "{line}");
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("paused"), "{line}");
        c.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        pump(&mut server);
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("longer than"), "{line}");
        assert_eq!(server.fds().len(), 1, "oversized client dropped");
        drop(server);
        assert!(!p.exists());
    }

    #[test]
    fn a_line_of_max_line_bytes_fits_and_one_more_does_not() {
        let p = sock_path("maxline");
        let _ = std::fs::remove_file(&p);
        let mut server = ControlServer::bind(&p).unwrap();
        let vm = fake();
        let pump = |server: &mut ControlServer| {
            for fd in server.fds() {
                server.on_readable(fd, &vm);
            }
        };
        let mut c = UnixStream::connect(&p).unwrap();
        pump(&mut server);
        // A status request padded with spaces to exactly MAX_LINE bytes, then its newline.
        let mut req = b"{\"cmd\":\"status\"}".to_vec();
        req.resize(MAX_LINE, b' ');
        req.push(b'\n');
        c.write_all(&req).unwrap();
        pump(&mut server);
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"uptime_ms\":42"), "{line}");
        assert_eq!(server.fds().len(), 2, "client kept");
        // MAX_LINE + 1 bytes without a newline: refused, the client dropped.
        c.write_all(&vec![b' '; MAX_LINE + 1]).unwrap();
        pump(&mut server);
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("longer than"), "{line}");
        assert_eq!(server.fds().len(), 1, "oversized client dropped");
    }
}
