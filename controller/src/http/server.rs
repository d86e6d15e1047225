//! A small HTTP/1.1 server for the API and the dashboard, every resource bounded: a fixed set
//! of worker threads fed by a bounded queue (a connection that finds it full is closed), one
//! request per connection (`Connection: close`), a head of at most [`MAX_HEAD`] bytes and
//! [`MAX_HEADERS`] headers parsed by `httparse`, a body of at most [`MAX_BODY`] bytes named by
//! `Content-Length` (chunked bodies refused), and a deadline for the whole request and for
//! each write, so a slow or silent client holds a worker for [`REQUEST_DEADLINE`] at most.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// A request must have arrived whole by then (the default of [`run`]'s `deadline`).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Each write of the response must go through within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections accepted and waiting for a worker, at most.
const QUEUE: usize = 64;
const THREAD_STACK: usize = 512 * 1024;

/// A request as the handler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: String,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: vec![("Cache-Control", "no-store".into())],
            body: v.to_string().into_bytes(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ if status >= 500 => "Internal Server Error",
        _ => "",
    }
}

/// Serves `listener` with `workers` threads, each with its own state from `init` (a database
/// connection), until the process ends; a request must arrive whole within `deadline`. `init`
/// failing in a worker ends that worker (logged).
pub fn run<S, I, H>(
    listener: TcpListener,
    workers: usize,
    deadline: Duration,
    init: I,
    handle: H,
) -> Result<(), String>
where
    S: 'static,
    I: Fn() -> Result<S, String> + Send + Sync + 'static,
    H: Fn(&mut S, &Request) -> Response + Send + Sync + 'static,
{
    let (tx, rx) = sync_channel::<TcpStream>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    let init = Arc::new(init);
    let handle = Arc::new(handle);
    for i in 0..workers {
        let (rx, init, handle) = (rx.clone(), init.clone(), handle.clone());
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .stack_size(THREAD_STACK)
            .spawn(move || worker(&rx, deadline, &*init, &*handle))
            .map_err(|e| format!("HTTP worker thread: {e}"))?;
    }
    std::thread::Builder::new()
        .name("http-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                // Full: every worker busy and the queue too; closing is the answer (a client
                // retries, a flood does not pile up).
                if let Err(TrySendError::Disconnected(_)) = tx.try_send(conn) {
                    return;
                }
            }
        })
        .map_err(|e| format!("HTTP accept thread: {e}"))?;
    Ok(())
}

fn worker<S>(
    rx: &Mutex<Receiver<TcpStream>>,
    deadline: Duration,
    init: &(dyn Fn() -> Result<S, String> + Send + Sync),
    handle: &(dyn Fn(&mut S, &Request) -> Response + Send + Sync),
) {
    let mut state = match init() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cpevisor-controller serve: HTTP worker: {e}");
            return;
        }
    };
    loop {
        // The lock is held only while waiting; a poisoned one means a worker panicked while
        // waiting, and the queue itself is still sound.
        let conn = match rx.lock() {
            Ok(r) => r.recv(),
            Err(p) => p.into_inner().recv(),
        };
        let Ok(mut conn) = conn else { return };
        let resp = match read_request(&mut conn, deadline) {
            Ok(req) => handle(&mut state, &req),
            Err(resp) => resp,
        };
        let _ = write_response(&mut conn, &resp);
        // Unread request bytes make close() send a reset that can destroy the response in
        // flight: the client is told we are done, and what it still sends is read (bounded)
        // before closing.
        let _ = conn.shutdown(Shutdown::Write);
        drain(&mut conn, Instant::now() + DRAIN);
    }
}

/// How long a finished connection's leftovers are read at most.
const DRAIN: Duration = Duration::from_secs(1);

