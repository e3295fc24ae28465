//! A change to the revocations, said once whoever made it (the admin API, the file, a feed):
//! one decision-log record and the metric, by [`Recorded::changed`].
//!
//! What changes the revocations is `super`'s; this only tells of a change made.

use std::sync::Arc;

use serde::Serialize;

use super::Revocation;
use crate::audit::Audit;
use crate::metrics::Metrics;

/// A change to the revocations (the kill switch), as the decision log keeps it.
#[derive(Debug, Serialize)]
pub struct RevocationRecord<'a> {
    /// `revocation_added`, `revocation_removed`, `revocations_reloaded`,
    /// `revocations_feed_stale` or `revocations_feed_fresh`.
    pub event: &'static str,
    /// `api`, `file` or `feed`.
    pub source: &'static str,
    /// The revocation added or removed; absent for a file reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<&'a Revocation>,
    /// The admin client's address, for an API change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// How many revocations are in force after the change.
    pub in_force: usize,
}

/// One change, and who made it.
pub enum Change<'a> {
    /// Through the admin API, from `client`.
    Added {
        revocation: &'a Revocation,
        client: String,
    },
    Removed {
        revocation: &'a Revocation,
        client: String,
    },
    /// The revocation file was read again and differs.
    Reloaded,
    /// The revocations feed brought a revocation, or dropped one.
    FeedAdded {
        revocation: &'a Revocation,
    },
    FeedRemoved {
        revocation: &'a Revocation,
    },
    /// The feed has not answered for longer than its `max_age`: everyone is refused.
    FeedStale,
    /// The feed answered again after it was stale.
    FeedFresh,
}

/// Where changes are told: the decision log and the metrics.
#[derive(Clone)]
pub struct Recorded {
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
}

impl Recorded {
    /// Record `change`, after which `in_force` revocations are in force.
    pub fn changed(&self, change: Change<'_>, in_force: usize) {
        let (event, label, source, revocation, client_addr) = match change {
            Change::Added { revocation, client } => (
                "revocation_added",
                "added",
                "api",
                Some(revocation),
                Some(client),
            ),
            Change::Removed { revocation, client } => (
                "revocation_removed",
                "removed",
                "api",
                Some(revocation),
                Some(client),
            ),
            Change::Reloaded => ("revocations_reloaded", "reloaded", "file", None, None),
            Change::FeedAdded { revocation } => {
                ("revocation_added", "added", "feed", Some(revocation), None)
            }
            Change::FeedRemoved { revocation } => (
                "revocation_removed",
                "removed",
                "feed",
                Some(revocation),
                None,
            ),
            Change::FeedStale => ("revocations_feed_stale", "feed_stale", "feed", None, None),
            Change::FeedFresh => ("revocations_feed_fresh", "feed_fresh", "feed", None, None),
        };
        self.metrics.revocations(in_force, label);
        self.audit.log(&RevocationRecord {
            event,
            source,
            revocation,
            client_addr,
            in_force,
        });
    }
}
