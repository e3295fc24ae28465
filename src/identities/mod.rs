//! The identity inventory: every workload identity seen since start (by SPIFFE ID, or by
//! certificate subject for a certificate without one), what it asked and was told, which
//! certificates and delegation subjects it came with, and how many connections it holds now.
//! Served as `GET /identities` on the admin listener, counted by `regate_identities`.
//!
//! The request path publishes here and never reads back; the admin listener only reads.
//! Memory is bounded twice: at most `--max-identities` entries (the least recently seen idle
//! one goes first), and within an entry, at most [`MAX_DENY_REASONS`] reasons,
//! [`MAX_RECENT`] serials and [`MAX_RECENT`] delegation subjects, each of bounded length.
//!
//! Cost: one lock of the table per connection, at the handshake ([`Inventory::connected`])
//! and at the close ([`Presence`]'s drop); the connection keeps its entry, so an allowed
//! request costs two atomic operations and a clock read, and only a denied request or one
//! with a delegation token takes the entry's own lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::tls::identity::PeerIdentity;

/// Distinct deny reasons counted per identity; later ones are counted as `other`.
pub const MAX_DENY_REASONS: usize = 16;
/// Deny reasons listed per identity, the most frequent first.
pub const TOP_DENY_REASONS: usize = 5;
/// Serials, and delegation subjects, kept per identity: the most recent.
pub const MAX_RECENT: usize = 8;
/// Longest deny reason, serial or delegation subject kept, in bytes; longer ones are cut.
const MAX_TEXT: usize = 128;
/// The `--max-identities` default.
pub const DEFAULT_MAX_IDENTITIES: usize = 10_000;

/// What names an entry. The table and the entry share one copy of the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// True: `name` is a SPIFFE ID; false: a certificate subject.
    spiffe: bool,
    name: Arc<str>,
}

impl Key {
    fn of(peer: &PeerIdentity) -> Key {
        match &peer.spiffe_id {
            Some(id) => Key {
                spiffe: true,
                name: id.id.as_str().into(),
            },
            None => Key {
                spiffe: false,
                name: peer.subject.as_str().into(),
            },
        }
    }
}

/// One identity's counts. Shared by the table and by every open connection of the identity.
#[derive(Debug)]
pub struct Entry {
    key: Key,
    /// Unix milliseconds.
    first_seen: u64,
    /// Unix milliseconds: the last handshake, request or close.
    last_seen: AtomicU64,
    allowed: AtomicU64,
    denied: AtomicU64,
    /// Changed only under the table lock, so eviction sees a settled value.
    open: AtomicU64,
    details: Mutex<Details>,
}

/// What changes rarely, or only on a deny: behind the entry's own lock.
#[derive(Debug, Default)]
struct Details {
    deny_reasons: Vec<(Box<str>, u64)>,
    /// Denials whose reason came after [`MAX_DENY_REASONS`] others.
    other_reasons: u64,
    serials: Recent,
    /// Unix seconds.
    earliest_not_after: Option<i64>,
    delegation_subjects: Recent,
}

/// The most recent [`MAX_RECENT`] distinct values, newest first, and how many were added.
#[derive(Debug, Default)]
struct Recent {
    items: VecDeque<Box<str>>,
    /// Values added that were not among the kept ones. Exact while no more than
    /// [`MAX_RECENT`] distinct values are seen; a value that fell out and returns counts
    /// again (serials and delegation subjects rarely come back once replaced).
    added: u64,
}

impl Recent {
    fn note(&mut self, value: &str) {
        let value = cut(value);
        if self.items.front().is_some_and(|v| &**v == value) {
            return;
        }
        match self.items.iter().position(|v| &**v == value) {
            Some(i) => {
                if let Some(v) = self.items.remove(i) {
                    self.items.push_front(v);
                }
            }
            None => {
                self.items.push_front(value.into());
                self.items.truncate(MAX_RECENT);
                self.added += 1;
            }
        }
    }
}

/// `text`, cut to at most [`MAX_TEXT`] bytes on a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere mid-update; counts are still counts.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Entry {
    fn new(key: Key, now: u64) -> Entry {
        Entry {
            key,
            first_seen: now,
            last_seen: AtomicU64::new(now),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            open: AtomicU64::new(0),
            details: Mutex::default(),
        }
    }

    fn seen_at(&self, now: u64) {
        // Most calls find the time already later than stored; only then is the line written.
        if now > self.last_seen.load(Ordering::Relaxed) {
            self.last_seen.fetch_max(now, Ordering::Relaxed);
        }
    }
}

