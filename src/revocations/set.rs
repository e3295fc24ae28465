//! The revocations held in memory, indexed by what each revokes, and [`Edit`], one change to
//! them (also one line of the journal, see [`super::store`]).
//!
//! An edit changes one slot and its index entries, never the whole set: adding the
//! hundred-thousandth revocation costs what adding the first did (O(1) amortized). Only
//! [`Set::from_list`], after the file is read, touches every revocation. It knows nothing of
//! files, of the API or of the clock but the `now` it is given.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::{unix, Revocation, Target};
use crate::tls::identity::PeerIdentity;

/// One change to the set, as the journal keeps it: `{"added": {...}}` or `{"removed": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Edit {
    /// A new revocation; those it `replaces` (the same target, revoked again for longer)
    /// go in the same line, so no crash can leave the target with neither.
    Added {
        revocation: Revocation,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaces: Vec<String>,
    },
    Removed {
        id: String,
    },
}

/// A revocation and when it stops applying (unix seconds; `i64::MAX`: never).
struct Entry {
    revocation: Revocation,
    until: i64,
}

/// Slots by key: one, or more where a hand-edited file names a target or an id twice.
type Index = HashMap<String, Vec<usize>>;

/// Fewer slots than this are never worth compacting.
const COMPACT_ABOVE: usize = 64;

#[derive(Default)]
pub(super) struct Set {
    /// In the order they were added; `None` where one was removed. Rebuilt without the holes
    /// once they outnumber the revocations, so a removal is O(1) amortized too.
    slots: Vec<Option<Entry>>,
    held: usize,
    ids: Index,
    spiffe_ids: Index,
    serials: Index,
    jtis: Index,
    /// The slots that expire, soonest first, for [`Set::purge`] and [`Set::count`].
    expiring: BTreeSet<(i64, usize)>,
}

/// When `r` stops applying: its `expires_at`, or never.
pub(super) fn until(r: &Revocation) -> i64 {
    r.expires_at.as_deref().and_then(unix).unwrap_or(i64::MAX)
}

impl Set {
    pub(super) fn from_list(list: Vec<Revocation>) -> Set {
        let mut set = Set::default();
        for revocation in list {
            set.insert(revocation);
        }
        set
    }

    /// Apply one edit. Replaying a journal over a file that already holds its edits (a crash
    /// between writing the file and removing the journal) changes nothing: an id already held
    /// is not added twice, and an id not held is not removed.
    pub(super) fn apply(&mut self, edit: Edit) {
        match edit {
            Edit::Added {
                revocation,
                replaces,
            } => {
                for id in &replaces {
                    self.remove_id(id);
                }
                if !self.ids.contains_key(&revocation.id) {
                    self.insert(revocation);
                }
            }
            Edit::Removed { id } => {
                self.remove_id(&id);
            }
        }
        self.compact();
    }

    fn insert(&mut self, revocation: Revocation) {
        let slot = self.slots.len();
        let until = until(&revocation);
        push(&mut self.ids, &revocation.id, slot);
        let (index, key) = self.index_mut(&revocation.target);
        push(index, key, slot);
        if until != i64::MAX {
            self.expiring.insert((until, slot));
        }
        self.slots.push(Some(Entry { revocation, until }));
        self.held += 1;
    }

    /// Take every revocation with this id out (one, unless a hand-edited file repeats it).
    fn remove_id(&mut self, id: &str) -> usize {
        let slots = self.ids.get(id).cloned().unwrap_or_default();
        slots.into_iter().filter(|&slot| self.take(slot)).count()
    }

    fn take(&mut self, slot: usize) -> bool {
        let Some(entry) = self.slots.get_mut(slot).and_then(Option::take) else {
            return false;
        };
        unpush(&mut self.ids, &entry.revocation.id, slot);
        let (index, key) = self.index_mut(&entry.revocation.target);
        unpush(index, key, slot);
        self.expiring.remove(&(entry.until, slot));
        self.held -= 1;
        true
    }

    /// Drop what has expired: it no longer applies, and the next file write leaves it out.
    pub(super) fn purge(&mut self, now: i64) {
        while let Some(&(until, slot)) = self.expiring.first() {
            if until > now {
                break;
            }
            self.take(slot);
        }
        self.compact();
    }

