//! Only clients with a valid certificate chaining to --client-ca reach policy at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

/// Try one request; true if it got any HTTP response.
async fn request_succeeds(regate: &Regate, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    let Ok(tls) = regate.connect(config).await else {
        return false;
    };
    let Ok((mut send, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    send.send_request(request("GET", "/docs/x", b""))
        .await
        .is_ok()
}

const ALLOW_ALL: &str = "package regate.authz\nallow := true\n";

#[tokio::test]
async fn client_without_certificate_is_rejected() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    assert!(!request_succeeds(&regate, setup.client_config(None, &[b"http/1.1"])).await);
    assert!(upstream.requests().is_empty());
    regate.stop().await;
    let log = std::fs::read_to_string(setup.path("decisions.log")).unwrap_or_default();
    assert_eq!(records_in(&log), Vec::<serde_json::Value>::new(), "{log}");
}

#[tokio::test]
async fn client_from_a_foreign_ca_is_rejected() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let foreign = Ca::new("someone else's CA").client(SUMMARIZER);
    assert!(!request_succeeds(&regate, setup.client_config(Some(&foreign), &[b"http/1.1"])).await);
    assert!(upstream.requests().is_empty());
    regate.stop().await;
    let log = std::fs::read_to_string(setup.path("decisions.log")).unwrap_or_default();
    assert_eq!(records_in(&log), Vec::<serde_json::Value>::new(), "{log}");
}

#[tokio::test]
async fn expired_client_certificate_is_rejected() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let expired = setup.ca.expired_client(SUMMARIZER);
    assert!(!request_succeeds(&regate, setup.client_config(Some(&expired), &[b"http/1.1"])).await);
    // The same client with a current certificate gets through, so the refusal was the expiry.
    let current = setup.ca.client(SUMMARIZER);
    assert!(request_succeeds(&regate, setup.client_config(Some(&current), &[b"http/1.1"])).await);
    assert_eq!(upstream.requests().len(), 1);
    regate.stop().await;
}

#[tokio::test]
async fn client_chain_through_an_intermediate_is_accepted() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let intermediate = setup.ca.intermediate("agents intermediate CA");
    let client = intermediate.client(SUMMARIZER);
    assert_eq!(client.chain.len(), 2, "the client sends its intermediate");
    let mut conn = regate.http1(&setup, &client).await;
    let (status, _, _) = get(&mut conn, "/docs/readme").await;
    assert_eq!(status, 200);
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["spiffe_id"], SUMMARIZER);
    regate.stop().await;
}

#[tokio::test]
async fn certificate_without_a_valid_spiffe_id_has_none() {
    // Two URI SANs: not an X509-SVID, so policy sees spiffe_id null and the raw SANs.
    let policy = r#"package regate.authz
allow if {
	input.peer.spiffe_id == null
	count(input.peer.uri_sans) == 2
}
"#;
    let setup = Setup::new(&[("authz.rego", policy)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let two_uris = setup.ca.client_with_sans(&[SUMMARIZER, EXECUTOR]);
    let mut conn = regate.http1(&setup, &two_uris).await;
    assert_eq!(get(&mut conn, "/").await.0, 200);
    let records = regate.decisions(1).await;
    assert!(records[0]["spiffe_id"].is_null());
    regate.stop().await;
}
