//! The mTLS server side: the rustls configuration built from the served certificate, its key
//! and the client CA bundle, and the identity regate itself presents.
//!
//! The configuration lives behind an `ArcSwap` in [`TlsStore`] and is loaded once per
//! handshake, so a reload only has to publish a new [`TlsState`]. Peer identities are parsed
//! in [`identity`]; nothing else here reads certificates field by field.

pub mod identity;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use identity::PeerIdentity;

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cert: cannot read {path}: {source}")]
    ReadCert {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("cert: {path} holds no certificate")]
    NoCert { path: String },
    #[error("cert: {path}: the leaf certificate does not parse")]
    BadCert { path: String },
    #[error("key: cannot read a private key from {path}: {source}")]
    ReadKey {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("key: {path}: unsupported private key: {source}")]
    BadKey {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("key: {key} does not match the certificate in {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("client-ca: cannot read {path}: {source}")]
    ReadCa {
        path: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("client-ca: {path} holds no CA certificate, or one that does not parse")]
    NoCa { path: String },
    #[error("client-ca: {path}: {source}")]
    Verifier {
        path: String,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("tls: {0}")]
    Config(#[source] rustls::Error),
}

/// A loaded, consistent TLS setup: what a handshake uses and what regate says about itself.
pub struct TlsState {
    pub server_config: Arc<ServerConfig>,
    /// regate's own identity, from the served leaf.
    pub local: PeerIdentity,
}

/// The current [`TlsState`], swapped whole on reload.
pub type TlsStore = Arc<ArcSwap<TlsState>>;

impl TlsState {
    /// Read and check the served pair and the CA bundle. Every problem found is returned.
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<TlsState, Vec<TlsError>> {
        let mut errors = Vec::new();
        let pair = load_pair(cert, key).map_err(|e| errors.push(e)).ok();
        let roots = load_roots(client_ca).map_err(|e| errors.push(e)).ok();
        let (Some((certified, local)), Some(roots)) = (pair, roots) else {
            return Err(errors);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|source| {
                    vec![TlsError::Verifier {
                        path: client_ca.display().to_string(),
                        source,
                    }]
                })?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| vec![TlsError::Config(e)])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(FixedCert(Arc::new(certified))));
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        // Tickets and session ids would let a client resume without presenting its
        // certificate again; identity must come from a full handshake on every connection.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(TlsState {
            server_config: Arc::new(config),
            local,
        })
    }
}

fn load_pair(cert: &Path, key: &Path) -> Result<(CertifiedKey, PeerIdentity), TlsError> {
    let cert_path = cert.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert {
            path: cert_path.clone(),
            source,
        })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCert {
        path: cert_path.clone(),
    })?;
    let local = PeerIdentity::from_der(leaf).map_err(|_| TlsError::BadCert {
        path: cert_path.clone(),
    })?;
    let key_path = key.display().to_string();
    let der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
        path: key_path.clone(),
        source,
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|source| {
        TlsError::BadKey {
            path: key_path.clone(),
            source,
        }
    })?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        key: key_path,
        cert: cert_path,
    })?;
    Ok((certified, local))
}

fn load_roots(client_ca: &Path) -> Result<RootCertStore, TlsError> {
    let path = client_ca.display().to_string();
    let certs = CertificateDer::pem_file_iter(client_ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCa {
            path: path.clone(),
            source,
        })?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    // A bundle with an unparsable member is refused whole: silently trusting less (or
    // different) than the operator wrote is a surprise found only in an outage.
    if added == 0 || ignored > 0 {
        return Err(TlsError::NoCa { path });
    }
    Ok(roots)
}

/// Always presents the one loaded chain; SNI does not select between certificates.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