/// Reads and drops what the client still sends until it closes, 1 MiB or `deadline`.
fn drain(conn: &mut TcpStream, deadline: Instant) {
    let mut buf = [0u8; 4096];
    let mut left = 1usize << 20;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || conn.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Reads one request within `deadline`; an error is the response to send.
fn read_request(conn: &mut TcpStream, deadline: Duration) -> Result<Request, Response> {
    let deadline = Instant::now() + deadline;
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut buf = vec![0u8; MAX_HEAD];
    let mut have = 0;
    loop {
        if have == buf.len() {
            return Err(Response::error(
                431,
                &format!("request head larger than {MAX_HEAD} bytes"),
            ));
        }
        let n = read_some(conn, &mut buf[have..], deadline)?;
        if n == 0 {
            return Err(Response::error(
                400,
                "connection closed before the request ended",
            ));
        }
        have += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&buf[..have]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(n)) => n,
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Response::error(
                    431,
                    &format!("more than {MAX_HEADERS} headers"),
                ))
            }
            Err(e) => return Err(Response::error(400, &format!("bad request: {e}"))),
        };
        let target = req.path.unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        };
        if header("transfer-encoding").is_some() {
            return Err(Response::error(
                411,
                "chunked bodies are not taken: send Content-Length",
            ));
        }
        let len = match header("content-length") {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| Response::error(400, "Content-Length is not a number"))?,
        };
        if len > MAX_BODY {
            return Err(Response::error(
                413,
                &format!("request body of {len} bytes; at most {MAX_BODY}"),
            ));
        }
        let mut out = Request {
            method: req.method.unwrap_or("").to_string(),
            path: path.to_string(),
            query: query.to_string(),
            authorization: header("authorization"),
            body: Vec::with_capacity(len),
        };
        let got = (have - head_len).min(len);
        out.body.extend_from_slice(&buf[head_len..head_len + got]);
        while out.body.len() < len {
            let want = (len - out.body.len()).min(buf.len());
            let n = read_some(conn, &mut buf[..want], deadline)?;
            if n == 0 {
                return Err(Response::error(
                    400,
                    "connection closed before the body ended",
                ));
            }
            out.body.extend_from_slice(&buf[..n]);
        }
        return Ok(out);
    }
}

/// One read with the time left before `deadline` as its timeout.
fn read_some(conn: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<usize, Response> {
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = || Response::error(408, "the request did not arrive in time");
    if left.is_zero() {
        return Err(timeout());
    }
    let _ = conn.set_read_timeout(Some(left));
    match conn.read(buf) {
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(timeout())
        }
        Err(e) => Err(Response::error(400, &format!("reading the request: {e}"))),
    }
}

fn write_response(conn: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(&r.body)?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server whose one worker echoes the request (method, path, query, body length).
    fn server(deadline: Duration) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        run(
            l,
            1,
            deadline,
            || Ok(()),
            |_: &mut (), r: &Request| {
                Response::json(
                    200,
                    &serde_json::json!({"m": r.method, "p": r.path, "q": r.query,
                                    "n": r.body.len(), "a": r.authorization}),
                )
            },
        )
        .unwrap();
        port
    }

    fn send(port: u16, parts: &[&[u8]], pause: Duration) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for p in parts {
            let _ = c.write_all(p);
            std::thread::sleep(pause);
        }
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    #[test]
    fn requests_whole_or_in_pieces() {
        let port = server(Duration::from_secs(5));
        let r = send(
            port,
            &[
                b"POST /a/b?x=1 HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 5\r\n\r\nhe",
                b"llo",
            ],
            Duration::from_millis(50),
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Connection: close"), "{r}");
        assert!(
            r.ends_with(r#"{"a":"Bearer t","m":"POST","n":5,"p":"/a/b","q":"x=1"}"#),
            "{r}"
        );
    }

    #[test]
    fn hostile_requests_get_their_status() {
        let port = server(Duration::from_millis(400));
        let status = |parts: &[&[u8]], pause| send(port, parts, pause)[..12].to_string();
        let none = Duration::ZERO;
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(&[long.as_bytes()], none), "HTTP/1.1 431");
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status(&[many.as_bytes()], none), "HTTP/1.1 431");
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(status(&[big.as_bytes()], none), "HTTP/1.1 413");
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(status(&[chunked], none), "HTTP/1.1 411");
        assert_eq!(
            status(&[b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"], none),
            "HTTP/1.1 400"
        );
        assert_eq!(status(&[b"\x00\x01 garbage\r\n\r\n"], none), "HTTP/1.1 400");
        // Trickled or silent: the deadline answers, and the one worker is free again.
        let t0 = Instant::now();
        assert_eq!(
            status(
                &[b"GET / HTTP/1.1\r\n", b"X: y\r\n", b"X: z\r\n"],
                Duration::from_millis(200)
            ),
            "HTTP/1.1 408"
        );
        assert_eq!(
            status(&[b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"], none),
            "HTTP/1.1 408"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(status(&[b"GET / HTTP/1.1\r\n\r\n"], none), "HTTP/1.1 200");
    }
}
