//! `GET /identities` answers "which agents exist, and what are they doing": every identity
//! seen since start, with what it was allowed and denied and why, its open connections, its
//! certificates and the delegation subjects it acted for. It stays within `--max-identities`
//! however many identities call, keeping the most recently seen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::time::{Duration, SystemTime};

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const PLANNER: &str = "spiffe://example.org/ns/agents/sa/planner";

/// Anyone may GET /docs/…; other methods are `read_only`, other paths `not_docs`.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := {"allowed": false, "reason": "not_docs"}

allow := {"allowed": true} if {
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "docs"
}

allow := {"allowed": false, "reason": "read_only"} if {
	input.attributes.request.http.method != "GET"
}
"#;

async fn identities(regate: &Regate, query: &str) -> Value {
    let (status, body) = admin_get(regate.admin, &format!("/identities{query}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn entry<'a>(listing: &'a Value, spiffe_id: &str) -> &'a Value {
    listing["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["spiffe_id"] == spiffe_id)
        .unwrap_or_else(|| panic!("{spiffe_id} is not listed: {listing}"))
}

fn ids(listing: &Value) -> Vec<String> {
    listing["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["spiffe_id"].as_str().unwrap().to_string())
        .collect()
}

fn at(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

fn peer(identity: &Identity) -> regate::tls::identity::PeerIdentity {
    regate::tls::identity::PeerIdentity::from_der(&identity.chain[0]).unwrap()
}

/// Wait until the wall clock has passed the millisecond it reads now, so that whatever
/// regate sees next is seen strictly later than what it has seen so far.
async fn next_millisecond() {
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let now = ms(SystemTime::now());
    assert!(
        eventually(Duration::from_secs(1), || async {
            ms(SystemTime::now()) > now
        })
        .await
    );
}

/// The value of one sample line in an OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn status_of(client: &mut Http1, method: &str, path: &str) -> u16 {
    send(client, request(method, path, b"")).await.0.as_u16()
}

#[tokio::test]
async fn three_identities_are_listed_with_their_decisions_connections_and_certificates() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    assert_eq!(identities(&regate, "").await["count"], 0);

    let summarizer = setup.ca.client(SUMMARIZER);
    let mut a1 = regate.http1(&setup, &summarizer).await;
    for _ in 0..3 {
        assert_eq!(status_of(&mut a1, "GET", "/docs/a").await, 200);
    }
    assert_eq!(status_of(&mut a1, "GET", "/admin").await, 403);
    next_millisecond().await;

    let executor = setup.ca.client(EXECUTOR);
    let mut b = regate.http1(&setup, &executor).await;
    assert_eq!(status_of(&mut b, "GET", "/docs/b").await, 200);
    for _ in 0..3 {
        assert_eq!(status_of(&mut b, "POST", "/docs/b").await, 403);
    }
    assert_eq!(status_of(&mut b, "GET", "/secrets").await, 403);
    next_millisecond().await;

    let planner = setup.ca.client(PLANNER);
    let mut c1 = regate.http1(&setup, &planner).await;
    let mut c2 = regate.http1(&setup, &planner).await;
    assert_eq!(status_of(&mut c1, "GET", "/plans").await, 403);
    assert_eq!(status_of(&mut c2, "GET", "/plans").await, 403);
    next_millisecond().await;

    // The summarizer comes back with a renewed certificate, on a second connection.
    let renewed = setup.ca.client(SUMMARIZER);
    let mut a2 = regate.http1(&setup, &renewed).await;
    assert_eq!(status_of(&mut a2, "GET", "/docs/c").await, 200);

    let listing = identities(&regate, "").await;
    assert_eq!(listing["count"], 3, "{listing}");
    assert_eq!(listing["cap"], 10_000);
    assert_eq!(listing["evicted"], 0);
    // Most recently seen first.
    assert_eq!(ids(&listing), [SUMMARIZER, PLANNER, EXECUTOR], "{listing}");

    let a = entry(&listing, SUMMARIZER);
    let bb = entry(&listing, EXECUTOR);
    let c = entry(&listing, PLANNER);
    assert_eq!((&a["allowed"], &a["denied"]), (&4.into(), &1.into()));
    assert_eq!((&bb["allowed"], &bb["denied"]), (&1.into(), &4.into()));
    assert_eq!((&c["allowed"], &c["denied"]), (&0.into(), &2.into()));
    assert_eq!(
        a["deny_reasons"],
        serde_json::json!([{"reason": "not_docs", "count": 1}])
    );
    assert_eq!(
        bb["deny_reasons"],
        serde_json::json!([{"reason": "read_only", "count": 3}, {"reason": "not_docs", "count": 1}])
    );
    assert_eq!(
        c["deny_reasons"],
        serde_json::json!([{"reason": "not_docs", "count": 2}])
    );
    assert_eq!(a["open_connections"], 2);
    assert_eq!(bb["open_connections"], 1);
    assert_eq!(c["open_connections"], 2);

    // Serials, newest first; the earliest expiry of the certificates seen.
    let (old, new) = (peer(&summarizer), peer(&renewed));
    assert_eq!(a["serials"], serde_json::json!([new.serial, old.serial]));
    assert_eq!(a["serials_seen"], 2);
    assert_eq!(
        at(&a["earliest_not_after"]).unix_timestamp(),
        old.not_after.min(new.not_after)
    );
    assert_eq!(c["serials"], serde_json::json!([peer(&planner).serial]));
    assert_eq!(c["serials_seen"], 1);
    assert_eq!(
        at(&bb["earliest_not_after"]).unix_timestamp(),
        peer(&executor).not_after
    );
    assert_eq!(a["delegation_subjects"], serde_json::json!([]));
    assert!(a.get("subject").is_none());

    // First seen in the order they came; last seen in the order they were last active.
    assert!(at(&a["first_seen"]) < at(&bb["first_seen"]));
    assert!(at(&bb["first_seen"]) < at(&c["first_seen"]));
    assert!(at(&bb["last_seen"]) < at(&c["last_seen"]));
    assert!(at(&c["last_seen"]) < at(&a["last_seen"]));
    assert!(at(&a["first_seen"]) < at(&a["last_seen"]));

    assert_eq!(ids(&identities(&regate, "?limit=1").await), [SUMMARIZER]);
    let (status, _) = admin_get(regate.admin, "/identities?limit=many").await;
    assert_eq!(status, 400);

    let (_, text) = admin_get(regate.admin, "/metrics").await;
    assert_eq!(sample(&text, "regate_identities"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "regate_identities_evicted_total"), Some(0.0));

    // Closed connections are no longer counted open; what they did stays.
    drop((a1, a2, b, c1, c2));
    let all_closed = eventually(Duration::from_secs(10), || async {
        let listing = identities(&regate, "").await;
        listing["identities"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["open_connections"] == 0)
    })
    .await;
    let listing = identities(&regate, "").await;
    assert!(all_closed, "{listing}");
    assert_eq!(listing["count"], 3);
    assert_eq!(entry(&listing, SUMMARIZER)["allowed"], 4);
    assert_eq!(entry(&listing, EXECUTOR)["denied"], 4);
    regate.stop().await;
}

#[tokio::test]
async fn many_identities_stay_within_the_cap_and_the_most_recent_are_kept() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--max-identities", "5"])
        .await;
    let agent = |i: usize| format!("spiffe://example.org/ns/agents/sa/agent-{i}");

    for i in 0..30 {
        let mut client = regate.http1(&setup, &setup.ca.client(&agent(i))).await;
        assert_eq!(status_of(&mut client, "GET", "/docs/a").await, 200);
        drop(client);
        // Closed before the next one comes, so every entry but the newest is idle.
        let closed = eventually(Duration::from_secs(10), || async {
            let listing = identities(&regate, "").await;
            assert!(listing["identities"].as_array().unwrap().len() <= 5);
            assert!(listing["count"].as_u64().unwrap() <= 5);
            listing["identities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["spiffe_id"] == agent(i) && e["open_connections"] == 0)
        })
        .await;
        assert!(closed, "agent-{i}");
    }

    let listing = identities(&regate, "").await;
    assert_eq!(listing["count"], 5, "{listing}");
    assert_eq!(listing["cap"], 5);
    assert_eq!(listing["evicted"], 25);
    let mut kept = ids(&listing);
    kept.sort();
    let mut newest: Vec<String> = (25..30).map(agent).collect();
    newest.sort();
    assert_eq!(kept, newest);
    for e in listing["identities"].as_array().unwrap() {
        assert_eq!((&e["allowed"], &e["denied"]), (&1.into(), &0.into()));
    }

    let (_, text) = admin_get(regate.admin, "/metrics").await;
    assert_eq!(sample(&text, "regate_identities"), Some(5.0), "{text}");
    assert_eq!(sample(&text, "regate_identities_evicted_total"), Some(25.0));
    regate.stop().await;
}

#[tokio::test]
async fn an_identity_with_an_open_connection_outlasts_idle_ones() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--max-identities", "3"])
        .await;
    let agent = |i: usize| format!("spiffe://example.org/ns/agents/sa/agent-{i}");

    // The oldest identity keeps its connection open throughout.
    let mut held = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(status_of(&mut held, "GET", "/docs/a").await, 200);
    for i in 0..6 {
        let mut client = regate.http1(&setup, &setup.ca.client(&agent(i))).await;
        assert_eq!(status_of(&mut client, "GET", "/nope").await, 403);
        drop(client);
        let closed = eventually(Duration::from_secs(10), || async {
            let listing = identities(&regate, "").await;
            listing["identities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["spiffe_id"] == agent(i) && e["open_connections"] == 0)
        })
        .await;
        assert!(closed, "agent-{i}");
    }
    let listing = identities(&regate, "").await;
    let mut kept = ids(&listing);
    kept.sort();
    assert_eq!(
        kept,
        [agent(4), agent(5), SUMMARIZER.to_string()],
        "{listing}"
    );
    assert_eq!(listing["evicted"], 4);
    let summarizer = entry(&listing, SUMMARIZER);
    assert_eq!(summarizer["open_connections"], 1);
    assert_eq!(summarizer["allowed"], 1);
    regate.stop().await;
}

#[tokio::test]
async fn a_certificate_without_a_spiffe_id_is_listed_by_its_subject() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    // Two URI SANs: not an X509-SVID, so no SPIFFE ID.
    let legacy = setup
        .ca
        .client_with_sans(&["spiffe://example.org/a", "spiffe://example.org/b"]);
    let mut client = regate.http1(&setup, &legacy).await;
    assert_eq!(status_of(&mut client, "GET", "/docs/a").await, 200);
    let listing = identities(&regate, "").await;
    let listed = listing["identities"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listing}");
    assert_eq!(listed[0]["subject"], peer(&legacy).subject);
    assert!(listed[0].get("spiffe_id").is_none());
    assert_eq!(listed[0]["allowed"], 1);
    regate.stop().await;
}

#[tokio::test]
async fn delegation_subjects_are_listed_under_the_agent_that_presented_them() {
    const ISSUER: &str = "https://idp.example.org";
    let setup = Setup::new(&[(
        "authz.rego",
        r#"package regate.authz

import rego.v1

default allow := {"allowed": false, "reason": "not_on_behalf_of_alice"}

allow := {"allowed": true} if input.delegation.subject == "alice"
"#,
    )]);
    let keys = signing_keys();
    std::fs::write(
        setup.path("jwks.json"),
        jwks(&[public_jwk(&keys["ec256"], "ec1", "ES256")]),
    )
    .unwrap();
    let jwks_path = setup.path("jwks.json").display().to_string();
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &[
                "--delegation-issuer",
                ISSUER,
                "--delegation-audience",
                "regate",
                "--delegation-jwks",
                &jwks_path,
                "--delegation-algorithm",
                "ES256",
            ],
        )
        .await;
    let agent = setup.ca.client(SUMMARIZER);
    let mut client = regate.http1(&setup, &agent).await;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (subject, want) in [("alice", 200), ("bob", 403)] {
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": "regate", "exp": now + 300,
            "cnf": {"x5t#S256": cert_thumbprint(&agent.chain[0])},
        });
        let token = sign_jws("ES256", "ec1", &claims, &keys["ec256"]);
        let mut req = request("GET", "/docs/a", b"");
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        assert_eq!(send(&mut client, req).await.0.as_u16(), want, "{subject}");
    }
    // A request with no token names no subject.
    assert_eq!(status_of(&mut client, "GET", "/docs/a").await, 403);

    let listing = identities(&regate, "").await;
    let e = entry(&listing, SUMMARIZER);
    assert_eq!(
        e["delegation_subjects"],
        serde_json::json!(["bob", "alice"])
    );
    assert_eq!(e["delegation_subjects_seen"], 2);
    assert_eq!((&e["allowed"], &e["denied"]), (&1.into(), &2.into()));
    assert_eq!(
        e["deny_reasons"],
        serde_json::json!([{"reason": "not_on_behalf_of_alice", "count": 2}])
    );
    regate.stop().await;
}
