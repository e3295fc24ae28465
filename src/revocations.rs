//! The kill switch: revocations of a SPIFFE ID, a certificate serial, or a delegation
//! token's id (`jti`, checked once the token is verified, see [`crate::delegation`]).
//!
//! A revocation is checked before any policy, on every request, including those on
//! connections opened before it; connections and tunnels of a revoked identity are closed as
//! soon as it lands. Revocations come from the admin API (`POST /revocations`) and from the
//! `--revocations` file, which holds them across restarts: each change through the API is
//! written to it atomically, and a change made to the file by hand or by GitOps is read back
//! like a policy change. A revocation may expire (`expires_at`); an expired one is ignored and
//! dropped from the file on the next write.
//!
//! This module owns the set and the file. The admin listener calls it, the proxy asks it,
//! the reloader tells it the file may have changed; it calls none of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::tls::identity::PeerIdentity;

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
    #[error("revocations: cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A request to the API that cannot be a revocation; the message says why.
    #[error("{0}")]
    Invalid(String),
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
    fn expired(&self, now: i64) -> bool {
        self.expires_at
            .as_deref()
            .and_then(unix)
            .is_some_and(|at| at <= now)
    }
}

/// The file's shape: `{"revocations": [...]}`.
#[derive(Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    revocations: Vec<Revocation>,
}

/// The set in force, indexed by what each revokes.
#[derive(Default)]
struct Set {
    list: Vec<Revocation>,
    spiffe_ids: HashMap<String, usize>,
    serials: HashMap<String, usize>,
    jtis: HashMap<String, usize>,
    /// The bytes this set was read from or written as: a file event with the same bytes
    /// (regate's own write, a touch) changes nothing.
    file_hash: Option<[u8; 32]>,
}

impl Set {
    fn new(list: Vec<Revocation>, file_hash: Option<[u8; 32]>) -> Set {
        let mut spiffe_ids = HashMap::new();
        let mut serials = HashMap::new();
        let mut jtis = HashMap::new();
        // A target listed twice (a hand-edited file) is revoked for as long as its longest
        // revocation lasts.
        let lasts = |r: &Revocation| r.expires_at.as_deref().and_then(unix).unwrap_or(i64::MAX);
        for (i, r) in list.iter().enumerate() {
            let index = match &r.target {
                Target::SpiffeId(id) => spiffe_ids.entry(id.clone()),
                Target::Serial(serial) => serials.entry(serial.clone()),
                Target::Jti(jti) => jtis.entry(jti.clone()),
            }
            .or_insert(i);
            if lasts(r) > lasts(&list[*index]) {
                *index = i;
            }
        }
        Set {
            list,
            spiffe_ids,
            serials,
            jtis,
            file_hash,
        }
    }

    fn get(&self, target: &Target) -> Option<&Revocation> {
        let index = match target {
            Target::SpiffeId(id) => self.spiffe_ids.get(id),
            Target::Serial(serial) => self.serials.get(serial),
            Target::Jti(jti) => self.jtis.get(jti),
        };
        index.map(|&i| &self.list[i])
    }

    /// The revocation in force for this caller; no allocation, as it runs per request.
    fn for_peer(&self, peer: &PeerIdentity, now: i64) -> Option<&Revocation> {
        let by_id = peer
            .spiffe_id
            .as_ref()
            .and_then(|id| self.spiffe_ids.get(id.id.as_str()));
        let by_serial = self.serials.get(significant(&peer.serial));
        by_id
            .into_iter()
            .chain(by_serial)
            .map(|&i| &self.list[i])
            .find(|r| !r.expired(now))
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
    current: ArcSwap<Set>,
    file: Option<PathBuf>,
    /// Serializes changes, so that two writers never lose each other's revocation.
    write: Mutex<()>,
    changed: watch::Sender<u64>,
}

/// What a change did, for the caller's audit record.
pub enum Change {
    Added(Revocation),
    Removed(Revocation),
    /// The file changed under regate: how many revocations it now holds.
    Reloaded(usize),
}

impl Revocations {
    /// The revocations in `file` (none if it does not exist yet), or none at all without a file.
    pub fn load(file: Option<&Path>) -> Result<Revocations, RevocationError> {
        let set = match file {
            Some(path) => read(path)?,
            None => Set::default(),
        };
        Ok(Revocations {
            current: ArcSwap::from_pointee(set),
            file: file.map(Path::to_path_buf),
            write: Mutex::new(()),
            changed: watch::Sender::new(0),
        })
    }

