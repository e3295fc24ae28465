//! What the fleet publishes and every replica polls: OPA bundles as a policy source, and the
//! revocations feed. A side channel: it fetches, checks and hands over; it never touches a
//! request.
//!
//! A bundle comes from an HTTP(S) bundle server (OPA's bundle service API: `GET` with
//! `If-None-Match`, 304 when unchanged, long polling with `Prefer: wait=N` once the server
//! answers as a long-polling server does) or from an OCI registry ([`oci`]). It is polled
//! every `min_delay` to `max_delay` (jittered, as OPA does), or held open by long polling;
//! failures back off up to `max_delay`. A new bundle is unpacked, verified when
//! `verification` is configured ([`verify`]), read as policy sources ([`archive`]) and
//! published through the reloader's publish path ([`crate::reload::Reloader::publish_sources`]),
//! which compiles it, keeps the last good set on any failure and records the attempt as a
//! directory reload is recorded. A bundle published is saved to `persist_dir` ([`persist`]),
//! which a restart falls back on when the server cannot be reached.
//!
//! The revocations feed ([`feed`]) is fetched by the same client and handed to
//! [`crate::revocations::Revocations::apply_feed`].

pub mod archive;
pub mod feed;
pub mod http;
pub mod oci;
pub mod persist;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ::http::{HeaderName, Uri};
use thiserror::Error;

use crate::policy::PolicyError;
use crate::reload::{Outcome, Reloader, Set};

/// How long one download may take (a long poll adds its wait).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest bundle (compressed) downloaded.
pub const MAX_DOWNLOAD: usize = 64 << 20;
/// How long `regate run` waits at start for the first bundle before falling back on the
/// persisted one.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest wait before retrying a failed download; doubled up to `max_delay`.
const MIN_RETRY: Duration = Duration::from_millis(100);

/// OPA's media type for a bundle from a server that long-polls.
const LONG_POLL_TYPE: &str = "application/vnd.openpolicyagent.bundles";

#[derive(Debug, Error)]
pub enum BundleError {
    /// A setting that cannot work (a bad URL, an unreadable key or token file).
    #[error("{0}")]
    Config(String),
    /// The server could not be reached, or answered with an error.
    #[error("download failed: {0}")]
    Fetch(String),
    /// Not a bundle regate can load (gzip, tar, manifest, roots).
    #[error("bundle: {0}")]
    Format(String),
    /// Verification is configured and the signature is missing or does not hold.
    #[error("bundle signature: {0}")]
    Signature(String),
    /// The files do not make policy sources.
    #[error("bundle: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Policy(Vec<PolicyError>),
}

/// A `bundle:` section, checked.
#[derive(Debug, Clone)]
pub struct BundleSettings {
    /// `http(s)://…` (a bundle server or object store) or `oci://registry/name:tag`.
    pub url: String,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// OPA's `long_polling_timeout`: asked for (`Prefer: wait=N`) once the server offers it.
    pub long_polling_timeout: Option<Duration>,
    pub credentials: http::Credentials,
    pub verification: Option<VerificationSettings>,
    pub persist_dir: Option<PathBuf>,
}

/// `verification:`: the key a bundle must be signed with.
#[derive(Debug, Clone)]
pub struct VerificationSettings {
    pub public_key: PathBuf,
    pub key_id: String,
    pub scope: String,
}

impl BundleSettings {
    /// The verifier `verification:` names, if any.
    pub fn verification(&self) -> Result<Option<verify::Verification>, String> {
        self.verification
            .as_ref()
            .map(|v| verify::Verification::load(&v.public_key, &v.key_id, &v.scope))
            .transpose()
    }
}

/// What a download brought.
pub enum Fetched {
    /// The server holds what was fetched last (304, or the same OCI digest).
    Unchanged,
    New {
        bytes: Vec<u8>,
        etag: String,
    },
}

/// Where a document is fetched from, and what the last fetch held.
pub struct Fetcher {
    client: http::Client,
    target: Target,
    credentials: http::Credentials,
    /// The ETag (an OCI layer digest) of what was fetched last.
    pub etag: Option<String>,
    /// The server answered as a long-polling bundle server does.
    long_poll: bool,
}

enum Target {
    Http { path: String },
    Oci(oci::Reference),
}

