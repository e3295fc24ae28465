//! Budgets kept in this replica's memory: one TAT per key, in shards, each key forgotten
//! once its budget is whole again. Bounded: past [`MAX_KEYS`] live keys the store refuses to
//! grow and answers unavailable (fail closed), rather than let a flood of keys take memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{gcra, BudgetError, Charge, Verdict};

const SHARDS: usize = 32;
/// Most keys kept at once, over every shard.
pub const MAX_KEYS: usize = 1_000_000;

pub struct Store {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    started: Instant,
    /// Keys held, over every shard.
    keys: AtomicUsize,
}

#[derive(Default)]
struct Shard {
    /// TAT (ns after `started`) by key.
    tats: HashMap<String, u128>,
    /// Single-use marks: when each expires (ns after `started`).
    used: HashMap<String, u128>,
    /// Keys added since the shard was last swept of spent ones.
    added: usize,
    /// Single-use marks the shard may hold before expired ones are swept: twice what the last
    /// sweep left, so a sweep costs O(1) per mark, amortized.
    used_sweep_at: usize,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            started: Instant::now(),
            keys: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u128 {
        // Never 0: a TAT of 0 means "unknown".
        self.started.elapsed().as_nanos() + 1
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Charge every limit, or none; unavailable when new keys would pass [`MAX_KEYS`].
    pub fn charge(&self, limits: &[Charge<'_>]) -> Result<Vec<Verdict>, BudgetError> {
        let now = self.now();
        // Lock the shards involved in one order, so two requests never wait on each other.
        let mut order: Vec<usize> = limits.iter().map(|c| self.shard_of(c.key)).collect();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, self.lock(i))).collect();
        let mut verdicts = Vec::with_capacity(limits.len());
        let mut next = Vec::with_capacity(limits.len());
        // A key charged twice by one request (two calls of a batch) sees its own charge.
        let mut pending: HashMap<&str, u128> = HashMap::new();
        for charge in limits {
            let shard = self.shard_of(charge.key);
            let stored = guards
                .iter()
                .find(|(i, _)| *i == shard)
                .and_then(|(_, g)| g.tats.get(charge.key).copied())
                .unwrap_or(0);
            let tat = pending.get(charge.key).copied().unwrap_or(stored);
            let (verdict, tat) = gcra(tat, now, charge.limit, charge.per);
            pending.insert(charge.key, tat);
            verdicts.push(verdict);
            next.push((shard, charge.key, tat));
        }
        for (_, g) in guards.iter_mut() {
            self.forget_spent(g, now);
        }
        if verdicts.iter().all(|v| v.allowed) {
            let new = next
                .iter()
                .filter(|(shard, key, _)| {
                    guards
                        .iter()
                        .find(|(i, _)| i == shard)
                        .is_some_and(|(_, g)| !g.tats.contains_key(*key))
                })
                .count();
            if self.keys.load(Ordering::Relaxed) + new > MAX_KEYS {
                return Err(BudgetError::Unavailable(format!(
                    "the in-memory budget store holds its most keys ({MAX_KEYS})"
                )));
            }
            for (shard, key, tat) in next {
                if let Some((_, g)) = guards.iter_mut().find(|(i, _)| *i == shard) {
                    if g.tats.insert(key.to_string(), tat).is_none() {
                        g.added += 1;
                        self.keys.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(verdicts)
    }

    /// A key whose TAT is past is back to a whole budget: nothing to keep. A shard is swept
    /// once it has added as many keys as it held at its last sweep (at least 256), so the
    /// cost stays proportional to what was added.
    fn forget_spent(&self, shard: &mut Shard, now: u128) {
        if shard.added < 256.max(shard.tats.len() / 2) {
            return;
        }
        let before = shard.tats.len();
        shard.tats.retain(|_, tat| *tat > now);
        self.keys
            .fetch_sub(before - shard.tats.len(), Ordering::Relaxed);
        shard.added = 0;
    }

    /// Mark `key` used for `ttl`; false when it was used already.
    pub fn use_once(&self, key: &str, ttl: Duration) -> bool {
        let now = self.now();
        let mut shard = self.lock(self.shard_of(key));
        if shard.used.get(key).is_some_and(|until| *until > now) {
            return false;
        }
        if shard.used.len() >= shard.used_sweep_at {
            shard.used.retain(|_, until| *until > now);
            shard.used_sweep_at = (shard.used.len() * 2).max(64);
        }
        shard.used.insert(key.to_string(), now + ttl.as_nanos());
        true
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_charged_all_or_nothing() {
        let store = Store::new();
        let per = Duration::from_secs(3600);
        let charge = |key, limit| Charge { key, limit, per };
        let charged = |limits: &[Charge<'_>]| store.charge(limits).unwrap_or_default();
        assert!(charged(&[charge("a", 1)]).iter().all(|v| v.allowed));
        // b would be allowed, a is spent: neither is charged.
        let verdicts = charged(&[charge("b", 1), charge("a", 1)]);
        assert!(verdicts[0].allowed && !verdicts[1].allowed);
        assert!(charged(&[charge("b", 1)])[0].allowed);
        // Two charges of one key in one request: the second sees the first.
        let both = charged(&[charge("c", 1), charge("c", 1)]);
        assert!(both[0].allowed && !both[1].allowed);
        assert!(charged(&[charge("c", 1)])[0].allowed);
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn a_key_is_used_once_until_it_expires() {
        let store = Store::new();
        assert!(store.use_once("t", Duration::from_secs(60)));
        assert!(!store.use_once("t", Duration::from_secs(60)));
        assert!(store.use_once("u", Duration::ZERO));
        assert!(store.use_once("u", Duration::ZERO));
    }

    #[test]
    fn spent_marks_are_swept_as_they_pile_up() {
        let store = Store::new();
        for i in 0..10_000 {
            assert!(store.use_once(&format!("gone-{i}"), Duration::ZERO));
        }
        let held: usize = store
            .shards
            .iter()
            .map(|s| s.lock().unwrap().used.len())
            .sum();
        assert!(held < 10_000 / 2, "{held} marks held, none of them live");
        assert!(store.use_once("live", Duration::from_secs(60)));
        assert!(!store.use_once("live", Duration::from_secs(60)));
    }
}
