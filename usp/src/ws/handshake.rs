//! The WebSocket opening handshake (RFC 6455 section 4) with subprotocol `v1.usp` required
//! (TR-369 WebSocket binding). Heads are read with a byte limit and a header-count limit.

use std::io::{BufRead, Read};

use super::base64::{base64_decode, base64_encode};
use super::error::WsError;

/// The USP WebSocket subprotocol.
pub const SUBPROTOCOL: &str = "v1.usp";
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A head with more header lines than this is refused.
const MAX_HEADERS: usize = 64;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (section 4.2.2, item 5.4). SHA-1 is what
/// the RFC prescribes; it proves the server read the key, it protects nothing.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{ACCEPT_GUID}").as_bytes(),
    );
    base64_encode(digest.as_ref())
}

/// A request or status line and its headers.
#[derive(Debug)]
pub struct Head {
    /// The request line (`GET /path HTTP/1.1`) or status line (`HTTP/1.1 101 ...`).
    pub start: String,
    /// Header names and values, in order, values trimmed; names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every comma-separated token of every `name` header, trimmed.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }
}

/// Reads a head up to its empty line, at most `max_bytes` in all.
pub fn read_head<R: BufRead>(r: &mut R, max_bytes: usize) -> Result<Head, WsError> {
    let mut left = max_bytes;
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r.by_ref().take(left as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(WsError::Handshake(
                "connection closed during the handshake".into(),
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(WsError::Handshake(if n == left {
                format!("handshake head larger than {max_bytes} bytes")
            } else {
                "handshake line not ended by CRLF".into()
            }));
        }
        left -= n;
        line.truncate(line.len() - 2);
        if line.is_empty() {
            break;
        }
        // Header text is visible ASCII, spaces and tabs (obsolete folding is refused).
        if !line
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(WsError::Handshake(
                "handshake line with control or non-ASCII bytes".into(),
            ));
        }
        if lines.len() > MAX_HEADERS {
            return Err(WsError::Handshake(format!(
                "more than {MAX_HEADERS} handshake headers"
            )));
        }
        lines.push(String::from_utf8(line).expect("checked ASCII"));
    }
    let mut lines = lines.into_iter();
    let start = lines
        .next()
        .ok_or_else(|| WsError::Handshake("empty handshake".into()))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| WsError::Handshake(format!("header line without ':': {line:?}")))?;
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(WsError::Handshake(format!("bad header name {name:?}")));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Head { start, headers })
}

/// The TR-369 WebSocket extension that carries Endpoint IDs in the handshake.
pub const EID_EXTENSION: &str = "bbf-usp-protocol";
/// Endpoint IDs are at most this long in a handshake header.
const MAX_EID: usize = 256;