    /// Moves on every change: open connections and tunnels check themselves again.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The file, if revocations are kept in one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The revocation that applies to this caller, by SPIFFE ID or certificate serial, if
    /// one is in force.
    pub fn find(&self, peer: &PeerIdentity) -> Option<Revocation> {
        self.current.load().for_peer(peer, now()).cloned()
    }

    /// Whether this caller is revoked; the request path's question. With nothing revoked,
    /// it is one atomic load.
    pub fn revoked(&self, peer: &PeerIdentity) -> bool {
        let set = self.current.load();
        !set.list.is_empty() && set.for_peer(peer, now()).is_some()
    }

    /// Whether this delegation token id is revoked.
    pub fn jti_revoked(&self, jti: &str) -> bool {
        let set = self.current.load();
        !set.jtis.is_empty()
            && set
                .jtis
                .get(jti)
                .is_some_and(|&i| !set.list[i].expired(now()))
    }

    /// Every revocation in force.
    pub fn list(&self) -> Vec<Revocation> {
        let now = now();
        self.current
            .load()
            .list
            .iter()
            .filter(|r| !r.expired(now))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        let now = now();
        let set = self.current.load();
        set.list.iter().filter(|r| !r.expired(now)).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a revocation from an API request body: exactly one of `spiffe_id`, `serial` and
    /// `jti`; a `reason`; optionally `expires_at` (RFC 3339, in the future). Revoking what is
    /// already revoked returns the existing revocation, unchanged.
    pub fn add(&self, body: &[u8]) -> Result<(Revocation, bool), RevocationError> {
        let request = parse_request(body)?;
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current_for_change()?;
        let now = now();
        // Revoking again for longer (or for good) replaces the revocation; anything else
        // returns the one in force.
        let lasts = |at: Option<&str>| at.and_then(unix).unwrap_or(i64::MAX);
        if let Some(existing) = current
            .get(&request.target)
            .filter(|r| !r.expired(now))
            .filter(|r| lasts(r.expires_at.as_deref()) >= lasts(request.expires_at.as_deref()))
        {
            return Ok((existing.clone(), false));
        }
        let revocation = Revocation {
            id: uuid::Uuid::new_v4().to_string(),
            target: request.target,
            reason: request.reason,
            created_at: rfc3339(now),
            expires_at: request.expires_at,
        };
        let mut list: Vec<Revocation> = current
            .list
            .iter()
            .filter(|r| !r.expired(now) && r.target != revocation.target)
            .cloned()
            .collect();
        list.push(revocation.clone());
        self.publish(list)?;
        Ok((revocation, true))
    }

    /// Remove the revocation with this id; `None` if there is none.
    pub fn remove(&self, id: &str) -> Result<Option<Revocation>, RevocationError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current_for_change()?;
        let Some(found) = current.list.iter().find(|r| r.id == id).cloned() else {
            return Ok(None);
        };
        let now = now();
        let list = current
            .list
            .iter()
            .filter(|r| r.id != id && !r.expired(now))
            .cloned()
            .collect();
        self.publish(list)?;
        Ok(Some(found))
    }

    /// Read the file again; `Some` when it held something new. A file that no longer parses
    /// keeps the revocations in force: a bad edit never lifts one.
    pub fn reload(&self) -> Result<Option<Change>, RevocationError> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        self.reload_locked(path)
    }

