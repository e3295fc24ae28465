//! OPA bundles pulled from a real OCI registry (Debian's `docker-registry`, the CNCF
//! Distribution registry, on 127.0.0.1 with filesystem storage), pushed from the test over
//! the registry's HTTP API (blob uploads, manifest PUT) in OPA's OCI layout: an image
//! manifest whose one `application/vnd.oci.image.layer.v1.tar+gzip` layer is the bundle.
//! regate loads it unchanged, follows the tag to a new bundle, keeps the last good when the
//! tag points at a corrupt layer, and reads a revocations feed from a bundle in the registry.
//! Polling is 100-300 ms here to keep the suite fast.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::fleet::*;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn bundle(revision: &str, prefix: &str) -> BundleSpec {
    let policy = format!(
        "package regate.authz\n\nallow if {{\n\tstartswith(input.attributes.request.http.path, \"{prefix}\")\n\tinput.peer.spiffe_id == data.regate.authz.callers[_]\n}}\n"
    );
    let mut spec = BundleSpec::new(revision, &[("regate/authz/policy.rego", &policy)]);
    spec.data = serde_json::json!({"regate": {"authz": {"callers": [SUMMARIZER]}}});
    spec.roots = vec!["regate".into()];
    spec
}

async fn code(client: &mut Http1, path: &str) -> u16 {
    get(client, path).await.0.as_u16()
}

#[tokio::test]
async fn a_bundle_pushed_to_an_oci_registry_decides_and_follows_its_tag() {
    let setup = Setup::new(&[]);
    let registry = Registry::start();
    let signer = Signer::es256("k1");
    std::fs::write(setup.path("bundle.pem"), &signer.public_pem).unwrap();
    registry
        .push_bundle(
            "authz/policy",
            "v1",
            &bundle("r1", "/docs/").build(Some(&signer)),
        )
        .await;
    let upstream = Upstream::start().await;
    let config = format!(
        "bundle:\n  url: oci://127.0.0.1:{}/authz/policy:v1\n  polling: {{min_delay: 100ms, max_delay: 300ms}}\n  verification: {{public_key: bundle.pem, key_id: k1}}\n",
        registry.port
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

    // The tag moves to a new bundle.
    registry
        .push_bundle(
            "authz/policy",
            "v1",
            &bundle("r2", "/api/").build(Some(&signer)),
        )
        .await;
    assert!(
        eventually(WAIT, || async {
            revision(regate.admin).await == "bundle:r2"
        })
        .await,
        "the moved tag was never followed"
    );
    assert_eq!(code(&mut client, "/api/a").await, 200);
    assert_eq!(code(&mut client, "/docs/a").await, 403);

    // The tag moves to a layer that is no bundle: refused, the last good stays.
    let failures = status(regate.admin).await["reloads"]["policy"]["failures"]
        .as_u64()
        .unwrap();
    registry
        .push_bundle("authz/policy", "v1", b"not a gzipped tarball")
        .await;
    assert!(
        eventually(WAIT, || async {
            status(regate.admin).await["reloads"]["policy"]["failures"]
                .as_u64()
                .unwrap()
                > failures
        })
        .await,
        "a corrupt layer was never refused"
    );
    assert_eq!(revision(regate.admin).await, "bundle:r2");
    assert_eq!(code(&mut client, "/api/a").await, 200);

    // An unsigned bundle under the tag is refused too.
    registry
        .push_bundle("authz/policy", "v1", &bundle("r3", "/").build(None))
        .await;
    assert!(
        eventually(WAIT, || async {
            status(regate.admin).await["reloads"]["policy"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not signed"))
        })
        .await
    );
    assert_eq!(revision(regate.admin).await, "bundle:r2");
    assert_eq!(code(&mut client, "/docs/a").await, 403);
    regate.stop().await;
}

#[tokio::test]
async fn a_revocations_feed_in_a_bundle_in_an_oci_registry_revokes() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let registry = Registry::start();
    let feed = |ids: &[&str]| tarball(&[("/revocations.json".into(), revocations_document(ids))]);
    registry
        .push_bundle("authz/revocations", "live", &feed(&[]))
        .await;
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    args.extend(config_file(
        setup.dir.path(),
        &format!(
            "revocations_feed:\n  url: oci://127.0.0.1:{}/authz/revocations:live\n  polling: 100ms\n",
            registry.port
        ),
    ));
    let regate = Regate::start(args, setup.path("decisions.log")).await;
    let victim = setup.ca.client(SUMMARIZER);
    assert!(
        eventually(WAIT, || async {
            metric(
                regate.admin,
                "regate_revocations_feed_fetches_total{result=\"updated\"}",
            )
            .await
                >= 1.0
        })
        .await
    );
    let mut open = regate.http1(&setup, &victim).await;
    assert_eq!(code(&mut open, "/docs/a").await, 200);

    registry
        .push_bundle("authz/revocations", "live", &feed(&[SUMMARIZER]))
        .await;
    assert!(
        until_denied_and_closed(&mut open, "/docs/a", tokio::time::Instant::now(), WAIT)
            .await
            .is_some(),
        "the victim's open connection was never closed"
    );
    assert_eq!(answer(&regate, &setup, &victim, "/docs/a").await, Some(403));
    // Records are written behind the request path: wait for the event's line.
    assert!(
        eventually(WAIT, || async {
            regate
                .decisions(1)
                .await
                .iter()
                .any(|r| r["event"] == "revocation_added")
        })
        .await,
        "the feed's change is a decision-log event"
    );
    let records = regate.decisions(1).await;
    let change = records
        .iter()
        .find(|r| r["event"] == "revocation_added")
        .unwrap();
    assert_eq!(change["source"], "feed");
    regate.stop().await;
}
