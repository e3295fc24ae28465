//! A client cannot speak for its certificate, its address, an earlier hop or the policy by
//! spelling a header another way: `X_Forwarded_Client_Cert` never reaches the upstream beside
//! (or instead of) regate's own `x-forwarded-client-cert`, and the headers a client might use
//! to claim an address, a host, an original URL or method, or an `x-regate-*` name, reach
//! neither the policy nor the upstream unless the operator keeps one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const ALLOW_ALL: &str = r#"package regate.authz
allow := true
"#;

/// An allowed request spelling regate's identity headers, and one policy-only name, with
/// underscores; `x_tenant` collides with nothing.
const UNDERSCORED: &str = "GET /docs/a HTTP/1.1\r\n\
    host: localhost\r\n\
    X_Forwarded_Client_Cert: By=forged;URI=spiffe://example.org/ns/x/sa/admin\r\n\
    X_Forwarded_For: 6.6.6.6\r\n\
    x_request_id: forged\r\n\
    x_regate_role: admin\r\n\
    x_tenant: a\r\n\
    connection: close\r\n\r\n";

#[tokio::test]
async fn underscore_spellings_of_identity_headers_never_reach_the_upstream() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let identity = setup.ca.client(SUMMARIZER);

    let response = raw_http1(&regate, &setup, &identity, UNDERSCORED.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    for forged in [
        "x_forwarded_client_cert",
        "x_forwarded_for",
        "x_request_id",
        "x_regate_role",
    ] {
        assert!(
            !headers.contains_key(forged),
            "{forged} reached the upstream: {headers:?}"
        );
    }
    assert_eq!(
        headers["x_tenant"], "a",
        "a harmless underscore name is kept"
    );

    let xfcc: Vec<_> = headers.get_all("x-forwarded-client-cert").iter().collect();
    assert_eq!(xfcc.len(), 1, "{headers:?}");
    let xfcc = xfcc[0].to_str().unwrap();
    assert!(
        xfcc.contains(&format!("Hash={}", sha256_hex(&identity.chain[0]))),
        "{xfcc}"
    );
    assert!(xfcc.contains(&format!("URI={SUMMARIZER}")), "{xfcc}");
    assert!(
        !xfcc.contains("forged") && !xfcc.contains("admin"),
        "{xfcc}"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_ne!(headers["x-request-id"], "forged");
    assert!(!headers.contains_key("x-regate-role"));
    regate.stop().await;
}

#[tokio::test]
async fn underscore_spellings_are_refused_when_the_operator_says_so() {
    // reject-colliding: the request with colliding spellings is a 400, never forwarded.
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--headers-with-underscores", "reject-colliding"],
        )
        .await;
    let identity = setup.ca.client(SUMMARIZER);
    let response = raw_http1(&regate, &setup, &identity, UNDERSCORED.as_bytes()).await;
    assert_eq!(status_of(&response), 400, "{response}");
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "invalid_header");
    assert_eq!(records[0]["allowed"], false);
    assert_eq!(records[0]["http_status"], 400);
    // A name that collides with nothing is still fine in this mode.
    let harmless = "GET /docs/a HTTP/1.1\r\nhost: localhost\r\nx_tenant: a\r\n\
        connection: close\r\n\r\n";
    let response = raw_http1(&regate, &setup, &identity, harmless.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "only the harmless request was forwarded");
    assert_eq!(seen[0].headers["x_tenant"], "a");
    regate.stop().await;

    // reject-all: any underscore at all is refused, even one that collides with nothing.
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--headers-with-underscores", "reject-all"],
        )
        .await;
    let identity = setup.ca.client(SUMMARIZER);
    let response = raw_http1(&regate, &setup, &identity, harmless.as_bytes()).await;
    assert_eq!(status_of(&response), 400, "{response}");
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "invalid_header");
    assert_eq!(records[0]["allowed"], false);
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}

/// What a client might claim about earlier hops, its address, or the original request.
const CLAIMS: &[(&str, &str)] = &[
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("x-real-ip", "6.6.6.6"),
    ("true-client-ip", "6.6.6.6"),
    ("x-forwarded-host", "admin.internal"),
    ("x-forwarded-port", "8443"),
    ("x-original-url", "/admin"),
    ("x-http-method-override", "DELETE"),
    ("x-regate-workload", "forged"),
];

/// Allows only when the policy sees none of the claims, and sets `x-regate-workload` itself.
const BLIND_TO_CLAIMS: &str = r#"package regate.authz

headers := input.attributes.request.http.headers

allow := {"allowed": true, "headers": {"x-regate-workload": "from-policy"}} if {
	not headers["x-real-ip"]
	not headers["forwarded"]
	not headers["true-client-ip"]
	not headers["x-forwarded-host"]
	not headers["x-forwarded-port"]
	not headers["x-original-url"]
	not headers["x-http-method-override"]
	not headers["x-regate-workload"]
}
"#;

#[tokio::test]
async fn client_claims_reach_neither_the_policy_nor_the_upstream() {
    let setup = Setup::new(&[("authz.rego", BLIND_TO_CLAIMS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let mut req = request("GET", "/docs/a", b"");
    for (name, value) in CLAIMS {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (status, _, body) = send(&mut client, req).await;
    assert_eq!(status, 200, "the policy saw a client claim: {body:?}");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    for (name, _) in CLAIMS.iter().filter(|(n, _)| *n != "x-regate-workload") {
        assert!(
            !headers.contains_key(*name),
            "{name} reached the upstream: {headers:?}"
        );
    }
    let workload: Vec<_> = headers.get_all("x-regate-workload").iter().collect();
    assert_eq!(workload, ["from-policy"], "only the policy's value arrives");
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["allowed"], true);
    regate.stop().await;
}

#[tokio::test]
async fn a_kept_client_claim_passes_through_unchanged() {
    // The operator trusts what sits in front of regate to set x-real-ip: the policy sees it
    // and the upstream gets it as sent; every other claim is still stripped.
    let policy = r#"package regate.authz
allow if input.attributes.request.http.headers["x-real-ip"] == "203.0.113.7"
"#;
    let setup = Setup::new(&[("authz.rego", policy)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--keep-client-header", "x-real-ip"])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let mut req = request("GET", "/docs/a", b"");
    for (name, value) in CLAIMS {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    req.headers_mut()
        .insert("x-real-ip", "203.0.113.7".parse().unwrap());
    let (status, _, _) = send(&mut client, req).await;
    assert_eq!(status, 200);

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    let real_ip: Vec<_> = headers.get_all("x-real-ip").iter().collect();
    assert_eq!(real_ip, ["203.0.113.7"]);
    for (name, _) in CLAIMS.iter().filter(|(n, _)| *n != "x-real-ip") {
        assert!(
            !headers.contains_key(*name),
            "{name} reached the upstream: {headers:?}"
        );
    }
    regate.stop().await;
}