    /// [`Revocations::reload`], with the write lock held. A file that is gone lifts nothing:
    /// an `rm`, a checkout, an editor's delete-and-recreate are not a decision to unrevoke.
    fn reload_locked(&self, path: &Path) -> Result<Option<Change>, RevocationError> {
        if !path.exists() {
            return Err(RevocationError::Read {
                path: path.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let set = read(path)?;
        if set.file_hash == self.current.load().file_hash {
            return Ok(None);
        }
        let count = set.list.len();
        self.current.store(Arc::new(set));
        self.changed.send_modify(|n| *n += 1);
        Ok(Some(Change::Reloaded(count)))
    }

    /// The set to change: the file's, if it changed since it was last read (an edit the
    /// watcher has not delivered yet must not be written over), else the one in force. A
    /// file that no longer parses does not stop the kill switch: the change is made to what
    /// is in force, and the broken file is replaced.
    fn current_for_change(&self) -> Result<Arc<Set>, RevocationError> {
        if let Some(path) = &self.file {
            if let Err(e) = self.reload_locked(path) {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    "the revocation file does not parse; it is replaced by what is in force"
                );
            }
        }
        Ok(self.current.load_full())
    }

    /// Write `list` to the file (if any), then put it in force and tell open connections.
    fn publish(&self, list: Vec<Revocation>) -> Result<(), RevocationError> {
        let file_hash = match &self.file {
            Some(path) => Some(write(path, &list)?),
            None => None,
        };
        self.current.store(Arc::new(Set::new(list, file_hash)));
        self.changed.send_modify(|n| *n += 1);
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
    let text = |key: &str| match object.get(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() && s.len() <= 2048 => {
            Ok(Some(s.trim().to_string()))
        }
        Some(_) => Err(RevocationError::Invalid(format!(
            "{key} must be a non-empty string of at most 2048 bytes"
        ))),
    };
    let targets = [
        text("spiffe_id")?.map(Target::SpiffeId),
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
            return Err(invalid("serial must be hexadecimal"));
        }
    }
    let reason = text("reason")?.ok_or_else(|| invalid("a reason is required"))?;
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

/// A serial as written by people (`00:0A:1C`) as regate compares serials: lowercase hex, no
/// `:`, no leading zeros.
fn normal_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    significant(&hex).to_string()
}

fn read(path: &Path) -> Result<Set, RevocationError> {
    let name = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        // Not written yet: nothing is revoked.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Set::default()),
        Err(source) => return Err(RevocationError::Read { path: name, source }),
    };
    let hash = sha256(&bytes);
    let file: File = serde_json::from_slice(&bytes).map_err(|e| RevocationError::Parse {
        path: name.clone(),
        message: e.to_string(),
    })?;
    for r in &file.revocations {
        if r.expires_at.as_deref().is_some_and(|at| unix(at).is_none()) {
            return Err(RevocationError::Parse {
                path: name,
                message: format!("revocation {}: expires_at is not an RFC 3339 time", r.id),
            });
        }
    }
    let list = file
        .revocations
        .into_iter()
        .map(|mut r| {
            if let Target::Serial(s) = &r.target {
                r.target = Target::Serial(normal_serial(s));
            }
            r
        })
        .collect();
    Ok(Set::new(list, Some(hash)))
}

/// Write the list beside the file and rename it over: a reader sees the old file or the new
/// one, never half of one.
fn write(path: &Path, list: &[Revocation]) -> Result<[u8; 32], RevocationError> {
    let failed = |source| RevocationError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(&File {
        revocations: list.to_vec(),
    })
    .map_err(|e| failed(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    // A symlinked file (a ConfigMap, a GitOps checkout) is managed elsewhere: replacing it
    // with a regular file would silently cut it off from its source.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(failed(std::io::Error::other(
            "it is a symlink, managed elsewhere; change the revocations there",
        )));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let tmp = dir.join(tmp_name);
    {
        use std::io::Write as _;
        // create_new: never follows a link or truncates a file someone else put there.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(failed)?;
        f.write_all(&bytes).map_err(failed)?;
        f.sync_all().map_err(failed)?;
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    // The rename itself must survive a crash.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(sha256(&bytes))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
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
}
