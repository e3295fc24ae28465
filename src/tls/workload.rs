//! regate's credentials from the SPIFFE Workload API (`--spiffe-socket`): the X.509-SVID it
//! serves, and the trust bundles client certificates are checked against, its own trust
//! domain's and those of federated trust domains.
//!
//! The agent pushes every rotation over one long-lived stream (the `spiffe` crate's
//! [`X509Source`]); nothing here polls. Each observation becomes a [`ServedCert`] and a
//! [`ClientCa`], which the reloader publishes exactly as it publishes files it re-read, so a
//! rotation shows in the same metrics and `/status`. What the agent sends is checked as a
//! file would be: an SVID whose key does not match, or a bundle that does not parse, is
//! refused and the last good state stays.
//!
//! Trust is per trust domain, as SPIFFE requires: a client certificate must chain to the
//! bundle of the trust domain named in its own SPIFFE ID. A union of all bundles would let a
//! federated domain's CA mint identities of this one.
//!
//! This module does not decide when to reload or what to log; [`crate::reload`] does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{Error as RustlsError, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use spiffe::x509_source::X509SourceState;
use spiffe::X509Source;

use super::identity::{self, PeerIdentity};
use super::{hash_all, ClientCa, ServedCert, TlsError};

/// Whether `socket` is a Workload API address the client can dial: `unix:///path`,
/// `unix:path` or `tcp://IP:port`.
pub fn check_endpoint(socket: &str) -> Result<(), String> {
    spiffe::transport::Endpoint::parse(socket)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "{socket:?} is not a Workload API address like \
                 unix:///run/spire/sockets/agent.sock ({e})"
            )
        })
}

/// One Workload API observation, each half checked on its own: a bad SVID does not hold
/// back new bundles, nor the other way round (as with the files).
pub struct Credentials {
    pub served: Result<ServedCert, TlsError>,
    pub ca: Result<ClientCa, TlsError>,
}

impl Credentials {
    /// The selected (default) SVID and every bundle of one coherent observation.
    pub fn from_state(state: &X509SourceState) -> Credentials {
        let own = state
            .svid()
            .ok()
            .map(|svid| svid.spiffe_id().trust_domain().to_string());
        let served = state
            .svid()
            .map_err(|e| TlsError::Workload(format!("no usable SVID: {e}")))
            .and_then(|svid| {
                let chain = svid
                    .cert_chain()
                    .iter()
                    .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                    .collect();
                ServedCert::from_der(chain, svid.private_key().as_bytes().to_vec())
            });
        let ca = state
            .context()
            .map_err(|e| TlsError::Workload(format!("no trust bundles: {e}")))
            .and_then(|context| {
                let bundles = context
                    .bundle_set()
                    .iter()
                    .map(|(td, bundle)| {
                        let roots = bundle
                            .authorities()
                            .iter()
                            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                            .collect();
                        (td.to_string(), roots)
                    })
                    .collect();
                ClientCa::from_bundles(bundles, own.as_deref())
            });
        Credentials { served, ca }
    }

    /// The agent withdrew this workload's identity: nothing new to serve or trust. Recorded
    /// as a failed reload of both, so `/status` and the metrics show it; what is in force
    /// stays.
    pub fn withdrawn(why: &str) -> Credentials {
        let error = || TlsError::Workload(format!("the identity was withdrawn: {why}"));
        Credentials {
            served: Err(error()),
            ca: Err(error()),
        }
    }
}

impl ServedCert {
    /// A served pair from DER, as the Workload API delivers it (a PKCS#8 key).
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: Vec<u8>,
    ) -> Result<ServedCert, TlsError> {
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::Workload("the SVID has no certificate".into()))?;
        let local = PeerIdentity::from_der(leaf)
            .map_err(|_| TlsError::Workload("the SVID's leaf certificate does not parse".into()))?;
        let mut parts: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
        parts.push(&key);
        let content_hash = hash_all(&parts);
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
        let signer = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| TlsError::Workload(format!("unsupported SVID private key: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain, signer);
        certified.keys_match().map_err(|_| {
            TlsError::Workload("the SVID's key does not match its certificate".into())
        })?;
        Ok(ServedCert {
            certified: Arc::new(certified),
            local,
            content_hash,
        })
    }
}