    fn compact(&mut self) {
        if self.slots.len() > COMPACT_ABOVE && self.slots.len() > 2 * self.held {
            let held = std::mem::take(&mut self.slots)
                .into_iter()
                .flatten()
                .map(|e| e.revocation)
                .collect();
            *self = Set::from_list(held);
        }
    }

    fn index_mut<'t>(&mut self, target: &'t Target) -> (&mut Index, &'t str) {
        match target {
            Target::SpiffeId(id) => (&mut self.spiffe_ids, id),
            Target::Serial(serial) => (&mut self.serials, serial),
            Target::Jti(jti) => (&mut self.jtis, jti),
        }
    }

    /// The entries `index` holds under `key`.
    fn entries<'a>(&'a self, index: &'a Index, key: &str) -> impl Iterator<Item = &'a Entry> {
        index
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|&slot| self.slots.get(slot).and_then(Option::as_ref))
    }

    fn target_index<'a, 't>(&'a self, target: &'t Target) -> (&'a Index, &'t str) {
        match target {
            Target::SpiffeId(id) => (&self.spiffe_ids, id),
            Target::Serial(serial) => (&self.serials, serial),
            Target::Jti(jti) => (&self.jtis, jti),
        }
    }

    /// The revocation of `target` that lasts longest, if one is in force.
    pub(super) fn in_force(&self, target: &Target, now: i64) -> Option<&Revocation> {
        let (index, key) = self.target_index(target);
        self.entries(index, key)
            .filter(|e| e.until > now)
            .max_by_key(|e| e.until)
            .map(|e| &e.revocation)
    }

    /// How many revocations of `target` are in force (more than one only from a hand edit).
    pub(super) fn in_force_for(&self, target: &Target, now: i64) -> usize {
        let (index, key) = self.target_index(target);
        self.entries(index, key).filter(|e| e.until > now).count()
    }

    /// The ids of every revocation of `target`, in force or expired.
    pub(super) fn ids_of(&self, target: &Target) -> Vec<String> {
        let (index, key) = self.target_index(target);
        self.entries(index, key)
            .map(|e| e.revocation.id.clone())
            .collect()
    }

    /// The first revocation held with this id, in force or expired.
    pub(super) fn by_id(&self, id: &str) -> Option<&Revocation> {
        self.entries(&self.ids, id).next().map(|e| &e.revocation)
    }

    /// The revocation in force for this caller; no allocation, as it runs per request.
    pub(super) fn for_peer(&self, peer: &PeerIdentity, now: i64) -> Option<&Revocation> {
        let by_id = peer
            .spiffe_id
            .as_ref()
            .and_then(|id| self.spiffe_ids.get(id.id.as_str()));
        let by_serial = self.serials.get(super::significant(&peer.serial));
        by_id
            .into_iter()
            .chain(by_serial)
            .flatten()
            .filter_map(|&slot| self.slots.get(slot).and_then(Option::as_ref))
            .find(|e| e.until > now)
            .map(|e| &e.revocation)
    }

    /// Whether this delegation token id is revoked; no allocation either.
    pub(super) fn jti_revoked(&self, jti: &str, now: i64) -> bool {
        self.entries(&self.jtis, jti).any(|e| e.until > now)
    }

    /// Every revocation in force, in the order they were added.
    pub(super) fn list(&self, now: i64) -> Vec<Revocation> {
        self.slots
            .iter()
            .flatten()
            .filter(|e| e.until > now)
            .map(|e| e.revocation.clone())
            .collect()
    }

    /// How many are in force: those held but the expired ones not purged yet (few, as every
    /// change purges).
    pub(super) fn count(&self, now: i64) -> usize {
        let expired = self.expiring.range(..=(now, usize::MAX)).count();
        self.held - expired
    }

    /// Nothing held at all: the request path's first question.
    pub(super) fn is_empty(&self) -> bool {
        self.held == 0
    }

    pub(super) fn has_jtis(&self) -> bool {
        !self.jtis.is_empty()
    }
}

fn push(index: &mut Index, key: &str, slot: usize) {
    match index.get_mut(key) {
        Some(slots) => slots.push(slot),
        None => {
            index.insert(key.to_string(), vec![slot]);
        }
    }
}

