//! With `--budget-store redis://…`, the budgets policies attach are shared by every replica:
//! two regate instances in front of one real `redis-server` (Debian's, started here on
//! 127.0.0.1) spend one limit exactly. Redis stopped mid-test is `budget_unavailable` (503,
//! fail closed) unless the limit says `on_error: allow`; restarted, charges work again (also
//! on the connections each replica kept from before the restart). An
//! approval token spent on one replica is spent on every replica sharing the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};

/// Five `send_email` per agent per hour, on the fleet's budget; `search` passes when the store
/// is down.
const POLICY: &str = r#"package regate.authz

import rego.v1

default allow := false

allow := {
	"allowed": true,
	"rate_limits": [{"key": concat(":", ["send_email", input.peer.spiffe_id]), "limit": 5, "per": "1h", "name": "send_email"}],
} if input.mcp.tool == "send_email"

allow := {
	"allowed": true,
	"rate_limits": [{"key": concat(":", ["search", input.peer.spiffe_id]), "limit": 1000, "per": "1s", "on_error": "allow"}],
} if input.mcp.tool == "search"
"#;

/// A redis-server of its own, on a port nobody else uses, with no persistence.
struct Redis {
    child: Child,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

impl Redis {
    fn start(port: u16, dir: tempfile::TempDir) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let redis = Redis {
            child,
            port,
            dir: Some(dir),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn stop(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.take().unwrap();
        (self.port, dir)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two regates on the same policies and `flags`, each writing its own decision log.
async fn two_replicas(setup: &Setup, upstream: &Upstream, flags: &[&str]) -> (Regate, Regate) {
    let a = setup.start(&upstream.url(), flags).await;
    let mut args = setup.args(&upstream.url());
    args.extend(flags.iter().map(|s| s.to_string()));
    let log_b = setup.path("decisions-b.log");
    for pair in args.chunks_mut(2) {
        if pair[0] == "--decision-log" {
            pair[1] = log_b.display().to_string();
        }
    }
    (a, Regate::start(args, log_b).await)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tool_call(
    tool: &str,
) -> http::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>> {
    approved_call(tool, None)
}

fn approved_call(
    tool: &str,
    approval: Option<&str>,
) -> http::Request<http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
    );
    let mut req = http::Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = approval {
        req = req.header("x-regate-approval", token);
    }
    req.body(
        Full::new(bytes::Bytes::from(body))
            .map_err(|e| match e {})
            .boxed(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_budget_and_fail_closed_while_redis_is_down() {
    let redis = Redis::start(free_port(), tempfile::tempdir().unwrap());
    let store = format!("redis://127.0.0.1:{}/3", redis.port);
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let flags = [
        "--budget-store",
        store.as_str(),
        "--budget-timeout",
        "200ms",
    ];
    let (a, b) = two_replicas(&setup, &upstream, &flags).await;
    let agent = setup.ca.client(EXECUTOR);
    let mut via_a = a.http1(&setup, &agent).await;
    let mut via_b = b.http1(&setup, &agent).await;

    // Five in all, whichever replica takes them.
    for i in 0..5 {
        let client = if i % 2 == 0 { &mut via_a } else { &mut via_b };
        assert_eq!(
            send(client, tool_call("send_email")).await.0,
            200,
            "call {i}"
        );
    }
    assert_eq!(send(&mut via_a, tool_call("send_email")).await.0, 429);
    assert_eq!(send(&mut via_b, tool_call("send_email")).await.0, 429);
    assert_eq!(upstream.requests().len(), 5);

    // Redis goes away: what must be charged is refused; what may pass without it passes.
    let (port, dir) = redis.stop();
    let (status, _, body) = send(&mut via_a, tool_call("send_email")).await;
    assert_eq!(status, 503, "{:?}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("budget_unavailable"));
    assert_eq!(send(&mut via_b, tool_call("search")).await.0, 200);

    // Back again (empty: budgets start whole), charges work at once.
    let redis = Redis::start(port, dir);
    assert_eq!(send(&mut via_a, tool_call("send_email")).await.0, 200);
    assert_eq!(send(&mut via_b, tool_call("send_email")).await.0, 200);
    // Restarted while nobody asked: the connections the replicas kept are closed, and the
    // next charge still goes through, on a new one.
    let (port, dir) = redis.stop();
    let redis = Redis::start(port, dir);
    assert_eq!(send(&mut via_a, tool_call("send_email")).await.0, 200);
    let records = a.decisions(1).await;
    assert!(records
        .iter()
        .any(|r| r["reason"] == "budget_unavailable" && r["http_status"] == 503));
    a.stop().await;
    b.stop().await;
    drop(redis);
}

/// `deploy` needs a person's approval.
const APPROVING: &str = r#"package regate.authz

import rego.v1

default allow := {"allowed": false, "reason": "needs_approval", "approval": {"approvers": "group:oncall"}}

allow := {"allowed": true, "reason": "approved"} if input.approval.approver == "alice"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_spent_on_one_replica_is_spent_on_every_replica() {
    let redis = Redis::start(free_port(), tempfile::tempdir().unwrap());
    let store = format!("redis://127.0.0.1:{}/4", redis.port);
    let setup = Setup::new(&[("authz.rego", APPROVING)]);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key_path = setup.path("approval.key");
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let upstream = Upstream::start().await;
    let flags = [
        "--budget-store",
        store.as_str(),
        "--approval-local-key",
        key_path.to_str().unwrap(),
    ];
    let (a, b) = two_replicas(&setup, &upstream, &flags).await;
    let agent = setup.ca.client(EXECUTOR);
    let mut via_a = a.http1(&setup, &agent).await;
    let mut via_b = b.http1(&setup, &agent).await;

    // Asked on one replica, approved offline, used on one, refused on the other.
    let (status, _, body) = send(&mut via_a, tool_call("deploy")).await;
    assert_eq!(status, 403);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let digest = error["error"]["data"]["approval_request"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let signer = regate::approvals::token::LocalSigner::new(
        regate::audit::signing::SigningKey::load(&key_path).unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token = signer.mint(&digest, "alice", None, Duration::from_secs(600), now);
    assert_eq!(
        send(&mut via_b, approved_call("deploy", Some(&token)))
            .await
            .0,
        200
    );
    let (status, _, body) = send(&mut via_a, approved_call("deploy", Some(&token))).await;
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("approval_used"));
    assert_eq!(upstream.requests().len(), 1);
    a.stop().await;
    b.stop().await;
    drop(redis);
}
