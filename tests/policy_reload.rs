//! Policies and data change under a running regate: the next request, on a connection that
//! is already open, is decided by the new set; a broken push leaves the last good set deciding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn allow_prefix(prefix: &str) -> String {
    format!(
        "package regate.authz\nallow if startswith(input.attributes.request.http.path, \"{prefix}\")\n"
    )
}

async fn status_of(client: &mut Http1, path: &str) -> u16 {
    get(client, path).await.0.as_u16()
}

#[tokio::test]
async fn edited_policy_decides_the_next_request_on_an_open_connection() {
    let setup = Setup::new(&[("authz.rego", &allow_prefix("/docs/"))]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(status_of(&mut client, "/docs/a").await, 200);
    assert_eq!(status_of(&mut client, "/api/a").await, 403);
    let before = regate.decisions(2).await[0]["policy_revision"].clone();

    replace_file(&setup.path("policies/authz.rego"), &allow_prefix("/api/"));
    // The same connection: no reconnect, no new handshake.
    let took = wait_for_status(&mut client, "/api/a", 200).await;
    let took = took.expect("the edit never took effect");
    eprintln!("file write to first changed decision: {took:?}");
    assert_eq!(status_of(&mut client, "/docs/a").await, 403);

    let status = regate.reloader.status.policy.lock().unwrap().clone();
    assert!(
        status.successes >= 1 && status.last_error.is_none(),
        "{status:?}"
    );
    let decisions = regate.decisions.clone();
    regate.stop().await; // flushes the decision log
    let records = std::fs::read_to_string(decisions).unwrap();
    let last: serde_json::Value = serde_json::from_str(records.lines().last().unwrap()).unwrap();
    assert_eq!(last["path"], "/docs/a");
    assert_ne!(
        last["policy_revision"], before,
        "records carry the new revision"
    );
}

/// A Kubernetes ConfigMap volume: files are symlinks into `..data`, which is itself a
/// symlink swapped atomically to a new timestamped directory on every update.
struct ConfigMapVolume {
    dir: std::path::PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    fn create(dir: &std::path::Path, policy: &str) -> ConfigMapVolume {
        std::fs::remove_file(dir.join("authz.rego")).ok();
        let mut volume = ConfigMapVolume {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        let first = volume.write_generation(policy);
        std::os::unix::fs::symlink(&first, dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/authz.rego", dir.join("authz.rego")).unwrap();
        volume
    }

    fn write_generation(&mut self, policy: &str) -> String {
        self.generation += 1;
        let name = format!(
            "..2026_11_23_12_00_0{}.000{}",
            self.generation, self.generation
        );
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("authz.rego"), policy).unwrap();
        name
    }

    /// What the kubelet does: new directory, new `..data_tmp` link, rename over `..data`,
    /// remove the old directory.
    fn update(&mut self, policy: &str) {
        let old = std::fs::read_link(self.dir.join("..data")).unwrap();
        let new = self.write_generation(policy);
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.join(old)).unwrap();
    }
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up_twice_in_a_row() {
    let setup = Setup::new(&[("authz.rego", "package regate.authz\n")]);
    let mut volume = ConfigMapVolume::create(&setup.path("policies"), &allow_prefix("/one/"));
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(status_of(&mut client, "/one/x").await, 200);

    for next in ["/two/", "/three/"] {
        volume.update(&allow_prefix(next));
        let changed = wait_for_status(&mut client, &format!("{next}x"), 200).await;
        assert!(changed.is_some(), "the swap to {next} was not picked up");
        assert_eq!(status_of(&mut client, "/one/x").await, 403);
    }
    regate.stop().await;
}

#[tokio::test]
async fn revoked_identity_in_data_is_denied_on_its_open_connection() {
    let policy = r#"package regate.authz
allow if not input.peer.spiffe_id in data.revoked
"#;
    let setup = Setup::new(&[("authz.rego", policy), ("data.json", r#"{"revoked": []}"#)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut summarizer = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut executor = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    assert_eq!(status_of(&mut summarizer, "/a").await, 200);
    assert_eq!(status_of(&mut executor, "/a").await, 200);

    replace_file(
        &setup.path("policies/data.json"),
        &format!(r#"{{"revoked": ["{SUMMARIZER}"]}}"#),
    );
    let revoked = wait_for_status(&mut summarizer, "/a", 403).await;
    assert!(
        revoked.is_some(),
        "the revocation never reached the open connection"
    );
    // Everyone else is unaffected.
    assert_eq!(status_of(&mut executor, "/a").await, 200);
    regate.stop().await;
}

#[tokio::test]
async fn syntax_error_pushed_live_keeps_the_old_policy_and_names_the_file() {
    let setup = Setup::new(&[("authz.rego", &allow_prefix("/docs/"))]);
    let upstream = Upstream::start().await;
    let process = Process::start(&setup.args(&upstream.url()), &[]);
    let mut client = process.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(status_of(&mut client, "/docs/a").await, 200);

    replace_file(
        &setup.path("policies/authz.rego"),
        "package regate.authz\n\nallow if {\n  input.x ==\n}\n",
    );
    let logged = eventually(WAIT, || {
        let stderr = process.stderr();
        async move { stderr.contains("policy reload failed") }
    })
    .await;
    assert!(logged, "no reload error in:\n{}", process.stderr());
    let stderr = process.stderr();
    assert!(
        stderr.contains("authz.rego:5:"),
        "the error names file and line:\n{stderr}"
    );
    // The last good policy still decides, both ways.
    assert_eq!(status_of(&mut client, "/docs/a").await, 200);
    assert_eq!(status_of(&mut client, "/api/a").await, 403);

    // A fixed push is picked up after the broken one.
    replace_file(&setup.path("policies/authz.rego"), &allow_prefix("/api/"));
    assert!(wait_for_status(&mut client, "/api/a", 200).await.is_some());
}

#[tokio::test]
async fn sighup_reloads_when_watching_is_off() {
    let setup = Setup::new(&[("authz.rego", &allow_prefix("/docs/"))]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    args.extend(["--watch", "false", "--reload-interval", "0"].map(String::from));
    let process = Process::start(&args, &[]);
    let mut client = process.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    replace_file(&setup.path("policies/authz.rego"), &allow_prefix("/api/"));
    // Nothing watches and nothing polls: the old policy still decides until SIGHUP.
    assert_eq!(status_of(&mut client, "/api/a").await, 403);
    process.hangup();
    let reloaded = wait_for_status(&mut client, "/api/a", 200).await;
    assert!(
        reloaded.is_some(),
        "SIGHUP did not reload:\n{}",
        process.stderr()
    );
}