impl Fetcher {
    pub fn new(url: &str, credentials: &http::Credentials) -> Result<Fetcher, BundleError> {
        let (client, target) = if url.starts_with("oci://") {
            let reference = oci::Reference::parse(url).map_err(BundleError::Config)?;
            let registry: Uri = reference
                .registry
                .parse()
                .map_err(|e| BundleError::Config(format!("{url}: {e}")))?;
            (
                http::Client::new(&registry, credentials)?,
                Target::Oci(reference),
            )
        } else {
            let uri: Uri = url
                .parse()
                .map_err(|e| BundleError::Config(format!("{url:?}: {e}")))?;
            let path = uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string());
            (http::Client::new(&uri, credentials)?, Target::Http { path })
        };
        Ok(Fetcher {
            client,
            target,
            credentials: credentials.clone(),
            etag: None,
            long_poll: false,
        })
    }

    /// Whether the next fetch is a long poll (the server offered it, and it is configured).
    pub fn long_polling(&self, timeout: Option<Duration>) -> Option<Duration> {
        timeout.filter(|_| self.long_poll)
    }

    /// Fetch the document unless it is unchanged. With `wait`, a long poll: the server may
    /// hold the request that long for a change. `any_layer`: from an OCI image, the first
    /// layer whatever its type (a revocations document).
    pub async fn fetch(
        &mut self,
        wait: Option<Duration>,
        any_layer: bool,
    ) -> Result<Fetched, BundleError> {
        let timeout = FETCH_TIMEOUT + wait.unwrap_or_default();
        let path = match &self.target {
            Target::Oci(reference) => {
                let pulled = oci::pull(
                    &mut self.client,
                    reference,
                    self.etag.as_deref(),
                    any_layer,
                    &self.credentials,
                    (timeout, MAX_DOWNLOAD),
                )
                .await?;
                return Ok(match pulled {
                    oci::Pulled::Unchanged => Fetched::Unchanged,
                    oci::Pulled::New { digest, bytes } => {
                        self.etag = Some(digest.clone());
                        Fetched::New {
                            bytes,
                            etag: digest,
                        }
                    }
                });
            }
            Target::Http { path } => path.clone(),
        };
        let mut headers: Vec<(HeaderName, String)> = Vec::new();
        if let Some(etag) = &self.etag {
            headers.push((::http::header::IF_NONE_MATCH, etag.clone()));
        }
        let mut prefer = "modes=snapshot".to_string();
        if let Some(wait) = wait {
            prefer.push_str(&format!(";wait={}", wait.as_secs().max(1)));
        }
        headers.push((HeaderName::from_static("prefer"), prefer));
        let response = self
            .client
            .get(&path, &headers, timeout, MAX_DOWNLOAD)
            .await?;
        match response.status.as_u16() {
            304 => Ok(Fetched::Unchanged),
            200 => {
                // OPA's sign of a long-polling bundle server, or RFC 7240's.
                self.long_poll = response.header("content-type") == Some(LONG_POLL_TYPE)
                    || response
                        .header("preference-applied")
                        .is_some_and(|p| p.contains("wait="));
                let etag = response.header("etag").unwrap_or_default().to_string();
                self.etag = (!etag.is_empty()).then(|| etag.clone());
                Ok(Fetched::New {
                    bytes: response.body.to_vec(),
                    etag,
                })
            }
            status => {
                self.long_poll = false;
                Err(BundleError::Fetch(format!(
                    "{path}: the server answered {status}"
                )))
            }
        }
    }
}

/// The jittered wait between two polls, from `min` to `max`.
pub fn jittered(min: Duration, max: Duration) -> Duration {
    let spread = max.saturating_sub(min);
    let fraction = f64::from(uuid::Uuid::new_v4().as_u128() as u32) / f64::from(u32::MAX);
    min + spread.mul_f64(fraction)
}

/// The wait after `failures` failed attempts in a row: doubling from [`MIN_RETRY`], at most
/// `max`, jittered so a fleet does not retry in step.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    let exponential = MIN_RETRY.saturating_mul(1u32 << failures.min(16));
    let capped = exponential.min(max.max(MIN_RETRY));
    jittered(capped / 2, capped)
}

/// The first bundle, at start: downloaded if the server answers within
/// [`STARTUP_TIMEOUT`], else the one persisted. Blocking; runs its own small runtime on a
/// thread of its own, so it can be called from anywhere.
pub struct Start {
    pub sources: crate::policy::Sources,
    /// The ETag to poll from.
    pub etag: Option<String>,
    /// `server` or `persisted`.
    pub from: &'static str,
    /// The bundle as downloaded, for [`keep_last_good`] once it compiled; none when it came
    /// from the persisted copy.
    pub downloaded: Option<Vec<u8>>,
}

/// Say once, at start, that `what` comes over plain HTTP from beyond this host: whoever is on
/// the path can change it (for a feed, lift its revocations). Allowed, for a cluster's own
/// network; https, a signed bundle or a loopback address need no warning.
pub fn warn_if_plain(url: &str, what: &str) {
    if url.starts_with("http://") && crate::delegation::jwks::fetch::check_url(url).is_err() {
        tracing::warn!(
            %url,
            "{what} is fetched over plain HTTP from another host: anyone on the network path \
             can change what it says; prefer https"
        );
    }
}

/// Keep a downloaded bundle as the last good one, when `settings` name a `persist_dir`: only
/// once it compiled and is in force, so a bundle refused is never what a restart falls back
/// to.
pub fn keep_last_good(settings: &BundleSettings, bytes: &[u8], etag: &str) {
    if let Some(dir) = &settings.persist_dir {
        if let Err(e) = persist::save(dir, bytes, etag) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot persist the bundle");
        }
    }
}

