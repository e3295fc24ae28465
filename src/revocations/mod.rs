//! The kill switch: revocations of a SPIFFE ID, a certificate serial, or a delegation
//! token's id (`jti`, checked once the token is verified, see [`crate::delegation`]).
//!
//! A revocation is checked before any policy, on every request, including those on
//! connections opened before it; connections and tunnels of a revoked identity are closed as
//! soon as it lands. Revocations come from the admin API (`POST /revocations`) and from the
//! `--revocations` file, which holds them across restarts. A change through the API is one
//! line appended to the file's journal and synced before it applies (`store.rs`), so it costs
//! the same however many are in force (`set.rs`). The journal is folded into the file at
//! start, at every periodic reload (`--reload-interval`) and SIGHUP, once it has as many
//! lines as the file has revocations (at least [`FOLD_AFTER`]), and by the first change after
//! the file changed under regate. A change made to the file by hand or by GitOps is read back
//! like a policy change, with the journal applied over it. A revocation may expire
//! (`expires_at`); an expired one is ignored and dropped from the file when it is next
//! written. At most `--max-revocations` are in force; past that the API refuses new ones.
//!
//! This module owns the set and the files. The admin listener calls it, the proxy asks it,
//! the reloader tells it the file may have changed; it calls none of them.

mod feed;
pub mod record;
mod set;
mod store;

pub use feed::FeedChange;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::tls::identity::PeerIdentity;
use set::{Edit, Set};
use store::{Disk, FileSeen, Journal, Store};

/// `--max-revocations` unless set: far more than a kill switch is pulled by hand, few enough
/// that the set stays some tens of MiB.
pub const DEFAULT_MAX_REVOCATIONS: usize = 100_000;

/// The journal is folded into the file once it has this many lines, or as many as the file
/// holds revocations if more: a fold writes every revocation, so it comes after at least as
/// many one-line changes, and a change costs O(1) amortized.
pub const FOLD_AFTER: usize = 1024;

#[derive(Debug, Error)]
pub enum RevocationError {
    #[error("revocations: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("revocations: {path} is not a revocation list: {message}")]
    Parse { path: String, message: String },
    /// The file is not there (deleted while regate runs): nothing is lifted.
    #[error("revocations: {path} does not exist")]
    Missing { path: String },
    #[error("revocations: cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A request to the API that cannot be a revocation; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// `--max-revocations` are in force already.
    #[error("{max} revocations are in force, the most --max-revocations allows")]
    Full { max: usize },
}

/// What is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    SpiffeId(String),
    /// Lowercase hex, without separators or leading zeros.
    Serial(String),
    /// A delegation token's `jti`.
    Jti(String),
}

/// One revocation, as the API shows it and the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub id: String,
    #[serde(flatten)]
    pub target: Target,
    pub reason: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; absent: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl Revocation {
    /// Whether it no longer applies at `now` (unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        set::until(self) <= now
    }
}

/// A lowercase hex serial without its leading zeros (`0` for zero).
fn significant(serial: &str) -> &str {
    match serial.trim_start_matches('0') {
        "" if !serial.is_empty() => "0",
        trimmed => trimmed,
    }
}

/// The revocations in force; cheap to ask on every request.
pub struct Revocations {
    /// What is in force. A change edits it in place, holding the write lock for a few
    /// hash-map updates; the request path takes the read lock.
    current: RwLock<Set>,
    store: Option<Store>,
    /// Serializes changes and reloads, so that two writers never lose each other's change;
    /// holds what regate last read from or wrote to the disk.
    write: Mutex<Seen>,
    changed: watch::Sender<u64>,
    max: usize,
    /// What the revocations feed holds, apart from the file's and the API's.
    feed: RwLock<feed::Feed>,
}

/// The disk as regate last read or wrote it.
#[derive(Default)]
struct Seen {
    /// `None` while the file is missing.
    file: Option<FileSeen>,
    /// How many revocations the file holds.
    file_holds: usize,
    journal: Journal,
    /// A missing file was reported (once, until it is back).
    missing_said: bool,
}

/// What a change did, for the caller's audit record.
pub enum Change {
    Added(Revocation),
    Removed(Revocation),
    /// The file changed under regate: how many revocations it now holds.
    Reloaded(usize),
}

