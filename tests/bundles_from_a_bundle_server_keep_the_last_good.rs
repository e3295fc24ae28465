//! OPA bundles served by a real nginx (static files, ETags): regate loads them unchanged,
//! names the manifest's revision in records and `/status`, swaps bundles under load without
//! failing a request, keeps the last good bundle when one is corrupt, unsigned or badly
//! signed or when the server is down, and starts from the persisted bundle while the server
//! is down. Polling is 100-300 ms here, not OPA's default of seconds, to keep the suite fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::fleet::*;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn allow(prefix: &str) -> String {
    format!(
        "package regate.authz\n\nallow if {{\n\tstartswith(input.attributes.request.http.path, \"{prefix}\")\n\tinput.peer.spiffe_id == data.regate.authz.callers[_]\n}}\n"
    )
}

/// A bundle allowing the summarizer under `prefix`, as `opa build` would make it.
fn bundle(revision: &str, prefix: &str) -> BundleSpec {
    let mut spec = BundleSpec::new(revision, &[("regate/authz/policy.rego", &allow(prefix))]);
    spec.data = serde_json::json!({"regate": {"authz": {"callers": [SUMMARIZER]}}});
    spec.roots = vec!["regate".into()];
    spec
}

fn yaml(url: &str, extra: &str) -> String {
    format!("bundle:\n  url: {url}\n  polling: {{min_delay: 100ms, max_delay: 300ms}}\n{extra}")
}

async fn code(client: &mut Http1, path: &str) -> u16 {
    get(client, path).await.0.as_u16()
}

#[tokio::test]
async fn a_bundle_from_nginx_decides_and_its_revision_names_the_policy() {
    let setup = Setup::new(&[]);
    let nginx = Nginx::start("t0ken");
    nginx.publish("private/authz.tar.gz", &bundle("r1", "/docs/").build(None));
    std::fs::write(setup.path("token"), "t0ken\n").unwrap();
    let upstream = Upstream::start().await;
    let config = yaml(
        &nginx.url("private/authz.tar.gz"),
        &format!(
            "  credentials: {{bearer_token_file: {}}}\n",
            setup.path("token").display()
        ),
    );
    let args = bundle_args(
        &setup,
        &upstream.url(),
        config_file(setup.dir.path(), &config),
    );
    let regate = start_regate(&setup, args).await;
    assert_eq!(revision(regate.admin).await, "bundle:r1");
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(code(&mut client, "/docs/a").await, 200);
    assert_eq!(code(&mut client, "/api/a").await, 403);
    let records = regate.decisions(2).await;
    assert_eq!(records[0]["policy_revision"], "bundle:r1");

    nginx.publish("private/authz.tar.gz", &bundle("r2", "/api/").build(None));
    assert!(
        eventually(WAIT, || async {
            revision(regate.admin).await == "bundle:r2"
        })
        .await,
        "the new bundle was never loaded"
    );
    assert_eq!(code(&mut client, "/api/a").await, 200);
    assert_eq!(code(&mut client, "/docs/a").await, 403);

    // Without the token, nginx answers 401: a failed download, the last good set stays.
    std::fs::write(setup.path("token"), "wrong\n").unwrap();
    nginx.publish("private/authz.tar.gz", &bundle("r3", "/other/").build(None));
    assert!(
        eventually(WAIT, || async {
            status(regate.admin).await["reloads"]["policy"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("401"))
        })
        .await
    );
    assert_eq!(revision(regate.admin).await, "bundle:r2");
    assert_eq!(code(&mut client, "/api/a").await, 200);
    regate.stop().await;
}

