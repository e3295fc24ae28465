//! Short-lived certificates rotate under a running regate: new handshakes get the new
//! pair, open connections keep working, a broken push changes nothing, and a CA taken out of
//! the bundle stops its clients, on new and on open connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

/// Write a new server pair the way a rotation does: both files replaced by rename.
fn rotate(setup: &Setup, server: &Identity) {
    replace_file(&setup.path("server.key"), &server.key_pem);
    replace_file(&setup.path("server.pem"), &server.chain_pem);
}

async fn handshake_serial(regate: &Regate, setup: &Setup, client: &Identity) -> String {
    let tls = regate
        .connect(setup.client_config(Some(client), &[b"http/1.1"]))
        .await
        .unwrap();
    server_serial(&tls)
}

async fn wait_for_serial(regate: &Regate, setup: &Setup, client: &Identity, want: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if handshake_serial(regate, setup, client).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn serial_of(identity: &Identity) -> String {
    regate::tls::identity::PeerIdentity::from_der(&identity.chain[0])
        .unwrap()
        .serial
}

#[tokio::test]
async fn rotated_server_certificate_is_served_on_the_next_handshake() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client = setup.ca.client(SUMMARIZER);
    let first = handshake_serial(&regate, &setup, &client).await;
    // An open connection from before the rotation.
    let old_tls = regate
        .connect(setup.client_config(Some(&client), &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(server_serial(&old_tls), first);
    let mut old = http1_over(old_tls).await;
    assert_eq!(get(&mut old, "/docs/a").await.0, 200);

    let next = setup.ca.server();
    rotate(&setup, &next);
    let new_serial = serial_of(&next);
    assert_ne!(first, new_serial);
    assert!(
        wait_for_serial(&regate, &setup, &client, &new_serial).await,
        "new handshakes never got the rotated certificate"
    );
    // The connection made before the rotation still works.
    assert_eq!(get(&mut old, "/docs/b").await.0, 200);
    let status = regate.reloader.status.cert.lock().unwrap().clone();
    assert_eq!(status.last_error, None);
    assert!(status.successes >= 1);
    regate.stop().await;
}

#[tokio::test]
async fn broken_certificate_push_keeps_the_old_certificate() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let client = setup.ca.client(SUMMARIZER);
    let first = handshake_serial(&regate, &setup, &client).await;

    // A key that does not match, then a certificate that does not parse.
    let other = setup.ca.server();
    replace_file(&setup.path("server.key"), &other.key_pem);
    let failed = eventually(Duration::from_secs(10), || async {
        regate.reloader.status.cert.lock().unwrap().failures >= 1
    })
    .await;
    assert!(failed, "the mismatched pair was not noticed");
    assert_eq!(handshake_serial(&regate, &setup, &client).await, first);
    let error = regate
        .reloader
        .status
        .cert
        .lock()
        .unwrap()
        .last_error
        .clone()
        .unwrap();
    assert!(error.contains("does not match"), "{error}");

    replace_file(
        &setup.path("server.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    );
    let failed_again = eventually(Duration::from_secs(10), || async {
        regate.reloader.status.cert.lock().unwrap().failures >= 2
    })
    .await;
    assert!(failed_again);
    assert_eq!(handshake_serial(&regate, &setup, &client).await, first);
    let mut conn = regate.http1(&setup, &client).await;
    assert_eq!(get(&mut conn, "/docs/a").await.0, 200);

    // Once a good pair lands, it is served.
    rotate(&setup, &other);
    assert!(wait_for_serial(&regate, &setup, &client, &serial_of(&other)).await);
    regate.stop().await;
}

#[tokio::test]
async fn removed_ca_stops_its_clients_on_new_and_open_connections() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let partner = Ca::new("partner CA, to be removed");
    std::fs::write(
        setup.path("ca.pem"),
        format!("{}{}", setup.ca.pem, partner.pem),
    )
    .unwrap();
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;

    let ours = setup.ca.client(SUMMARIZER);
    let theirs = partner.client(SUMMARIZER);
    let mut ours_conn = regate.http1(&setup, &ours).await;
    let mut theirs_conn = regate.http1(&setup, &theirs).await;
    assert_eq!(get(&mut theirs_conn, "/docs/a").await.0, 200);

    replace_file(&setup.path("ca.pem"), &setup.ca.pem);
    // The open connection is re-checked against the new bundle on its next request.
    let denied = wait_for_status(&mut theirs_conn, "/docs/a", 403).await;
    assert!(denied.is_some(), "the open connection kept its access");
    let (_, _, body) = get(&mut theirs_conn, "/docs/a").await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["reason"], "untrusted_issuer");
    // New handshakes from the removed CA's clients fail.
    let refused = async {
        let Ok(tls) = regate
            .connect(setup.client_config(Some(&theirs), &[b"http/1.1"]))
            .await
        else {
            return true;
        };
        let mut c = http1_over(tls).await;
        c.send_request(request("GET", "/docs/a", b""))
            .await
            .is_err()
    }
    .await;
    assert!(refused, "a new handshake from the removed CA succeeded");
    // Everyone else carries on.
    assert_eq!(get(&mut ours_conn, "/docs/a").await.0, 200);
    let mut fresh = regate.http1(&setup, &ours).await;
    assert_eq!(get(&mut fresh, "/docs/a").await.0, 200);
    regate.stop().await;
}
