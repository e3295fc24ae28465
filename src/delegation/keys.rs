//! One issuer's keys as last published ([`KeyStore`]): written by the issuer's source (the
//! reloader for a JWKS file, [`super::jwks`] for a remote JWKS), read by every request that
//! carries one of the issuer's tokens.
//!
//! The store also carries the one way the request path may ask for keys: a token naming a
//! key id the set lacks asks the fetcher for one refetch ([`KeyStore::refetch_for_unknown_kid`]),
//! at most once per [`UNKNOWN_KID_REFETCH_EVERY`] per issuer, however many such tokens come,
//! and waits for that fetch at most [`UNKNOWN_KID_WAIT`]. Nothing here fetches anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use tokio::sync::{watch, Notify};

use crate::builtins::jwt::JwksKeys;

/// A token with an unknown `kid` asks for a refetch at most this often per issuer: a flood
/// of made-up key ids costs the provider two requests a minute from each regate.
pub const UNKNOWN_KID_REFETCH_EVERY: Duration = Duration::from_secs(30);

/// How long a request with an unknown `kid` waits for the refetch it asked for (or one
/// already under way); past it, the token is `token_invalid`, and the fetch goes on.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(3);

/// An issuer's keys, as one fetch or one read of the file gave them.
pub struct KeySet {
    pub keys: JwksKeys,
    pub kids: Vec<String>,
    /// SHA-256 of the JWKS as served: the same keys served again are not a change.
    pub hash: [u8; 32],
    /// When the source last served these keys (the last successful fetch or read).
    pub fetched_at: SystemTime,
}

impl KeySet {
    pub fn parse(bytes: &[u8], fetched_at: SystemTime) -> Result<KeySet, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "the JWKS is not UTF-8".to_string())?;
        let keys = JwksKeys::parse(text)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Ok(KeySet {
            kids: keys.kids(),
            keys,
            hash,
            fetched_at,
        })
    }
}

/// What `/status` shows of a remote issuer's fetches.
#[derive(Debug, Clone, Default)]
pub struct FetchStatus {
    /// The JWKS URL in use: configured, or found by discovery.
    pub jwks_uri: Option<String>,
    pub last_attempt: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    /// The last attempt's error; `None` once one succeeds.
    pub last_error: Option<String>,
}

/// One issuer's keys, and the channel between the request path and the issuer's fetcher.
pub struct KeyStore {
    current: ArcSwapOption<KeySet>,
    /// Keys older than this are not used; `None` for a file, whose keys do not age.
    max_staleness: Option<Duration>,
    status: Mutex<FetchStatus>,
    /// Rung by a request with an unknown `kid`; the fetcher fetches at once.
    wanted: Notify,
    /// A refetch asked for by an unknown `kid` is under way.
    pending: AtomicBool,
    /// Moves after every attempt of the fetcher, good or bad.
    attempts: watch::Sender<u64>,
    /// When an unknown `kid` last asked for a refetch.
    last_kid_refetch: Mutex<Option<Instant>>,
}

impl KeyStore {
    /// A store for keys read from a file (they never go stale), holding `keys`.
    pub fn file(keys: KeySet) -> KeyStore {
        let store = KeyStore::empty(None);
        store.current.store(Some(Arc::new(keys)));
        store
    }

    /// An empty store for a remote issuer, whose keys are used up to `max_staleness` after
    /// they were last fetched.
    pub fn remote(max_staleness: Duration) -> KeyStore {
        KeyStore::empty(Some(max_staleness))
    }

    fn empty(max_staleness: Option<Duration>) -> KeyStore {
        KeyStore {
            current: ArcSwapOption::empty(),
            max_staleness,
            status: Mutex::default(),
            wanted: Notify::new(),
            pending: AtomicBool::new(false),
            attempts: watch::Sender::new(0),
            last_kid_refetch: Mutex::new(None),
        }
    }

    /// Whether the keys come from a remote source (and so may be refetched, and may age).
    pub fn is_remote(&self) -> bool {
        self.max_staleness.is_some()
    }

