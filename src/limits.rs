//! Bounds that keep one client, or a crowd of silent ones, from taking regate away from the
//! rest: how many connections are open (`--max-connections`), how many one client certificate
//! holds (`--max-connections-per-identity`), and log lines that a client can trigger at will,
//! written at most once a second.
//!
//! Each admitted connection holds a slot that frees itself when dropped, so a connection that
//! outlives its task (an upgraded tunnel) still counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Open connections, in all and per client certificate.
pub struct ConnLimits {
    max: usize,
    /// Zero: unlimited.
    per_identity: usize,
    open: AtomicUsize,
    by_identity: Mutex<HashMap<String, usize>>,
}

/// One connection's place in the total; freed when dropped.
pub struct Slot(Arc<ConnLimits>);

/// One connection's place among its certificate's; freed when dropped.
pub struct IdentitySlot {
    limits: Arc<ConnLimits>,
    key: String,
}

impl ConnLimits {
    pub fn new(max: usize, per_identity: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max,
            per_identity,
            open: AtomicUsize::new(0),
            by_identity: Mutex::default(),
        })
    }

    /// A slot for a new connection, or `None` when `--max-connections` are open.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// A slot for a connection that proved `key` (the certificate's fingerprint), or `None`
    /// when that certificate already holds `--max-connections-per-identity`.
    pub fn admit_identity(self: &Arc<Self>, key: &str) -> Option<IdentitySlot> {
        if self.per_identity == 0 {
            return Some(IdentitySlot {
                limits: self.clone(),
                key: String::new(),
            });
        }
        let mut map = self.lock();
        let count = map.entry(key.to_string()).or_insert(0);
        if *count >= self.per_identity {
            return None;
        }
        *count += 1;
        Some(IdentitySlot {
            limits: self.clone(),
            key: key.to_string(),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.by_identity
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        if self.limits.per_identity == 0 {
            return;
        }
        let mut map = self.limits.lock();
        if let Some(count) = map.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Lets a log line through at most once per interval, counting the ones held back.
pub struct RateLimited {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl RateLimited {
    pub fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were held back since the
    /// last one; `None` when this one is held back.
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held_back.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_come_back_when_dropped() {
        let limits = ConnLimits::new(2, 1);
        let a = limits.admit().unwrap();
        let _b = limits.admit().unwrap();
        assert!(limits.admit().is_none());
        drop(a);
        assert!(limits.admit().is_some());

        let first = limits.admit_identity("cert-a").unwrap();
        assert!(limits.admit_identity("cert-a").is_none());
        assert!(limits.admit_identity("cert-b").is_some());
        drop(first);
        assert!(limits.admit_identity("cert-a").is_some());
        assert!(limits.lock().is_empty());
    }

    #[test]
    fn a_rate_limited_line_counts_what_it_held_back() {
        let limit = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        *limit.last.lock().unwrap() = None;
        assert_eq!(limit.check(), Some(2));
    }
}
