//! A shadow policy set (`--shadow-policies`) is evaluated beside the main one and compared,
//! and nothing else: the client gets the same responses, and the upstream the same requests,
//! as without it. Where the two disagree, the decision record carries `shadow` and the
//! metric counts it; the shadow set reloads on its own, keeping its last good set; a slow
//! shadow set holds no response, and every request still gets exactly one record.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::collections::HashSet;
use std::time::Duration;

/// The main policy: /docs/ for everyone, changing the forwarded request and the response.
const MAIN: &str = r#"package regate.authz

default allow := {"allowed": false, "reason": "not_docs"}

allow := {
    "allowed": true,
    "headers": {"x-main": "yes"},
    "response_headers_to_add": {"x-main-response": "yes"},
} if startswith(input.attributes.request.http.path, "/docs/")
"#;

/// A stricter candidate: it denies /docs/secret (with a status, a body and headers of its
/// own), allows /api/open, denies the rest of /api/ for another reason, and would change
/// every request it allows otherwise than the main policy does.
const SHADOW: &str = r#"package regate.authz

path := input.attributes.request.http.path

default allow := {"allowed": false, "reason": "shadow_default"}

allow := {
    "allowed": false,
    "reason": "secret_is_closed",
    "http_status": 418,
    "body": "the shadow says no",
    "headers": {"x-shadow-deny": "yes"},
    "response_headers_to_add": {"x-shadow-response": "yes"},
} if path == "/docs/secret"

allow := {
    "allowed": true,
    "headers": {"x-shadow": "yes", "x-main": "overwritten"},
    "request_headers_to_remove": ["x-client"],
    "response_headers_to_add": {"x-shadow-response": "yes"},
} if {
    startswith(path, "/docs/")
    path != "/docs/secret"
}

allow := {"allowed": true, "headers": {"x-shadow": "yes"}} if path == "/api/open"
"#;

/// What a client got: status, headers (without the per-request id and date), body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// What the upstream received: method, target, headers (without the per-request id), body.
type Received = (String, String, Vec<(String, String)>, String);

/// `setup`'s flags with the decision log at `log` instead.
fn args_with_log(setup: &Setup, upstream: &Upstream, log: &std::path::Path) -> Vec<String> {
    let mut args = setup.args(&upstream.url());
    let at = args.iter().position(|a| a == "--decision-log").unwrap();
    args[at + 1] = log.display().to_string();
    args
}

fn shadow_dir(setup: &Setup, policy: &str) -> String {
    let dir = setup.path("shadow");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("authz.rego"), policy).unwrap();
    dir.display().to_string()
}

/// The requests of the comparison, in order; each on the same connection.
const REQUESTS: &[(&str, &str, &[u8])] = &[
    ("GET", "/docs/readme", b""),
    ("GET", "/docs/secret", b""),
    ("POST", "/docs/upload", b"some bytes for the upstream"),
    ("GET", "/api/open", b""),
    ("GET", "/api/closed", b""),
];

async fn exchange(
    setup: &Setup,
    identity: &Identity,
    extra: &[String],
    log: &str,
) -> (Vec<Answer>, Vec<Received>, Vec<serde_json::Value>, String) {
    let upstream = Upstream::start().await;
    let log = setup.path(log);
    let mut args = args_with_log(setup, &upstream, &log);
    args.extend(extra.iter().cloned());
    let regate = Regate::start(args, log.clone()).await;
    let mut client = regate.http1(setup, identity).await;
    let mut answers = Vec::new();
    for (method, path, body) in REQUESTS {
        let mut req = request(method, path, body);
        req.headers_mut()
            .insert("x-client", "from the client".parse().unwrap());
        let (status, headers, body) = send(&mut client, req).await;
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(name, _)| *name != "x-request-id" && *name != "date")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        headers.sort();
        // A deny's problem document names the request, whose id is new on every run.
        let body = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(mut doc)) => {
                doc.remove("request_id");
                serde_json::to_vec(&doc).unwrap()
            }
            _ => body.to_vec(),
        };
        answers.push((status.as_u16(), headers, body));
    }
    let records = regate.decisions(REQUESTS.len()).await;
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    regate.stop().await;
    let received = upstream
        .requests()
        .into_iter()
        .map(|seen| {
            let mut headers: Vec<(String, String)> = seen
                .headers
                .iter()
                .filter(|(name, _)| *name != "x-request-id")
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            headers.sort();
            (seen.method, seen.uri, headers, seen.body_sha256)
        })
        .collect();
    (answers, received, records, metrics)
}

