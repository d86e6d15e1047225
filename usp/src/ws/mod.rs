//! WebSocket (RFC 6455) for USP (TR-369 WebSocket binding): client and server over TCP or TLS,
//! subprotocol `v1.usp` required, binary messages only, fragmented messages reassembled up to
//! a size limit, pings answered, and the close handshake. Anything against the RFC ends the
//! connection with the matching close code (1002 protocol error, 1003 text data, 1009 too big).
//!
//! ```no_run
//! use cpevisor_usp::ws::{self, WsConfig};
//! let config = WsConfig::default();
//! // Server: accept a socket, then read Records and answer them.
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let (tcp, _) = listener.accept()?;
//! let mut conn = ws::accept(tcp, None, &config)?;   // with TLS: Some(&server_config)
//! while let Ok(record) = conn.reader.recv() {
//!     conn.writer.send(&record)?;                   // echo; a real agent decodes it
//! }
//! // Client:
//! let conn = ws::connect("127.0.0.1", 8080, "/usp", None, &config)?;
//! conn.writer.send(b"record")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod base64;
mod error;
pub mod frame;
pub mod handshake;

use std::io::{self, BufReader};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use frame::FrameError;

use crate::tls::{self, PeerIdentity, ReadHalf, WriteHalf};

pub use error::WsError;
pub use handshake::SUBPROTOCOL;

/// Limits and timeouts.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// The largest message (after reassembly) we accept.
    pub max_message: usize,
    /// The largest handshake head (request or response line plus headers).
    pub max_handshake: usize,
    /// Connecting plus the opening handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Our USP Endpoint ID, announced in the handshake (TR-369 `bbf-usp-protocol` extension):
    /// always by a client, by a server to clients that announced theirs.
    pub endpoint_id: Option<String>,
    /// Resolves host names for `connect`; `None` uses the C library (see `tls::Resolver`).
    pub resolver: Option<tls::Resolver>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_message: 1 << 20,
            max_handshake: 8192,
            handshake_timeout: Duration::from_secs(15),
            endpoint_id: None,
            resolver: None,
        }
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], WsError> {
    let mut out = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut out)
        .map_err(|_| WsError::Io(io::Error::other("no random numbers for WebSocket masking")))?;
    Ok(out)
}

/// The sending side; clone it to send from several threads (each message is written whole).
#[derive(Clone)]
pub struct WsWriter {
    out: WriteHalf,
    /// Clients mask every frame (section 5.3), servers never do.
    is_client: bool,
    close_sent: Arc<AtomicBool>,
}

impl WsWriter {
    fn frame(&self, opcode: u8, payload: &[u8]) -> Result<(), WsError> {
        let mask = if self.is_client {
            Some(random_bytes::<4>()?)
        } else {
            None
        };
        self.out
            .send(&frame::encode(true, opcode, payload, mask))
            .map_err(WsError::Io)
    }

    /// Sends one binary message (one frame).
    pub fn send(&self, message: &[u8]) -> Result<(), WsError> {
        if self.close_sent.load(Ordering::Acquire) {
            return Err(WsError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "WebSocket is closing",
            )));
        }
        self.frame(frame::OP_BINARY, message)
    }

    /// Sends a ping (payload up to 125 bytes); the peer's pong is consumed by `recv`.
    pub fn ping(&self, payload: &[u8]) -> Result<(), WsError> {
        if payload.len() > frame::MAX_CONTROL_PAYLOAD {
            return Err(WsError::Protocol {
                code: frame::CLOSE_PROTOCOL_ERROR,
                why: "ping payload over 125 bytes".into(),
            });
        }
        self.frame(frame::OP_PING, payload)
    }

    /// Starts the close handshake (once); `recv` then returns `Closed` when the peer answers.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), WsError> {
        if self.close_sent.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.frame(frame::OP_CLOSE, &frame::close_payload(code, reason))
    }

    /// Drops the connection without a close handshake (and wakes a blocked `recv`).
    pub fn abort(&self) {
        self.close_sent.store(true, Ordering::Release);
        self.out.close();
    }

    /// Sends close `code` and drops the connection (after a protocol error).
    fn fail(&self, code: u16, why: &str) {
        let _ = self.close(code, why);
        self.out.close();
    }
}

