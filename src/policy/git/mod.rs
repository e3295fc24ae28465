//! The git commit a policy directory was checked out at, so decision records and `/status`
//! name a policy set by the commit its authors know it by.
//!
//! Two layouts are recognised:
//! - git-sync (v4) publishes each synced commit as `<root>/.worktrees/<commit>` and points
//!   its `--link` symlink there. The regate container usually mounts the volume at another
//!   path than git-sync's, so the worktree's `.git` file (which names git-sync's paths)
//!   cannot be followed; the commit is read from the resolved path itself.
//! - Any other checkout (`git clone`, `git worktree add`): `.git` is found in the directory
//!   or one of its parents, and its `HEAD` is resolved through loose refs or `packed-refs`.
//!
//! git's files are read, never written, and git is not run: the image has no git. Anything
//! unexpected gives no commit, and the revision stays the content hash. What this does not
//! know is whether the files were edited after the checkout; `/status` shows the content
//! hash beside the revision for that.

use std::path::{Path, PathBuf};

/// The most bytes read of any one git file (HEAD, a ref, `.git`, `commondir`); packed-refs
/// is read up to [`PACKED_REFS_LIMIT`].
const SMALL_FILE_LIMIT: u64 = 4096;
const PACKED_REFS_LIMIT: u64 = 16 << 20;

/// The commit `dir` was checked out at, as lowercase hex, if it is inside a git checkout.
pub fn commit(dir: &Path) -> Option<String> {
    let resolved = std::fs::canonicalize(dir).ok()?;
    for at in resolved.ancestors() {
        if let (Some(name), Some(parent)) = (at.file_name(), at.parent()) {
            let name = name.to_str()?;
            if parent.file_name().is_some_and(|p| p == ".worktrees") && is_object_id(name) {
                return Some(name.to_ascii_lowercase());
            }
        }
        let dot_git = at.join(".git");
        let Ok(meta) = std::fs::metadata(&dot_git) else {
            continue;
        };
        // The nearest `.git` decides: a repository's parents are not asked.
        return if meta.is_dir() {
            head(&dot_git, &dot_git)
        } else {
            let (git_dir, common) = linked_git_dir(at, &dot_git)?;
            head(&git_dir, &common)
        };
    }
    None
}

/// A linked worktree's `.git` file names its own git directory, and that one's `commondir`
/// names the repository's, where branch refs live.
fn linked_git_dir(worktree: &Path, dot_git: &Path) -> Option<(PathBuf, PathBuf)> {
    let text = read_small(dot_git)?;
    let git_dir = worktree.join(text.trim().strip_prefix("gitdir:")?.trim());
    let common = match read_small(&git_dir.join("commondir")) {
        Some(c) => git_dir.join(c.trim()),
        None => git_dir.clone(),
    };
    Some((git_dir, common))
}

/// `HEAD` of `git_dir` as a commit: detached, or a branch resolved in `common`.
fn head(git_dir: &Path, common: &Path) -> Option<String> {
    let head = read_small(&git_dir.join("HEAD"))?;
    let head = head.trim();
    if is_object_id(head) {
        return Some(head.to_ascii_lowercase());
    }
    let name = head.strip_prefix("ref:")?.trim();
    if !name.starts_with("refs/")
        || name
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return None;
    }
    for dir in [git_dir, common] {
        if let Some(id) = read_small(&dir.join(name)) {
            let id = id.trim();
            return is_object_id(id).then(|| id.to_ascii_lowercase());
        }
    }
    packed(common, name)
}

/// A ref's commit from `packed-refs` (`<id> <name>` lines).
fn packed(common: &Path, name: &str) -> Option<String> {
    let text = read_limited(&common.join("packed-refs"), PACKED_REFS_LIMIT)?;
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(_, n)| *n == name)
        .map(|(id, _)| id)
        .filter(|id| is_object_id(id))
        .map(str::to_ascii_lowercase)
}

/// A SHA-1 or SHA-256 object id in hex.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_small(path: &Path) -> Option<String> {
    read_limited(path, SMALL_FILE_LIMIT)
}

fn read_limited(path: &Path, limit: u64) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(limit)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests;
