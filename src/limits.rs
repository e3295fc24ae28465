//! Bounds that keep one client, or a crowd of silent ones, from taking regate away from the
//! rest: how many connections are open (`--max-connections`), how many one client certificate
//! holds (`--max-connections-per-identity`), how many bytes of request bodies are held for the
//! policy (`--inspect-body-budget`, in all and per identity), and log lines that a client can
//! trigger at will, written at most once a second.
//!
//! Each admitted connection holds a slot, and each inspected body a charge, that frees itself
//! when dropped, so a connection that outlives its task (an upgraded tunnel) still counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

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

/// Bytes of request bodies held for the policy to read: never more than `total` in all, nor
/// more than `per_identity` for one caller. Nothing waits for room: a body that does not fit
/// is refused at once, so a client that stalls its bodies holds at most its share.
pub struct BodyBudget {
    total: usize,
    per_identity: usize,
    held: Mutex<Held>,
    /// `regate_inspected_body_bytes`.
    gauge: Gauge,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_identity: HashMap<Arc<str>, usize>,
}

/// The bytes one request holds; given back when dropped.
pub struct BodyCharge {
    budget: Arc<BodyBudget>,
    identity: Arc<str>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(total: usize, per_identity: usize, gauge: Gauge) -> Arc<BodyBudget> {
        Arc::new(BodyBudget {
            total,
            per_identity: per_identity.min(total),
            held: Mutex::default(),
            gauge,
        })
    }

    /// An empty charge for one request of `identity` (its SPIFFE ID, else its certificate's
    /// fingerprint).
    pub fn charge(self: &Arc<Self>, identity: Arc<str>) -> BodyCharge {
        BodyCharge {
            budget: self.clone(),
            identity,
            bytes: 0,
        }
    }

    /// Bytes held now, by every request.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl BodyCharge {
    /// Take `n` more bytes; `false`, taking nothing, when that would pass the total or the
    /// identity's share.
    pub fn take(&mut self, n: usize) -> bool {
        let budget = &self.budget;
        let mut held = budget.lock();
        let Held { total, by_identity } = &mut *held;
        let mine = by_identity.get(&self.identity).copied().unwrap_or(0);
        if total.saturating_add(n) > budget.total || mine.saturating_add(n) > budget.per_identity {
            return false;
        }
        *total += n;
        *by_identity.entry(self.identity.clone()).or_insert(0) += n;
        self.bytes += n;
        budget.gauge.set(*total as i64);
        true
    }

    /// Bytes this request holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BodyCharge {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut held = self.budget.lock();
        held.total = held.total.saturating_sub(self.bytes);
        self.budget.gauge.set(held.total as i64);
        if let Some(mine) = held.by_identity.get_mut(&self.identity) {
            *mine = mine.saturating_sub(self.bytes);
            if *mine == 0 {
                held.by_identity.remove(&self.identity);
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
    fn body_charges_stay_within_the_total_and_each_identity_s_share() {
        let budget = BodyBudget::new(100, 60, Gauge::default());
        let (a, b): (Arc<str>, Arc<str>) = ("spiffe://td/a".into(), "spiffe://td/b".into());
        let mut first = budget.charge(a.clone());
        assert!(first.take(40));
        let mut second = budget.charge(a.clone());
        assert!(second.take(20));
        // a's share is spent; one byte more is refused and nothing is taken.
        assert!(!second.take(1));
        assert_eq!(second.bytes(), 20);
        let mut other = budget.charge(b.clone());
        assert!(other.take(40));
        // The total is spent too.
        assert!(!budget.charge(b.clone()).take(1));
        assert_eq!(budget.held(), 100);
        drop(first);
        assert_eq!(budget.held(), 60);
        assert!(budget.charge(a).take(40));
        drop((second, other));
        assert_eq!(budget.held(), 0);
        assert!(budget.lock().by_identity.is_empty());
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
