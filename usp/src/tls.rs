//! TLS for the USP transports: rustls configurations from PEM files (server verification against
//! a CA file, client certificates, mutual TLS on the server side), the peer's identity from its
//! certificate (subject CN and SAN entries, for the agent's role mapping), and a connection that
//! splits into a reading half and a writing half usable from two threads, over TLS or plain TCP.
//!
//! ```no_run
//! use cpevisor_usp::tls;
//! let config = tls::client_config(
//!     "ca.pem".as_ref(),
//!     Some((std::path::Path::new("agent.pem"), std::path::Path::new("agent.key"))),
//! )?;
//! let (reader, writer, server) = tls::connect("127.0.0.1", 8883, Some((&config, "127.0.0.1")),
//!     std::time::Duration::from_secs(10))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};

/// A PEM file larger than this is not a certificate chain or a key.
const MAX_PEM_FILE: u64 = 1 << 20;
/// Server-side TLS handshakes wait at most this long per read unless the socket already has a
/// read timeout, so a silent client cannot hold a thread.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a TLS configuration or connection could not be made; the text names the file or peer.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> Self {
        io::Error::other(e.0)
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let mut pem = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_PEM_FILE + 1).read_to_end(&mut pem))
        .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
    if pem.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError(format!(
            "{what} {}: larger than {MAX_PEM_FILE} bytes",
            path.display()
        )));
    }
    Ok(pem)
}

/// Reads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, "certificate file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("certificate file {}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "certificate file {}: holds no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path, "key file")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError(format!(
            "key file {}: no usable private key: {e}",
            path.display()
        ))
    })
}

/// Adds every certificate of the PEM file `ca_file` (at least one) to `roots`; the one CA
/// loader of the USP transports and the agent's downloads. Returns how many were added.
pub fn add_ca_file(roots: &mut RootCertStore, ca_file: &Path) -> Result<usize, TlsError> {
    let bad = |why: String| TlsError(format!("CA file {}: {why}", ca_file.display()));
    let pem = read_pem(ca_file, "CA file")?;
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable certificate: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("holds no certificate".into()));
    }
    Ok(added)
}

fn roots(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    add_ca_file(&mut roots, ca_file)?;
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting only the CAs in `ca_file` (an operator's broker or
/// controller has its own PKI), presenting `client_cert` = (chain PEM, key PEM) when given.
pub fn client_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?
        .with_root_certificates(roots(ca_file)?);
    let config = match client_cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(load_certs(chain)?, load_key(key)?)
            .map_err(|e| {
                TlsError(format!(
                    "client certificate {} with key {}: {e}",
                    chain.display(),
                    key.display()
                ))
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A server configuration with `cert`/`key`; with `client_ca`, every client must present a
/// certificate issued by one of its CAs (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| {
            TlsError(format!(
                "server certificate {} with key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// Peer identity

/// Who the peer's (verified) certificate says it is. USP puts the Endpoint ID in a SAN URI
/// (`urn:bbf:usp:id:...`); operators often use the subject CN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's Common Name, if it has one.
    pub common_name: Option<String>,
    /// Subject Alternative Names of type dNSName.
    pub dns_names: Vec<String>,
    /// Subject Alternative Names of type URI (USP: `urn:bbf:usp:id:...`).
    pub uris: Vec<String>,
    /// Subject Alternative Names of type rfc822Name (e-mail addresses).
    pub emails: Vec<String>,
}

impl PeerIdentity {
    /// Every name the certificate carries, CN first: what a role table is matched against.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.common_name
            .iter()
            .chain(&self.uris)
            .chain(&self.dns_names)
            .chain(&self.emails)
            .map(String::as_str)
    }

    /// Reads the subject CN and the subjectAltName entries of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, TlsError> {
        parse_identity(der).map_err(|why| TlsError(format!("peer certificate: {why}")))
    }
}

/// One DER element: its tag and its contents.
struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
}

/// Reads DER elements one after another out of a slice; lengths are checked against it.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn next(&mut self) -> Result<Option<Tlv<'a>>, String> {
        let buf = self.0;
        if buf.is_empty() {
            return Ok(None);
        }
        if buf.len() < 2 {
            return Err("truncated DER element".into());
        }
        let tag = buf[0];
        if tag & 0x1F == 0x1F {
            return Err("multi-byte DER tag".into());
        }
        let (len, header) = match buf[1] {
            n if n < 0x80 => (n as usize, 2),
            n @ 0x81..=0x84 => {
                let count = (n & 0x7F) as usize;
                let bytes = buf.get(2..2 + count).ok_or("truncated DER length")?;
                let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
                (len, 2 + count)
            }
            _ => return Err("unsupported DER length form".into()),
        };
        let value = buf
            .get(header..header.checked_add(len).ok_or("DER length overflow")?)
            .ok_or("DER element longer than its container")?;
        self.0 = &buf[header + len..];
        Ok(Some(Tlv { tag, value }))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        match self.next()? {
            Some(t) if t.tag == tag => Ok(t),
            Some(t) => Err(format!("{what}: tag 0x{:02X}, expected 0x{tag:02X}", t.tag)),
            None => Err(format!("{what} missing")),
        }
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];
/// A name longer than this in a certificate is not one we map to a role.
const MAX_NAME: usize = 1024;
/// Bounds how many SAN entries we collect from one certificate.
const MAX_SAN_ENTRIES: usize = 64;

fn text(bytes: &[u8], what: &str) -> Result<String, String> {
    if bytes.len() > MAX_NAME {
        return Err(format!("{what} longer than {MAX_NAME} bytes"));
    }
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| format!("{what} is not UTF-8"))
}

