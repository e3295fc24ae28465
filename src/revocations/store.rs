//! The revocation file and its journal, on disk.
//!
//! The file (`--revocations FILE`) is the list operators read and edit, `{"revocations":
//! [...]}`. A change through the API is appended to the journal beside it (`FILE.journal`),
//! one JSON line per change ([`Edit`]), synced before the API answers: an acknowledged
//! revocation survives a crash, and a change costs one short write however long the list is.
//! Now and then the journal is folded into the file (written beside it, renamed over it) and
//! removed. What is in force is the file with the journal applied, line by line.
//!
//! This module reads and writes bytes; [`super::Revocations`] decides when.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::set::Edit;
use super::{normal_serial, unix, Revocation, RevocationError, Target};

/// The file's shape: `{"revocations": [...]}`.
#[derive(Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    revocations: Vec<Revocation>,
}

pub(super) struct Store {
    file: PathBuf,
    journal: PathBuf,
}

/// A file's identity and last change, as `stat` tells them. Equal means unchanged, short of
/// an edit in place that keeps the length within one tick of the file system's clock; the
/// watcher's reload, which compares contents, catches that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Which file regate last read or wrote: its [`Stat`] then, and its bytes' hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileSeen {
    pub stat: Stat,
    pub hash: [u8; 32],
}

/// The file as read, and what it lists.
pub(super) struct FileRead {
    pub seen: FileSeen,
    pub list: Vec<Revocation>,
}

/// What regate knows of the journal: its length, its bytes' digest, its lines.
#[derive(Clone)]
pub(super) struct Journal {
    pub len: u64,
    pub lines: usize,
    digest: ring::digest::Context,
}