impl ClientCa {
    /// Trust per trust domain: each domain's bundle verifies only SVIDs of that domain.
    /// A federated bundle that does not check out is left out (its callers are refused) and
    /// logged, rather than holding back the rest: a root this trust domain has dropped must
    /// not stay trusted because a partner's bundle broke. The bundle of `own`, regate's own
    /// trust domain (unknown: every bundle), is required to check out.
    pub fn from_bundles(
        bundles: BTreeMap<String, Vec<CertificateDer<'static>>>,
        own: Option<&str>,
    ) -> Result<ClientCa, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut by_domain = BTreeMap::new();
        let mut hints = Vec::new();
        let mut fingerprints = Vec::new();
        let mut earliest_not_after = i64::MAX;
        let mut hashed: Vec<&[u8]> = Vec::new();
        for (td, roots) in &bundles {
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(roots.iter().cloned());
            // As for a CA file: a bundle with a member that does not parse is refused whole.
            let checked = if added == 0 || ignored > 0 {
                Err(TlsError::Workload(format!(
                    "the trust bundle of {td} holds no CA certificate, or one that does not parse"
                )))
            } else {
                hints.extend(store.subjects());
                WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Workload(format!("the trust bundle of {td}: {e}")))
            };
            let verifier = match checked {
                Ok(v) => v,
                Err(e) if own.is_some_and(|own| own != td) => {
                    tracing::error!(
                        trust_domain = %td,
                        error = %e,
                        "a federated trust bundle was refused; that domain's callers are not trusted",
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            by_domain.insert(td.clone(), verifier);
            hashed.push(td.as_bytes());
            for root in roots {
                hashed.push(root.as_ref());
                fingerprints.push(identity::hex(
                    ring::digest::digest(&ring::digest::SHA256, root).as_ref(),
                ));
                if let Ok(parsed) = PeerIdentity::from_der(root) {
                    earliest_not_after = earliest_not_after.min(parsed.not_after);
                }
            }
        }
        if by_domain.is_empty() {
            return Err(TlsError::Workload(
                "the Workload API sent no trust bundle".into(),
            ));
        }
        Ok(ClientCa {
            content_hash: hash_all(&hashed),
            trust_domains: by_domain.keys().cloned().collect(),
            verifier: Arc::new(PerTrustDomain {
                by_domain,
                hints,
                provider,
            }),
            fingerprints,
            earliest_not_after: if earliest_not_after == i64::MAX {
                0
            } else {
                earliest_not_after
            },
        })
    }
}

/// Verifies a client certificate against the bundle of the trust domain its SPIFFE ID names,
/// and refuses one without a SPIFFE ID.
#[derive(Debug)]
struct PerTrustDomain {
    by_domain: BTreeMap<String, Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PerTrustDomain {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        let spiffe_id = PeerIdentity::from_der(end_entity)
            .map_err(|_| RustlsError::InvalidCertificate(CertificateError::BadEncoding))?
            .spiffe_id
            .ok_or(RustlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))?;
        let verifier =
            self.by_domain
                .get(&spiffe_id.trust_domain)
                .ok_or(RustlsError::InvalidCertificate(
                    CertificateError::UnknownIssuer,
                ))?;
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
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

/// The first observation, before anything listens: connect, wait for a usable SVID for at
/// most `timeout` (an agent may still be attesting a new pod), and close again. Blocking; it
/// runs its own runtime on a thread of its own, so it works whether or not the caller is
/// inside one. [`watch`] keeps the credentials current afterwards.
pub fn first(endpoint: &str, timeout: Duration) -> Result<(ServedCert, ClientCa), String> {
    let endpoint = endpoint.to_string();
    let fetch = move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        runtime.block_on(async move {
            let source = X509Source::builder()
                .endpoint(&endpoint)
                .initial_sync_timeout(timeout)
                .build()
                .await
                .map_err(|e| {
                    format!(
                        "no SVID from the Workload API at {endpoint} within {timeout:?}: {}",
                        crate::error::chain(&e)
                    )
                })?;
            let credentials = Credentials::from_state(&source.state());
            source.shutdown().await;
            let served = credentials.served.map_err(|e| crate::error::chain(&e))?;
            let ca = credentials.ca.map_err(|e| crate::error::chain(&e))?;
            Ok((served, ca))
        })
    };
    std::thread::spawn(fetch)
        .join()
        .unwrap_or_else(|_| Err("the Workload API client failed".into()))
}

/// Follow the Workload API for as long as the task runs, handing every observation to
/// `apply`. Connection losses are retried by the source with backoff; the credentials in
/// force stay until a new observation replaces them.
pub async fn watch(endpoint: String, apply: impl Fn(Credentials)) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let source = match X509Source::builder().endpoint(&endpoint).build().await {
            Ok(source) => source,
            Err(e) => {
                tracing::error!(
                    endpoint,
                    error = %crate::error::chain(&e),
                    "cannot follow the Workload API; the credentials in force stay",
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        tracing::info!(
            endpoint,
            "following the Workload API for SVID and bundle rotations"
        );
        let mut updates = source.updated();
        // What was current when the source came up may be newer than what startup fetched.
        apply(Credentials::from_state(&source.state()));
        while updates.changed().await.is_ok() {
            let state = source.state();
            if let Some(withdrawn) = state.withdrawal() {
                // The agent no longer issues this workload an identity. The last SVID stays
                // served until it expires, and the last bundles keep deciding whom to trust
                // (no wider than before): dropping them would cut every caller off on an
                // agent hiccup. It shows as a failed reload of both.
                apply(Credentials::withdrawn(&withdrawn.to_string()));
                continue;
            }
            apply(Credentials::from_state(&state));
        }
        tracing::warn!(endpoint, "the Workload API source closed; reconnecting");
        tokio::time::sleep(backoff).await;
    }
}