/// Checks an Endpoint ID we are about to put into a header: printable, no quote or backslash.
pub fn check_eid(eid: &str) -> Result<(), WsError> {
    let printable = eid
        .bytes()
        .all(|b| (b'!'..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if eid.is_empty() || eid.len() > MAX_EID || !printable {
        return Err(WsError::Handshake(format!(
            "endpoint ID {eid:?} cannot go into a handshake header"
        )));
    }
    Ok(())
}

fn eid_header(eid: Option<&str>) -> String {
    eid.map(|e| format!("Sec-WebSocket-Extensions: {EID_EXTENSION}; eid=\"{e}\"\r\n"))
        .unwrap_or_default()
}

/// The peer's Endpoint ID from a `bbf-usp-protocol; eid="..."` extension offer, if any.
/// Other extensions are ignored (we agree to none); a malformed eid is an error.
pub fn peer_eid(head: &Head) -> Result<Option<String>, String> {
    for offer in head.tokens("Sec-WebSocket-Extensions") {
        let mut params = offer.split(';').map(str::trim);
        if params.next() != Some(EID_EXTENSION) {
            continue;
        }
        for param in params {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim() != "eid" {
                continue;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if value.is_empty() || value.len() > MAX_EID || value.contains(['"', '\\']) {
                return Err(format!("bad eid in {EID_EXTENSION}: {value:?}"));
            }
            return Ok(Some(value.to_owned()));
        }
    }
    Ok(None)
}

/// `eid` for a request URI's query (R-WS.10b/c): unreserved characters and `:` as they are,
/// everything else (`%` included, as `%25`) percent-encoded.
pub fn encode_eid(eid: &str) -> String {
    let mut out = String::with_capacity(eid.len());
    for b in eid.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The client's Endpoint ID from the `eid=` pair of the request URI's query (R-WS.10b), if
/// any; a pair that does not decode to a usable Endpoint ID is an error.
pub fn query_eid(request_target: &str) -> Result<Option<String>, String> {
    let Some((_, query)) = request_target.split_once('?') else {
        return Ok(None);
    };
    let Some(value) = query.split('&').find_map(|kv| kv.strip_prefix("eid=")) else {
        return Ok(None);
    };
    let bad = || format!("bad eid in the request URI: {value:?}");
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let eid = String::from_utf8(bytes).map_err(|_| bad())?;
    if eid.is_empty() || eid.len() > MAX_EID || eid.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(Some(eid))
}

/// The client's request (section 4.1).
pub fn request(host: &str, port: u16, path: &str, key: &str) -> String {
    request_with_eid(host, port, path, key, None)
}

/// The client's request, announcing our Endpoint ID when given: as `eid=` in the request URI's
/// query (R-WS.10b, TR-369 1.3 on) and in the `bbf-usp-protocol` extension (R-WS.10a, deprecated,
/// for servers older than 1.3).
pub fn request_with_eid(host: &str, port: u16, path: &str, key: &str, eid: Option<&str>) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let target = match eid {
        Some(e) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}eid={}", encode_eid(e))
        }
        None => path.to_owned(),
    };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n{}\r\n",
        eid_header(eid)
    )
}

/// Checks a request path: absolute, printable, no spaces.
pub fn check_path(path: &str) -> Result<(), WsError> {
    if !path.starts_with('/') || !path.bytes().all(|b| (b'!'..=b'~').contains(&b)) {
        return Err(WsError::Handshake(format!(
            "request path {path:?} must start with '/' and hold no spaces"
        )));
    }
    Ok(())
}

/// Checks the server's answer to our request with `key`.
pub fn check_response(head: &Head, key: &str) -> Result<(), WsError> {
    let mut parts = head.start.splitn(3, ' ');
    let (version, status) = (parts.next(), parts.next());
    if version != Some("HTTP/1.1") || status != Some("101") {
        return Err(WsError::Handshake(format!(
            "server answered {:?}, not 101 Switching Protocols",
            head.start
        )));
    }
    if !head.has_token("Upgrade", "websocket") || !head.has_token("Connection", "upgrade") {
        return Err(WsError::Handshake(
            "101 answer without Upgrade: websocket / Connection: Upgrade".into(),
        ));
    }
    if head.get("Sec-WebSocket-Accept") != Some(accept_key(key).as_str()) {
        return Err(WsError::Handshake(
            "Sec-WebSocket-Accept does not match our key".into(),
        ));
    }
    let protocols: Vec<&str> = head.tokens("Sec-WebSocket-Protocol").collect();
    if protocols != [SUBPROTOCOL] {
        return Err(WsError::Handshake(format!(
            "server chose subprotocol {protocols:?}, {SUBPROTOCOL} is required"
        )));
    }
    // The only extension we may offer carries Endpoint IDs; anything else was not offered.
    let others = head
        .tokens("Sec-WebSocket-Extensions")
        .any(|e| e.split(';').next().map(str::trim) != Some(EID_EXTENSION));
    if others {
        return Err(WsError::Handshake(
            "server chose an extension we did not offer".into(),
        ));
    }
    Ok(())
}

