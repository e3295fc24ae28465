//! A policy cannot break the framing of a message or speak for a hop: a result that sets or
//! removes `content-length`, `transfer-encoding`, `connection`, `upgrade` or the like is
//! `policy_invalid_result` (a 403 regate writes itself, nothing forwarded), and a deny cannot
//! be answered as a success or an interim response. Redirects stay a valid deny.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One response parsed off a raw HTTP/1.1 byte stream.
#[derive(Debug)]
struct Parsed {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Parsed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parse one response from the front of `buf`, framed by its `content-length` or chunked
/// coding. `None` while incomplete; the number of bytes it took otherwise.
fn parse_one(buf: &[u8]) -> Option<(Parsed, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line:?}");
    let status = status_line[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let rest = &buf[head_end..];
    let (body, used) = match (lengths.as_slice(), chunked) {
        ([len], false) => {
            let len: usize = len.parse().unwrap();
            if rest.len() < len {
                return None;
            }
            (rest[..len].to_vec(), len)
        }
        ([], true) => {
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
                let size = std::str::from_utf8(&rest[at..line_end]).unwrap();
                let size =
                    usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
                let data = line_end + 2;
                if rest.len() < data + size + 2 {
                    return None;
                }
                body.extend_from_slice(&rest[data..data + size]);
                at = data + size + 2;
                if size == 0 {
                    break (body, at);
                }
            }
        }
        other => panic!("a response must be framed exactly once, not {other:?}: {head}"),
    };
    Some((
        Parsed {
            status,
            headers,
            body,
        },
        head_end + used,
    ))
}

/// Every response in `buf`; panics on bytes that are not a whole response.
fn parse_all(mut buf: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (parsed, used) = parse_one(buf).unwrap_or_else(|| {
            panic!(
                "trailing bytes are not a response: {:?}",
                String::from_utf8_lossy(buf)
            )
        });
        out.push(parsed);
        buf = &buf[used..];
    }
    out
}

const CONTENT_LENGTH_ON_A_DENY: &str = r#"package regate.authz

allow := {"allowed": false, "body": "denied", "headers": {"content-length": "0"}} if {
	input.attributes.request.http.path == "/deny"
}

allow := true if input.attributes.request.http.path == "/ok"
"#;

#[tokio::test]
async fn a_content_length_beside_a_deny_body_does_not_split_the_response() {
    let setup = Setup::new(&[("authz.rego", CONTENT_LENGTH_ON_A_DENY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let identity = setup.ca.client(SUMMARIZER);
    let mut tls = regate
        .connect(setup.client_config(Some(&identity), &[b"http/1.1"]))
        .await
        .unwrap();

    // First request on a keep-alive connection; read until one whole response has arrived.
    tls.write_all(b"GET /deny HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut stream = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while parse_one(&stream).is_none() {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before a whole response: {stream:?}");
            stream.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap();

    // Second request on the same connection, which then closes.
    tls.write_all(b"GET /ok HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut stream)).await;

    let text = String::from_utf8_lossy(&stream).into_owned();
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    let responses = parse_all(&stream);
    assert_eq!(responses.len(), 2, "{text}");

    let denied = &responses[0];
    assert_eq!(denied.status, 403, "{text}");
    assert_eq!(
        denied.header("content-type"),
        Some("application/problem+json")
    );
    let doc: serde_json::Value = serde_json::from_slice(&denied.body).unwrap();
    assert_eq!(doc["reason"], "policy_invalid_result");
    assert_ne!(&denied.body[..], b"denied");

    let served = &responses[1];
    assert_eq!(served.status, 200, "{text}");
    assert!(served.body.starts_with(b"ok"), "{text}");

    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/ok");
    let records = regate.decisions(2).await;
    assert_eq!(records[0]["reason"], "policy_invalid_result");
    assert_eq!(records[0]["allowed"], false);
    assert_eq!(records[0]["http_status"], 403);
    assert_eq!(records[1]["allowed"], true);
    regate.stop().await;
}

const FRAMING_ON_AN_ALLOW: &str = r#"package regate.authz

path := input.attributes.request.http.path

allow := {"allowed": true, "response_headers_to_add": {"transfer-encoding": "chunked"}} if path == "/transfer-encoding"

allow := {"allowed": true, "response_headers_to_add": {"Transfer-Encoding": "chunked"}} if path == "/Transfer-Encoding"

allow := {"allowed": true, "headers": {"connection": "close"}} if path == "/connection"

allow := {"allowed": true, "headers": {"upgrade": "h2c"}} if path == "/upgrade"

allow := {"allowed": true, "request_headers_to_remove": ["content-length"]} if path == "/remove-length"

allow := true if path == "/plain"
"#;

#[tokio::test]
async fn framing_and_hop_by_hop_headers_from_a_policy_are_an_invalid_result() {
    let setup = Setup::new(&[("authz.rego", FRAMING_ON_AN_ALLOW)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let paths = [
        "/transfer-encoding",
        "/Transfer-Encoding",
        "/connection",
        "/upgrade",
        "/remove-length",
    ];
    for path in paths {
        let (status, headers, body) = send(&mut client, request("POST", path, b"payload")).await;
        assert_eq!(status, 403, "{path}: {body:?}");
        assert_eq!(
            headers["content-type"], "application/problem+json",
            "{path}"
        );
        assert!(!headers.contains_key("transfer-encoding"), "{path}");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["reason"], "policy_invalid_result", "{path}");
    }
    assert!(
        upstream.requests().is_empty(),
        "an invalid result was forwarded: {:?}",
        upstream.requests()
    );
    let records = regate.decisions(paths.len()).await;
    for (record, path) in records.iter().zip(paths) {
        assert_eq!(record["path"], path);
        assert_eq!(record["reason"], "policy_invalid_result", "{record}");
        assert_eq!(record["allowed"], false, "{record}");
        assert_eq!(record["http_status"], 403, "{record}");
    }

    // The same connection still serves an allowed request normally.
    let (status, _, body) = send(&mut client, request("POST", "/plain", b"payload")).await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"ok 7 "), "{body:?}");
    assert_eq!(upstream.requests().len(), 1);
    regate.stop().await;
}

const DENY_STATUSES: &str = r#"package regate.authz

path := input.attributes.request.http.path

allow := {"allowed": false, "http_status": 200, "body": "looks fine"} if path == "/as-200"

allow := {"allowed": false, "http_status": 101} if path == "/as-101"

allow := {"allowed": false, "http_status": 302, "headers": {"location": "https://login.example.org/"}} if path == "/login"
"#;

#[tokio::test]
async fn a_deny_is_never_a_success_or_an_interim_response_but_may_redirect() {
    let setup = Setup::new(&[("authz.rego", DENY_STATUSES)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    for path in ["/as-200", "/as-101"] {
        let (status, headers, body) = get(&mut client, path).await;
        assert_eq!(status, 403, "{path}: {body:?}");
        assert_eq!(headers["content-type"], "application/problem+json");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["reason"], "policy_invalid_result", "{path}");
    }

    // Redirecting a denied request (to a login page) is a deny opa-envoy-plugin policies use.
    let (status, headers, _) = get(&mut client, "/login").await;
    assert_eq!(status, 302);
    assert_eq!(headers["location"], "https://login.example.org/");

    let records = regate.decisions(3).await;
    for record in &records[..2] {
        assert_eq!(record["reason"], "policy_invalid_result", "{record}");
        assert_eq!(record["allowed"], false);
        assert_eq!(record["http_status"], 403);
    }
    assert_eq!(records[2]["allowed"], false);
    assert_eq!(records[2]["http_status"], 302);
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}
