//! The side channel that keeps remote issuers' keys current: one [`Fetcher`] task per issuer
//! with a `jwks_uri` or `discovery: true`, started when regate serves, publishing into the
//! issuer's [`KeyStore`] (which the request path reads) and never calling into the request
//! path.
//!
//! A fetcher fetches at once, then again after three quarters of the keys' lifetime: their
//! `Cache-Control: max-age`, held between [`MIN_LIFETIME`] and [`MAX_LIFETIME`]
//! ([`DEFAULT_LIFETIME`] without one), and never later than half of `--jwks-max-staleness`,
//! so a healthy provider's keys never go stale. A request naming an unknown key id wakes it
//! early (rate-limited by the store). A failed fetch keeps the last good keys (the store
//! stops handing them out once they are older than the maximum staleness) and is retried
//! after 1 s, doubling to [`MAX_BACKOFF`]. With discovery, the JWKS URL is read from the
//! issuer's metadata first, and read again after a failed fetch (the provider may have moved
//! its keys).

pub mod discovery;
pub mod fetch;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::keys::{KeySet, KeyStore};
use super::{Issuer, KeySource};
use crate::metrics::Metrics;
use fetch::Client;

/// Keys served without `max-age` are fetched again after three quarters of this.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// A shorter `max-age` (or `no-store`) is read as this: a provider is not asked more than
/// every 45 s (unless `--jwks-max-staleness` is under 90 s).
pub const MIN_LIFETIME: Duration = Duration::from_secs(60);
/// A longer `max-age` is read as this: a key the provider withdrew is dropped within the
/// hour.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest wait between two attempts while a provider fails.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How soon keys served with `max_age` are fetched again.
pub fn refresh_after(max_age: Option<Duration>, max_staleness: Duration) -> Duration {
    let lifetime = max_age
        .unwrap_or(DEFAULT_LIFETIME)
        .clamp(MIN_LIFETIME, MAX_LIFETIME);
    (lifetime * 3 / 4).min(max_staleness / 2)
}

/// How soon to try again after `failures` attempts in a row failed.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

/// Keeps one remote issuer's keys current.
pub struct Fetcher {
    issuer: String,
    source: KeySource,
    store: Arc<KeyStore>,
    client: Client,
    max_staleness: Duration,
    metrics: Arc<Metrics>,
}

/// A fetch that failed: the metric's `result`, and what the log and `/status` say.
type Failed = (&'static str, String);

/// One fetcher per remote issuer of `issuers` (the delegation verifier's, the approval
/// issuers'), each with the roots it fetches with: the issuer's `ca`, else the system's.
/// Every problem (a CA file that holds no certificate, no system roots) is reported.
pub fn fetchers<'a>(
    issuers: impl IntoIterator<Item = &'a Issuer>,
    max_staleness: Duration,
    metrics: &Arc<Metrics>,
) -> Result<Vec<Fetcher>, Vec<String>> {
    let mut errors = Vec::new();
    let mut fetchers = Vec::new();
    for issuer in issuers {
        let location = match &issuer.source {
            KeySource::File(_) => continue,
            KeySource::Uri(uri) => uri.as_str(),
            KeySource::Discovery => issuer.config.issuer.as_str(),
        };
        let roots = match (&issuer.config.ca, location.starts_with("https:")) {
            (Some(ca), _) => roots_from(ca).map(Some),
            (None, true) => system_roots().map(Some),
            (None, false) => Ok(None),
        };
        metrics.jwks_issuer(&issuer.config.issuer);
        match roots {
            Ok(roots) => fetchers.push(Fetcher {
                issuer: issuer.config.issuer.clone(),
                source: issuer.source.clone(),
                store: issuer.store.clone(),
                client: Client::new(roots),
                max_staleness,
                metrics: metrics.clone(),
            }),
            Err(e) => errors.push(format!("issuer {}: {e}", issuer.config.issuer)),
        }
    }
    match errors.is_empty() {
        true => Ok(fetchers),
        false => Err(errors),
    }
}

