//! The decision cache: a policy set's answers, kept by exactly what the policy can read.
//!
//! [`analysis`](super::analysis) finds the parts of `input` a set can read; the key of a
//! request is the JSON of `input` at each of them (or "undefined"), so two requests with the
//! same key are, to the policy, the same request, and its answer is the same. A cache belongs
//! to one policy set: a reload builds a new set with an empty cache, so no answer outlives the
//! policy or data that gave it. Only clean answers are kept: an evaluation that erred or timed
//! out is asked again next time.
//!
//! Bounded: at most `--decision-cache-entries` answers, in shards each evicting its least
//! recently used.

use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use lru::LruCache;
use regorus::Value;

use super::analysis::Step;
use super::Decision;

const SHARDS: usize = 16;

/// A separator no JSON text contains unescaped.
const SEPARATOR: u8 = 0;
/// What a key holds for a part of `input` that is not there.
const UNDEFINED: u8 = 1;

pub struct DecisionCache {
    /// The parts of `input` the key is made of.
    paths: Vec<Vec<Step>>,
    shards: Vec<Mutex<LruCache<Box<[u8]>, Decision>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The longest key kept.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

impl DecisionCache {
    /// A cache keyed on `paths` holding up to `entries` answers; `None` for no cache.
    /// Keys are at most [`MAX_KEY_BYTES`] long, so the cache holds at most `entries` times that.
    pub fn new(paths: &[Vec<Step>], entries: usize) -> Option<DecisionCache> {
        let per_shard = NonZeroUsize::new(entries.div_ceil(SHARDS))?;
        Some(DecisionCache {
            paths: paths.to_vec(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// The key of a request: the JSON of each part of its `input` the policy can read, as
    /// `at` gives them (`input::walk` over a whole document, or `InputView::at`).
    pub fn key(&self, at: impl Fn(&[Step]) -> Option<Value>) -> Box<[u8]> {
        let mut key = Vec::with_capacity(64);
        for path in &self.paths {
            match at(path) {
                Some(value) => {
                    // Serializing a Value to memory cannot fail; if it did, the key would
                    // still be distinct from every other input's.
                    let _ = serde_json::to_writer(&mut key, &value);
                }
                None => key.push(UNDEFINED),
            }
            key.push(SEPARATOR);
        }
        key.into_boxed_slice()
    }

    /// The answer kept for `key`, marked as cached.
    pub fn get(&self, key: &[u8]) -> Option<Decision> {
        let found = self
            .shard(key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned();
        match found {
            Some(mut decision) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                decision.cached = true;
                Some(decision)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keep a fresh answer, unless its evaluation failed.
    pub fn put(&self, key: Box<[u8]>, decision: &Decision) {
        // A key this long (a policy reading a whole request body) would make the cache's
        // memory a multiple of the bodies it has seen; such answers are not kept.
        if decision.error.is_some() || key.len() > MAX_KEY_BYTES {
            return;
        }
        self.shard(&key)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .put(key, decision.clone());
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    fn shard(&self, key: &[u8]) -> &Mutex<LruCache<Box<[u8]>, Decision>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % SHARDS]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::input::walk;

    fn input(json: &str) -> Value {
        Value::from_json_str(json).unwrap()
    }

    fn key_of(cache: &DecisionCache, json: &str) -> Box<[u8]> {
        let v = input(json);
        cache.key(|p| walk(&v, p))
    }

    #[test]
    fn keys_tell_apart_exactly_what_the_policy_reads() {
        let key = |k: &str| Step::Key(k.into());
        let cache = DecisionCache::new(&[vec![key("a")], vec![key("b"), key("c")]], 100).unwrap();
        let k1 = key_of(&cache, r#"{"a": 1, "b": {"c": "x"}, "other": 1}"#);
        let k2 = key_of(&cache, r#"{"a": 1, "b": {"c": "x"}, "other": 2}"#);
        let k3 = key_of(&cache, r#"{"a": 1, "b": {"c": "y"}}"#);
        let k4 = key_of(&cache, r#"{"a": 1, "b": {}}"#);
        let k5 = key_of(&cache, r#"{"a": 1, "b": {"c": null}}"#);
        assert_eq!(k1, k2, "a part the policy never reads changes nothing");
        assert_ne!(k1, k3);
        assert_ne!(k4, k5, "undefined is not null");
        assert_ne!(k3, k4);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_no_failure() {
        let cache = DecisionCache::new(&[vec![Step::Key("a".into())]], SHARDS).unwrap();
        for i in 0..1000 {
            let key = key_of(&cache, &format!(r#"{{"a": {i}}}"#));
            cache.put(key, &Decision::deny("denied"));
        }
        assert!(cache.entries() <= SHARDS);
        let key = key_of(&cache, r#"{"a": "failed"}"#);
        let failed = Decision {
            error: Some("boom".into()),
            ..Decision::deny("policy_error")
        };
        cache.put(key.clone(), &failed);
        assert!(cache.get(&key).is_none());
        assert!(DecisionCache::new(&[], 0).is_none());
    }

    #[test]
    fn an_index_reads_one_element() {
        let cache = DecisionCache::new(&[vec![Step::Key("p".into()), Step::Index(0)]], 10).unwrap();
        assert_eq!(
            key_of(&cache, r#"{"p": ["api", "1"]}"#),
            key_of(&cache, r#"{"p": ["api", "2", "3"]}"#)
        );
        assert_ne!(
            key_of(&cache, r#"{"p": ["api"]}"#),
            key_of(&cache, r#"{"p": []}"#)
        );
    }
}
