//! The revocations a feed publishes (`revocations_feed:`), held beside the file's and the
//! API's, never mixed with them: what is in force is the union, so the feed can add but never
//! lift a revocation made by the API or the file, and the file or the API never lift one the
//! feed holds. A feed that cannot be reached changes nothing: its last good list stays in
//! force, with its age kept for `/status` and the metrics; past `max_age` (when set) the
//! replica refuses everyone until the feed answers again.
//!
//! Fetching the feed is `crate::bundle::feed`'s; this holds what it last brought.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::set::Set;
use super::Revocation;

/// The feed's list and how fresh it is.
#[derive(Default)]
pub(super) struct Feed {
    pub set: Set,
    /// By id, to tell what each update added and removed.
    pub held: BTreeMap<String, Revocation>,
    /// A feed is configured at all.
    pub configured: bool,
    /// Zero: never refuse everyone, however old the list.
    pub max_age: Duration,
    /// When the feed last answered (a new list or "unchanged").
    pub fresh_at: Option<Instant>,
    /// When the feed was configured: the age of a list never fetched counts from here.
    pub since: Option<Instant>,
}

/// What one update of the feed changed.
pub struct FeedChange {
    pub added: Vec<Revocation>,
    pub removed: Vec<Revocation>,
}

impl Feed {
    /// How long since the feed last answered (since start, if it never has).
    pub fn age(&self, now: Instant) -> Option<Duration> {
        if !self.configured {
            return None;
        }
        self.fresh_at
            .or(self.since)
            .map(|at| now.saturating_duration_since(at))
    }

    /// Past `max_age` with no answer (never answered counts): refuse everyone.
    pub fn stale(&self, now: Instant) -> bool {
        self.configured
            && !self.max_age.is_zero()
            && self
                .fresh_at
                .is_none_or(|at| now.saturating_duration_since(at) > self.max_age)
    }

    /// Hold `list` as the feed's; what it added and removed.
    pub fn replace(&mut self, list: Vec<Revocation>, now: Instant) -> FeedChange {
        let next: BTreeMap<String, Revocation> =
            list.into_iter().map(|r| (r.id.clone(), r)).collect();
        let added = next
            .iter()
            .filter(|(id, r)| self.held.get(*id) != Some(*r))
            .map(|(_, r)| r.clone())
            .collect();
        let removed = self
            .held
            .iter()
            .filter(|(id, _)| !next.contains_key(*id))
            .map(|(_, r)| r.clone())
            .collect();
        self.set = Set::from_list(next.values().cloned().collect());
        self.held = next;
        self.fresh_at = Some(now);
        FeedChange { added, removed }
    }
}