#[tokio::test]
async fn a_bundle_replaced_under_load_fails_no_request() {
    let setup = Setup::new(&[]);
    let nginx = Nginx::start("unused");
    // Both revisions allow /docs/; the second allows /v2/ too.
    let mut next = bundle("r2", "/");
    next.modules[0].1 =
        allow("/docs/") + "\nallow if startswith(input.attributes.request.http.path, \"/v2/\")\n";
    nginx.publish("authz.tar.gz", &bundle("r1", "/docs/").build(None));
    let upstream = Upstream::start().await;
    let args = bundle_args(
        &setup,
        &upstream.url(),
        config_file(setup.dir.path(), &yaml(&nginx.url("authz.tar.gz"), "")),
    );
    let regate = start_regate(&setup, args).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(code(&mut client, "/docs/a").await, 200);
    nginx.publish("authz.tar.gz", &next.build(None));
    let mut sent = 0;
    let mut failed = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    // Requests keep going until the new bundle decides, and a few hundred after.
    let mut after = 0;
    while after < 200 && tokio::time::Instant::now() < deadline {
        let status = code(&mut client, "/docs/a").await;
        sent += 1;
        if status != 200 {
            failed.push(status);
        }
        if after > 0 || code(&mut client, "/v2/x").await == 200 {
            after += 1;
        }
    }
    assert_eq!(
        after, 200,
        "the new bundle never decided ({sent} requests sent)"
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    assert_eq!(revision(regate.admin).await, "bundle:r2");
    regate.stop().await;
}

#[tokio::test]
async fn a_corrupt_unsigned_or_badly_signed_bundle_keeps_the_last_good() {
    let setup = Setup::new(&[]);
    let nginx = Nginx::start("unused");
    let signer = Signer::es256("k1");
    let other = Signer::es256("k1");
    std::fs::write(setup.path("bundle.pem"), &signer.public_pem).unwrap();
    nginx.publish("authz.tar.gz", &bundle("r1", "/docs/").build(Some(&signer)));
    let upstream = Upstream::start().await;
    let config = yaml(
        &nginx.url("authz.tar.gz"),
        "  verification: {public_key: bundle.pem, key_id: k1}\n",
    );
    let args = bundle_args(
        &setup,
        &upstream.url(),
        config_file(setup.dir.path(), &config),
    );
    let regate = start_regate(&setup, args).await;
    assert_eq!(revision(regate.admin).await, "bundle:r1");
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let mut tampered = bundle("r3", "/").build(Some(&signer));
    tampered.truncate(tampered.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("corrupt", b"this is not gzip".to_vec(), "gzip"),
        ("cut short", tampered, "bundle"),
        ("unsigned", bundle("r5", "/").build(None), "not signed"),
        (
            "signed by another key",
            bundle("r6", "/").build(Some(&other)),
            "does not verify",
        ),
    ];
    for (what, bytes, says) in cases {
        let failures = status(regate.admin).await["reloads"]["policy"]["failures"]
            .as_u64()
            .unwrap();
        nginx.publish("authz.tar.gz", &bytes);
        assert!(
            eventually(WAIT, || async {
                let s = status(regate.admin).await;
                s["reloads"]["policy"]["failures"].as_u64().unwrap() > failures
                    && s["reloads"]["policy"]["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(says))
            })
            .await,
            "{what}: never refused with {says:?}: {}",
            status(regate.admin).await["reloads"]["policy"]
        );
        assert_eq!(revision(regate.admin).await, "bundle:r1", "{what}");
        assert_eq!(code(&mut client, "/docs/a").await, 200, "{what}");
        assert_eq!(code(&mut client, "/api/a").await, 403, "{what}");
    }
    // A file changed after signing does not match its digest.
    let good = bundle("r7", "/docs/");
    let mut forged = good.build(Some(&signer));
    forged = swap_module(&forged, &allow("/"));
    nginx.publish("authz.tar.gz", &forged);
    assert!(
        eventually(WAIT, || async {
            status(regate.admin).await["reloads"]["policy"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("digest mismatch"))
        })
        .await
    );
    assert_eq!(code(&mut client, "/api/a").await, 403);

    nginx.publish("authz.tar.gz", &bundle("r8", "/api/").build(Some(&signer)));
    assert!(
        eventually(WAIT, || async {
            revision(regate.admin).await == "bundle:r8"
        })
        .await
    );
    assert_eq!(code(&mut client, "/api/a").await, 200);
    assert!(status(regate.admin).await["reloads"]["policy"]["last_error"].is_null());
    regate.stop().await;
}

/// The same tarball with its module's text replaced (its signature left as it was).
fn swap_module(bundle: &[u8], text: &str) -> Vec<u8> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if path.ends_with(".rego") {
            bytes = text.as_bytes().to_vec();
        }
        entries.push((path, bytes));
    }
    tarball(&entries)
}

