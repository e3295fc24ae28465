//! The admin listener answers the on-call questions: is it healthy, what is it denying and
//! why, how slow is it, when do its certificates expire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

/// The value of one sample line in an OpenMetrics text, e.g. `regate_requests_total{...}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_allowed_and_denied_requests_and_reloads() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    assert_eq!(admin_get(regate.admin, "/healthz").await.0, 200);
    assert_eq!(admin_get(regate.admin, "/readyz").await.0, 200);

    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/docs/a").await.0, 200);
    assert_eq!(get(&mut client, "/admin").await.0, 403);
    setup.write_policy("authz.rego", &format!("{ALLOW_DOCS}\n# edited\n"));
    let reloaded = eventually(Duration::from_secs(10), || async {
        regate.reloader.status.policy.lock().unwrap().successes >= 1
    })
    .await;
    assert!(reloaded);

    let (status, text) = admin_get(regate.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &text,
            r#"regate_requests_total{decision="allow",reason="allowed"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"regate_requests_total{decision="deny",reason="denied"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"regate_reloads_total{kind="policy",result="success"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "regate_request_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "regate_policy_evaluation_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "regate_upstream_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"regate_tls_handshakes_total{result="success"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&text, "regate_open_connections"), Some(1.0));
    let revision = regate.reloader.policies.load().revision.clone();
    assert_eq!(
        sample(
            &text,
            &format!(r#"regate_policy_info{{revision="{revision}"}}"#)
        ),
        Some(1.0)
    );
    assert!(sample(
        &text,
        r#"regate_certificate_expiry_timestamp_seconds{cert="server"}"#
    )
    .is_some_and(|t| t > 1.7e9));
    assert!(text.ends_with("# EOF\n"));
    regate.stop().await;
}

#[tokio::test]
async fn handshake_failures_are_counted_by_reason() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    // No client certificate, then a certificate from a foreign CA.
    for identity in [None, Some(Ca::new("foreign").client(SUMMARIZER))] {
        if let Ok(tls) = regate
            .connect(setup.client_config(identity.as_ref(), &[b"http/1.1"]))
            .await
        {
            let mut c = http1_over(tls).await;
            let _ = c.send_request(request("GET", "/", b"")).await;
        }
    }
    let counted = eventually(Duration::from_secs(10), || async {
        let (_, text) = admin_get(regate.admin, "/metrics").await;
        sample(&text, r#"regate_tls_handshakes_total{result="failure"}"#) == Some(2.0)
    })
    .await;
    let (_, text) = admin_get(regate.admin, "/metrics").await;
    assert!(counted, "{text}");
    assert_eq!(
        sample(
            &text,
            r#"regate_tls_handshake_failures_total{reason="no_certificate"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"regate_tls_handshake_failures_total{reason="unknown_issuer"}"#
        ),
        Some(1.0)
    );
    regate.stop().await;
}

#[tokio::test]
async fn status_reflects_a_failed_policy_reload() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let (_, body) = admin_get(regate.admin, "/status").await;
    let before: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(before["reloads"]["policy"]["last_result"], "none");
    assert_eq!(before["ready"], true);
    assert!(before["certificate"]["serial"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(before["certificate"]["not_after"].as_str().is_some());
    assert_eq!(
        before["client_ca"]["fingerprints_sha256"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));

    setup.write_policy("authz.rego", "package regate.authz\nallow if {\n");
    let failed = eventually(Duration::from_secs(10), || async {
        regate.reloader.status.policy.lock().unwrap().failures >= 1
    })
    .await;
    assert!(failed);
    let (_, body) = admin_get(regate.admin, "/status").await;
    let after: serde_json::Value = serde_json::from_str(&body).unwrap();
    let policy = &after["reloads"]["policy"];
    assert_eq!(policy["last_result"], "failure", "{after}");
    assert!(
        policy["last_error"]
            .as_str()
            .unwrap()
            .contains("authz.rego:"),
        "{after}"
    );
    assert_eq!(policy["failures"], 1);
    // The revision deciding requests is still the last good one.
    assert_eq!(after["policy"]["revision"], before["policy"]["revision"]);
    let (_, text) = admin_get(regate.admin, "/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"regate_reloads_total{kind="policy",result="failure"}"#
        ),
        Some(1.0)
    );
    regate.stop().await;
}

#[tokio::test]
async fn regate_names_every_request_and_forwards_the_clients_id_beside_its_own() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut req = request("GET", "/docs/a", b"");
    req.headers_mut()
        .insert("x-request-id", "req-7f3a".parse().unwrap());
    req.headers_mut()
        .insert("traceparent", traceparent.parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);
    let mut req = request("GET", "/docs/b", b"");
    req.headers_mut()
        .insert("x-request-id", "x".repeat(300).parse().unwrap());
    assert_eq!(send(&mut client, req).await.0, 200);

    // regate names every request itself; the client's own id is forwarded unchanged (a call
    // is followed across services by it) and kept beside regate's, never used as the audit
    // id (a client could reuse another request's). A malformed one is replaced.
    let seen = upstream.requests();
    let forwarded: Vec<String> = seen
        .iter()
        .map(|s| s.headers["x-request-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(forwarded[0], "req-7f3a");
    assert_eq!(forwarded[1].len(), 36, "{forwarded:?}");
    assert_eq!(seen[0].headers["traceparent"], traceparent);
    let records = regate.decisions(2).await;
    let ours = records[0]["request_id"].as_str().unwrap();
    assert_eq!(ours.len(), 36, "{ours}");
    assert_ne!(ours, "req-7f3a");
    assert_eq!(records[0]["client_request_id"], "req-7f3a");
    assert_eq!(records[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(records[1]["request_id"], forwarded[1].as_str());
    // An over-long client id is not kept at all.
    assert!(records[1].get("client_request_id").is_none());
    assert!(records[1].get("trace_id").is_none());
    regate.stop().await;
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_exists() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("docs/grafana/regate-dashboard.json").unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let names = regex::Regex::new(r"regate_[a-z_]+").unwrap();
    let queried: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| names.find_iter(e).map(|m| m.as_str().to_string()))
        .collect();
    assert!(queried.len() >= 8, "{queried:?}");

    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;
    let (_, text) = admin_get(regate.admin, "/metrics").await;
    // Every exposed series name: families, plus the _bucket/_sum/_count/_total samples.
    let exposed: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("# TYPE ").unwrap_or(l);
            names
                .find(l)
                .filter(|m| m.start() == 0)
                .map(|m| m.as_str().to_string())
        })
        .collect();
    let exposed_or_derived = |name: &str| {
        exposed.contains(name)
            || ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|base| exposed.contains(base))
                })
    };
    let missing: Vec<_> = queried.iter().filter(|n| !exposed_or_derived(n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics regate lacks: {missing:?}\n{text}"
    );
    regate.stop().await;
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}