/// A refused request: the HTTP status to answer with and why.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status: 400, 405 (not GET) or 426 (wrong WebSocket version).
    pub status: u16,
    /// What was wrong with the request; the answer's body.
    pub why: String,
}

/// Checks a client's request; returns the path and the key.
pub fn check_request(head: &Head) -> Result<(String, String), Refusal> {
    let refuse = |status, why: String| Err(Refusal { status, why });
    let parts: Vec<&str> = head.start.split(' ').collect();
    let [method, path, version] = parts[..] else {
        return refuse(400, format!("bad request line {:?}", head.start));
    };
    if method != "GET" {
        return refuse(405, format!("method {method}, GET expected"));
    }
    if version != "HTTP/1.1" {
        return refuse(400, format!("{version}, HTTP/1.1 expected"));
    }
    if check_path(path).is_err() {
        return refuse(400, format!("bad request path {path:?}"));
    }
    if head.get("Host").is_none() {
        return refuse(400, "no Host header".into());
    }
    if !head.has_token("Upgrade", "websocket") || !head.has_token("Connection", "upgrade") {
        return refuse(400, "not a WebSocket upgrade request".into());
    }
    if head.get("Sec-WebSocket-Version") != Some("13") {
        return refuse(426, "Sec-WebSocket-Version 13 required".into());
    }
    let key = head.get("Sec-WebSocket-Key").unwrap_or("");
    if base64_decode(key).map(|k| k.len()) != Some(16) {
        return refuse(400, "Sec-WebSocket-Key is not 16 bytes in base64".into());
    }
    if !head
        .tokens("Sec-WebSocket-Protocol")
        .any(|p| p == SUBPROTOCOL)
    {
        return refuse(
            400,
            format!("subprotocol {SUBPROTOCOL} not offered (Sec-WebSocket-Protocol)"),
        );
    }
    Ok((path.to_owned(), key.to_owned()))
}

/// The server's 101 answer.
pub fn response(key: &str) -> String {
    response_with_eid(key, None)
}

/// The server's 101 answer, with our Endpoint ID when given.
pub fn response_with_eid(key: &str, eid: Option<&str>) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n{}\r\n",
        accept_key(key),
        eid_header(eid)
    )
}

