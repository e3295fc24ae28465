//! One kill switch for the fleet: a revocations feed served by a real nginx (ETag on,
//! `autoindex off`), polled by every replica. Publishing one revocation (an atomic rewrite of
//! the file nginx serves) makes each of 20 replicas deny the victim and close its open
//! keep-alive connection. Feed, file and API revocations are merged: the feed lifts nothing
//! the API revoked, and a feed that cannot be reached lifts nothing at all; with `max_age`, a
//! replica whose feed has been silent too long refuses everyone until it answers again.
//! Timings are measured in benches/fleet.rs; these tests assert behaviour only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::fleet::*;
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
const REPLICAS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_published_revocation_denies_and_disconnects_the_victim_on_every_replica() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let nginx = Nginx::start("unused");
    nginx.publish("revocations.json", &revocations_document(&[]));
    let upstream = Upstream::start().await;
    let mut fleet = Vec::new();
    for i in 0..REPLICAS {
        let mut args = setup.args(&upstream.url());
        args = with_flag(
            args,
            "--decision-log",
            &setup.path(&format!("d{i}.log")).display().to_string(),
        );
        args.extend(["--revocations-feed".into(), nginx.url("revocations.json")]);
        fleet.push(Regate::start(args, setup.path(&format!("d{i}.log"))).await);
    }
    for regate in &fleet {
        assert!(
            eventually(WAIT, || async {
                metric(
                    regate.admin,
                    "regate_revocations_feed_fetches_total{result=\"updated\"}",
                )
                .await
                    >= 1.0
            })
            .await,
            "a replica never read the feed"
        );
    }
    let victim = setup.ca.client(SUMMARIZER);
    let mut clients = Vec::new();
    for regate in &fleet {
        let mut client = regate.http1(&setup, &victim).await;
        assert_eq!(get(&mut client, "/docs/a").await.0, 200);
        clients.push(client);
    }

    nginx.publish("revocations.json", &revocations_document(&[SUMMARIZER]));
    let start = tokio::time::Instant::now();
    let waits: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                until_denied_and_closed(&mut client, "/docs/a", start, WAIT).await
            })
        })
        .collect();
    for (i, wait) in waits.into_iter().enumerate() {
        let ended = wait.await.unwrap();
        assert!(
            ended.is_some(),
            "replica {i} never closed the victim's connection"
        );
    }
    for regate in &fleet {
        assert_eq!(answer(regate, &setup, &victim, "/docs/a").await, Some(403));
        // Records are written behind the request path: wait for the event's line.
        assert!(
            eventually(WAIT, || async {
                regate
                    .decisions(1)
                    .await
                    .iter()
                    .any(|r| r["event"] == "revocation_added")
            })
            .await,
            "the feed's change is a decision-log event"
        );
        let records = regate.decisions(1).await;
        let change = records
            .iter()
            .find(|r| r["event"] == "revocation_added")
            .unwrap();
        assert_eq!(change["source"], "feed");
        assert_eq!(change["revocation"]["spiffe_id"], SUMMARIZER);
    }
    for regate in fleet {
        regate.stop().await;
    }
}

#[tokio::test]
async fn the_feed_lifts_nothing_the_api_revoked_and_an_unreachable_feed_lifts_nothing() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let mut nginx = Nginx::start("unused");
    nginx.publish("revocations.json", &revocations_document(&[SUMMARIZER]));
    let upstream = Upstream::start().await;
    let config = format!(
        "revocations_feed:\n  url: {}\n  polling: 100ms\n",
        nginx.url("revocations.json")
    );
    let mut args = setup.args(&upstream.url());
    args.extend(config_file(setup.dir.path(), &config));
    let regate = setup_start(&setup, args).await;
    let victim = setup.ca.client(SUMMARIZER);
    let other = setup.ca.client(EXECUTOR);
    assert!(
        eventually(WAIT, || async {
            refused(answer(&regate, &setup, &victim, "/docs/a").await)
        })
        .await
    );
    // The API revokes the executor; the feed, which never named it, cannot lift that.
    let (code, _) = admin_send(
        regate.admin,
        "POST",
        "/revocations",
        &format!(r#"{{"spiffe_id": "{EXECUTOR}", "reason": "api"}}"#),
    )
    .await;
    assert_eq!(code, 201);
    nginx.publish("revocations.json", &revocations_document(&[]));
    assert!(
        eventually(WAIT, || async {
            answer(&regate, &setup, &victim, "/docs/a").await == Some(200)
        })
        .await,
        "lifting on the feed lifts the feed's revocation"
    );
    assert!(
        refused(answer(&regate, &setup, &other, "/docs/a").await),
        "the API's revocation stays"
    );

    // Revoked again by the feed; then the feed goes away: nothing is lifted.
    nginx.publish("revocations.json", &revocations_document(&[SUMMARIZER]));
    assert!(
        eventually(WAIT, || async {
            refused(answer(&regate, &setup, &victim, "/docs/a").await)
        })
        .await
    );
    nginx.stop();
    let before = metric(
        regate.admin,
        "regate_revocations_feed_fetches_total{result=\"failed\"}",
    )
    .await;
    assert!(
        eventually(WAIT, || async {
            metric(
                regate.admin,
                "regate_revocations_feed_fetches_total{result=\"failed\"}",
            )
            .await
                >= before + 3.0
        })
        .await
    );
    assert!(refused(answer(&regate, &setup, &victim, "/docs/a").await));
    let feed = &status(regate.admin).await["revocations"]["feed"];
    assert_eq!(feed["in_force"], 1);
    assert_eq!(feed["stale"], false, "no max_age: never stale");
    assert!(feed["age_seconds"].as_f64().unwrap() > 0.0);
    regate.stop().await;
}