/// The receiving side, for one reader thread.
pub struct WsReader {
    input: BufReader<ReadHalf>,
    writer: WsWriter,
    max_message: usize,
}

impl WsReader {
    /// The next binary message. Pings are answered and pongs consumed on the way; a close
    /// from the peer is answered and reported as `WsError::Closed`.
    pub fn recv(&mut self) -> Result<Vec<u8>, WsError> {
        let mut message: Option<Vec<u8>> = None;
        loop {
            let room = self.max_message - message.as_ref().map_or(0, Vec::len);
            let f = match frame::read(&mut self.input, !self.writer.is_client, room) {
                Ok(f) => f,
                Err(FrameError::Io(e)) => return Err(WsError::Io(e)),
                Err(FrameError::Protocol { code, why }) => return Err(self.fail(code, why)),
            };
            match f.opcode {
                frame::OP_PING => self.writer.frame(frame::OP_PONG, &f.payload)?,
                frame::OP_PONG => {}
                frame::OP_CLOSE => {
                    let (code, reason) = match frame::parse_close(&f.payload) {
                        Ok(c) => c,
                        Err(FrameError::Protocol { code, why }) => return Err(self.fail(code, why)),
                        Err(FrameError::Io(e)) => return Err(WsError::Io(e)),
                    };
                    // Echo the close (section 5.5.1) unless we started it, then hang up.
                    let echo = if code == 1005 {
                        frame::CLOSE_NORMAL
                    } else {
                        code
                    };
                    let _ = self.writer.close(echo, "");
                    self.writer.out.close();
                    return Err(WsError::Closed { code, reason });
                }
                frame::OP_TEXT => {
                    return Err(self.fail(
                        frame::CLOSE_UNSUPPORTED_DATA,
                        "text frame: USP uses binary frames only".into(),
                    ))
                }
                frame::OP_BINARY => {
                    if message.is_some() {
                        return Err(self.fail(
                            frame::CLOSE_PROTOCOL_ERROR,
                            "new message inside a fragmented one".into(),
                        ));
                    }
                    if f.fin {
                        return Ok(f.payload);
                    }
                    message = Some(f.payload);
                }
                _ => {
                    // Continuation (frame::read admits no other opcode).
                    let Some(mut m) = message.take() else {
                        return Err(self.fail(
                            frame::CLOSE_PROTOCOL_ERROR,
                            "continuation frame without a message".into(),
                        ));
                    };
                    m.extend_from_slice(&f.payload);
                    if f.fin {
                        return Ok(m);
                    }
                    message = Some(m);
                }
            }
        }
    }

    fn fail(&self, code: u16, why: String) -> WsError {
        self.writer.fail(code, &why);
        WsError::Protocol { code, why }
    }

    /// Sets how long `recv` waits for data (`None`: forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.input.get_ref().set_read_timeout(timeout)
    }
}

/// An open WebSocket.
pub struct WsConnection {
    /// Receives messages (one reader thread).
    pub reader: WsReader,
    /// Sends messages (cloneable).
    pub writer: WsWriter,
    /// The peer certificate's identity (TLS with a certificate only).
    pub peer: Option<PeerIdentity>,
    /// The request path (server side; the one we asked for on the client side).
    pub path: String,
    /// The Endpoint ID the peer announced in the handshake, if it did.
    pub peer_endpoint_id: Option<String>,
}

/// What the handshake established about the peer.
struct Opened {
    is_client: bool,
    peer: Option<PeerIdentity>,
    path: String,
    peer_endpoint_id: Option<String>,
}

fn open(input: BufReader<ReadHalf>, out: WriteHalf, o: Opened, config: &WsConfig) -> WsConnection {
    let writer = WsWriter {
        out,
        is_client: o.is_client,
        close_sent: Arc::new(AtomicBool::new(false)),
    };
    WsConnection {
        reader: WsReader {
            input,
            writer: writer.clone(),
            max_message: config.max_message,
        },
        writer,
        peer: o.peer,
        path: o.path,
        peer_endpoint_id: o.peer_endpoint_id,
    }
}