impl Revocations {
    /// The revocations in `file` and its journal, or none at all without a file. A file that
    /// does not exist yet is created, empty; one that does not parse is an error.
    pub fn load(file: Option<&Path>) -> Result<Revocations, RevocationError> {
        let revocations = Revocations {
            current: RwLock::default(),
            store: file.map(Store::new),
            write: Mutex::default(),
            changed: watch::Sender::new(0),
            max: DEFAULT_MAX_REVOCATIONS,
            feed: RwLock::default(),
        };
        if let Some(store) = &revocations.store {
            let disk = store.read()?;
            let missing = disk.file.is_none();
            // A line cut short must go before anything is appended after it.
            let torn = disk.torn;
            let mut seen = revocations.lock();
            revocations.take_in(disk, &mut seen);
            if missing || torn || seen.journal.lines > 0 {
                match revocations.fold(store, &mut seen) {
                    Ok(()) if missing => tracing::info!(
                        file = %store.file().display(),
                        "the revocation file did not exist; it is created"
                    ),
                    Ok(()) => {}
                    Err(e) if missing => {
                        seen.missing_said = true;
                        tracing::info!(
                            error = %crate::error::chain(&e),
                            "the revocation file does not exist and cannot be created now; \
                             the first change through the API writes it"
                        );
                    }
                    Err(e) => tracing::warn!(
                        error = %crate::error::chain(&e),
                        "the revocation journal could not be folded into the file; both stay"
                    ),
                }
            }
        }
        Ok(revocations)
    }

    /// At most `max` in force: the API refuses more (`--max-revocations`).
    pub fn with_max(mut self, max: usize) -> Revocations {
        self.max = max;
        let in_force = self.len();
        if in_force > max {
            tracing::warn!(
                in_force,
                max,
                "more revocations are in force than --max-revocations; every one applies, \
                 and the API takes no new one until fewer are"
            );
        }
        self
    }

    /// Revocations also come from a feed; past `max_age` (zero: never) without an answer
    /// from it, everyone is refused.
    pub fn with_feed(self, max_age: std::time::Duration) -> Revocations {
        {
            let mut feed = self.feed_mut();
            feed.configured = true;
            feed.max_age = max_age;
            feed.since = Some(std::time::Instant::now());
        }
        self
    }