fn record_for<'a>(records: &'a [serde_json::Value], path: &str) -> &'a serde_json::Value {
    records
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no record for {path}: {records:?}"))
}

fn metric_line(metrics: &str, main: &str, shadow: &str) -> String {
    let prefix =
        format!(r#"regate_shadow_disagreements_total{{main="{main}",shadow="{shadow}"}} "#);
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
        .to_string()
}

#[tokio::test]
async fn a_shadow_that_denies_what_the_main_policy_allows_changes_nothing_and_is_recorded() {
    let setup = Setup::new(&[("authz.rego", MAIN)]);
    let shadow = shadow_dir(&setup, SHADOW);
    // One certificate for both runs: the upstream sees its hash (x-forwarded-client-cert).
    let identity = setup.ca.client(SUMMARIZER);

    let (plain_answers, plain_received, plain_records, _) =
        exchange(&setup, &identity, &[], "plain.log").await;
    let (answers, received, records, metrics) = exchange(
        &setup,
        &identity,
        &["--shadow-policies".to_string(), shadow],
        "shadowed.log",
    )
    .await;

    // The client and the upstream cannot tell the shadow set is there.
    assert_eq!(answers, plain_answers);
    assert_eq!(received, plain_received);
    assert_eq!(
        answers.iter().map(|a| a.0).collect::<Vec<_>>(),
        [200, 200, 200, 403, 403]
    );
    assert_eq!(received.len(), 3, "{received:?}");
    for (_, _, headers, _) in &received {
        assert!(headers.contains(&("x-main".into(), "yes".into())));
        assert!(headers.contains(&("x-client".into(), "from the client".into())));
        assert!(!headers.iter().any(|(n, _)| n.starts_with("x-shadow")));
    }
    for (_, headers, _) in &answers {
        assert!(!headers.iter().any(|(n, _)| n.starts_with("x-shadow")));
    }
    assert!(plain_records.iter().all(|r| r.get("shadow").is_none()));

    // Where they agree (both allow, for the same reason) the record says nothing more.
    let agreed = record_for(&records, "/docs/readme");
    assert_eq!(agreed["allowed"], true);
    assert!(agreed.get("shadow").is_none(), "{agreed}");
    assert!(record_for(&records, "/docs/upload").get("shadow").is_none());

    let main_revision = agreed["policy_revision"].as_str().unwrap();
    let secret = record_for(&records, "/docs/secret");
    assert_eq!(secret["allowed"], true);
    assert_eq!(secret["http_status"], 200);
    assert_eq!(secret["shadow"]["allowed"], false);
    assert_eq!(secret["shadow"]["reason"], "secret_is_closed");
    let shadow_revision = secret["shadow"]["revision"].as_str().unwrap();
    assert!(shadow_revision.starts_with("sha256:"));
    assert_ne!(shadow_revision, main_revision);

    let open = record_for(&records, "/api/open");
    assert_eq!(
        (open["allowed"].clone(), open["reason"].clone()),
        (false.into(), "not_docs".into())
    );
    assert_eq!(open["shadow"]["allowed"], true);
    assert_eq!(open["shadow"]["reason"], "allowed");
    // Both deny, for different reasons: a disagreement too.
    let closed = record_for(&records, "/api/closed");
    assert_eq!(closed["allowed"], false);
    assert_eq!(closed["shadow"]["allowed"], false);
    assert_eq!(closed["shadow"]["reason"], "shadow_default");
    assert_eq!(closed["shadow"]["revision"], shadow_revision);

    assert!(metric_line(&metrics, "allow", "deny").ends_with(" 1"));
    assert!(metric_line(&metrics, "deny", "allow").ends_with(" 1"));
    assert!(metric_line(&metrics, "deny", "deny").ends_with(" 1"));
    assert!(metric_line(&metrics, "allow", "allow").ends_with(" 0"));
}

#[tokio::test]
async fn requests_refused_before_the_policy_are_not_asked_of_the_shadow() {
    let setup = Setup::new(&[("authz.rego", "package regate.authz\nallow := true\n")]);
    let shadow = shadow_dir(&setup, "package regate.authz\nallow := false\n");
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &[
                "--shadow-policies",
                &shadow,
                "--trust-domain",
                "example.org",
            ],
        )
        .await;
    let mut foreign = regate
        .http1(&setup, &setup.ca.client("spiffe://other.example/ns/x/sa/y"))
        .await;
    assert_eq!(get(&mut foreign, "/a").await.0, 403);
    let mut local = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut local, "/a").await.0, 200);
    let records = regate.decisions(2).await;
    assert_eq!(records[0]["reason"], "untrusted_trust_domain");
    assert!(records[0].get("shadow").is_none(), "{}", records[0]);
    assert_eq!(records[1]["shadow"]["reason"], "denied");
    regate.stop().await;
}