impl Default for Journal {
    fn default() -> Journal {
        Journal {
            len: 0,
            lines: 0,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
}

impl Journal {
    /// The same bytes.
    pub fn same(&self, other: &Journal) -> bool {
        self.len == other.len
            && self.digest.clone().finish().as_ref() == other.digest.clone().finish().as_ref()
    }
}

/// What the disk holds: the file (`None`: it does not exist) and the journal's edits.
pub(super) struct Disk {
    pub file: Option<FileRead>,
    pub journal: Journal,
    pub edits: Vec<Edit>,
    /// The journal ends in a line cut short: nothing may be appended after it.
    pub torn: bool,
}

impl Store {
    pub fn new(file: &Path) -> Store {
        let mut journal = file.as_os_str().to_owned();
        journal.push(".journal");
        Store {
            file: file.to_path_buf(),
            journal: PathBuf::from(journal),
        }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The file's [`Stat`] now; `None` if it cannot be had (it does not exist, mostly).
    pub fn stat(&self) -> Option<Stat> {
        std::fs::metadata(&self.file).ok().map(|m| Stat::of(&m))
    }

    /// The journal's length now (0 when there is none).
    pub fn journal_len(&self) -> u64 {
        std::fs::metadata(&self.journal).map_or(0, |m| m.len())
    }

    /// A symlinked file (a ConfigMap, a GitOps checkout) is managed elsewhere: replacing it,
    /// or keeping changes beside it, would silently cut it off from its source.
    fn refuse_if_managed_elsewhere(&self) -> Result<(), RevocationError> {
        match std::fs::symlink_metadata(&self.file) {
            Ok(meta) if meta.file_type().is_symlink() => Err(RevocationError::Write {
                path: self.file.display().to_string(),
                source: std::io::Error::other(
                    "it is a symlink, managed elsewhere; change the revocations there",
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Read the file and the journal. A file or journal line that does not parse is an error:
    /// the caller keeps what is in force. A last journal line cut short (a crash while it was
    /// written, so never acknowledged) is left out.
    pub fn read(&self) -> Result<Disk, RevocationError> {
        let file = self.read_file()?;
        let (journal, edits, torn) = self.read_journal()?;
        Ok(Disk {
            file,
            journal,
            edits,
            torn,
        })
    }

    fn read_file(&self) -> Result<Option<FileRead>, RevocationError> {
        let name = self.file.display().to_string();
        // Taken before the bytes: an edit in between shows as a change next time, never the
        // other way round.
        let stat = match std::fs::metadata(&self.file) {
            Ok(meta) => Stat::of(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RevocationError::Read { path: name, source }),
        };
        let bytes = match std::fs::read(&self.file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RevocationError::Read { path: name, source }),
        };
        let file: File = serde_json::from_slice(&bytes).map_err(|e| RevocationError::Parse {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let list = file
            .revocations
            .into_iter()
            .map(|r| checked(r, &name))
            .collect::<Result<_, _>>()?;
        Ok(Some(FileRead {
            seen: FileSeen {
                stat,
                hash: sha256(&bytes),
            },
            list,
        }))
    }

    fn read_journal(&self) -> Result<(Journal, Vec<Edit>, bool), RevocationError> {
        let name = self.journal.display().to_string();
        let bytes = match std::fs::read(&self.journal) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(RevocationError::Read { path: name, source }),
        };
        let mut journal = Journal::default();
        let mut edits = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (line, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => (&rest[..=end], &rest[end + 1..]),
                None => {
                    tracing::warn!(
                        journal = %name,
                        bytes = rest.len(),
                        "the revocation journal ends in a line cut short; it was never \
                         acknowledged and is left out"
                    );
                    return Ok((journal, edits, true));
                }
            };
            let edit =
                serde_json::from_slice::<Edit>(line).map_err(|e| RevocationError::Parse {
                    path: name.clone(),
                    message: format!("line {}: {e}", journal.lines + 1),
                })?;
            edits.push(match edit {
                Edit::Added {
                    revocation,
                    replaces,
                } => Edit::Added {
                    revocation: checked(revocation, &name)?,
                    replaces,
                },
                removed => removed,
            });
            journal.note(line);
            rest = after;
        }
        Ok((journal, edits, false))
    }

    /// Append `edit` to the journal and sync it. On failure the journal is cut back to what
    /// it was, so a half-written line never sits in front of the next one.
    pub fn append(&self, journal: &mut Journal, edit: &Edit) -> Result<(), RevocationError> {
        self.refuse_if_managed_elsewhere()?;
        let failed = |source| RevocationError::Write {
            path: self.journal.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(edit).map_err(|e| failed(std::io::Error::other(e)))?;
        line.push(b'\n');
        let open = |new| {
            std::fs::OpenOptions::new()
                .append(true)
                .create_new(new)
                .open(&self.journal)
        };
        // create_new never follows a link someone put there; a journal regate made is opened
        // again as it is.
        let (mut f, created) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                (open(false).map_err(failed)?, false)
            }
            Err(e) => return Err(failed(e)),
        };
        let before = f.metadata().map_err(failed)?.len();
        if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
            let _ = f.set_len(before);
            return Err(failed(e));
        }
        if created {
            // The new name must survive a crash too.
            sync_dir(&self.file);
        }
        *journal = if before == journal.len {
            let mut next = journal.clone();
            next.note(&line);
            next
        } else {
            // Someone else wrote to it: what it holds is read again at the next change.
            Journal {
                len: before + line.len() as u64,
                ..Journal::default()
            }
        };
        Ok(())
    }

    /// Write `list` as the whole file (beside it, then renamed over it: a reader sees the old
    /// file or the new one, never half of one), then remove the journal it now holds. A
    /// journal that cannot be removed is only logged: replaying it over the new file changes
    /// nothing ([`Edit`]).
    pub fn fold(
        &self,
        list: &[Revocation],
        journal: &mut Journal,
    ) -> Result<FileSeen, RevocationError> {
        let failed = |source| RevocationError::Write {
            path: self.file.display().to_string(),
            source,
        };
        self.refuse_if_managed_elsewhere()?;
        let mut bytes = serde_json::to_vec_pretty(&File {
            revocations: list.to_vec(),
        })
        .map_err(|e| failed(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let dir = parent(&self.file);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(self.file.file_name().unwrap_or_default());
        tmp_name.push(format!(".{}.tmp", uuid::Uuid::new_v4()));
        let tmp = dir.join(tmp_name);
        {
            // create_new: never follows a link or truncates a file someone else put there.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(failed)?;
            f.write_all(&bytes).map_err(failed)?;
            f.sync_all().map_err(failed)?;
        }
        if let Err(e) = std::fs::rename(&tmp, &self.file) {
            let _ = std::fs::remove_file(&tmp);
            return Err(failed(e));
        }
        // The rename must be on disk before the journal goes: never the other way round.
        sync_dir(&self.file);
        let stat = std::fs::metadata(&self.file).map_err(failed)?;
        match std::fs::remove_file(&self.journal) {
            Ok(()) => *journal = Journal::default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => *journal = Journal::default(),
            Err(e) => tracing::warn!(
                journal = %self.journal.display(),
                error = %e,
                "the revocation journal could not be removed after it was written into the file"
            ),
        }
        sync_dir(&self.file);
        Ok(FileSeen {
            stat: Stat::of(&stat),
            hash: sha256(&bytes),
        })
    }
}

impl Journal {
    fn note(&mut self, line: &[u8]) {
        self.len += line.len() as u64;
        self.lines += 1;
        self.digest.update(line);
    }
}

/// A list in the file's shape (`{"revocations": [...]}`), as a feed publishes it; `name`
/// names it in errors.
pub(super) fn parse_list(bytes: &[u8], name: &str) -> Result<Vec<Revocation>, RevocationError> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| RevocationError::Parse {
        path: name.to_string(),
        message: e.to_string(),
    })?;
    file.revocations
        .into_iter()
        .map(|r| checked(r, name))
        .collect()
}

/// A revocation as the file or the journal holds it, checked and compared as regate compares.
fn checked(mut r: Revocation, path: &str) -> Result<Revocation, RevocationError> {
    if r.expires_at.as_deref().is_some_and(|at| unix(at).is_none()) {
        return Err(RevocationError::Parse {
            path: path.to_string(),
            message: format!("revocation {}: expires_at is not an RFC 3339 time", r.id),
        });
    }
    if let Target::Serial(s) = &r.target {
        r.target = Target::Serial(normal_serial(s));
    }
    Ok(r)
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(file: &Path) {
    if let Ok(d) = std::fs::File::open(parent(file)) {
        let _ = d.sync_all();
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