    fn feed(&self) -> RwLockReadGuard<'_, feed::Feed> {
        self.feed.read().unwrap_or_else(|p| p.into_inner())
    }

    fn feed_mut(&self) -> std::sync::RwLockWriteGuard<'_, feed::Feed> {
        self.feed.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Put the feed's new list in force; what it added and removed. Open connections and
    /// tunnels check themselves again when anything changed, or when the feed was stale.
    pub fn apply_feed(&self, bytes: &[u8], name: &str) -> Result<FeedChange, RevocationError> {
        let list = store::parse_list(bytes, name)?;
        let now = std::time::Instant::now();
        let (change, was_stale) = {
            let mut feed = self.feed_mut();
            let was_stale = feed.stale(now);
            (feed.replace(list, now), was_stale)
        };
        if was_stale || !change.added.is_empty() || !change.removed.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(change)
    }

    /// The feed answered that its list is unchanged: it is fresh again. Whether it was stale.
    pub fn feed_fresh(&self) -> bool {
        let now = std::time::Instant::now();
        let was_stale = {
            let mut feed = self.feed_mut();
            let was_stale = feed.stale(now);
            feed.fresh_at = Some(now);
            was_stale
        };
        if was_stale {
            self.changed.send_modify(|n| *n += 1);
        }
        was_stale
    }

    /// How long since the feed last answered; `None` without a feed.
    pub fn feed_age(&self) -> Option<std::time::Duration> {
        self.feed().age(std::time::Instant::now())
    }

    /// When the feed's list turns stale (`None`: never, or it already is).
    pub fn feed_stale_at(&self) -> Option<std::time::Instant> {
        let feed = self.feed();
        let at = feed.fresh_at?;
        (feed.configured && !feed.max_age.is_zero()).then(|| at + feed.max_age)
    }

    /// The feed's list is past `max_age`: every caller is refused.
    pub fn feed_stale(&self) -> bool {
        self.feed().stale(std::time::Instant::now())
    }

    /// Tell open connections and tunnels to check themselves again (the feed turned stale).
    pub fn recheck(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// The revocations the feed holds.
    pub fn feed_list(&self) -> Vec<Revocation> {
        self.feed().set.list(now())
    }

    /// `Err` while a configured feed has never answered: until then its revocations are
    /// unknown (a restart during an outage would otherwise serve what the feed revoked), so
    /// the replica is not ready for traffic.
    pub fn feed_ready(&self) -> Result<(), String> {
        let feed = self.feed();
        match feed.configured && feed.fresh_at.is_none() {
            true => Err("waiting for the revocations feed's first answer".into()),
            false => Ok(()),
        }
    }

    /// How many of the feed's revocations are in force, without copying them.
    pub fn feed_len(&self) -> usize {
        self.feed().set.count(now())
    }

    /// Moves on every change: open connections and tunnels check themselves again.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The file, if revocations are kept in one.
    pub fn file(&self) -> Option<&Path> {
        self.store.as_ref().map(Store::file)
    }

    /// `--max-revocations`.
    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> MutexGuard<'_, Seen> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, Set> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Change what is in force in place.
    fn edit(&self, change: impl FnOnce(&mut Set)) {
        change(&mut self.current.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// Put `set` in force; the old one is dropped once the lock is let go.
    fn replace(&self, set: Set) {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            set,
        );
        drop(old);
    }

    /// The revocation that applies to this caller, by SPIFFE ID or certificate serial, if
    /// one is in force.
    pub fn find(&self, peer: &PeerIdentity) -> Option<Revocation> {
        self.read().for_peer(peer, now()).cloned()
    }

    /// Whether this caller, or the delegation token (`jti`) it acts under, is revoked: the
    /// one question the request path, tunnels and open connections ask. With nothing
    /// revoked, it is an uncontended read lock and a length.
    pub fn refuses(&self, peer: &PeerIdentity, jti: Option<&str>) -> bool {
        self.refusal(peer, jti).is_some()
    }

    /// Why this caller (or the token it acts under) is refused: `revoked` (by the file, the
    /// API or the feed), or `revocations_feed_stale` (the feed is past `max_age`).
    pub fn refusal(&self, peer: &PeerIdentity, jti: Option<&str>) -> Option<&'static str> {
        let revoked = |set: &Set| {
            if set.is_empty() {
                return false;
            }
            let now = now();
            set.for_peer(peer, now).is_some()
                || jti.is_some_and(|jti| set.has_jtis() && set.jti_revoked(jti, now))
        };
        if revoked(&self.read()) {
            return Some("revoked");
        }
        let feed = self.feed();
        if !feed.configured {
            return None;
        }
        if feed.stale(std::time::Instant::now()) {
            return Some("revocations_feed_stale");
        }
        revoked(&feed.set).then_some("revoked")
    }

    /// Whether this caller is revoked ([`Revocations::refuses`] without a token).
    pub fn revoked(&self, peer: &PeerIdentity) -> bool {
        self.refuses(peer, None)
    }

    /// Whether this delegation token id is revoked.
    pub fn jti_revoked(&self, jti: &str) -> bool {
        let set = self.read();
        let feed = self.feed();
        (set.has_jtis() && set.jti_revoked(jti, now()))
            || (feed.set.has_jtis() && feed.set.jti_revoked(jti, now()))
    }

    /// Every revocation in force.
    pub fn list(&self) -> Vec<Revocation> {
        self.read().list(now())
    }

    pub fn len(&self) -> usize {
        self.read().count(now())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a revocation from an API request body: exactly one of `spiffe_id`, `serial` and
    /// `jti`; a `reason`; optionally `expires_at` (RFC 3339, in the future). Revoking what is
    /// already revoked returns the existing revocation, unchanged.
    pub fn add(&self, body: &[u8]) -> Result<(Revocation, bool), RevocationError> {
        let request = parse_request(body)?;
        let mut seen = self.lock();
        let rewrite = self.refresh(&mut seen);
        let now = now();
        let replaces = {
            let set = self.read();
            // Revoking again for longer (or for good) replaces the revocation; anything else
            // returns the one in force.
            let lasts = |at: Option<&str>| at.and_then(unix).unwrap_or(i64::MAX);
            if let Some(existing) = set
                .in_force(&request.target, now)
                .filter(|r| lasts(r.expires_at.as_deref()) >= lasts(request.expires_at.as_deref()))
            {
                return Ok((existing.clone(), false));
            }
            // What it replaces frees its place.
            if set.count(now) - set.in_force_for(&request.target, now) >= self.max {
                return Err(RevocationError::Full { max: self.max });
            }
            set.ids_of(&request.target)
        };
        let revocation = Revocation {
            id: uuid::Uuid::new_v4().to_string(),
            target: request.target,
            reason: request.reason,
            created_at: rfc3339(now),
            expires_at: request.expires_at,
        };
        let edit = Edit::Added {
            revocation: revocation.clone(),
            replaces,
        };
        self.change(&mut seen, edit, rewrite)?;
        Ok((revocation, true))
    }

    /// Remove the revocation with this id; `None` if there is none.
    pub fn remove(&self, id: &str) -> Result<Option<Revocation>, RevocationError> {
        let mut seen = self.lock();
        let rewrite = self.refresh(&mut seen);
        let Some(found) = self.read().by_id(id).cloned() else {
            return Ok(None);
        };
        let edit = Edit::Removed { id: id.to_string() };
        self.change(&mut seen, edit, rewrite)?;
        Ok(Some(found))
    }

    /// Keep `edit` on disk, then put it in force and tell open connections; if it cannot be
    /// kept, nothing changes. It is kept as a journal line, or by writing the whole file when
    /// `rewrite` is asked or the journal is long enough to fold.
    fn change(&self, seen: &mut Seen, edit: Edit, rewrite: bool) -> Result<(), RevocationError> {
        let now = now();
        match &self.store {
            None => self.edit(|set| {
                set.purge(now);
                set.apply(edit);
            }),
            Some(store) if rewrite || seen.journal.lines >= FOLD_AFTER.max(seen.file_holds) => {
                let mut next = Set::from_list(self.read().list(now));
                next.apply(edit);
                let list = next.list(now);
                seen.file = Some(store.fold(&list, &mut seen.journal)?);
                seen.file_holds = list.len();
                self.replace(next);
            }
            Some(store) => {
                store.append(&mut seen.journal, &edit)?;
                self.edit(|set| {
                    set.purge(now);
                    set.apply(edit);
                });
            }
        }
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Read the file and the journal again; `Some` when they held something new. A file that
    /// no longer parses keeps the revocations in force: a bad edit never lifts one. Nor does
    /// a file that is gone: an `rm`, a checkout, an editor's delete-and-recreate are not a
    /// decision to unrevoke (that is said once, not at every reload).
    pub fn reload(&self) -> Result<Option<Change>, RevocationError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let mut seen = self.lock();
        let change = match self.reload_locked(store, &mut seen) {
            Err(RevocationError::Missing { path }) => {
                if !std::mem::replace(&mut seen.missing_said, true) {
                    tracing::info!(
                        file = %path,
                        "the revocation file does not exist; the revocations in force stay, \
                         and the next change through the API writes it again"
                    );
                }
                return Err(RevocationError::Missing { path });
            }
            other => {
                seen.missing_said = false;
                other
            }
        };
        change
    }

    /// Write the journal into the file, so the file shows what is in force; the reloader's
    /// periodic turn. The disk is read first, so a hand edit not delivered yet is kept. A file
    /// that is gone or broken is left as it is: the reload reports it, and the next API change
    /// replaces it.
    pub fn fold_journal(&self) -> Result<(), RevocationError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut seen = self.lock();
        if seen.journal.lines == 0 && store.journal_len() == 0 {
            return Ok(());
        }
        if self.reload_locked(store, &mut seen).is_err() {
            return Ok(());
        }
        self.fold(store, &mut seen)
    }

    /// [`Revocations::reload`], with the write lock held.
    fn reload_locked(
        &self,
        store: &Store,
        seen: &mut Seen,
    ) -> Result<Option<Change>, RevocationError> {
        let disk = store.read()?;
        let Some(file) = &disk.file else {
            return Err(RevocationError::Missing {
                path: store.file().display().to_string(),
            });
        };
        // The same bytes (regate's own write, a touch) change nothing.
        if seen.file.is_some_and(|f| f.hash == file.seen.hash) && seen.journal.same(&disk.journal) {
            seen.file = Some(file.seen);
            return Ok(None);
        }
        let in_force = self.take_in(disk, seen);
        self.changed.send_modify(|n| *n += 1);
        Ok(Some(Change::Reloaded(in_force)))
    }

    /// Put in force what `disk` holds (the file, then the journal over it), and note it as
    /// seen; how many are in force.
    fn take_in(&self, disk: Disk, seen: &mut Seen) -> usize {
        let Disk {
            file,
            journal,
            edits,
            torn: _,
        } = disk;
        seen.file = file.as_ref().map(|f| f.seen);
        seen.file_holds = file.as_ref().map_or(0, |f| f.list.len());
        seen.journal = journal;
        let mut set = Set::from_list(file.map(|f| f.list).unwrap_or_default());
        for edit in edits {
            set.apply(edit);
        }
        let in_force = set.count(now());
        self.replace(set);
        in_force
    }

    /// Before a change: whether the disk still holds what regate last read or wrote, which
    /// two `stat`s tell. If not (a hand edit the watcher has not delivered yet, a file
    /// deleted or broken), read it again so that the change is made to it, never over it,
    /// and answer that the change must write the file whole: that also replaces a file gone
    /// or broken with what is in force, and folds the journal into a hand-edited file.
    fn refresh(&self, seen: &mut Seen) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let unchanged = seen.file.is_some_and(|f| store.stat() == Some(f.stat))
            && store.journal_len() == seen.journal.len;
        if unchanged {
            return false;
        }
        match self.reload_locked(store, seen) {
            Ok(_) => {}
            Err(RevocationError::Missing { .. }) => {
                tracing::info!("the revocation file is gone; this change writes it again");
            }
            Err(e) => tracing::warn!(
                error = %crate::error::chain(&e),
                "the revocation file does not parse; it is replaced by what is in force"
            ),
        }
        true
    }

    /// Write what is in force as the whole file, and let the journal go.
    fn fold(&self, store: &Store, seen: &mut Seen) -> Result<(), RevocationError> {
        let list = self.read().list(now());
        seen.file = Some(store.fold(&list, &mut seen.journal)?);
        seen.file_holds = list.len();
        Ok(())
    }
}

