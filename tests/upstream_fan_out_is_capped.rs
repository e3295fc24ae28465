//! One client connection cannot fan out into as many upstream connections as it has
//! streams: an HTTP/2 client's requests queue for `--max-upstream-requests-per-connection`
//! places, and past `--max-upstream-requests` in flight in all, a request is answered 503
//! (`upstream_overloaded`) without reaching the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn an_http2_client_queues_for_its_connections_share_of_the_upstream() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start_with_delay(Duration::from_millis(200)).await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--max-upstream-requests-per-connection", "4"],
        )
        .await;
    let client = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut streams = Vec::new();
    for i in 0..40 {
        let mut client = client.clone();
        let mut req = request("GET", &format!("https://localhost/docs/{i}"), b"");
        req.headers_mut().remove("host");
        streams.push(tokio::spawn(async move {
            client.send_request(req).await.unwrap().status()
        }));
    }
    for stream in streams {
        assert_eq!(stream.await.unwrap(), 200);
    }
    assert_eq!(upstream.arrived.load(Ordering::SeqCst), 40);
    let peak = upstream.peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "{peak} requests reached the upstream at once");
    let opened = upstream.connections.load(Ordering::SeqCst);
    assert!(opened <= 4, "{opened} upstream connections for one client");
    regate.stop().await;
}

#[tokio::test]
async fn past_the_total_upstream_limit_a_request_is_answered_503() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start_with_delay(Duration::from_secs(1)).await;
    let regate = setup
        .start(&upstream.url(), &["--max-upstream-requests", "2"])
        .await;
    let summarizer = setup.ca.client(SUMMARIZER);
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut tls = regate
            .connect(setup.client_config(Some(&summarizer), &[b"http/1.1"]))
            .await
            .unwrap();
        tls.write_all(b"GET /docs/slow HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        busy.push(tls);
    }
    let both_in_flight = eventually(Duration::from_secs(10), || async {
        upstream.arrived.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(both_in_flight);
    let mut third = regate.http1(&setup, &summarizer).await;
    let (status, _, body) = get(&mut third, "/docs/third").await;
    assert_eq!(status, 503, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("upstream_overloaded"));
    assert_eq!(upstream.arrived.load(Ordering::SeqCst), 2);
    for mut tls in busy {
        assert_eq!(status_of(&read_response(&mut tls).await), 200);
    }
    // With the places back, requests flow again.
    assert_eq!(get(&mut third, "/docs/later").await.0, 200);
    let records = regate.decisions(4).await;
    let refused = records.iter().find(|r| r["path"] == "/docs/third").unwrap();
    assert_eq!(refused["reason"], "upstream_overloaded");
    assert_eq!(refused["allowed"], true);
    regate.stop().await;
}