/// What a start found: the bundle to load, or every reason there is none.
pub fn start(settings: &BundleSettings) -> Result<Start, String> {
    let verification = settings.verification()?;
    let owned = settings.clone();
    let downloaded = std::thread::spawn(move || -> Result<(Vec<u8>, String), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut fetcher =
                Fetcher::new(&owned.url, &owned.credentials).map_err(|e| e.to_string())?;
            match tokio::time::timeout(STARTUP_TIMEOUT, fetcher.fetch(None, false)).await {
                Ok(Ok(Fetched::New { bytes, etag })) => Ok((bytes, etag)),
                Ok(Ok(Fetched::Unchanged)) => Err("the server sent no bundle".into()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no bundle within {STARTUP_TIMEOUT:?}")),
            }
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the download failed".into()));
    let mut reasons = Vec::new();
    match downloaded {
        Ok((bytes, etag)) => match archive::read(&bytes, verification.as_ref()) {
            Ok(bundle) => {
                return Ok(Start {
                    sources: bundle.sources,
                    etag: (!etag.is_empty()).then_some(etag),
                    from: "server",
                    downloaded: Some(bytes),
                });
            }
            Err(e) => reasons.push(format!("{}: {e}", settings.url)),
        },
        Err(e) => reasons.push(format!("{}: {e}", settings.url)),
    }
    let Some(dir) = &settings.persist_dir else {
        return Err(reasons.join("; "));
    };
    match persist::load(dir) {
        Some(saved) => match archive::read(&saved.bytes, verification.as_ref()) {
            Ok(bundle) => {
                tracing::warn!(
                    url = %settings.url,
                    error = %reasons.join("; "),
                    revision = %bundle.sources.revision,
                    "the bundle server cannot be reached; starting with the persisted bundle"
                );
                Ok(Start {
                    sources: bundle.sources,
                    etag: (!saved.etag.is_empty()).then_some(saved.etag),
                    from: "persisted",
                    downloaded: None,
                })
            }
            Err(e) => {
                reasons.push(format!("persisted in {}: {e}", dir.display()));
                Err(reasons.join("; "))
            }
        },
        None => {
            reasons.push(format!("nothing persisted in {}", dir.display()));
            Err(reasons.join("; "))
        }
    }
}

/// Poll the bundle for `set` until the task is dropped, publishing each new one through
/// `reloader`. `etag` is what the startup load held.
pub async fn poll(
    settings: BundleSettings,
    set: Set,
    reloader: Arc<Reloader>,
    etag: Option<String>,
) {
    let verification = match settings.verification() {
        Ok(v) => v.map(Arc::new),
        Err(e) => {
            tracing::error!(error = %e, "bundle verification key unusable; not polling");
            return;
        }
    };
    let mut fetcher = match Fetcher::new(&settings.url, &settings.credentials) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "bundle source unusable; not polling");
            return;
        }
    };
    fetcher.etag = etag;
    if verification.is_none() {
        warn_if_plain(&settings.url, "an unsigned policy bundle");
    }
    let mut failures = 0u32;
    loop {
        let wait = fetcher.long_polling(settings.long_polling_timeout);
        let outcome = match fetcher.fetch(wait, false).await {
            Ok(Fetched::Unchanged) => Ok(()),
            Ok(Fetched::New { bytes, etag }) => {
                let reloader = reloader.clone();
                let verification = verification.clone();
                let owned = settings.clone();
                let activated = tokio::task::spawn_blocking(move || {
                    activate(
                        &reloader,
                        set,
                        &bytes,
                        &etag,
                        verification.as_deref(),
                        &owned,
                    )
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
                // A bundle refused is asked for whole again, not answered "unchanged" under
                // its ETag: the failure stays in view until a good one comes.
                if activated.is_err() {
                    fetcher.etag = None;
                }
                activated
            }
            Err(e) => Err(e.to_string()),
        };
        let delay = match outcome {
            Ok(()) => {
                failures = 0;
                match fetcher.long_polling(settings.long_polling_timeout) {
                    Some(_) => Duration::ZERO,
                    None => jittered(settings.min_delay, settings.max_delay),
                }
            }
            Err(message) => {
                reloader.source_failed(set, &settings.url, message);
                failures = failures.saturating_add(1);
                backoff(failures, settings.max_delay)
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// Read, verify and publish one downloaded bundle; persist it once it is in force (not when
/// it was refused, now or before). `Err` when it is refused (the last good set stays; the
/// refusal is already recorded when it was the compile that failed).
fn activate(
    reloader: &Reloader,
    set: Set,
    bytes: &[u8],
    etag: &str,
    verification: Option<&verify::Verification>,
    settings: &BundleSettings,
) -> Result<(), String> {
    let bundle = archive::read(bytes, verification).map_err(|e| e.to_string())?;
    let content_hash = bundle.sources.content_hash.clone();
    match reloader.publish_sources(set, bundle.sources, true) {
        Outcome::Failed => Ok(()),
        Outcome::Reloaded | Outcome::Unchanged => {
            if reloader.holds(set, &content_hash) {
                keep_last_good(settings, bytes, etag);
            }
            Ok(())
        }
    }
}
