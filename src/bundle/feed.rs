//! The revocations feed: one small document in regate's revocations format
//! (`{"revocations": [...]}`, the `--revocations` file's) that every replica polls, so one
//! publish revokes an agent across the fleet. Served by any HTTP server or object store
//! (ETag polling, every second by default), long-polled where the server offers it (it
//! answers `Preference-Applied: wait=N`, or as an OPA bundle server does), pulled from an
//! OCI registry (the image's first layer), or read from a bundle (`/revocations.json` in
//! the tarball).
//!
//! Each update goes to [`Revocations::apply_feed`], which merges it with the file's and the
//! API's, and each change is told through [`Recorded::changed`]. A feed that cannot be
//! reached lifts nothing; once it has been silent past `max_age` (when set) the replica
//! refuses everyone, and says so once.

use std::sync::Arc;
use std::time::Duration;

use super::{backoff, http::Credentials, Fetched, Fetcher};
use crate::revocations::record::{Change, Recorded};
use crate::revocations::Revocations;

/// `revocations_feed:`, checked.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub url: String,
    /// Between two polls (1 s by default).
    pub polling: Duration,
    /// Asked for (`Prefer: wait=N`) once the server offers long polling.
    pub long_polling_timeout: Option<Duration>,
    /// Past this without an answer, everyone is refused; zero: never.
    pub max_age: Duration,
    pub credentials: Credentials,
}

/// Poll the feed until the task is dropped.
pub async fn poll(settings: FeedSettings, revocations: Arc<Revocations>, recorded: Recorded) {
    super::warn_if_plain(&settings.url, "the revocations feed");
    let mut fetcher = match Fetcher::new(&settings.url, &settings.credentials) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "revocations feed unusable; not polling");
            return;
        }
    };
    let mut failures = 0u32;
    let mut last_error: Option<String> = None;
    let mut stale_said = false;
    loop {
        let wait = fetcher.long_polling(settings.long_polling_timeout);
        // The fetch may hang (a server gone silent, a long poll): the feed turning stale is
        // told when it does, not when the fetch gives up.
        let fetched = {
            let fetch = fetcher.fetch(wait, true);
            tokio::pin!(fetch);
            loop {
                let stale_at = revocations
                    .feed_stale_at()
                    .map(tokio::time::Instant::from_std);
                tokio::select! {
                    fetched = &mut fetch => break fetched,
                    () = sleep_until_some(stale_at), if !stale_said => {
                        if revocations.feed_stale() {
                            stale_said = true;
                            say_stale(&revocations, &recorded, &settings);
                        }
                    }
                }
            }
        };
        let result = match fetched {
            Ok(Fetched::Unchanged) => {
                if revocations.feed_fresh() {
                    recorded.changed(Change::FeedFresh, revocations.len());
                }
                Ok("unchanged")
            }
            Ok(Fetched::New { bytes, .. }) => {
                let applied = apply(&revocations, &recorded, &settings, &bytes);
                // A document refused is asked for whole again, not answered "unchanged"
                // under its ETag (which would count the feed fresh, and keep max_age away).
                if applied.is_err() {
                    fetcher.etag = None;
                }
                applied
            }
            Err(e) => Err(e.to_string()),
        };
        let age = revocations.feed_age().unwrap_or_default();
        let held = revocations.feed_len();
        let delay = match result {
            Ok(result) => {
                recorded.metrics.revocations_feed(result, age, held);
                failures = 0;
                stale_said = false;
                if last_error.take().is_some() {
                    tracing::info!(url = %settings.url, "the revocations feed answers again");
                }
                match fetcher.long_polling(settings.long_polling_timeout) {
                    Some(_) => Duration::ZERO,
                    None => settings.polling,
                }
            }
            Err(message) => {
                recorded.metrics.revocations_feed("failed", age, held);
                if last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(
                        url = %settings.url,
                        error = %message,
                        age = ?age,
                        "the revocations feed cannot be read; its last good list stays in force"
                    );
                    last_error = Some(message);
                }
                failures = failures.saturating_add(1);
                backoff(failures, settings.polling.max(Duration::from_secs(1)))
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// Put a new document in force and tell each change.
fn apply(
    revocations: &Revocations,
    recorded: &Recorded,
    settings: &FeedSettings,
    bytes: &[u8],
) -> Result<&'static str, String> {
    let document = document(bytes)?;
    let was_stale = revocations.feed_stale();
    let change = revocations
        .apply_feed(&document, &settings.url)
        .map_err(|e| crate::error::chain(&e))?;
    // As every other change tells it: the file's and the API's; the feed has its own gauge.
    let in_force = revocations.len();
    for revocation in &change.added {
        tracing::warn!(
            url = %settings.url,
            id = %revocation.id,
            target = ?revocation.target,
            "revoked by the revocations feed"
        );
        recorded.changed(Change::FeedAdded { revocation }, in_force);
    }
    for revocation in &change.removed {
        tracing::info!(url = %settings.url, id = %revocation.id, "lifted by the revocations feed");
        recorded.changed(Change::FeedRemoved { revocation }, in_force);
    }
    if was_stale {
        recorded.changed(Change::FeedFresh, in_force);
    }
    Ok("updated")
}

/// The revocations document in `bytes`: the bytes themselves, or `revocations.json` at the
/// root of a bundle (a gzipped tarball).
fn document(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes.to_vec());
    }
    super::archive::file(bytes, "revocations.json")
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the bundle holds no /revocations.json".to_string())
}

fn say_stale(revocations: &Revocations, recorded: &Recorded, settings: &FeedSettings) {
    tracing::error!(
        url = %settings.url,
        max_age = ?settings.max_age,
        "the revocations feed is older than its max_age; every caller is refused \
         (revocations_feed_stale) until it answers"
    );
    revocations.recheck();
    recorded.changed(Change::FeedStale, revocations.len());
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