#[tokio::test]
async fn a_feed_silent_past_its_max_age_refuses_everyone_until_it_answers() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let mut nginx = Nginx::start("unused");
    nginx.publish("revocations.json", &revocations_document(&[]));
    let upstream = Upstream::start().await;
    let config = format!(
        "revocations_feed:\n  url: {}\n  polling: 100ms\n  max_age: 1s\n",
        nginx.url("revocations.json")
    );
    let mut args = setup.args(&upstream.url());
    args.extend(config_file(setup.dir.path(), &config));
    let regate = setup_start(&setup, args).await;
    let caller = setup.ca.client(SUMMARIZER);
    assert!(
        eventually(WAIT, || async {
            answer(&regate, &setup, &caller, "/docs/a").await == Some(200)
        })
        .await
    );
    let mut open = regate.http1(&setup, &caller).await;
    assert_eq!(get(&mut open, "/docs/a").await.0, 200);
    nginx.stop();
    assert!(
        eventually(WAIT, || async {
            refused(answer(&regate, &setup, &caller, "/docs/a").await)
        })
        .await,
        "a stale feed never refused"
    );
    assert!(
        until_denied_and_closed(&mut open, "/docs/a", tokio::time::Instant::now(), WAIT)
            .await
            .is_some(),
        "the open connection stays open"
    );
    assert_eq!(
        status(regate.admin).await["revocations"]["feed"]["stale"],
        true
    );
    let records = regate.decisions(1).await;
    assert!(records
        .iter()
        .any(|r| r["reason"] == "revocations_feed_stale"));
    // Requests are refused from the instant the feed turns stale; the event is told by the
    // feed's poller just after.
    assert!(
        eventually(WAIT, || async {
            regate
                .decisions(1)
                .await
                .iter()
                .any(|r| r["event"] == "revocations_feed_stale")
        })
        .await,
        "turning stale is a decision-log event"
    );

    nginx.restart();
    assert!(
        eventually(WAIT, || async {
            answer(&regate, &setup, &caller, "/docs/a").await == Some(200)
        })
        .await,
        "the feed answered again but everyone stays refused"
    );
    regate.stop().await;
}

async fn setup_start(setup: &Setup, args: Vec<String>) -> Regate {
    Regate::start(args, setup.path("decisions.log")).await
}

/// Until the feed has answered once, its revocations are unknown: a replica (re)started
/// during a feed outage is not ready for traffic, rather than serving whom the feed revoked.
#[tokio::test]
async fn a_replica_is_not_ready_until_the_feed_has_answered() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let nginx = Nginx::start("unused");
    let upstream = Upstream::start().await;
    let config = format!(
        "revocations_feed:\n  url: {}\n  polling: 100ms\n",
        nginx.url("revocations.json")
    );
    let mut args = setup.args(&upstream.url());
    args.extend(config_file(setup.dir.path(), &config));
    let regate = setup_start(&setup, args).await;
    // Nothing published yet: nginx answers 404.
    let (code, body) = admin_send(regate.admin, "GET", "/readyz", "").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("revocations feed"), "{body}");
    nginx.publish("revocations.json", &revocations_document(&[SUMMARIZER]));
    assert!(
        eventually(WAIT, || async {
            admin_send(regate.admin, "GET", "/readyz", "").await.0 == 200
        })
        .await,
        "never ready once the feed answered"
    );
    let caller = setup.ca.client(SUMMARIZER);
    assert!(refused(answer(&regate, &setup, &caller, "/docs/a").await));
}
