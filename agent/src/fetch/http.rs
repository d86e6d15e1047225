//! A minimal HTTP/1.1 GET client over TCP or rustls: one request per connection
//! (`Connection: close`), bounded response head, Content-Length, chunked and close-delimited
//! bodies. Small on purpose: a download needs GET, Range and redirects, nothing more.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::pace::{Guarded, Pace};
use super::resolve::{resolve, ResolveError};
use super::url::{Scheme, Url};

/// Longest status line or header line, and most header lines, accepted from a server.
const MAX_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// Every byte goes through a `Guarded` socket: the transfer's deadline and minimum rate hold
/// for the TLS handshake and the response head as much as for the body.
pub enum Stream {
    Plain(Guarded),
    Tls(Box<StreamOwned<ClientConnection, Guarded>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Why no connection to a server came up. All of them are worth another try, except past the
/// transfer's deadline (`Late`), which the caller tells from its pace.
#[derive(Debug)]
pub enum ConnectError {
    Resolve {
        host: String,
        source: ResolveError,
    },
    /// The transfer's deadline passed before a connection was tried.
    Late(io::Error),
    /// The last address tried refused or timed out.
    Connect {
        addr: SocketAddr,
        source: io::Error,
    },
    NoTlsConfig,
    ServerName {
        host: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
    Tls(rustls::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            ConnectError::Late(e) => write!(f, "{e}"),
            ConnectError::Connect { addr, source } => write!(f, "connect to {addr}: {source}"),
            ConnectError::NoTlsConfig => f.write_str("no TLS configuration"),
            ConnectError::ServerName { host, source } => {
                write!(f, "host {host:?} is not a valid TLS server name: {source}")
            }
            ConnectError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Connects to `url`'s host (every resolved address in turn) with bounded timeouts, within
/// what is left of `pace`'s deadline.
pub fn connect(
    url: &Url,
    tls: Option<&Arc<ClientConfig>>,
    connect_timeout: Duration,
    io_timeout: Duration,
    pace: &Arc<Pace>,
) -> Result<Stream, ConnectError> {
    let addrs = resolve(&url.host, url.port).map_err(|source| ConnectError::Resolve {
        host: url.host.clone(),
        source,
    })?;
    let mut last = None;
    let mut tcp = None;
    for addr in addrs {
        let left = pace.remaining().map_err(ConnectError::Late)?;
        match TcpStream::connect_timeout(&addr, connect_timeout.min(left)) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(source) => last = Some(ConnectError::Connect { addr, source }),
        }
    }
    // resolve() gives at least one address, so `last` is set whenever `tcp` is not.
    let tcp = match (tcp, last) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(ConnectError::Resolve {
                host: url.host.clone(),
                source: ResolveError::NoRecords(url.host.clone()),
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    let tcp = Guarded::new(tcp, pace.clone(), io_timeout);
    match url.scheme {
        Scheme::Http => Ok(Stream::Plain(tcp)),
        Scheme::Https => {
            let config = tls.ok_or(ConnectError::NoTlsConfig)?;
            let name = ServerName::try_from(url.host.clone()).map_err(|source| {
                ConnectError::ServerName {
                    host: url.host.clone(),
                    source,
                }
            })?;
            let conn = ClientConnection::new(config.clone(), name).map_err(ConnectError::Tls)?;
            Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
        }
    }
}

#[derive(Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    pub chunked: bool,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response",
        ));
    }
    if line.len() > MAX_LINE || !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "response line too long or cut",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response head is not UTF-8"))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Sends the GET and reads the response head.
pub fn get(
    stream: Stream,
    url: &Url,
    extra_headers: &[(&str, String)],
) -> io::Result<(ResponseHead, BufReader<Stream>)> {
    let mut stream = stream;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cpevisord/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n",
        url.target,
        url.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in extra_headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.flush()?;
    let mut r = BufReader::with_capacity(16 * 1024, stream);
    let status_line = read_line(&mut r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not an HTTP/1.x response"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| bad("bad status code"))?;
    let mut head = ResponseHead {
        status,
        reason: parts.next().unwrap_or("").chars().take(80).collect(),
        ..Default::default()
    };
    let mut count = 0;
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(bad("too many response headers"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed response header"));
        };
        let value = value.trim().to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| bad("bad Content-Length"))?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(bad("conflicting Content-Length headers"));
                }
                head.content_length = Some(n);
            }
            "transfer-encoding" => {
                let last = value
                    .rsplit(',')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if last == "chunked" {
                    head.chunked = true;
                } else if last != "identity" {
                    return Err(bad("unsupported Transfer-Encoding"));
                }
            }
            "content-encoding" if !value.eq_ignore_ascii_case("identity") => {
                return Err(bad("unsupported Content-Encoding"));
            }
            "content-range" => head.content_range = Some(value),
            "location" => head.location = Some(value),
            "etag" => head.etag = Some(value),
            "last-modified" => head.last_modified = Some(value),
            _ => {}
        }
    }
    if head.chunked {
        // RFC 9112: Transfer-Encoding overrides Content-Length.
        head.content_length = None;
    }
    Ok((head, r))
}

