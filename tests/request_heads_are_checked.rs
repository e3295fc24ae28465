//! regate refuses a request head it could not forward faithfully, before the policy sees it
//! and without forwarding it: a host with user info, an invalid host or port, a scheme other
//! than https, an `:authority` that disagrees with `Host`, a transfer coding it would drop.
//! And what it adds itself stays bounded: the `x-forwarded-client-cert` of a certificate with
//! thousands of names fits in 4 KiB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use http_body_util::BodyExt;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

const ALLOW_ALL: &str = r#"package regate.authz
allow := true
"#;

#[tokio::test]
async fn hosts_with_user_info_or_bad_syntax_are_refused() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;

    let hosts = ["user@localhost", "local host", "localhost:99999"];
    for host in hosts {
        let req = format!("GET /docs/a HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        let response = raw_http1(
            &regate,
            &setup,
            &setup.ca.client(SUMMARIZER),
            req.as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 400, "{host:?}: {response}");
    }
    assert!(
        upstream.requests().is_empty(),
        "a bad host reached the upstream: {:?}",
        upstream.requests()
    );
    let records = regate.decisions(hosts.len()).await;
    for record in &records {
        assert_eq!(record["reason"], "invalid_request", "{record}");
        assert_eq!(record["allowed"], false);
        assert_eq!(record["http_status"], 400);
    }
    regate.stop().await;
}

/// An empty HTTP/2 request to `uri`, with `host` when given.
fn h2_request(
    uri: &str,
    host: Option<&str>,
) -> http::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>> {
    let mut builder = http::Request::builder().uri(uri);
    if let Some(host) = host {
        builder = builder.header(http::header::HOST, host);
    }
    builder
        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .unwrap()
}

/// The `detail` of a problem+json response.
async fn detail(resp: http::Response<hyper::body::Incoming>) -> String {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    doc["detail"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn http2_requests_must_say_https_and_name_one_host() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http2(&setup, &setup.ca.client(SUMMARIZER)).await;

    // `:scheme http` on a connection regate terminated TLS for.
    let resp = client
        .send_request(h2_request("http://localhost/docs/a", None))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(detail(resp).await.contains("scheme"));
    // `:authority localhost` and `host: admin.internal`.
    let resp = client
        .send_request(h2_request(
            "https://localhost/docs/a",
            Some("admin.internal"),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(detail(resp).await.contains("authority"));
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    let records = regate.decisions(2).await;
    for record in &records {
        assert_eq!(record["reason"], "invalid_request", "{record}");
        assert_eq!(record["allowed"], false);
    }

    // The same connection serves a well-formed request.
    let resp = client
        .send_request(h2_request("https://localhost/docs/a", Some("localhost")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests().len(), 1);
    regate.stop().await;
}

#[tokio::test]
async fn a_transfer_coding_other_than_chunked_is_501_and_chunked_still_works() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;

    let gzip = b"POST /docs/a HTTP/1.1\r\nhost: localhost\r\n\
        transfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n\
        5\r\nhello\r\n0\r\n\r\n";
    let response = raw_http1(&regate, &setup, &setup.ca.client(SUMMARIZER), gzip).await;
    assert_eq!(status_of(&response), 501, "{response}");
    assert!(upstream.requests().is_empty());
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "unsupported_transfer_coding");
    assert_eq!(records[0]["allowed"], false);
    assert_eq!(records[0]["http_status"], 501);

    let chunked = b"POST /docs/a HTTP/1.1\r\nhost: localhost\r\n\
        transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = raw_http1(&regate, &setup, &setup.ca.client(SUMMARIZER), chunked).await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body_len, 11);
    assert_eq!(seen[0].body_sha256, sha256_hex(b"hello world"));
    regate.stop().await;
}

/// A client certificate with `n` DNS SANs, `host-0.example.org` first, from a CA of its own;
/// returns the CA's PEM and the identity.
fn client_with_dns_sans(n: usize) -> (String, Identity) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dn = |cn: &str| {
        let mut d = DistinguishedName::new();
        d.push(DnType::CommonName, cn);
        d
    };
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = dn("many-names CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(30);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = dn("many-names client");
    p.subject_alt_names = (0..n)
        .map(|i| SanType::DnsName(format!("host-{i}.example.org").try_into().unwrap()))
        .collect();
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
    let cert = p.signed_by(&key, &issuer).unwrap();
    let key_pem = key.serialize_pem();
    let identity = Identity {
        chain_pem: cert.pem(),
        chain: vec![CertificateDer::from(cert.der().to_vec())],
        key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        key_pem,
    };
    (ca_pem, identity)
}

#[tokio::test]
async fn xfcc_of_a_certificate_with_thousands_of_names_stays_within_4_kib() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let (ca_pem, identity) = client_with_dns_sans(1500);
    std::fs::write(setup.path("ca.pem"), format!("{}{ca_pem}", setup.ca.pem)).unwrap();
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &identity).await;

    let (status, _, body) = get(&mut client, "/docs/a").await;
    assert_eq!(status, 200, "{body:?}");
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    let xfcc = seen[0].headers["x-forwarded-client-cert"].to_str().unwrap();
    assert!(xfcc.len() <= 4096, "{} bytes", xfcc.len());
    assert!(
        xfcc.contains(&format!("Hash={}", sha256_hex(&identity.chain[0]))),
        "{xfcc}"
    );
    assert!(xfcc.contains(";DNS=host-0.example.org;"), "{xfcc}");
    assert!(xfcc.contains(";DNS=host-1.example.org"), "{xfcc}");
    assert!(!xfcc.contains("host-1499.example.org"), "{xfcc}");
    regate.stop().await;
}