#[tokio::test]
async fn a_restart_while_the_server_is_down_starts_ready_with_the_persisted_bundle() {
    let setup = Setup::new(&[]);
    let mut nginx = Nginx::start("unused");
    let signer = Signer::eddsa("k2");
    std::fs::write(setup.path("bundle.pem"), &signer.public_pem).unwrap();
    nginx.publish("authz.tar.gz", &bundle("r1", "/docs/").build(Some(&signer)));
    let upstream = Upstream::start().await;
    let config = yaml(
        &nginx.url("authz.tar.gz"),
        "  verification: {public_key: bundle.pem, key_id: k2}\n  persist_dir: persisted\n",
    );
    let args = bundle_args(
        &setup,
        &upstream.url(),
        config_file(setup.dir.path(), &config),
    );
    let regate = start_regate(&setup, args.clone()).await;
    assert_eq!(revision(regate.admin).await, "bundle:r1");
    regate.stop().await;
    assert!(setup.path("persisted/bundle.tar.gz").is_file());

    nginx.stop();
    let regate = start_regate(&setup, args.clone()).await;
    assert_eq!(revision(regate.admin).await, "bundle:r1");
    assert_eq!(admin_get(regate.admin, "/readyz").await.0, 200);
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(code(&mut client, "/docs/a").await, 200);
    assert_eq!(code(&mut client, "/api/a").await, 403);
    regate.stop().await;

    // Nothing persisted and no server: regate refuses to start, naming both.
    std::fs::remove_dir_all(setup.path("persisted")).unwrap();
    let cli = args.clone();
    let out = regate_command(
        &std::iter::once("run")
            .chain(cli.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing persisted"), "{stderr}");
}

#[tokio::test]
async fn a_server_down_for_a_while_lifts_nothing_and_the_next_bundle_is_picked_up() {
    let setup = Setup::new(&[]);
    let mut nginx = Nginx::start("unused");
    nginx.publish("authz.tar.gz", &bundle("r1", "/docs/").build(None));
    let upstream = Upstream::start().await;
    let args = bundle_args(
        &setup,
        &upstream.url(),
        config_file(setup.dir.path(), &yaml(&nginx.url("authz.tar.gz"), "")),
    );
    let regate = start_regate(&setup, args).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    nginx.stop();
    // Down for a while: several polls fail (short polling stands in for OPA's 30 s here).
    let failures = status(regate.admin).await["reloads"]["policy"]["failures"]
        .as_u64()
        .unwrap();
    assert!(
        eventually(WAIT, || async {
            status(regate.admin).await["reloads"]["policy"]["failures"]
                .as_u64()
                .unwrap()
                >= failures + 5
        })
        .await
    );
    assert_eq!(code(&mut client, "/docs/a").await, 200);
    assert_eq!(code(&mut client, "/api/a").await, 403);
    assert_eq!(revision(regate.admin).await, "bundle:r1");

    nginx.publish("authz.tar.gz", &bundle("r2", "/api/").build(None));
    nginx.restart();
    assert!(
        eventually(WAIT, || async {
            revision(regate.admin).await == "bundle:r2"
        })
        .await
    );
    assert_eq!(code(&mut client, "/api/a").await, 200);
    regate.stop().await;
}