/// Parses `bytes <first>-<last>/<total or *>`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    let (first, last) = range.split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some((first, last, total))
}

/// The response body, delimited the way the head says.
pub struct Body {
    inner: BufReader<Stream>,
    kind: BodyKind,
}

#[derive(Clone, Copy)]
enum BodyKind {
    Length { left: u64 },
    Chunked { left_in_chunk: u64, done: bool },
    UntilClose,
}

impl Body {
    pub fn new(head: &ResponseHead, inner: BufReader<Stream>) -> Body {
        let kind = if head.chunked {
            BodyKind::Chunked {
                left_in_chunk: 0,
                done: false,
            }
        } else if let Some(n) = head.content_length {
            BodyKind::Length { left: n }
        } else {
            BodyKind::UntilClose
        };
        Body { inner, kind }
    }

    fn read_chunked(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let BodyKind::Chunked {
            mut left_in_chunk,
            done,
        } = self.kind
        else {
            return Ok(0);
        };
        if done {
            return Ok(0);
        }
        if left_in_chunk == 0 {
            left_in_chunk = self.next_chunk_size()?;
            if left_in_chunk == 0 {
                self.kind = BodyKind::Chunked {
                    left_in_chunk: 0,
                    done: true,
                };
                // Trailers, bounded like headers, then the empty line.
                for _ in 0..=MAX_HEADERS {
                    if read_line(&mut self.inner)?.is_empty() {
                        return Ok(0);
                    }
                }
                return Err(bad("too many trailer lines"));
            }
        }
        let want = left_in_chunk.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunk",
            ));
        }
        left_in_chunk -= n as u64;
        if left_in_chunk == 0 && !read_line(&mut self.inner)?.is_empty() {
            return Err(bad("chunk not followed by CRLF"));
        }
        self.kind = BodyKind::Chunked {
            left_in_chunk,
            done: false,
        };
        Ok(n)
    }

    fn next_chunk_size(&mut self) -> io::Result<u64> {
        let line = read_line(&mut self.inner)?;
        let hex = line.split(';').next().unwrap_or("").trim();
        if hex.is_empty() || hex.len() > 15 {
            return Err(bad("bad chunk size"));
        }
        u64::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.kind {
            BodyKind::Length { left } => {
                if *left == 0 {
                    return Ok(0);
                }
                let want = (*left).min(buf.len() as u64) as usize;
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed with {left} bytes of the body missing"),
                    ));
                }
                *left -= n as u64;
                Ok(n)
            }
            BodyKind::Chunked { .. } => self.read_chunked(buf),
            BodyKind::UntilClose => self.inner.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Sends `response` to the first connection and returns what `get` + `Body` make of it.
    fn exchange(response: &'static [u8]) -> io::Result<(ResponseHead, Vec<u8>)> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(response);
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/f")).unwrap();
        let pace = super::super::pace::Pace::new(Default::default(), "test");
        let stream = connect(
            &url,
            None,
            Duration::from_secs(2),
            Duration::from_secs(2),
            &pace,
        )
        .unwrap();
        let result = get(stream, &url, &[]).and_then(|(head, r)| {
            let mut body = Vec::new();
            Body::new(&head, r).read_to_end(&mut body)?;
            Ok((head, body))
        });
        server.join().unwrap();
        result
    }

    #[test]
    fn reads_chunked_bodies() {
        let (head, body) = exchange(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
              5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        .unwrap();
        assert!(head.chunked && head.content_length.is_none());
        assert_eq!(body, b"hello, world");
    }

    #[test]
    fn detects_short_bodies_and_bad_heads() {
        let err = exchange(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err =
            exchange(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = exchange(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = exchange(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let (head, body) = exchange(b"HTTP/1.0 404 Not Found\r\n\r\ngone").unwrap();
        assert_eq!(
            (head.status, head.reason.as_str(), body.as_slice()),
            (404, "Not Found", &b"gone"[..])
        );
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, 9, None)));
        assert_eq!(parse_content_range("bytes 10-5/20"), None);
        assert_eq!(parse_content_range("bytes 0-20/20"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
