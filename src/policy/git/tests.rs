use super::*;
use std::process::Command;

/// Run git in `dir` with a throwaway identity; panics on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A repository with `policies/authz.rego` committed; returns its commit.
fn repo_with_policies(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/authz.rego"),
        "package a\nallow := true\n",
    )
    .unwrap();
    git(dir, &["init", "-q"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "first"]);
    git(dir, &["rev-parse", "HEAD"])
}

#[test]
fn a_clone_names_the_commit_of_its_branch_loose_or_packed() {
    let tmp = tempfile::tempdir().unwrap();
    let head = repo_with_policies(tmp.path());
    assert_eq!(commit(&tmp.path().join("policies")), Some(head.clone()));
    assert_eq!(commit(tmp.path()), Some(head.clone()));
    git(tmp.path(), &["pack-refs", "--all"]);
    assert!(!tmp.path().join(".git/refs/heads/main").exists());
    assert_eq!(commit(&tmp.path().join("policies")), Some(head));
}

#[test]
fn a_detached_head_and_a_linked_worktree_name_their_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let first = repo_with_policies(&repo);
    std::fs::write(
        repo.join("policies/authz.rego"),
        "package a\nallow := false\n",
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    assert_ne!(first, second);
    let linked = tmp.path().join("linked");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            linked.to_str().unwrap(),
            &first,
        ],
    );
    assert_eq!(commit(&linked.join("policies")), Some(first.clone()));
    assert_eq!(commit(&repo.join("policies")), Some(second));
    git(&repo, &["checkout", "-q", "--detach", &first]);
    assert_eq!(commit(&repo.join("policies")), Some(first));
}

#[test]
fn a_git_sync_worktree_names_its_commit_even_when_mounted_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    // git-sync's volume, as git-sync lays it out under --root.
    let root = tmp.path().join("git");
    let head = repo_with_policies(&root);
    let worktree = format!(".worktrees/{head}");
    git(
        &root,
        &["worktree", "add", "-q", "--detach", &worktree, &head],
    );
    std::os::unix::fs::symlink(&worktree, root.join("current")).unwrap();
    // regate's container mounts the same volume at another path: the worktree's `.git`
    // file names a directory that does not exist there.
    let mounted = tmp.path().join("elsewhere");
    std::fs::rename(&root, &mounted).unwrap();
    let dot_git = std::fs::read_to_string(mounted.join(&worktree).join(".git")).unwrap();
    assert!(dot_git.contains(root.to_str().unwrap()), "{dot_git}");
    assert_eq!(
        commit(&mounted.join("current/policies")),
        Some(head.clone())
    );
    assert_eq!(commit(&mounted.join("current")), Some(head));
}

#[test]
fn a_directory_outside_git_or_with_a_broken_head_has_no_commit() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("policies")).unwrap();
    assert_eq!(commit(&tmp.path().join("policies")), None);
    std::fs::create_dir(tmp.path().join(".git")).unwrap();
    std::fs::write(
        tmp.path().join(".git/HEAD"),
        "ref: refs/heads/../../../../etc/x\n",
    )
    .unwrap();
    assert_eq!(commit(&tmp.path().join("policies")), None);
    std::fs::write(tmp.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    assert_eq!(
        commit(&tmp.path().join("policies")),
        None,
        "an unborn branch"
    );
    assert_eq!(commit(&tmp.path().join("missing")), None);
}
