//! Budgets: how many requests a key may make per window, charged all or nothing for the
//! limits of one request, in memory (per replica) or in Redis (shared by the fleet).
//!
//! The algorithm is GCRA (the generic cell rate algorithm): for a limit of `limit` per `per`,
//! each request moves a key's theoretical arrival time (TAT) on by `per / limit`, and is
//! refused when that would put it more than `per` ahead of now. So a key may burst up to
//! `limit` at once, then goes on at the steady rate, and no counter ever needs resetting. A
//! store keeps one number per key, which expires once the key is idle.
//!
//! This room knows nothing of requests or policies: the proxy's budget step
//! (`crate::proxy::budget`) asks it to charge the limits a policy attached.

pub mod memory;
pub mod redis;
mod resp;

use std::time::Duration;

use thiserror::Error;

/// One limit to charge: at most `limit` per `per` for `key`.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub key: &'a str,
    pub limit: u64,
    pub per: Duration,
}

/// What a store answered for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests the key may still make at once (0 when refused).
    pub remaining: u64,
    /// Until the key's budget is whole again.
    pub reset: Duration,
    /// When refused: until one more request would be allowed.
    pub retry_after: Duration,
}

#[derive(Debug, Error)]
pub enum BudgetError {
    /// The store did not answer (unreachable, too slow, an error): the request is refused
    /// unless its limits say otherwise.
    #[error("the budget store is unavailable: {0}")]
    Unavailable(String),
}

/// Where budgets are kept (`--budget-store`).
pub enum Store {
    Memory(memory::Store),
    Redis(redis::Store),
}

impl Store {
    /// Charge every limit, or none: one verdict per limit, in order. When any is refused,
    /// nothing is charged.
    pub async fn charge(&self, limits: &[Charge<'_>]) -> Result<Vec<Verdict>, BudgetError> {
        match self {
            Store::Memory(store) => store.charge(limits),
            Store::Redis(store) => store.charge(limits).await,
        }
    }

    /// Mark `key` used for `ttl`; `Ok(false)` when it was used already. For single-use
    /// tokens, across the fleet when the store is shared.
    pub async fn use_once(&self, key: &str, ttl: Duration) -> Result<bool, BudgetError> {
        match self {
            Store::Memory(store) => Ok(store.use_once(key, ttl)),
            Store::Redis(store) => store.use_once(key, ttl).await,
        }
    }

    /// Whether budgets are shared by every replica using the same store.
    pub fn shared(&self) -> bool {
        matches!(self, Store::Redis(_))
    }
}

/// Nanoseconds a request moves a key's TAT on; a limit of 0 refuses every request.
fn interval_ns(limit: u64, per: Duration) -> u128 {
    match limit {
        0 => per.as_nanos() + 1,
        n => (per.as_nanos() / u128::from(n)).max(1),
    }
}

/// GCRA for one limit at `now` (ns) with the key's `tat` (ns, 0: unknown): the verdict, and
/// the TAT to keep when every limit of the request is allowed.
fn gcra(tat: u128, now: u128, limit: u64, per: Duration) -> (Verdict, u128) {
    let interval = interval_ns(limit, per);
    let window = per.as_nanos();
    let tat = tat.max(now);
    let next = tat + interval;
    let ns = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    if next - now > window {
        let verdict = Verdict {
            allowed: false,
            remaining: 0,
            reset: ns(tat - now),
            retry_after: ns(next - now - window),
        };
        return (verdict, tat);
    }
    let remaining = u64::try_from((now + window - next) / interval).unwrap_or(u64::MAX);
    let verdict = Verdict {
        allowed: true,
        remaining,
        reset: ns(next - now),
        retry_after: Duration::ZERO,
    };
    (verdict, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_bursts_to_the_limit_then_keeps_the_rate() {
        let per = Duration::from_secs(10);
        let (mut tat, now) = (0u128, 1_000_000_000u128);
        for i in 0..10 {
            let (v, next) = gcra(tat, now, 10, per);
            assert!(v.allowed, "{i}");
            assert_eq!(v.remaining, 9 - i);
            tat = next;
        }
        let (v, _) = gcra(tat, now, 10, per);
        assert!(!v.allowed);
        assert_eq!(v.retry_after, Duration::from_secs(1));
        // One interval later, one more.
        let (v, _) = gcra(tat, now + 1_000_000_000, 10, per);
        assert!(v.allowed);
        assert_eq!(v.remaining, 0);
        // A limit of 0 refuses everything.
        assert!(!gcra(0, now, 0, per).0.allowed);
    }
}