fn parse_identity(der: &[u8]) -> Result<PeerIdentity, String> {
    let cert = Der(der).expect(SEQUENCE, "certificate")?;
    let mut tbs = Der(Der(cert.value).expect(SEQUENCE, "tbsCertificate")?.value);
    let mut first = tbs.next()?.ok_or("empty tbsCertificate")?;
    if first.tag == 0xA0 {
        // [0] EXPLICIT version; the serial number follows.
        first = tbs.next()?.ok_or("serial number missing")?;
    }
    if first.tag != 0x02 {
        return Err("serial number missing".into());
    }
    tbs.expect(SEQUENCE, "signature algorithm")?;
    tbs.expect(SEQUENCE, "issuer")?;
    tbs.expect(SEQUENCE, "validity")?;
    let subject = tbs.expect(SEQUENCE, "subject")?;
    tbs.expect(SEQUENCE, "subject public key info")?;

    let mut id = PeerIdentity::default();
    let mut rdns = Der(subject.value);
    while let Some(rdn) = rdns.next()? {
        if rdn.tag != SET {
            return Err("subject RDN is not a SET".into());
        }
        let mut atvs = Der(rdn.value);
        while let Some(atv) = atvs.next()? {
            let mut fields = Der(atv.value);
            let oid = fields.expect(0x06, "attribute type")?;
            let value = fields.next()?.ok_or("attribute value missing")?;
            if oid.value == OID_COMMON_NAME {
                // The last CN is the most specific one (as OpenSSL and mosquitto read it).
                id.common_name = Some(text(value.value, "subject CN")?);
            }
        }
    }

    while let Some(field) = tbs.next()? {
        if field.tag != 0xA3 {
            continue; // issuer/subject unique IDs
        }
        let mut exts = Der(Der(field.value).expect(SEQUENCE, "extensions")?.value);
        while let Some(ext) = exts.next()? {
            let mut parts = Der(ext.value);
            let oid = parts.expect(0x06, "extension id")?;
            let mut value = parts.next()?.ok_or("extension value missing")?;
            if value.tag == 0x01 {
                value = parts.next()?.ok_or("extension value missing")?; // critical flag
            }
            if oid.value != OID_SUBJECT_ALT_NAME {
                continue;
            }
            if value.tag != 0x04 {
                return Err("subjectAltName is not an OCTET STRING".into());
            }
            let mut names = Der(Der(value.value).expect(SEQUENCE, "subjectAltName")?.value);
            let mut count = 0;
            while let Some(name) = names.next()? {
                count += 1;
                if count > MAX_SAN_ENTRIES {
                    return Err(format!(
                        "more than {MAX_SAN_ENTRIES} subjectAltName entries"
                    ));
                }
                match name.tag {
                    0x81 => id.emails.push(text(name.value, "SAN email")?),
                    0x82 => id.dns_names.push(text(name.value, "SAN DNS name")?),
                    0x86 => id.uris.push(text(name.value, "SAN URI")?),
                    _ => {} // IP addresses, directory names: not used for roles
                }
            }
        }
    }
    Ok(id)
}

// ---------------------------------------------------------------------------------------------
// Split connections

