//! rustls client configuration: the webpki (Mozilla) roots plus an optional extra CA file, as
//! an operator with its own PKI (and every test) needs.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::fault::{Fault, FaultCode};

/// A CA bundle larger than this is not a CA bundle.
const MAX_CA_FILE: u64 = 1 << 20;

fn invalid(path: &Path, why: impl std::fmt::Display) -> Fault {
    Fault::new(
        FaultCode::InvalidArguments,
        format!("CA file {}: {why}", path.display()),
    )
}

pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, Fault> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_file {
        let mut pem = Vec::new();
        File::open(path)
            .and_then(|f| f.take(MAX_CA_FILE + 1).read_to_end(&mut pem))
            .map_err(|e| invalid(path, e))?;
        if pem.len() as u64 > MAX_CA_FILE {
            return Err(invalid(path, format!("larger than {MAX_CA_FILE} bytes")));
        }
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| invalid(path, format!("bad PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(path, format!("unusable certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid(path, "holds no certificate"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Fault::new(FaultCode::InvalidArguments, format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