fn unpush(index: &mut Index, key: &str, slot: usize) {
    if let Some(slots) = index.get_mut(key) {
        slots.retain(|&s| s != slot);
        if slots.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A revocation of one of a few targets, ending at 100, 200 or never.
    fn revocation(id: usize, kind: u8, key: u8, ends: u8) -> Revocation {
        let key = format!("k{key}");
        Revocation {
            id: format!("id-{id}"),
            target: match kind {
                0 => Target::SpiffeId(format!("spiffe://example.org/{key}")),
                1 => Target::Serial(key),
                _ => Target::Jti(key),
            },
            reason: String::new(),
            created_at: String::new(),
            expires_at: [Some(100), Some(200), None][usize::from(ends)].map(super::super::rfc3339),
        }
    }

    /// The obvious set: a list, searched whole every time.
    fn model_apply(model: &mut Vec<Revocation>, edit: &Edit) {
        match edit {
            Edit::Added {
                revocation,
                replaces,
            } => {
                model.retain(|r| !replaces.contains(&r.id));
                if !model.iter().any(|r| r.id == revocation.id) {
                    model.push(revocation.clone());
                }
            }
            Edit::Removed { id } => model.retain(|r| &r.id != id),
        }
    }

    fn peer(target: &Target) -> PeerIdentity {
        let (spiffe, serial) = match target {
            Target::SpiffeId(id) => (id.as_str(), "ff"),
            Target::Serial(s) => ("spiffe://example.org/nobody", s.as_str()),
            Target::Jti(_) => ("spiffe://example.org/nobody", "ff"),
        };
        PeerIdentity {
            spiffe_id: crate::tls::identity::SpiffeId::parse(spiffe),
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            subject: String::new(),
            issuer: String::new(),
            serial: serial.to_string(),
            fingerprint_sha256: String::new(),
            not_before: 0,
            not_after: i64::MAX,
        }
    }

    proptest! {
        /// Whatever a hand-edited file held and whatever edits came after, the indexed set
        /// answers every question as the list searched whole does.
        #[test]
        fn the_set_answers_as_a_plain_list_would(
            file in proptest::collection::vec((0..6usize, 0..3u8, 0..3u8, 0..3u8), 0..8),
            edits in proptest::collection::vec((any::<bool>(), 0..3u8, 0..3u8, 0..3u8, 0..12usize), 0..150),
            purge_at in proptest::option::of(0..3usize),
        ) {
            let mut model: Vec<Revocation> = file
                .iter()
                .map(|&(id, kind, key, ends)| revocation(id, kind, key, ends))
                .collect();
            let mut set = Set::from_list(model.clone());
            for (i, &(add, kind, key, ends, pick)) in edits.iter().enumerate() {
                let edit = if add {
                    let r = revocation(100 + i, kind, key, ends);
                    let replaces = model
                        .iter()
                        .filter(|m| m.target == r.target)
                        .map(|m| m.id.clone())
                        .collect::<Vec<_>>();
                    assert_eq!(set.ids_of(&r.target).len(), replaces.len());
                    Edit::Added { revocation: r, replaces }
                } else {
                    let id = model
                        .get(pick % model.len().max(1))
                        .map_or("id-none".to_string(), |r| r.id.clone());
                    Edit::Removed { id }
                };
                model_apply(&mut model, &edit);
                set.apply(edit);
            }
            if let Some(at) = purge_at {
                let now = [50, 150, 250][at];
                set.purge(now);
                model.retain(|r| until(r) > now);
            }
            for now in [50, 150, 250] {
                let in_force: Vec<_> = model.iter().filter(|r| until(r) > now).cloned().collect();
                prop_assert_eq!(set.list(now), in_force.clone());
                prop_assert_eq!(set.count(now), in_force.len());
                for kind in 0..3 {
                    for key in 0..3 {
                        let target = revocation(0, kind, key, 2).target;
                        let longest = in_force
                            .iter()
                            .filter(|r| r.target == target)
                            .map(until)
                            .max();
                        prop_assert_eq!(set.in_force(&target, now).map(until), longest);
                        let revoked = longest.is_some();
                        match &target {
                            Target::Jti(jti) => prop_assert_eq!(set.jti_revoked(jti, now), revoked),
                            _ => prop_assert_eq!(set.for_peer(&peer(&target), now).is_some(), revoked),
                        }
                    }
                }
            }
        }
    }
}
