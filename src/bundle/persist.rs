//! The last good bundle on disk (`persist_dir`), so that a restart while the bundle server
//! is down still starts with the policy that was in force, and is ready.
//!
//! Kept as the bytes downloaded (`bundle.tar.gz`) and their ETag (`bundle.etag`), each
//! written beside its name and renamed over it; the bundle is verified and compiled again
//! when it is read back, exactly as a download is. Deciding when to save and load is
//! `super`'s.

use std::io::Write as _;
use std::path::{Path, PathBuf};

const BUNDLE: &str = "bundle.tar.gz";
const ETAG: &str = "bundle.etag";

/// A bundle as last saved: its bytes and the ETag they came with.
pub struct Saved {
    pub bytes: Vec<u8>,
    pub etag: String,
}

/// Save `bytes` (and `etag`) as the last good bundle in `dir`, created if need be.
pub fn save(dir: &Path, bytes: &[u8], etag: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // The ETag goes first: a crash between the two leaves a bundle with an older ETag,
    // which only costs one download more.
    write_atomically(&dir.join(ETAG), etag.as_bytes())?;
    write_atomically(&dir.join(BUNDLE), bytes)
}

/// The last good bundle saved in `dir`, if there is one.
pub fn load(dir: &Path) -> Option<Saved> {
    let bytes = std::fs::read(dir.join(BUNDLE)).ok()?;
    let etag = std::fs::read_to_string(dir.join(ETAG)).unwrap_or_default();
    Some(Saved { bytes, etag })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension(format!("{}.tmp", uuid::Uuid::new_v4()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