/// An API request, checked.
struct Request {
    target: Target,
    reason: String,
    expires_at: Option<String>,
}

fn parse_request(body: &[u8]) -> Result<Request, RevocationError> {
    let invalid = |m: &str| RevocationError::Invalid(m.to_string());
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| invalid("the body is not JSON"))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("the body is not a JSON object"))?;
    for key in object.keys() {
        if !["spiffe_id", "serial", "jti", "reason", "expires_at"].contains(&key.as_str()) {
            return Err(RevocationError::Invalid(format!("unknown field {key:?}")));
        }
    }
    // Kept exactly as given, never trimmed: a token whose jti starts with a space is revoked
    // by that jti, and a SPIFFE ID or a time with a space in it is refused, not repaired.
    let text = |key: &str| match object.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 2048 => {
            Ok(Some(s.clone()))
        }
        Some(serde_json::Value::String(_)) => Err(RevocationError::Invalid(format!(
            "{key} must be a non-empty string of at most 2048 bytes"
        ))),
        Some(other) => Err(RevocationError::Invalid(format!(
            "{key} must be a string{}, not {}",
            if key == "jti" {
                ", as a token's jti is (RFC 7519 section 4.1.7)"
            } else {
                ""
            },
            json_kind(other)
        ))),
    };
    let targets = [
        text("spiffe_id")?.map(Target::SpiffeId),
        // Serials alone are written several ways by people (`00:0A:1C`); see normal_serial.
        text("serial")?.map(|s| Target::Serial(normal_serial(&s))),
        text("jti")?.map(Target::Jti),
    ];
    let mut given = targets.into_iter().flatten();
    let target = match (given.next(), given.next()) {
        (Some(t), None) => t,
        _ => return Err(invalid("give exactly one of spiffe_id, serial and jti")),
    };
    if let Target::SpiffeId(id) = &target {
        if crate::tls::identity::SpiffeId::parse(id).is_none() {
            return Err(invalid(
                "spiffe_id is not a SPIFFE ID (spiffe://trust-domain/path)",
            ));
        }
    }
    if let Target::Serial(s) = &target {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("serial must be hexadecimal (colons allowed)"));
        }
    }
    let reason = text("reason")?
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| invalid("a reason is required"))?;
    let expires_at = match text("expires_at")? {
        None => None,
        Some(at) => match unix(&at) {
            Some(t) if t > now() => Some(at),
            Some(_) => return Err(invalid("expires_at is in the past")),
            None => return Err(invalid("expires_at is not an RFC 3339 time")),
        },
    };
    Ok(Request {
        target,
        reason,
        expires_at,
    })
}