/// What both halves share. Lock order: `out` before `conn`; the reader takes `conn` alone, so
/// a writer blocked on a full socket (holding `out`) never stops the reader from decrypting.
struct Inner {
    /// The socket for writing; held while a whole message goes out, so messages never mix.
    out: Mutex<TcpStream>,
    /// The TLS state, when TLS; encrypting and decrypting happen under it, never socket I/O
    /// that may block.
    conn: Option<Mutex<Connection>>,
    /// For shutting the socket down without waiting for a blocked writer.
    socket: TcpStream,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread holding the lock leaves a connection we can still close.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Moves every pending TLS record into `cipher`.
fn drain_tls(conn: &mut Connection, cipher: &mut Vec<u8>) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(cipher)?;
    }
    Ok(())
}

impl Inner {
    /// Sends whatever TLS records are pending (alerts, key updates, close_notify).
    fn flush_tls(&self) -> io::Result<()> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let mut out = lock(&self.out);
        let mut cipher = Vec::new();
        drain_tls(&mut lock(conn), &mut cipher)?;
        out.write_all(&cipher)
    }
}

/// The writing half: whole messages, one writer at a time (clone it for several threads).
#[derive(Clone)]
pub struct WriteHalf {
    inner: Arc<Inner>,
}

impl WriteHalf {
    /// Writes all of `bytes` as one unit: two threads' messages never interleave.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut out = lock(&self.inner.out);
        let Some(conn) = &self.inner.conn else {
            return out.write_all(bytes);
        };
        let mut rest = bytes;
        let mut cipher = Vec::new();
        loop {
            {
                let mut conn = lock(conn);
                // rustls buffers a bounded amount: encrypt a part, send it, go on.
                let n = conn.writer().write(rest)?;
                rest = &rest[n..];
                drain_tls(&mut conn, &mut cipher)?;
                if n == 0 && cipher.is_empty() {
                    // Neither plaintext taken nor records made: the session cannot send.
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "TLS session accepts no more data",
                    ));
                }
            }
            out.write_all(&cipher)?;
            cipher.clear();
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Sends TLS close_notify (where TLS, unless a blocked writer holds the socket) and shuts
    /// the socket down both ways, which also wakes the reading half.
    pub fn close(&self) {
        if let (Some(conn), Ok(mut out)) = (&self.inner.conn, self.inner.out.try_lock()) {
            let mut cipher = Vec::new();
            {
                let mut conn = lock(conn);
                conn.send_close_notify();
                let _ = drain_tls(&mut conn, &mut cipher);
            }
            let _ = out.write_all(&cipher);
        }
        let _ = self.inner.socket.shutdown(Shutdown::Both);
    }

    /// Sets how long a blocked write may wait for the peer.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.socket.set_write_timeout(timeout)
    }
}

/// The reading half: a `Read` over the connection's plaintext, for one reader thread.
pub struct ReadHalf {
    inner: Arc<Inner>,
    /// A clone of the socket: the reader blocks on it without holding any lock.
    tcp: TcpStream,
    raw: Box<[u8]>,
    raw_start: usize,
    raw_end: usize,
}

impl ReadHalf {
    /// Sets how long a read may wait for data (keep-alive supervision).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp.set_read_timeout(timeout)
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(conn) = &self.inner.conn else {
            return self.tcp.read(buf); // plain TCP: nothing to decrypt
        };
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let must_flush = {
                let mut conn = lock(conn);
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n), // 0: the peer sent close_notify
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.raw_start < self.raw_end {
                    // rustls may take only part of what the socket gave us.
                    let n = conn.read_tls(&mut &self.raw[self.raw_start..self.raw_end])?;
                    self.raw_start += n;
                    match conn.process_new_packets() {
                        Ok(_) => Some(None),
                        // Send the peer the alert rustls queued, then fail.
                        Err(e) => Some(Some(e)),
                    }
                } else {
                    None
                }
            };
            if let Some(failure) = must_flush {
                // Key updates need an answer; a failure sends the peer an alert.
                let flushed = self.inner.flush_tls();
                if let Some(e) = failure {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS: {e}"),
                    ));
                }
                flushed?;
                continue;
            }
            // No plaintext buffered: wait for the socket without holding the lock.
            let n = self.tcp.read(&mut self.raw)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed without TLS close_notify",
                ));
            }
            self.raw_start = 0;
            self.raw_end = n;
        }
    }
}

