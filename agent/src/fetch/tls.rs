//! rustls client configuration for downloads: the firmware's CA bundle (the public CAs, where
//! the firmware has one) plus an optional extra CA file, as an operator with its own PKI (and
//! every test) needs.
//!
//! The agent carries no root certificates of its own: Mozilla's set compiled in (webpki-roots)
//! cost about 60 KiB of flash in every binary (docs/flash.md), a second copy of what a router
//! that talks to public HTTPS servers has in its CA bundle anyway (OpenWrt's ca-bundle,
//! Debian's ca-certificates), and nothing an operator whose package server has its own CA
//! (`ca_file`) needs.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::fault::{Fault, FaultCode};

/// Where the firmware's public CA bundle lives (OpenWrt's ca-bundle, Debian's ca-certificates).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Largest bundle read (Debian's is about 220 KB).
const MAX_BUNDLE: u64 = 1 << 20;

/// The download client's trust: the certificates of `system_bundle` (those webpki can use;
/// a missing or unreadable bundle trusts none) and every one of `extra_ca_file` (which must
/// hold at least one, all usable). No trusted certificate at all is a download failure
/// saying where trust comes from.
pub fn client_config(
    system_bundle: &Path,
    extra_ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, Fault> {
    let mut roots = RootCertStore::empty();
    if let Some(pem) = read_bundle(system_bundle) {
        // The firmware's file, not the operator's: an entry webpki cannot use is skipped.
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).flatten());
    }
    if let Some(path) = extra_ca_file {
        // The USP crate's loader: one size limit and one set of messages for every CA file.
        cpevisor_usp::tls::add_ca_file(&mut roots, path)
            .map_err(|e| Fault::new(FaultCode::InvalidArguments, e.0))?;
    }
    if roots.is_empty() {
        return Err(Fault::new(
            FaultCode::DownloadFailure,
            format!(
                "https: no trusted CA certificate: no CA bundle at {} and no ca_file in the \
                 agent config",
                system_bundle.display()
            ),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Fault::new(FaultCode::InvalidArguments, format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn read_bundle(path: &Path) -> Option<Vec<u8>> {
    let mut pem = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_BUNDLE + 1).read_to_end(&mut pem))
        .ok()?;
    if pem.len() as u64 > MAX_BUNDLE {
        crate::log_warn!(
            "CA bundle {}: larger than {MAX_BUNDLE} bytes, not used",
            path.display()
        );
        return None;
    }
    Some(pem)
}