/// What a JSON value is, for an error message.
fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A serial as written by people (`00:0A:1C`) as regate compares serials: lowercase hex, no
/// `:`, no leading zeros. The one deliberate normalisation: a certificate's serial is a
/// number, and these are all the same number.
fn normal_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    significant(&hex).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn unix(rfc: &str) -> Option<i64> {
    OffsetDateTime::parse(rfc, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn peer(spiffe: &str, serial: &str) -> PeerIdentity {
        PeerIdentity {
            spiffe_id: crate::tls::identity::SpiffeId::parse(spiffe),
            uri_sans: vec![spiffe.to_string()],
            dns_sans: Vec::new(),
            subject: String::new(),
            issuer: String::new(),
            serial: serial.to_string(),
            fingerprint_sha256: String::new(),
            not_before: 0,
            not_after: i64::MAX,
        }
    }

    #[test]
    fn revocations_match_by_spiffe_id_or_serial_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        let r = Revocations::load(Some(&file)).unwrap();
        let agent = peer("spiffe://example.org/ns/a/sa/agent", "0a1b");
        assert!(!r.revoked(&agent));
        let (added, new) = r
            .add(br#"{"spiffe_id": "spiffe://example.org/ns/a/sa/agent", "reason": "loop"}"#)
            .unwrap();
        assert!(new);
        assert!(r.revoked(&agent));
        let (again, new) = r
            .add(br#"{"spiffe_id": "spiffe://example.org/ns/a/sa/agent", "reason": "x"}"#)
            .unwrap();
        assert!(!new);
        assert_eq!(again.id, added.id);
        r.add(br#"{"serial": "00:0A:1C", "reason": "key leaked"}"#)
            .unwrap();
        assert!(r.revoked(&peer("spiffe://example.org/ns/b/sa/other", "a1c")));

        let reread = Revocations::load(Some(&file)).unwrap();
        assert_eq!(reread.list(), r.list());
        assert!(r.remove(&added.id).unwrap().is_some());
        assert!(!r.revoked(&agent));
        assert_eq!(
            r.reload().unwrap().map(|_| ()),
            None,
            "its own write is no change"
        );
        assert!(reread.reload().unwrap().is_some(), "another's write is");
        assert!(!reread.revoked(&agent));

        // A file that disappears lifts nothing.
        let in_force = r.list();
        std::fs::remove_file(&file).unwrap();
        assert!(r.reload().is_err());
        assert_eq!(r.list(), in_force);
        r.add(br#"{"serial": "0b", "reason": "rewrite the file"}"#)
            .unwrap();

        // A hand edit the watcher has not delivered yet survives an API change.
        let edited = std::fs::read_to_string(&file)
            .unwrap()
            .replace("key leaked", "key leaked, confirmed");
        std::fs::write(&file, edited).unwrap();
        r.add(br#"{"serial": "ff", "reason": "another"}"#).unwrap();
        let on_disk = std::fs::read_to_string(&file).unwrap();
        assert!(
            on_disk.contains("confirmed") && on_disk.contains("another"),
            "{on_disk}"
        );
    }

    #[test]
    fn bad_requests_and_bad_files_are_refused() {
        let r = Revocations::load(None).unwrap();
        for body in [
            &b"not json"[..],
            br#"{"reason": "none given"}"#,
            br#"{"spiffe_id": "spiffe://example.org/a", "serial": "01", "reason": "two"}"#,
            br#"{"spiffe_id": "spiffe://example.org/a"}"#,
            br#"{"spiffe_id": "not a spiffe id", "reason": "r"}"#,
            br#"{"serial": "xyz", "reason": "r"}"#,
            br#"{"serial": "0a", "reason": "r", "expires_at": "2001-01-01T00:00:00Z"}"#,
            br#"{"serial": "0a", "reason": "r", "colour": "red"}"#,
            br#"{"jti": "t", "serial": "01", "reason": "two"}"#,
        ] {
            assert!(
                matches!(r.add(body), Err(RevocationError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        std::fs::write(&file, "{not json").unwrap();
        assert!(Revocations::load(Some(&file)).is_err());
    }

    #[test]
    fn a_target_listed_twice_stays_revoked_as_long_as_its_longest_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        std::fs::write(
            &file,
            r#"{"revocations": [
                {"id": "a", "serial": "0c", "reason": "forever", "created_at": "2026-01-01T00:00:00Z"},
                {"id": "b", "serial": "0c", "reason": "old", "created_at": "2026-01-01T00:00:00Z",
                 "expires_at": "2001-01-01T00:00:00Z"}
            ]}"#,
        )
        .unwrap();
        let r = Revocations::load(Some(&file)).unwrap();
        assert!(r.revoked(&peer("spiffe://example.org/x", "0c")));
    }

    #[test]
    fn an_expired_revocation_no_longer_applies() {
        let r = Revocations::load(None).unwrap();
        let (added, _) = r
            .add(br#"{"serial": "01", "reason": "r", "expires_at": "2999-01-01T00:00:00Z"}"#)
            .unwrap();
        assert!(r.find(&peer("spiffe://example.org/x", "0001")).is_some());
        r.add(br#"{"jti": "token-7", "reason": "leaked"}"#).unwrap();
        assert!(r.jti_revoked("token-7"));
        assert!(!r.jti_revoked("token-8"));
        let mut expired = added.clone();
        expired.expires_at = Some("2001-01-01T00:00:00Z".into());
        assert!(expired.expired(now()));
        assert!(!added.expired(now()));
    }

    fn journal_of(file: &Path) -> PathBuf {
        let mut name = file.as_os_str().to_owned();
        name.push(".journal");
        PathBuf::from(name)
    }

    #[test]
    fn a_change_is_one_journal_line_and_a_restart_folds_it_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        let journal = journal_of(&file);
        let r = Revocations::load(Some(&file)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap().trim(),
            "{\n  \"revocations\": []\n}",
            "a missing file is created, empty"
        );
        let written = std::fs::read(&file).unwrap();
        let (first, _) = r.add(br#"{"jti": "t-1", "reason": "r"}"#).unwrap();
        let (second, _) = r.add(br#"{"jti": "t-2", "reason": "r"}"#).unwrap();
        r.remove(&first.id).unwrap().unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            written,
            "the file is not rewritten"
        );
        assert_eq!(
            std::fs::read_to_string(&journal).unwrap().lines().count(),
            3
        );

        let again = Revocations::load(Some(&file)).unwrap();
        assert_eq!(again.list(), vec![second.clone()]);
        assert!(!journal.exists(), "folded at start");
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(on_disk["revocations"][0]["jti"], "t-2");

        // The reloader's periodic turn folds what the journal holds; that is no change.
        again.add(br#"{"jti": "t-3", "reason": "r"}"#).unwrap();
        assert!(journal.exists());
        again.fold_journal().unwrap();
        assert!(!journal.exists());
        assert!(again.reload().unwrap().is_none());
        assert!(std::fs::read_to_string(&file).unwrap().contains("t-3"));
    }

    #[test]
    fn a_journal_replayed_over_the_file_it_was_folded_into_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        let journal = journal_of(&file);
        let r = Revocations::load(Some(&file)).unwrap();
        let (old, _) = r
            .add(br#"{"serial": "0a", "reason": "r", "expires_at": "2999-01-01T00:00:00Z"}"#)
            .unwrap();
        let (longer, new) = r.add(br#"{"serial": "0a", "reason": "for good"}"#).unwrap();
        assert!(new);
        let (gone, _) = r.add(br#"{"jti": "t", "reason": "r"}"#).unwrap();
        r.remove(&gone.id).unwrap();
        let lines = std::fs::read(&journal).unwrap();
        // A crash after the fold's rename, before the journal was removed.
        r.fold_journal().unwrap();
        std::fs::write(&journal, &lines).unwrap();
        let replayed = Revocations::load(Some(&file)).unwrap();
        assert_eq!(replayed.list(), vec![longer.clone()]);
        assert_ne!(old.id, longer.id);
    }

    #[test]
    fn a_journal_line_cut_short_is_left_out_but_a_broken_one_lifts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        let journal = journal_of(&file);
        let r = Revocations::load(Some(&file)).unwrap();
        r.add(br#"{"jti": "kept", "reason": "r"}"#).unwrap();
        r.fold_journal().unwrap();
        // A crash in the middle of the next line: it was never acknowledged.
        std::fs::write(&journal, "{\"added\": {\"revoc").unwrap();
        let after_crash = Revocations::load(Some(&file)).unwrap();
        assert!(after_crash.jti_revoked("kept"));
        after_crash
            .add(br#"{"jti": "after", "reason": "r"}"#)
            .unwrap();
        let again = Revocations::load(Some(&file)).unwrap();
        assert!(again.jti_revoked("kept") && again.jti_revoked("after"));

        let r = Revocations::load(Some(&file)).unwrap();
        r.add(br#"{"jti": "second", "reason": "r"}"#).unwrap();
        let whole = std::fs::read_to_string(&journal).unwrap();
        std::fs::write(&journal, format!("not json\n{whole}")).unwrap();
        assert!(matches!(r.reload(), Err(RevocationError::Parse { .. })));
        assert!(r.jti_revoked("kept") && r.jti_revoked("second"));
        assert!(Revocations::load(Some(&file)).is_err());
    }

    #[test]
    fn a_hand_edit_applies_and_the_journal_still_applies_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revocations.json");
        let r = Revocations::load(Some(&file)).unwrap();
        r.add(br#"{"jti": "from-api", "reason": "r"}"#).unwrap();
        let edited = r#"{"revocations": [{"id": "git-1", "jti": "from-git", "reason": "r",
            "created_at": "2026-01-01T00:00:00Z"}]}"#;
        let tmp = dir.path().join("edit.tmp");
        std::fs::write(&tmp, edited).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert!(matches!(r.reload(), Ok(Some(Change::Reloaded(2)))));
        assert!(r.jti_revoked("from-api") && r.jti_revoked("from-git"));
        r.fold_journal().unwrap();
        let on_disk = std::fs::read_to_string(&file).unwrap();
        assert!(
            on_disk.contains("from-api") && on_disk.contains("from-git"),
            "{on_disk}"
        );

        // A file that is gone lifts nothing, is not an error at every reload, and the next
        // change writes it again.
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(r.reload(), Err(RevocationError::Missing { .. })));
        assert!(matches!(r.reload(), Err(RevocationError::Missing { .. })));
        assert_eq!(r.len(), 2);
        r.add(br#"{"jti": "third", "reason": "r"}"#).unwrap();
        assert!(std::fs::read_to_string(&file).unwrap().contains("from-git"));
    }

    #[test]
    fn past_the_cap_new_revocations_are_refused_but_one_may_be_revoked_for_longer() {
        let r = Revocations::load(None).unwrap().with_max(2);
        r.add(br#"{"jti": "a", "reason": "r", "expires_at": "2999-01-01T00:00:00Z"}"#)
            .unwrap();
        r.add(br#"{"jti": "b", "reason": "r"}"#).unwrap();
        assert!(matches!(
            r.add(br#"{"jti": "c", "reason": "r"}"#),
            Err(RevocationError::Full { max: 2 })
        ));
        let (_, new) = r.add(br#"{"jti": "a", "reason": "for good"}"#).unwrap();
        assert!(new);
        assert_eq!(r.len(), 2);
        let (b, _) = r.add(br#"{"jti": "b", "reason": "r"}"#).unwrap();
        r.remove(&b.id).unwrap();
        r.add(br#"{"jti": "c", "reason": "r"}"#).unwrap();
        assert!(r.jti_revoked("c"));
    }

    #[test]
    fn a_jti_is_kept_exactly_as_given() {
        let r = Revocations::load(None).unwrap();
        let (added, _) = r.add(br#"{"jti": " abc ", "reason": "r"}"#).unwrap();
        assert_eq!(added.target, Target::Jti(" abc ".into()));
        assert!(r.jti_revoked(" abc "));
        assert!(!r.jti_revoked("abc"));
        for (body, says) in [
            (
                &br#"{"jti": 424242, "reason": "r"}"#[..],
                "jti must be a string",
            ),
            (br#"{"jti": "", "reason": "r"}"#, "non-empty"),
            (br#"{"jti": "t", "reason": "  "}"#, "a reason is required"),
            (
                br#"{"spiffe_id": " spiffe://example.org/a", "reason": "r"}"#,
                "not a SPIFFE ID",
            ),
            (br#"{"serial": " 0a", "reason": "r"}"#, "hexadecimal"),
        ] {
            match r.add(body) {
                Err(RevocationError::Invalid(message)) => {
                    assert!(message.contains(says), "{message}")
                }
                other => panic!(
                    "{}: {:?}",
                    String::from_utf8_lossy(body),
                    other.map(|(r, _)| r)
                ),
            }
        }
        // A serial is still a number, however it is written.
        let (serial, _) = r.add(br#"{"serial": "00:0A:1C", "reason": "r"}"#).unwrap();
        assert_eq!(serial.target, Target::Serial("a1c".into()));
    }
}