fn split(tcp: TcpStream, conn: Option<Connection>) -> io::Result<(ReadHalf, WriteHalf)> {
    let inner = Arc::new(Inner {
        out: Mutex::new(tcp.try_clone()?),
        conn: conn.map(Mutex::new),
        socket: tcp.try_clone()?,
    });
    Ok((
        ReadHalf {
            inner: inner.clone(),
            tcp,
            raw: vec![0u8; 16 * 1024 + 512].into_boxed_slice(),
            raw_start: 0,
            raw_end: 0,
        },
        WriteHalf { inner },
    ))
}

/// Pushes every pending TLS record to the socket (during the handshake, before the split).
fn flush_tls(tcp: &mut TcpStream, conn: &mut Connection) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(tcp)?;
    }
    tcp.flush()
}

/// Runs a handshake to completion on a blocking socket with a deadline.
fn handshake(tcp: &mut TcpStream, conn: &mut Connection, timeout: Duration) -> io::Result<()> {
    let old = tcp.read_timeout()?;
    tcp.set_read_timeout(Some(timeout))?;
    while conn.is_handshaking() {
        conn.complete_io(tcp)?;
    }
    // Flush anything the final flight left (a TLS 1.3 client's Finished).
    flush_tls(tcp, conn)?;
    tcp.set_read_timeout(old)
}

/// Turns a host name and port into addresses. A static glibc binary on a router has no NSS,
/// so the agent passes its own resolver (hosts file + DNS); without one, the C library's is
/// used (fine for IP literals, hosts and tests).
#[derive(Clone)]
pub struct Resolver(pub Arc<ResolveFn>);

/// The resolver's signature: host and port to addresses, or why there are none.
pub type ResolveFn = dyn Fn(&str, u16) -> Result<Vec<SocketAddr>, String> + Send + Sync;

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

fn resolve(resolver: Option<&Resolver>, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    match resolver {
        Some(Resolver(resolve)) => resolve(host, port)
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("resolve {host}: {e}"))),
        None => Ok((host, port).to_socket_addrs()?.collect()),
    }
}

/// Opens a TCP connection (trying each resolved address within `timeout`) and, with `tls` =
/// (configuration, expected server name), a verified TLS session over it. Returns the halves
/// and, for TLS, the server certificate's identity.
pub fn connect(
    host: &str,
    port: u16,
    tls: Option<(&Arc<ClientConfig>, &str)>,
    timeout: Duration,
) -> io::Result<(ReadHalf, WriteHalf, Option<PeerIdentity>)> {
    connect_with(None, host, port, tls, timeout)
}

/// `connect` with the host name resolved by `resolver`.
pub fn connect_with(
    resolver: Option<&Resolver>,
    host: &str,
    port: u16,
    tls: Option<(&Arc<ClientConfig>, &str)>,
    timeout: Duration,
) -> io::Result<(ReadHalf, WriteHalf, Option<PeerIdentity>)> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host}:{port} resolves to no address"),
    );
    let mut tcp = None;
    // A few addresses are plenty; a resolver's long answer must not stretch the attempt.
    for addr in resolve(resolver, host, port)?.into_iter().take(8) {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = io::Error::new(e.kind(), format!("{addr}: {e}")),
        }
    }
    let mut tcp = tcp.ok_or(last)?;
    tcp.set_nodelay(true)?;
    let Some((config, server_name)) = tls else {
        let (r, w) = split(tcp, None)?;
        return Ok((r, w, None));
    };
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("server name {server_name:?}: {e}"),
        )
    })?;
    let client = ClientConnection::new(config.clone(), name)
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    let mut conn = Connection::Client(client);
    handshake(&mut tcp, &mut conn, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {host}:{port}: {e}")))?;
    let identity = match conn.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => Some(PeerIdentity::from_der(cert)?),
        None => None,
    };
    let (r, w) = split(tcp, Some(conn))?;
    Ok((r, w, identity))
}