/// The inventory: entries by identity, in the order they were last seen at a handshake or a
/// close.
pub struct Inventory {
    cap: usize,
    table: Mutex<LruCache<Key, Arc<Entry>>>,
    evicted: AtomicU64,
    /// `regate_identities`: entries held.
    held: Gauge,
    /// `regate_identities_evicted_total`.
    evictions: Counter,
}

/// An open connection's place in the inventory: requests are counted on its entry, and when
/// the connection closes (this is dropped) the entry's open connections go down.
pub struct Presence {
    inventory: Arc<Inventory>,
    entry: Arc<Entry>,
}

impl Inventory {
    /// An empty inventory of at most `cap` identities (at least one), publishing its size and
    /// evictions to `held` and `evictions`.
    pub fn new(cap: usize, (held, evictions): (Gauge, Counter)) -> Inventory {
        Inventory {
            cap: cap.max(1),
            table: Mutex::new(LruCache::unbounded()),
            evicted: AtomicU64::new(0),
            held,
            evictions,
        }
    }

    /// A connection from `peer` passed the handshake: find or add its entry, count the
    /// connection open, and note the certificate.
    pub fn connected(self: &Arc<Self>, peer: &PeerIdentity) -> Presence {
        let now = unix_ms(SystemTime::now());
        let key = Key::of(peer);
        let entry = {
            let mut table = lock(&self.table);
            let entry = match table.get(&key) {
                Some(entry) => entry.clone(),
                None => {
                    if table.len() >= self.cap {
                        self.evict_one(&mut table);
                    }
                    let entry = Arc::new(Entry::new(key.clone(), now));
                    table.put(key, entry.clone());
                    self.held.set(table.len() as i64);
                    entry
                }
            };
            // Under the table lock: eviction must never find this entry idle from here on.
            entry.open.fetch_add(1, Ordering::Relaxed);
            entry.seen_at(now);
            entry
        };
        {
            let mut details = lock(&entry.details);
            details.serials.note(&peer.serial);
            details.earliest_not_after = Some(
                details
                    .earliest_not_after
                    .map_or(peer.not_after, |t| t.min(peer.not_after)),
            );
        }
        Presence {
            inventory: self.clone(),
            entry,
        }
    }

    /// Make room for one entry. The least recently seen entry with no open connection goes:
    /// idle entries are ordered exactly by when they were last seen, since their last event
    /// was a close, which moved them to the front. Only when every entry holds a connection
    /// (more identities connected at once than `--max-identities`) does a busy one go, the
    /// least recently connected or closed; its connections keep counting on the entry they
    /// hold, which is no longer listed. A new entry for that identity starts from zero, so
    /// counts never go negative and never count a connection twice; what the evicted entry
    /// counts from then on is not shown. The cap always holds.
    fn evict_one(&self, table: &mut LruCache<Key, Arc<Entry>>) {
        let idle = table
            .iter()
            .rev()
            .find(|(_, e)| e.open.load(Ordering::Relaxed) == 0)
            .map(|(k, _)| k.clone());
        let gone = match idle {
            Some(key) => table.pop(&key).is_some(),
            None => table.pop_lru().is_some(),
        };
        if gone {
            self.evicted.fetch_add(1, Ordering::Relaxed);
            self.evictions.inc();
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        lock(&self.table).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The entries, most recently seen first, at most `limit` of them. The table is locked
    /// only to copy its entries' pointers; each entry is read after.
    pub fn listing(&self, limit: Option<usize>) -> Listing {
        let (entries, count) = {
            let table = lock(&self.table);
            (
                table.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
                table.len(),
            )
        };
        let mut entries: Vec<(u64, Arc<Entry>)> = entries
            .into_iter()
            .map(|e| (e.last_seen.load(Ordering::Relaxed), e))
            .collect();
        entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.name.cmp(&b.1.key.name)));
        entries.truncate(limit.unwrap_or(usize::MAX));
        Listing {
            identities: entries.iter().map(|(_, e)| Listed::of(e)).collect(),
            count,
            cap: self.cap,
            evicted: self.evicted(),
        }
    }
}

