//! rustls client configuration: the webpki (Mozilla) roots plus an optional extra CA file, as
//! an operator with its own PKI (and every test) needs.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use crate::fault::{Fault, FaultCode};

pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, Fault> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca_file {
        // The USP crate's loader: one size limit and one set of messages for every CA file.
        cpevisor_usp::tls::add_ca_file(&mut roots, path)
            .map_err(|e| Fault::new(FaultCode::InvalidArguments, e.0))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Fault::new(FaultCode::InvalidArguments, format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