/// An error answer that ends the connection.
pub fn refusal_response(refusal: &Refusal) -> String {
    let reason = match refusal.status {
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        _ => "Bad Request",
    };
    let body = format!("{}\n", refusal.why);
    let version = if refusal.status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {} {reason}\r\n{version}Content-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        refusal.status,
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    pub(super) fn head(text: &str) -> Result<Head, WsError> {
        read_head(&mut text.as_bytes(), 8192)
    }

    #[test]
    fn a_request_we_make_is_one_we_accept() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let h = head(&request("127.0.0.1", 80, "/usp", key)).unwrap();
        assert_eq!(check_request(&h).unwrap(), ("/usp".into(), key.into()));
        let answer = head(&response(key)).unwrap();
        check_response(&answer, key).unwrap();
        assert!(check_response(&answer, "AAAAAAAAAAAAAAAAAAAAAA==").is_err());
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        let good = request("h", 1, "/", "dGhlIHNhbXBsZSBub25jZQ==");
        for (from, to, status) in [
            ("GET", "POST", 405),
            ("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost", 400),
            ("Host: h:1\r\n", "", 400),
            ("Upgrade: websocket", "Upgrade: h2c", 400),
            ("Version: 13", "Version: 8", 426),
            ("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=", 400),
            ("Protocol: v1.usp", "Protocol: v1.stomp", 400),
            ("GET / ", "GET /a b ", 400),
        ] {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            let h = head(&bad).unwrap();
            assert_eq!(check_request(&h).unwrap_err().status, status, "{bad}");
        }
    }

    #[test]
    fn heads_are_bounded_and_strict() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(head(&long).unwrap_err().to_string().contains("larger than"));
        let many: String = (0..100).map(|i| format!("X{i}: y\r\n")).collect();
        assert!(head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).is_err());
        assert!(head("GET / HTTP/1.1\nHost: x\n\n").is_err());
        assert!(head("GET / HTTP/1.1\r\nHost x\r\n\r\n").is_err());
        assert!(head("GET / HTTP/1.1\r\nHo st: x\r\n\r\n").is_err());
        assert!(head("GET / HTTP/1.1\r\nHost: \x01\r\n\r\n").is_err());
        assert!(head("GET / HTTP/1.1\r\n").is_err()); // ends early
    }

    #[test]
    fn a_server_choosing_no_subprotocol_is_refused() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let answer = response(key).replace("Sec-WebSocket-Protocol: v1.usp\r\n", "");
        let e = check_response(&head(&answer).unwrap(), key).unwrap_err();
        assert!(e.to_string().contains("v1.usp"), "{e}");
    }

    #[test]
    fn endpoint_ids_travel_in_the_bbf_extension() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = head(&request_with_eid("h", 1, "/", key, Some("os::012345-CPE"))).unwrap();
        check_request(&req).unwrap();
        assert_eq!(peer_eid(&req).unwrap().as_deref(), Some("os::012345-CPE"));
        let answer = head(&response_with_eid(key, Some("self::ctl"))).unwrap();
        check_response(&answer, key).unwrap();
        assert_eq!(peer_eid(&answer).unwrap().as_deref(), Some("self::ctl"));
        let plain = head(&request("h", 1, "/", key)).unwrap();
        assert_eq!(peer_eid(&plain).unwrap(), None);
        let other = format!(
            "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: permessage-deflate, {EID_EXTENSION}; eid=x\r\n\r\n"
        );
        assert_eq!(
            peer_eid(&head(&other).unwrap()).unwrap().as_deref(),
            Some("x")
        );
        let bad = format!(
            "GET / HTTP/1.1\r\nSec-WebSocket-Extensions: {EID_EXTENSION}; eid=\"\"\r\n\r\n"
        );
        assert!(peer_eid(&head(&bad).unwrap()).is_err());
        assert!(check_eid("a\"b").is_err() && check_eid("").is_err() && check_eid("a b").is_err());
        let deflate = response(key).replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        );
        assert!(check_response(&head(&deflate).unwrap(), key).is_err());
    }
}

#[cfg(test)]
mod eid_query_tests {
    use super::*;

    /// R-WS.10b/c: the client puts its Endpoint ID into the request URI's query, `%` as `%25`;
    /// the server reads it back, also from a client that sends no extension.
    #[test]
    fn the_endpoint_id_travels_in_the_request_uri() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let req = request_with_eid("h", 1, "/usp", key, Some("os::012345-CPE%2F1"));
        assert!(
            req.starts_with("GET /usp?eid=os::012345-CPE%252F1 HTTP/1.1\r\n"),
            "{req}"
        );
        let (target, _) = check_request(&super::tests::head(&req).unwrap()).unwrap();
        assert_eq!(
            query_eid(&target).unwrap().as_deref(),
            Some("os::012345-CPE%2F1")
        );
        let req = request_with_eid("h", 1, "/usp?x=1", key, Some("self::a b"));
        assert!(
            req.starts_with("GET /usp?x=1&eid=self::a%20b HTTP/1.1"),
            "{req}"
        );
        assert_eq!(
            request("h", 1, "/usp", key).lines().next(),
            Some("GET /usp HTTP/1.1")
        );

        assert_eq!(query_eid("/usp").unwrap(), None);
        assert_eq!(query_eid("/usp?a=b").unwrap(), None);
        assert_eq!(
            query_eid("/usp?a=b&eid=proto%3A%3Actl").unwrap().as_deref(),
            Some("proto::ctl")
        );
        for bad in [
            "/usp?eid=",
            "/usp?eid=%",
            "/usp?eid=%zz",
            "/usp?eid=%00x",
            "/usp?eid=%ff",
        ] {
            assert!(query_eid(bad).is_err(), "{bad}");
        }
    }
}