/// Connects to `host:port`, over TLS when `tls` = (configuration, server name) is given, and
/// opens a `v1.usp` WebSocket at `path`.
pub fn connect(
    host: &str,
    port: u16,
    path: &str,
    tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
    config: &WsConfig,
) -> Result<WsConnection, WsError> {
    handshake::check_path(path)?;
    let eid = config.endpoint_id.as_deref();
    if let Some(eid) = eid {
        handshake::check_eid(eid)?;
    }
    let (reader, writer, peer) = tls::connect_with(
        config.resolver.as_ref(),
        host,
        port,
        tls,
        config.handshake_timeout,
    )?;
    reader.set_read_timeout(Some(config.handshake_timeout))?;
    writer.set_write_timeout(Some(config.handshake_timeout))?;
    let key = base64::base64_encode(&random_bytes::<16>()?);
    writer.send(handshake::request_with_eid(host, port, path, &key, eid).as_bytes())?;
    let mut input = BufReader::with_capacity(8192, reader);
    let result = handshake::read_head(&mut input, config.max_handshake).and_then(|head| {
        handshake::check_response(&head, &key)?;
        handshake::peer_eid(&head).map_err(WsError::Handshake)
    });
    let peer_endpoint_id = match result {
        Ok(eid) => eid,
        Err(e) => {
            writer.close();
            return Err(e);
        }
    };
    input.get_ref().set_read_timeout(None)?;
    writer.set_write_timeout(None)?;
    let opened = Opened {
        is_client: true,
        peer,
        path: path.to_owned(),
        peer_endpoint_id,
    };
    Ok(open(input, writer, opened, config))
}

/// Runs the server side on an accepted socket: TLS when `tls` is given (with its client
/// certificate policy), then the opening handshake. A bad request is answered with an HTTP
/// error and refused.
pub fn accept(
    tcp: TcpStream,
    tls: Option<&Arc<rustls::ServerConfig>>,
    config: &WsConfig,
) -> Result<WsConnection, WsError> {
    tcp.set_read_timeout(Some(config.handshake_timeout))?;
    tcp.set_write_timeout(Some(config.handshake_timeout))?;
    let (reader, writer, peer) = tls::accept(tcp, tls)?;
    let mut input = BufReader::with_capacity(8192, reader);
    let head = match handshake::read_head(&mut input, config.max_handshake) {
        Ok(h) => h,
        Err(e) => {
            let refusal = handshake::Refusal {
                status: 400,
                why: e.to_string(),
            };
            let _ = writer.send(handshake::refusal_response(&refusal).as_bytes());
            writer.close();
            return Err(e);
        }
    };
    let checked = handshake::check_request(&head).and_then(|(path, key)| {
        let refuse = |why| handshake::Refusal { status: 400, why };
        let offered = handshake::peer_eid(&head).map_err(refuse)?;
        // The query's eid is TR-369 1.3's way (R-WS.10b); the extension the older one.
        let from_query = handshake::query_eid(&path).map_err(refuse)?;
        Ok((path, key, offered.is_some(), from_query.or(offered)))
    });
    let (path, key, offered_extension, peer_endpoint_id) = match checked {
        Ok(ok) => ok,
        Err(refusal) => {
            let _ = writer.send(handshake::refusal_response(&refusal).as_bytes());
            writer.close();
            return Err(WsError::Handshake(format!(
                "refused with {}: {}",
                refusal.status, refusal.why
            )));
        }
    };
    // Announce our Endpoint ID only to a client that offered the extension (RFC 6455 9.1).
    let our_eid = offered_extension
        .then_some(config.endpoint_id.as_deref())
        .flatten()
        .filter(|e| handshake::check_eid(e).is_ok());
    writer.send(handshake::response_with_eid(&key, our_eid).as_bytes())?;
    input.get_ref().set_read_timeout(None)?;
    writer.set_write_timeout(None)?;
    let opened = Opened {
        is_client: false,
        peer,
        path,
        peer_endpoint_id,
    };
    Ok(open(input, writer, opened, config))
}