    /// The keys to verify with at `now`: `None` before the first fetch, or once the last good
    /// keys are older than the maximum staleness.
    pub fn usable(&self, now: SystemTime) -> Option<Arc<KeySet>> {
        let keys = self.current.load_full()?;
        match self.max_staleness {
            Some(max) if now.duration_since(keys.fetched_at).unwrap_or_default() > max => None,
            _ => Some(keys),
        }
    }

    /// The keys last published, however old.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Publish keys the source just served.
    pub fn publish(&self, keys: KeySet) {
        self.current.store(Some(Arc::new(keys)));
    }

    /// Ask the fetcher for the keys again, because a token names a key id the set lacks;
    /// `true` once a fetch ended meanwhile (the token is worth checking again). At most one
    /// such refetch per [`UNKNOWN_KID_REFETCH_EVERY`]: past it, a request joins the refetch
    /// under way, if any, or is answered `false` at once.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        // Subscribed first: an attempt that ends after this line is seen, whenever it ends.
        let mut attempts = self.attempts.subscribe();
        let start = {
            let mut last = lock(&self.last_kid_refetch);
            match *last {
                Some(at) if at.elapsed() < UNKNOWN_KID_REFETCH_EVERY => false,
                _ => {
                    *last = Some(Instant::now());
                    true
                }
            }
        };
        if start {
            self.pending.store(true, Ordering::Release);
            self.wanted.notify_one();
        } else if !self.pending.load(Ordering::Acquire) {
            return false;
        }
        matches!(
            tokio::time::timeout(UNKNOWN_KID_WAIT, attempts.changed()).await,
            Ok(Ok(()))
        )
    }

    /// For the fetcher: resolves when a request asks for a refetch.
    pub async fn wanted(&self) {
        self.wanted.notified().await
    }

    /// For the fetcher: an attempt ended, well (`Ok` with the JWKS URL) or not.
    pub fn attempted(&self, jwks_uri: Option<&str>, result: Result<(), String>) {
        {
            let mut status = lock(&self.status);
            let now = SystemTime::now();
            status.last_attempt = Some(now);
            if let Some(uri) = jwks_uri {
                status.jwks_uri = Some(uri.to_string());
            }
            match result {
                Ok(()) => {
                    status.last_success = Some(now);
                    status.last_error = None;
                }
                Err(e) => status.last_error = Some(e),
            }
        }
        self.pending.store(false, Ordering::Release);
        self.attempts.send_modify(|n| *n += 1);
    }

    pub fn status(&self) -> FetchStatus {
        lock(&self.status).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#;

    #[test]
    fn keys_older_than_the_maximum_staleness_are_not_used() {
        let store = KeyStore::remote(Duration::from_secs(60));
        let fetched = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(store.usable(fetched).is_none(), "nothing fetched yet");
        store.publish(KeySet::parse(JWKS.as_bytes(), fetched).unwrap());
        assert!(store.usable(fetched + Duration::from_secs(60)).is_some());
        assert!(store.usable(fetched + Duration::from_secs(61)).is_none());
        assert_eq!(store.current().unwrap().kids, vec!["k1".to_string()]);
    }

    #[test]
    fn keys_from_a_file_never_go_stale() {
        let fetched = SystemTime::UNIX_EPOCH;
        let store = KeyStore::file(KeySet::parse(JWKS.as_bytes(), fetched).unwrap());
        assert!(store.usable(SystemTime::now()).is_some());
        assert!(!store.is_remote());
    }

    #[tokio::test]
    async fn unknown_kids_ask_for_one_refetch_per_interval() {
        let store = Arc::new(KeyStore::remote(Duration::from_secs(60)));
        // A fetcher that answers every wish at once.
        let fetcher = store.clone();
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = asked.clone();
        let task = tokio::spawn(async move {
            loop {
                fetcher.wanted().await;
                counted.fetch_add(1, Ordering::SeqCst);
                fetcher.attempted(None, Ok(()));
            }
        });
        assert!(
            store.refetch_for_unknown_kid().await,
            "the first asks, and waits"
        );
        for _ in 0..50 {
            assert!(
                !store.refetch_for_unknown_kid().await,
                "the others are refused"
            );
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        task.abort();
    }
}
