//! Policy evaluation never holds every thread that moves connections' bytes. Evaluations run
//! inline on all workers but one, and a policy set that was once slow runs only on regate's
//! evaluation threads. Callers that hit a slow branch of the policy do not hold up anybody
//! else's requests, and there `--policy-timeout` is kept from the client's side: at the
//! deadline the request is denied, even while a builtin that cannot be interrupted is still
//! running.
//!
//! The in-process tests run regate on the test's runtime: a current-thread one has a single
//! worker, so nothing is evaluated inline there. The decision cache is off: these requests are
//! the same to the policy, and a cached answer would need no evaluation at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

const POLICY: &str = r#"package regate.authz

default allow := false

allow if input.parsed_path[0] == "fast"

# A slow branch: a Rego loop the evaluation timer could stop, but far inside its budget
# (two to three seconds in a debug build, long enough that a fast request is answered well
# before any of them ends), with little memory.
allow if {
	input.parsed_path[0] == "slow"
	count([1 | some x in numbers.range(1, 1000); some y in numbers.range(1, 2000); x == y]) > 0
}

# One builtin call that runs long, and cannot be interrupted mid-call.
allow if {
	input.parsed_path[0] == "stuck"
	count(numbers.range(1, 5000000)) > 0
}
"#;

/// `regate_policy_evaluations_running`, read from /metrics.
async fn running(regate: &Regate) -> u64 {
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("regate_policy_evaluations_running "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_fast_request_is_answered_while_slow_evaluations_run() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--policy-timeout", "60s", "--decision-cache-entries", "0"],
        )
        .await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
        slow.push(tokio::spawn(
            async move { get(&mut client, "/slow/x").await.0 },
        ));
    }
    let all_running = eventually(Duration::from_secs(20), || async {
        running(&regate).await >= 4
    })
    .await;
    assert!(all_running, "the slow evaluations never ran together");

    let mut fast = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut fast, "/fast/y").await.0, 200);
    let still_slow = slow.iter().filter(|h| !h.is_finished()).count();
    assert_eq!(
        still_slow, 4,
        "the fast request waited for the slow evaluations to finish"
    );
    for handle in slow {
        assert_eq!(handle.await.unwrap(), 200);
    }
    regate.stop().await;
}

#[tokio::test]
async fn the_policy_timeout_answers_the_client_even_while_a_builtin_runs_on() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--policy-timeout", "50ms", "--decision-cache-entries", "0"],
        )
        .await;
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let (status, _, body) = get(&mut client, "/stuck/z").await;
    assert_eq!(status, 403, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("policy_timeout"));
    // The answer came while the builtin was still running: the deadline is the client's.
    assert_eq!(running(&regate).await, 1);
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["reason"], "policy_timeout");
    assert!(upstream.requests().is_empty());
    regate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn one_worker_stays_free_while_others_evaluate_and_a_slow_set_leaves_them() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(
            &upstream.url(),
            &["--policy-timeout", "60s", "--decision-cache-entries", "0"],
        )
        .await;
    let mut fast = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut fast, "/fast/warm").await.0, 200);
    let (_, status) = admin_get(regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["policy"]["slow_evaluation_seen"], false);

    // Four slow callers at once: two may take the two workers that evaluate inline, the
    // others go to the evaluation threads; the third worker stays free.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
        slow.push(tokio::spawn(
            async move { get(&mut client, "/slow/x").await.0 },
        ));
    }
    let offloaded = eventually(Duration::from_secs(20), || async {
        running(&regate).await >= 2
    })
    .await;
    assert!(
        offloaded,
        "the slow evaluations beyond the inline workers never ran"
    );
    assert_eq!(get(&mut fast, "/fast/y").await.0, 200);
    let still_slow = slow.iter().filter(|h| !h.is_finished()).count();
    assert_eq!(
        still_slow, 4,
        "the fast request waited for slow evaluations"
    );
    for handle in slow {
        assert_eq!(handle.await.unwrap(), 200);
    }

    // The set is known to be slow now: its evaluations stay off the workers.
    let (_, status) = admin_get(regate.admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["policy"]["slow_evaluation_seen"], true);
    let mut client = regate.http1(&setup, &setup.ca.client(SUMMARIZER)).await;
    let one_more = tokio::spawn(async move { get(&mut client, "/slow/z").await.0 });
    let on_threads = eventually(Duration::from_secs(20), || async {
        running(&regate).await == 1
    })
    .await;
    assert!(on_threads, "a slow set was evaluated inline again");
    assert_eq!(one_more.await.unwrap(), 200);
    regate.stop().await;
}