/// Accepts a server-side session on an accepted socket: TLS when `config` is given (with its
/// client verification), plain otherwise. Returns the client certificate's identity, if any.
pub fn accept(
    mut tcp: TcpStream,
    config: Option<&Arc<ServerConfig>>,
) -> io::Result<(ReadHalf, WriteHalf, Option<PeerIdentity>)> {
    tcp.set_nodelay(true)?;
    let Some(config) = config else {
        let (r, w) = split(tcp, None)?;
        return Ok((r, w, None));
    };
    let server = rustls::ServerConnection::new(config.clone())
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    let mut conn = Connection::Server(server);
    let timeout = tcp.read_timeout()?.unwrap_or(HANDSHAKE_TIMEOUT);
    handshake(&mut tcp, &mut conn, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
    let identity = match conn.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => Some(PeerIdentity::from_der(cert)?),
        None => None,
    };
    let (r, w) = split(tcp, Some(conn))?;
    Ok((r, w, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a DER TLV (short or long length form).
    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if value.len() < 0x80 {
            out.push(value.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn cert_with(subject_cn: &str, san: &[(u8, &str)]) -> Vec<u8> {
        let cn = tlv(
            SET,
            &tlv(
                SEQUENCE,
                &[tlv(0x06, OID_COMMON_NAME), tlv(0x0C, subject_cn.as_bytes())].concat(),
            ),
        );
        let names: Vec<u8> = san
            .iter()
            .flat_map(|(t, v)| tlv(*t, v.as_bytes()))
            .collect();
        let ext = tlv(
            SEQUENCE,
            &[
                tlv(0x06, OID_SUBJECT_ALT_NAME),
                tlv(0x01, &[0xFF]),
                tlv(0x04, &tlv(SEQUENCE, &names)),
            ]
            .concat(),
        );
        let tbs = tlv(
            SEQUENCE,
            &[
                tlv(0xA0, &tlv(0x02, &[2])),
                tlv(0x02, &[1]),
                tlv(SEQUENCE, &[]),
                tlv(SEQUENCE, &[]),
                tlv(SEQUENCE, &[]),
                tlv(SEQUENCE, &cn),
                tlv(SEQUENCE, &[]),
                tlv(0xA3, &tlv(SEQUENCE, &ext)),
            ]
            .concat(),
        );
        tlv(
            SEQUENCE,
            &[tbs, tlv(SEQUENCE, &[]), tlv(0x03, &[0])].concat(),
        )
    }

    #[test]
    fn identity_from_cn_and_san() {
        let der = cert_with(
            "controller-1",
            &[
                (0x86, "urn:bbf:usp:id:oui-1"),
                (0x82, "ctl.example"),
                (0x87, "\x7f\0\0\x01"),
            ],
        );
        let id = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(id.common_name.as_deref(), Some("controller-1"));
        assert_eq!(id.uris, ["urn:bbf:usp:id:oui-1"]);
        assert_eq!(id.dns_names, ["ctl.example"]);
        assert_eq!(
            id.names().collect::<Vec<_>>(),
            ["controller-1", "urn:bbf:usp:id:oui-1", "ctl.example"]
        );
    }

    #[test]
    fn truncated_or_garbage_certificates_are_errors() {
        let der = cert_with("x", &[(0x82, "a")]);
        for cut in 0..der.len() {
            assert!(PeerIdentity::from_der(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert!(PeerIdentity::from_der(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_err());
        assert!(PeerIdentity::from_der(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        let many: Vec<(u8, &str)> = (0..=MAX_SAN_ENTRIES).map(|_| (0x82, "a")).collect();
        assert!(PeerIdentity::from_der(&cert_with("x", &many)).is_err());
    }

    #[test]
    fn missing_files_name_the_file() {
        let e = load_certs(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.0.contains("/nonexistent/ca.pem"), "{e}");
        let e = client_config(Path::new("/nonexistent/ca.pem"), None).unwrap_err();
        assert!(
            e.0.contains("CA") || e.0.contains("certificate file"),
            "{e}"
        );
    }

    #[test]
    fn ca_files_without_certificates_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("cpv-usp-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut roots = RootCertStore::empty();
        for (name, body, says) in [
            ("empty.pem", vec![], "holds no certificate"),
            (
                "text.pem",
                b"not a certificate\n".to_vec(),
                "holds no certificate",
            ),
            (
                "big.pem",
                vec![b'x'; (MAX_PEM_FILE + 1) as usize],
                "larger than",
            ),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            let e = add_ca_file(&mut roots, &p).unwrap_err();
            assert!(e.0.starts_with("CA file ") && e.0.contains(name), "{e}");
            assert!(e.0.contains(says), "{e}");
        }
        assert!(roots.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mutated_certificates_never_panic() {
        let der = cert_with(
            "controller",
            &[(0x86, "urn:bbf:usp:id:x"), (0x82, "a.example")],
        );
        let mut seed = 0xD1B5_4A32_D192_ED03u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut bytes = der.clone();
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let _ = PeerIdentity::from_der(&bytes);
        }
    }
}
