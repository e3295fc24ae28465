//! Traces: with `--otlp-endpoint`, every request is a server span, a child of the client's
//! `traceparent` when it sent one, with the caller, the decision and the MCP call as
//! attributes, and the upstream call a child span whose id is the `traceparent` the
//! upstream receives. The collector is a receiver nobody here wrote the decoding of: it
//! decodes OTLP/HTTP protobuf with the official `opentelemetry-proto` Python package
//! (`tests/fixtures/otlp/receiver.py`) and writes each span as a JSON line. A dead collector
//! changes nothing for requests; what it drops is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use serde_json::Value;

const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.mcp.method == "tools/call"
	input.mcp.tool == "search"
}

allow if {
	input.peer.spiffe_id == "spiffe://example.org/ns/agents/sa/summarizer"
	input.attributes.request.http.method == "GET"
}
"#;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The OTLP receiver, a Python process on 127.0.0.1.
struct Receiver {
    child: Child,
    port: u16,
    spans: PathBuf,
    _dir: tempfile::TempDir,
}

/// The Python that has `opentelemetry-proto`: `REGATE_OTLP_PYTHON`, else the virtualenv
/// `.ci/run` makes in `target/otlp-venv`, else `python3`.
fn python() -> PathBuf {
    if let Ok(p) = std::env::var("REGATE_OTLP_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/otlp-venv/bin/python3");
    match venv.exists() {
        true => venv,
        false => "python3".into(),
    }
}

impl Receiver {
    fn start() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let spans = dir.path().join("spans.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/otlp/receiver.py");
        let mut child = Command::new(python())
            .arg(&script)
            .arg(&spans)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(port) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the OTLP receiver did not start (it needs opentelemetry-proto: .ci/run installs \
                 it in target/otlp-venv): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        Receiver {
            port: port.parse().unwrap(),
            child,
            spans,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.spans).unwrap_or_default()
    }

    fn spans(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The spans of `trace`, once there are `n` of them (within 30 s).
    async fn trace(&self, trace: &str, n: usize) -> Vec<Value> {
        let mut found = Vec::new();
        let arrived = eventually(Duration::from_secs(30), || {
            found = self
                .spans()
                .into_iter()
                .filter(|s| s["trace_id"] == trace)
                .collect();
            std::future::ready(found.len() >= n)
        })
        .await;
        assert!(
            arrived,
            "wanted {n} spans of {trace}, have: {}",
            self.text()
        );
        found
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kind<'a>(spans: &'a [Value], kind: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} span in {spans:?}"))
}

/// A POST of `body` (JSON) to `path`, with `headers` added.
fn post(path: &str, body: String, headers: &[(&str, &str)]) -> http::Request<ReqBody> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(
        Full::new(bytes::Bytes::from(body))
            .map_err(|e| match e {})
            .boxed(),
    )
    .unwrap()
}

type ReqBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

fn tool_call(tool: &str, arguments: &str) -> String {
    format!(
        r#"{{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {{"name": "{tool}", "arguments": {arguments}}}}}"#
    )
}

fn traceparent(trace: &str, flags: &str) -> String {
    format!("00-{trace}-{CLIENT_SPAN}-{flags}")
}

