//! The rustls side of a PostgreSQL connection: a client configuration from the settled
//! parameters (the CA and client certificate through the USP crate's loaders, the key through
//! `private_file`), a certificate check per mode, and tokio-postgres's TLS traits over
//! tokio-rustls. The handshake runs inside the connection's deadline (`pg::CONNECT_DEADLINE`).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use super::{Mode, Settled};

/// A PEM key file larger than this is not a key.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// What is checked of the server's certificate.
#[derive(Debug)]
struct Check {
    /// The CAs its chain must lead to; none: `require` without `sslrootcert`, as libpq.
    roots: Option<Arc<RootCertStore>>,
    /// Whether it must name the host (`verify-full`).
    host_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Check {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.host_name {
            verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    // Whatever the mode, the server proves it holds the certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client key `path`: a private file (`private_file`) holding a PEM key.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let what = |e: String| format!("sslkey {}: {e}", path.display());
    let pem = crate::private_file::read(path, MAX_KEY_FILE).map_err(what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        what(format!(
            "no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"
        ))
    })
}

fn client_config(settled: &Settled) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &settled.rootcert {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            cpevisor_usp::tls::add_ca_file(&mut roots, path)
                .map_err(|e| format!("sslrootcert: {e}"))?;
            Some(Arc::new(roots))
        }
        None => None,
    };
    let check = Check {
        roots,
        host_name: settled.mode == Mode::VerifyFull,
        provider: provider.clone(),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(check));
    let mut config = match &settled.client {
        Some((cert, key)) => {
            let chain = cpevisor_usp::tls::load_certs(cert).map_err(|e| format!("sslcert: {e}"))?;
            builder
                .with_client_auth_cert(chain, load_key(key)?)
                .map_err(|e| {
                    format!(
                        "sslcert {} with sslkey {}: {e}",
                        cert.display(),
                        key.display()
                    )
                })?
        }
        None => builder.with_no_client_auth(),
    };
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`) wants it; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS of one URL: its client configuration and the CA file it trusts.
struct Tls {
    config: Arc<ClientConfig>,
    rootcert: Option<PathBuf>,
}

impl Tls {
    /// A failed handshake's error, saying which CAs when the server's chain led to none of
    /// them (rustls's words for that are one: `UnknownIssuer` or `BadSignature`).
    fn explain(&self, e: io::Error) -> io::Error {
        let unsigned = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| {
                matches!(
                    r,
                    rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer | CertificateError::BadSignature
                    )
                )
            });
        match &self.rootcert {
            Some(file) if unsigned => io::Error::other(format!(
                "{e}: no CA of sslrootcert {} signed the server's certificate",
                file.display()
            )),
            _ => e,
        }
    }
}

/// tokio-postgres's TLS for one URL: none (`disable`: tokio-postgres never asks for a
/// handshake) or rustls with the URL's checks. Cloned for cancel requests.
#[derive(Clone)]
pub struct PgTls(Option<Arc<Tls>>);

impl PgTls {
    /// The TLS a settled URL asks for, its files read.
    pub fn new(settled: &Settled) -> Result<PgTls, String> {
        if settled.mode == Mode::Disable {
            return Ok(PgTls(None));
        }
        Ok(PgTls(Some(Arc::new(Tls {
            config: client_config(settled)?,
            rootcert: settled.rootcert.clone(),
        }))))
    }
}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = Stream;
    type TlsConnect = Connect;
    type Error = String;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, String> {
        let Some(tls) = &self.0 else {
            return Ok(Connect(None));
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("host {host:?} is no name a certificate can hold"))?;
        Ok(Connect(Some((tls.clone(), name))))
    }
}

/// One handshake to come.
pub struct Connect(Option<(Arc<Tls>, ServerName<'static>)>);

impl TlsConnect<Socket> for Connect {
    type Stream = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let (tls, name) = self
                .0
                .ok_or_else(|| io::Error::other("sslmode=disable: no TLS"))?;
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(name, socket)
                .await
                .map_err(|e| tls.explain(e))?;
            Ok(Stream(stream))
        })
    }
}

/// A connection over TLS.
pub struct Stream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for Stream {
    // No SCRAM channel binding (tls-server-end-point hashes the certificate with its own
    // signature's hash, which would take an X.509 parser): verify-ca and verify-full
    // authenticate the server by its certificate instead.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