#[tokio::test]
async fn every_call_of_a_batch_is_asked_of_the_shadow_set_even_after_a_main_deny() {
    // The main set denies `wipe`; the shadow set denies `delete` instead, and allows `wipe`.
    let main = r#"package regate.authz
default allow := false
allow if input.mcp.tool != "wipe"
"#;
    let candidate = r#"package regate.authz
default allow := false
allow := {"allowed": false, "reason": "no_delete"} if input.mcp.tool == "delete"
allow if input.mcp.tool != "delete"
"#;
    let setup = Setup::new(&[("authz.rego", main)]);
    let shadow = shadow_dir(&setup, candidate);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--shadow-policies", &shadow])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let call = |id: u32, tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        )
    };
    let batches = [
        format!("[{},{}]", call(1, "read"), call(2, "delete")),
        format!("[{},{}]", call(3, "wipe"), call(4, "delete")),
        format!("[{},{}]", call(5, "read"), call(6, "search")),
    ];
    let mut statuses = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        let body: &'static [u8] = Box::leak(batch.into_bytes().into_boxed_slice());
        let mut req = request("POST", "/mcp", body);
        req.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        req.headers_mut()
            .insert("x-request-id", format!("batch-{i}").parse().unwrap());
        statuses.push(send(&mut client, req).await.0.as_u16());
    }
    assert_eq!(statuses, [200, 403, 200]);
    // Records are written as their shadow answers come in, not in request order.
    let mut records = regate.decisions(3).await;
    records.sort_by_key(|r| r["client_request_id"].as_str().unwrap().to_string());
    // Main allows both calls; the shadow denies the second.
    assert_eq!(records[0]["shadow"]["allowed"], false);
    assert_eq!(records[0]["shadow"]["reason"], "no_delete");
    // Main denies the first call and stops there; the shadow set allows it and denies the
    // second, which the main set never asked about.
    assert_eq!(records[1]["reason"], "denied");
    assert_eq!(records[1]["shadow"]["reason"], "no_delete");
    assert!(records[2].get("shadow").is_none(), "{}", records[2]);
    regate.stop().await;
}