impl Presence {
    /// One request on this connection was decided: allowed or not (and why), with the
    /// verified delegation token's subject, if any.
    pub fn request(&self, allowed: bool, reason: &str, delegation_subject: Option<&str>) {
        let entry = &self.entry;
        entry.seen_at(unix_ms(SystemTime::now()));
        if allowed {
            entry.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            entry.denied.fetch_add(1, Ordering::Relaxed);
        }
        if allowed && delegation_subject.is_none() {
            return;
        }
        let mut details = lock(&entry.details);
        if !allowed {
            details.deny(reason);
        }
        if let Some(subject) = delegation_subject {
            details.delegation_subjects.note(subject);
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let now = unix_ms(SystemTime::now());
        let mut table = lock(&self.inventory.table);
        // Moved to the front only if it is still the listed entry, not one evicted while
        // this connection was open.
        if table
            .peek(&self.entry.key)
            .is_some_and(|listed| Arc::ptr_eq(listed, &self.entry))
        {
            table.promote(&self.entry.key);
        }
        self.entry.seen_at(now);
        self.entry.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Details {
    fn deny(&mut self, reason: &str) {
        let reason = cut(reason);
        if let Some((_, n)) = self.deny_reasons.iter_mut().find(|(r, _)| &**r == reason) {
            *n += 1;
        } else if self.deny_reasons.len() < MAX_DENY_REASONS {
            self.deny_reasons.push((reason.into(), 1));
        } else {
            self.other_reasons += 1;
        }
    }

    /// The most frequent reasons first (`other` among them), ties by name.
    fn top_reasons(&self) -> Vec<DenyReason> {
        let mut all: Vec<DenyReason> = self
            .deny_reasons
            .iter()
            .map(|(reason, count)| DenyReason {
                reason: reason.to_string(),
                count: *count,
            })
            .collect();
        if self.other_reasons > 0 {
            all.push(DenyReason {
                reason: "other".into(),
                count: self.other_reasons,
            });
        }
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        all.truncate(TOP_DENY_REASONS);
        all
    }
}

/// `GET /identities`.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub identities: Vec<Listed>,
    /// Entries held (the listing may be cut shorter by `limit`).
    pub count: usize,
    pub cap: usize,
    /// Entries evicted since start to stay within the cap.
    pub evicted: u64,
}

/// One identity, as `GET /identities` shows it.
#[derive(Debug, Serialize)]
pub struct Listed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// The certificate subject, for a certificate without a SPIFFE ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub allowed: u64,
    pub denied: u64,
    pub deny_reasons: Vec<DenyReason>,
    pub open_connections: u64,
    /// The most recent serials, newest first.
    pub serials: Vec<String>,
    pub serials_seen: u64,
    pub earliest_not_after: Option<String>,
    /// The most recent delegation token subjects, newest first.
    pub delegation_subjects: Vec<String>,
    pub delegation_subjects_seen: u64,
}

#[derive(Debug, Serialize)]
pub struct DenyReason {
    pub reason: String,
    pub count: u64,
}

fn rfc3339_ms(unix_ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn rfc3339_s(unix: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

impl Listed {
    fn of(entry: &Entry) -> Listed {
        let details = lock(&entry.details);
        let name = entry.key.name.to_string();
        let (spiffe_id, subject) = match entry.key.spiffe {
            true => (Some(name), None),
            false => (None, Some(name)),
        };
        let strings = |r: &Recent| r.items.iter().map(|s| s.to_string()).collect();
        Listed {
            spiffe_id,
            subject,
            first_seen: rfc3339_ms(entry.first_seen),
            last_seen: rfc3339_ms(entry.last_seen.load(Ordering::Relaxed)),
            allowed: entry.allowed.load(Ordering::Relaxed),
            denied: entry.denied.load(Ordering::Relaxed),
            deny_reasons: details.top_reasons(),
            open_connections: entry.open.load(Ordering::Relaxed),
            serials: strings(&details.serials),
            serials_seen: details.serials.added,
            earliest_not_after: details.earliest_not_after.and_then(rfc3339_s),
            delegation_subjects: strings(&details.delegation_subjects),
            delegation_subjects_seen: details.delegation_subjects.added,
        }
    }
}

#[cfg(test)]
mod tests;