/// The certificates of a PEM file, as roots.
pub fn roots_from(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bytes =
        std::fs::read(path).map_err(|e| format!("ca: cannot read {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| format!("ca: {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca: {}: {e}", path.display()))?;
    }
    match roots.is_empty() {
        true => Err(format!("ca: {} holds no certificate", path.display())),
        false => Ok(roots),
    }
}

/// The system's roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or the distribution's bundle).
pub fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    match roots.is_empty() {
        true => {
            Err("no system CA certificates were found; name the provider's roots in ca:".into())
        }
        false => Ok(roots),
    }
}

impl Fetcher {
    /// Fetch now, then keep the keys current until the task is dropped.
    pub async fn run(self) {
        let mut jwks_uri = match &self.source {
            KeySource::Uri(uri) => Some(uri.clone()),
            _ => None,
        };
        let mut failures = 0u32;
        loop {
            let wait = match self.attempt(&mut jwks_uri).await {
                Ok(max_age) => {
                    failures = 0;
                    refresh_after(max_age, self.max_staleness)
                }
                Err(()) => {
                    failures = failures.saturating_add(1);
                    if self.source == KeySource::Discovery {
                        jwks_uri = None;
                    }
                    backoff(failures)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.store.wanted() => {}
            }
        }
    }

    /// One attempt, told to the store, the metrics and the log.
    async fn attempt(&self, jwks_uri: &mut Option<String>) -> Result<Option<Duration>, ()> {
        let result = self.fetch(jwks_uri).await;
        let kind = result.as_ref().map_or_else(|(kind, _)| *kind, |_| "ok");
        self.metrics.jwks_fetch(&self.issuer, kind);
        match result {
            Ok(max_age) => {
                self.store.attempted(jwks_uri.as_deref(), Ok(()));
                Ok(max_age)
            }
            Err((_, error)) => {
                tracing::warn!(
                    issuer = %self.issuer,
                    jwks_uri = jwks_uri.as_deref().unwrap_or_default(),
                    error = %error,
                    "JWKS fetch failed; the last good keys stay until --jwks-max-staleness"
                );
                self.store.attempted(jwks_uri.as_deref(), Err(error));
                Err(())
            }
        }
    }

    /// Fetch the keys (finding their URL first, with discovery) and publish them.
    async fn fetch(&self, jwks_uri: &mut Option<String>) -> Result<Option<Duration>, Failed> {
        let uri = match jwks_uri.clone() {
            Some(uri) => uri,
            None => {
                let found = discovery::jwks_uri(&self.client, &self.issuer)
                    .await
                    .map_err(|e| ("discovery_failed", e))?;
                *jwks_uri = Some(found.clone());
                found
            }
        };
        let fetched = self
            .client
            .get(&uri, "application/jwk-set+json, application/json")
            .await
            .map_err(|e| (e.kind(), crate::error::chain(&e)))?;
        let keys = KeySet::parse(&fetched.body, SystemTime::now()).map_err(|e| ("invalid", e))?;
        if self.store.current().is_none_or(|k| k.hash != keys.hash) {
            tracing::info!(
                issuer = %self.issuer,
                jwks_uri = %uri,
                kids = ?keys.kids,
                "JWKS fetched; tokens verify against it"
            );
        }
        self.metrics.jwks_keys(&self.issuer, keys.kids.len());
        self.store.publish(keys);
        Ok(fetched.max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_refreshed_before_their_max_age_within_bounds() {
        let day = Duration::from_secs(86_400);
        let secs = Duration::from_secs;
        assert_eq!(refresh_after(Some(secs(600)), day), secs(450));
        assert_eq!(
            refresh_after(None, day),
            secs(225),
            "five minutes by default"
        );
        assert_eq!(refresh_after(Some(secs(0)), day), secs(45), "the floor");
        assert_eq!(refresh_after(Some(day), day), secs(2700), "the ceiling");
        assert_eq!(
            refresh_after(None, secs(10)),
            secs(5),
            "never stale when healthy"
        );
    }

    #[test]
    fn failures_back_off_to_a_minute() {
        let secs = Duration::from_secs;
        let waits: Vec<_> = (1..=9).map(backoff).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60].map(secs).to_vec());
    }
}