/// Send GET `path` until its record's shadow reason is `want`; that record.
async fn until_shadow_reason(
    regate: &Regate,
    client: &mut Http1,
    path: &str,
    want: &str,
) -> serde_json::Value {
    for _ in 0..500 {
        let before =
            records_in(&std::fs::read_to_string(&regate.decisions).unwrap_or_default()).len();
        assert_eq!(get(client, path).await.0, 200);
        let records = regate.decisions(before + 1).await;
        let last = records.last().unwrap().clone();
        if last["shadow"]["reason"] == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the shadow never answered {want}");
}

fn deny_because(reason: &str) -> String {
    format!("package regate.authz\nallow := {{\"allowed\": false, \"reason\": \"{reason}\"}}\n")
}

#[tokio::test]
async fn the_shadow_set_reloads_on_its_own_and_a_broken_push_keeps_the_last_good_one() {
    let setup = Setup::new(&[("authz.rego", "package regate.authz\nallow := true\n")]);
    let shadow = shadow_dir(&setup, &deny_because("first_draft"));
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--shadow-policies", &shadow])
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let first = until_shadow_reason(&regate, &mut client, "/a", "first_draft").await;
    let main_revision = first["policy_revision"].clone();

    replace_file(
        &setup.path("shadow/authz.rego"),
        &deny_because("second_draft"),
    );
    let second = until_shadow_reason(&regate, &mut client, "/a", "second_draft").await;
    assert_ne!(second["shadow"]["revision"], first["shadow"]["revision"]);
    assert_eq!(second["policy_revision"], main_revision);

    replace_file(
        &setup.path("shadow/authz.rego"),
        "package regate.authz\nallow if {\n  input.x ==\n}\n",
    );
    let failed = eventually(Duration::from_secs(10), || async {
        let (_, status) = admin_get(regate.admin, "/status").await;
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        status["reloads"]["shadow_policy"]["last_result"] == "failure"
    })
    .await;
    assert!(failed, "the broken shadow push was not refused");
    let (_, status) = admin_get(regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["shadow_policy"]["revision"],
        second["shadow"]["revision"]
    );
    assert_eq!(status["policy"]["revision"], main_revision);
    assert!(status["reloads"]["shadow_policy"]["last_error"]
        .as_str()
        .unwrap()
        .contains("authz.rego:4"));
    assert_eq!(status["reloads"]["policy"]["failures"], 0);

    // The main set decides as before, and the last good shadow is still compared.
    let after = until_shadow_reason(&regate, &mut client, "/a", "second_draft").await;
    assert_eq!(after["shadow"]["revision"], second["shadow"]["revision"]);
    assert_eq!(after["policy_revision"], main_revision);
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"regate_reloads_total{kind="shadow_policy",result="failure"} 1"#),
        "{metrics}"
    );
    regate.stop().await;
}

/// A shadow policy that takes a while: a comprehension over 90,000 pairs, by the path (so
/// that no request is answered from the shadow set's decision cache).
const SLOW_SHADOW: &str = r#"package regate.authz

allow := {"allowed": false, "reason": "slow_and_strict"} if {
    n := count(input.attributes.request.http.path) + 5000
    count([1 | some x in numbers.range(1, 300); some y in numbers.range(1, 300); x == y + n]) == 0
}
"#;

fn gauge(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shadow_holds_no_response_and_every_request_keeps_one_record() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let shadow = shadow_dir(&setup, SLOW_SHADOW);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--shadow-policies", &shadow, "--policy-timeout", "60s"],
        )
        .await;
    let identity = setup.ca.client(SUMMARIZER);
    let mut first = regate.http1(&setup, &identity).await;
    let mut second = regate.http2(&setup, &identity).await;

    // An allow and a deny: both answered while the shadow set is still evaluating them.
    assert_eq!(get(&mut first, "/docs/a").await.0, 200);
    assert_eq!(get(&mut first, "/api/a").await.0, 403);
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    assert!(
        gauge(&metrics, "regate_shadow_evaluations_running") >= 1,
        "the responses waited for the shadow set:\n{metrics}"
    );
    let mut h2 = Vec::new();
    for i in 0..4 {
        let mut req = request("GET", &format!("https://localhost/docs/h2-{i}"), b"");
        req.headers_mut().remove("host");
        h2.push(tokio::spawn(second.send_request(req)));
    }
    for answer in h2 {
        assert_eq!(answer.await.unwrap().unwrap().status(), 200);
    }

    // Shutdown writes the records still waiting for the shadow set's answer.
    let log = regate.decisions.clone();
    regate.stop().await;
    let text = std::fs::read_to_string(log).unwrap();
    let records = records_in(&text);
    assert_eq!(records.len(), 6, "{text}");
    let ids: HashSet<_> = records.iter().map(|r| r["request_id"].clone()).collect();
    assert_eq!(ids.len(), 6);
    for record in &records {
        assert_eq!(record["shadow"]["reason"], "slow_and_strict", "{record}");
    }
    assert_eq!(upstream.requests().len(), 5);
}

#[test]
fn a_broken_shadow_set_stops_startup_like_a_broken_main_set() {
    let setup = Setup::new(&[("authz.rego", "package regate.authz\nallow := true\n")]);
    let shadow = shadow_dir(&setup, "package regate.authz\nallow if {\n");
    let mut args = setup.args("http://127.0.0.1:9");
    args.extend([
        "--shadow-policies".into(),
        shadow,
        "--shadow-query".into(),
        "data.regate.authz.allow".into(),
    ]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .arg("run")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("shadow-policies: policy:"), "{stderr}");
    assert!(stderr.contains("shadow/authz.rego:3"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}