#[tokio::test]
async fn a_request_is_a_server_span_under_the_clients_traceparent_with_its_upstream_call_as_child()
{
    let receiver = Receiver::start();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--otlp-endpoint", &receiver.endpoint()])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let parent = traceparent(TRACE, "01");
    let req = post(
        "/mcp",
        tool_call("search", r#"{"q": "rego"}"#),
        &[("traceparent", &parent)],
    );
    assert_eq!(send(&mut client, req).await.0, 200);

    let spans = receiver.trace(TRACE, 2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = kind(&spans, "SPAN_KIND_SERVER");
    let call = kind(&spans, "SPAN_KIND_CLIENT");
    assert_eq!(server["parent_span_id"], CLIENT_SPAN);
    assert_eq!(call["parent_span_id"], server["span_id"]);
    // The upstream's parent is regate's span for the call, in the client's trace.
    let sent = upstream.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sent,
        format!("00-{TRACE}-{}-01", call["span_id"].as_str().unwrap())
    );
    assert_ne!(sent, parent);

    let record = &regate.decisions(1).await[0];
    assert_eq!(record["trace_id"], TRACE);
    let attributes = &server["attributes"];
    assert_eq!(attributes["regate.spiffe_id"], SUMMARIZER);
    assert_eq!(attributes["regate.decision"], "allow");
    assert_eq!(attributes["regate.reason"], record["reason"]);
    assert_eq!(
        attributes["regate.policy.revision"],
        record["policy_revision"]
    );
    // A record leaves `cached` out when it is false.
    let cached = record["cached"].as_bool().unwrap_or(false);
    assert_eq!(attributes["regate.cached"], cached);
    assert_eq!(attributes["regate.request_id"], record["request_id"]);
    assert_eq!(attributes["mcp.method.name"], "tools/call");
    assert_eq!(attributes["gen_ai.tool.name"], "search");
    assert_eq!(attributes["http.request.method"], "POST");
    assert_eq!(attributes["http.response.status_code"], 200);
    assert_eq!(attributes["url.path"], "/mcp");
    assert_eq!(call["attributes"]["http.response.status_code"], 200);
    assert!(call["start_time_unix_nano"].as_u64() >= server["start_time_unix_nano"].as_u64());
    assert!(call["end_time_unix_nano"].as_u64() <= server["end_time_unix_nano"].as_u64());
    assert_eq!(server["resource"]["service.name"], "regate");
    assert_eq!(server["scope"]["name"], "regate");
    assert_eq!(server["content_type"], "application/x-protobuf");
    regate.stop().await;
}

#[tokio::test]
async fn a_denied_request_is_one_span_saying_why_with_no_upstream_call() {
    let receiver = Receiver::start();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--otlp-endpoint", &receiver.endpoint()])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let parent = traceparent(TRACE, "01");
    let body = tool_call("send_email", r#"{"to": "all@example.org"}"#);
    let req = post("/mcp", body, &[("traceparent", &parent)]);
    assert_eq!(send(&mut client, req).await.0, 403);

    // A request's spans are exported together: the server span's arrival is the batch's.
    let spans = receiver.trace(TRACE, 1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    let record = &regate.decisions(1).await[0];
    let attributes = &spans[0]["attributes"];
    assert_eq!(spans[0]["kind"], "SPAN_KIND_SERVER");
    assert_eq!(attributes["regate.decision"], "deny");
    assert_eq!(attributes["regate.reason"], record["reason"]);
    assert_eq!(attributes["http.response.status_code"], 403);
    assert_eq!(attributes["gen_ai.tool.name"], "send_email");
    // A refusal is an answer, not a fault.
    assert_eq!(spans[0]["status"]["code"], "STATUS_CODE_UNSET");
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}

#[tokio::test]
async fn without_a_traceparent_regate_starts_the_trace_the_record_and_upstream_share() {
    let receiver = Receiver::start();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--otlp-endpoint", &receiver.endpoint()])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    assert_eq!(get(&mut client, "/docs/a").await.0, 200);
    let record = &regate.decisions(1).await[0];
    let trace = record["trace_id"]
        .as_str()
        .expect("the record names regate's trace");
    let spans = receiver.trace(trace, 2).await;
    let server = kind(&spans, "SPAN_KIND_SERVER");
    let call = kind(&spans, "SPAN_KIND_CLIENT");
    assert_eq!(server["parent_span_id"], "");
    let sent = upstream.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sent,
        format!("00-{trace}-{}-01", call["span_id"].as_str().unwrap())
    );
    regate.stop().await;
}

#[tokio::test]
async fn an_unsampled_trace_exports_nothing_yet_the_upstream_sees_regates_span() {
    let receiver = Receiver::start();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--otlp-endpoint", &receiver.endpoint()])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let mut req = request("GET", "/docs/a", b"");
    let header = traceparent(unsampled, "00");
    req.headers_mut()
        .insert("traceparent", header.parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);
    let sent = upstream.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        sent.starts_with(&format!("00-{unsampled}-")) && sent.ends_with("-00"),
        "{sent}"
    );
    assert!(!sent.contains(CLIENT_SPAN), "{sent}");

    // A sampled request after it: once its spans are in, the unsampled one's would be.
    let mut req = request("GET", "/docs/b", b"");
    req.headers_mut()
        .insert("traceparent", traceparent(TRACE, "01").parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);
    receiver.trace(TRACE, 2).await;
    assert!(
        receiver.spans().iter().all(|s| s["trace_id"] != unsampled),
        "{}",
        receiver.text()
    );
    regate.stop().await;
}

#[tokio::test]
async fn no_header_value_query_or_body_reaches_a_span() {
    let receiver = Receiver::start();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--otlp-endpoint", &receiver.endpoint()])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    let parent = traceparent(TRACE, "01");
    let req = post(
        "/mcp?access_token=query-secret-4",
        tool_call("search", r#"{"q": "body-secret-5"}"#),
        &[
            ("traceparent", &parent),
            ("authorization", "Bearer bearer-secret-1"),
            ("cookie", "session=cookie-secret-2"),
            ("x-api-token", "header-secret-3"),
            ("user-agent", "agent-secret-6"),
        ],
    );
    assert_eq!(send(&mut client, req).await.0, 200);
    let spans = receiver.trace(TRACE, 2).await;
    assert_eq!(
        kind(&spans, "SPAN_KIND_SERVER")["attributes"]["url.path"],
        "/mcp"
    );
    let exported = receiver.text();
    for secret in [
        "bearer-secret-1",
        "cookie-secret-2",
        "header-secret-3",
        "query-secret-4",
    ] {
        assert!(!exported.contains(secret), "{secret} in {exported}");
    }
    for secret in ["body-secret-5", "agent-secret-6", "access_token"] {
        assert!(!exported.contains(secret), "{secret} in {exported}");
    }
    regate.stop().await;
}

#[tokio::test]
async fn with_tracing_off_the_clients_traceparent_passes_unchanged() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let parent = traceparent(TRACE, "01");
    let mut req = request("GET", "/docs/a", b"");
    req.headers_mut()
        .insert("traceparent", parent.parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);
    assert_eq!(
        upstream.requests()[0].headers["traceparent"],
        parent.as_str()
    );
    assert_eq!(regate.decisions(1).await[0]["trace_id"], TRACE);
    // No trace of its own either: a request without one stays without one.
    assert_eq!(get(&mut client, "/docs/b").await.0, 200);
    assert!(upstream.requests()[1].headers.get("traceparent").is_none());
    assert!(regate.decisions(2).await[1].get("trace_id").is_none());
    regate.stop().await;
}

/// The value of one series on the admin listener's /metrics.
async fn metric(regate: &Regate, series: &str) -> u64 {
    let (_, text) = admin_get(regate.admin, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_dead_collector_leaves_requests_unaffected_and_counts_what_it_drops() {
    // A port nothing listens on any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let endpoint = format!("http://{dead}");
    let regate = setup
        .start(&upstream.url(), &["--otlp-endpoint", &endpoint])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;

    const REQUESTS: usize = 20;
    for i in 0..REQUESTS {
        let (status, _, body) = get(&mut client, &format!("/docs/{i}")).await;
        assert_eq!(status, 200);
        assert!(body.starts_with(b"ok"), "{body:?}");
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), REQUESTS);
    assert!(seen.iter().all(|s| s.headers.contains_key("traceparent")));

    // Each request is a server span and an upstream call's span.
    let series = r#"regate_trace_spans_dropped_total{reason="export_failed"}"#;
    let counted = eventually(Duration::from_secs(60), || async {
        metric(&regate, series).await >= 2 * REQUESTS as u64
    })
    .await;
    assert!(
        counted,
        "{} spans counted as dropped",
        metric(&regate, series).await
    );
    assert_eq!(
        metric(&regate, "regate_trace_spans_exported_total").await,
        0
    );
    regate.stop().await;
}

#[tokio::test]
async fn spans_still_queued_at_shutdown_are_exported_within_the_grace() {
    let receiver = Receiver::start();
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--otlp-endpoint", &receiver.endpoint()])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let mut req = request("GET", "/docs/a", b"");
    req.headers_mut()
        .insert("traceparent", traceparent(TRACE, "01").parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);
    drop(client);
    // Sooner than a batch waits to fill: only the shutdown's flush sends it now.
    regate.stop().await;
    let spans: Vec<Value> = receiver
        .spans()
        .into_iter()
        .filter(|s| s["trace_id"] == TRACE)
        .collect();
    assert_eq!(spans.len(), 2, "{}", receiver.text());
}
