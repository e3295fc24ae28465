//! The kill switch stays usable as revocations pile up: a thousand added one after another
//! are all in force and all survive a restart (what each costs is in BENCHMARKS.md, not
//! asserted here); past `--max-revocations` the API answers 507 and changes nothing; and a
//! `--revocations` file that does not exist yet is created at start, and a file deleted while
//! regate runs is said once, never an error at every reload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

const ALLOW_ALL: &str = "package regate.authz\n\nallow := true\n";

/// One keep-alive connection to an admin listener, as an operator's script would hold.
struct Admin(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Admin {
    async fn connect(addr: SocketAddr) -> Admin {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Admin(send)
    }

    async fn post(&mut self, body: String) -> (u16, serde_json::Value) {
        self.0.ready().await.unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri("/revocations")
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.0.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }
}

fn agent(i: usize) -> String {
    format!("spiffe://example.org/ns/agents/sa/agent-{i:04}")
}

async fn listed(admin: SocketAddr) -> Vec<serde_json::Value> {
    let (status, body) = admin_get(admin, "/revocations").await;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    listed["revocations"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_thousand_revocations_in_a_row_are_all_in_force_and_survive_a_restart() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let file = setup.path("revocations.json").display().to_string();
    let regate = setup
        .start(&upstream.url(), &["--revocations", &file])
        .await;
    let mut admin = Admin::connect(regate.admin).await;
    let mut ids = BTreeSet::new();
    // The summarizer is the last of them.
    for i in 0..1_000 {
        let id = if i == 999 {
            SUMMARIZER.to_string()
        } else {
            agent(i)
        };
        let (status, created) = admin
            .post(format!(r#"{{"spiffe_id": "{id}", "reason": "bulk {i}"}}"#))
            .await;
        assert_eq!(status, 201, "revocation {i}: {created}");
        ids.insert(created["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1_000);
    let in_force = listed(regate.admin).await;
    assert_eq!(in_force.len(), 1_000);
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/a").await.0, 403);
    regate.stop().await;

    let regate = setup
        .start(&upstream.url(), &["--revocations", &file])
        .await;
    let after: BTreeSet<String> = listed(regate.admin)
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after, ids);
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/a").await.0, 403);
    let mut other = regate.http1(&setup, &setup.ca.client(EXECUTOR)).await;
    assert_eq!(get(&mut other, "/a").await.0, 200);
    // The file operators read and edit lists every one of them after the restart.
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(on_disk["revocations"].as_array().unwrap().len(), 1_000);
    regate.stop().await;
}

#[tokio::test]
async fn past_max_revocations_the_api_answers_507_and_changes_nothing() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let file = setup.path("revocations.json").display().to_string();
    let regate = setup
        .start(
            &upstream.url(),
            &["--revocations", &file, "--max-revocations", "3"],
        )
        .await;
    let mut admin = Admin::connect(regate.admin).await;
    let mut created = Vec::new();
    for i in 0..3 {
        let (status, body) = admin
            .post(format!(r#"{{"spiffe_id": "{}", "reason": "r"}}"#, agent(i)))
            .await;
        assert_eq!(status, 201, "{body}");
        created.push(body["id"].as_str().unwrap().to_string());
    }
    let (status, problem) = admin
        .post(format!(
            r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "one too many"}}"#
        ))
        .await;
    assert_eq!(status, 507, "{problem}");
    assert_eq!(problem["status"], 507);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("--max-revocations"),
        "{problem}"
    );
    assert_eq!(listed(regate.admin).await.len(), 3);
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/a").await.0, 200, "not revoked");
    let (_, status) = admin_get(regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["revocations"]["max"], 3);

    // Lifting one makes room.
    let (code, _) = admin_send(
        regate.admin,
        "DELETE",
        &format!("/revocations/{}", created[0]),
        "",
    )
    .await;
    assert_eq!(code, 200);
    let (status, body) = admin
        .post(format!(
            r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "now"}}"#
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    let closed = eventually(Duration::from_secs(1), || {
        let closed = client.is_closed();
        async move { closed }
    })
    .await;
    assert!(closed, "the revoked agent's connection stays open");
    regate.stop().await;
}

/// How many times `needle` is in `text`.
fn times(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[tokio::test]
async fn a_missing_revocation_file_is_created_at_start_and_a_deleted_one_is_said_once() {
    let setup = Setup::new(&[("authz.rego", ALLOW_ALL)]);
    let upstream = Upstream::start().await;
    let file = setup.path("revocations.json");
    let mut args = setup.args(&upstream.url());
    args.extend(["--revocations".to_string(), file.display().to_string()]);
    let regate = Process::start(&args, &[]);
    let admin = regate.admin.expect("an admin listener");
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(on_disk, serde_json::json!({"revocations": []}));

    // Deleted while regate runs: said once, then every reload passes over it in silence.
    std::fs::remove_file(&file).unwrap();
    let said = "the revocation file does not exist";
    let noticed = eventually(Duration::from_secs(10), || {
        std::future::ready(times(&regate.stderr(), said) >= 1)
    })
    .await;
    assert!(noticed, "{}", regate.stderr());
    for edit in 1..=3 {
        setup.write_policy("authz.rego", &format!("{ALLOW_ALL}# edit {edit}\n"));
        let reloaded = eventually(Duration::from_secs(10), || async {
            let (_, status) = admin_get(admin, "/status").await;
            let status: serde_json::Value = serde_json::from_str(&status).unwrap();
            status["reloads"]["policy"]["successes"] == edit
        })
        .await;
        assert!(reloaded, "{}", regate.stderr());
    }
    let stderr = regate.stderr();
    assert_eq!(times(&stderr, said), 1, "{stderr}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("revocation")),
        "{stderr}"
    );

    // The next change writes it again.
    let (status, body) = admin_send(
        admin,
        "POST",
        "/revocations",
        &format!(r#"{{"spiffe_id": "{SUMMARIZER}", "reason": "r"}}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(std::fs::read_to_string(&file).unwrap().contains(SUMMARIZER));
    assert!(regate.stop().success());
}
