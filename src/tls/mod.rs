//! The mTLS server side: the rustls configuration built from the served certificate, its key
//! and the client CA bundle, and the identity regate itself presents.
//!
//! The configuration lives behind an `ArcSwap` in [`TlsStore`] and is loaded once per
//! handshake, so a reload only has to publish a new [`TlsState`]. The served pair
//! ([`ServedCert`]) and the CA bundle ([`ClientCa`]) load separately, so a bad push of one
//! never holds back the other. Peer identities are parsed in [`identity`]; nothing else here
//! reads certificates field by field.

pub mod identity;
pub mod workload;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::danger::ClientCertVerifier;
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
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cert: {path} does not parse as PEM: {source}")]
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
    #[error("client-ca: {path} does not parse as PEM: {source}")]
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
    /// What the SPIFFE Workload API delivered cannot be served or trusted.
    #[error("spiffe-socket: {0}")]
    Workload(String),
}

/// The certificate chain and key regate presents, checked to match.
pub struct ServedCert {
    pub certified: Arc<CertifiedKey>,
    /// regate's own identity, from the served leaf.
    pub local: PeerIdentity,
    /// SHA-256 over the two files' bytes: a reload with the same content is a no-op.
    pub content_hash: Vec<u8>,
}

/// The client CA bundle, as a verifier.
pub struct ClientCa {
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// SHA-256 of each CA certificate, lowercase hex.
    pub fingerprints: Vec<String>,
    /// When the first CA in the bundle expires (Unix seconds).
    pub earliest_not_after: i64,
    pub content_hash: Vec<u8>,
    /// The trust domains with a bundle of their own, when the bundles come from the
    /// Workload API; empty for a `--client-ca` file, which trusts its CAs for any name.
    pub trust_domains: Vec<String>,
}

/// A loaded, consistent TLS setup: what a handshake uses and what regate says about itself.
pub struct TlsState {
    pub server_config: Arc<ServerConfig>,
    pub cert: Arc<ServedCert>,
    pub ca: Arc<ClientCa>,
    /// Counts CA bundle changes. A connection verified under an older generation has its
    /// chain checked again against the current bundle on its next request.
    pub ca_generation: u64,
}

/// The current [`TlsState`], swapped whole on reload.
pub type TlsStore = Arc<ArcSwap<TlsState>>;

impl TlsState {
    /// Read and check the served pair and the CA bundle. Every problem found is returned.
    pub fn load(cert: &Path, key: &Path, client_ca: &Path) -> Result<TlsState, Vec<TlsError>> {
        let mut errors = Vec::new();
        let served = ServedCert::load(cert, key).map_err(|e| errors.push(e)).ok();
        let ca = ClientCa::load(client_ca).map_err(|e| errors.push(e)).ok();
        let (Some(served), Some(ca)) = (served, ca) else {
            return Err(errors);
        };
        TlsState::build(Arc::new(served), Arc::new(ca), 0).map_err(|e| vec![e])
    }

    /// A server configuration from a served pair and a CA bundle.
    pub fn build(
        cert: Arc<ServedCert>,
        ca: Arc<ClientCa>,
        ca_generation: u64,
    ) -> Result<TlsState, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(ca.verifier.clone())
            .with_cert_resolver(Arc::new(FixedCert(cert.certified.clone())));
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        // Tickets and session ids would let a client resume without presenting its
        // certificate again; identity must come from a full handshake on every connection.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(TlsState {
            server_config: Arc::new(config),
            cert,
            ca,
            ca_generation,
        })
    }
}

/// Read a certificate, key or CA file, naming it in the error.
pub fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

impl ServedCert {
    pub fn load(cert: &Path, key: &Path) -> Result<ServedCert, TlsError> {
        ServedCert::parse(cert, &read(cert, "cert")?, key, &read(key, "key")?)
    }

    /// Parse the bytes a caller has read (and perhaps hashed), so what is served is exactly
    /// what was hashed; the paths only name the files in errors.
    pub fn parse(
        cert: &Path,
        cert_bytes: &[u8],
        key: &Path,
        key_bytes: &[u8],
    ) -> Result<ServedCert, TlsError> {
        let cert_path = cert.display().to_string();
        let chain = CertificateDer::pem_slice_iter(cert_bytes)
            .collect::<Result<Vec<_>, _>>()
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
        let der = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|source| TlsError::ReadKey {
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
        Ok(ServedCert {
            certified: Arc::new(certified),
            local,
            content_hash: hash_all(&[cert_bytes, key_bytes]),
        })
    }
}

impl ClientCa {
    pub fn load(client_ca: &Path) -> Result<ClientCa, TlsError> {
        ClientCa::parse(client_ca, &read(client_ca, "client-ca")?)
    }

    /// Parse a bundle already read; `client_ca` only names the file in errors.
    pub fn parse(client_ca: &Path, bytes: &[u8]) -> Result<ClientCa, TlsError> {
        let path = client_ca.display().to_string();
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::ReadCa {
                path: path.clone(),
                source,
            })?;
        let fingerprints = certs
            .iter()
            .map(|c| identity::hex(ring::digest::digest(&ring::digest::SHA256, c).as_ref()))
            .collect();
        let earliest_not_after = certs
            .iter()
            .filter_map(|c| PeerIdentity::from_der(c).ok())
            .map(|c| c.not_after)
            .min()
            .unwrap_or(0);
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(certs);
        // A bundle with an unparsable member is refused whole: silently trusting less (or
        // different) than the operator wrote is a surprise found only in an outage.
        if added == 0 || ignored > 0 {
            return Err(TlsError::NoCa { path });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| TlsError::Verifier { path, source })?;
        Ok(ClientCa {
            verifier,
            fingerprints,
            earliest_not_after,
            content_hash: hash_all(&[bytes]),
            trust_domains: Vec::new(),
        })
    }

    /// Whether `chain` (leaf first) still verifies against this bundle now.
    pub fn verifies(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
            .is_ok()
    }
}

/// SHA-256 over byte strings, each prefixed with its length.
pub fn hash_all(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finish().as_ref().to_vec()
}

/// Always presents the one loaded chain; SNI does not select between certificates.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
