use super::*;
use arc_swap::ArcSwap;

/// A shadow set that denies everything, loaded as `regate run` loads one.
fn denying_store() -> (tempfile::TempDir, PolicyStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("authz.rego"),
        "package regate.authz\n\ndefault allow := false\n",
    )
    .unwrap();
    let options = crate::policy::Options::new("data.regate.authz.allow", Duration::from_secs(5));
    let set = PolicySet::load(dir.path(), &options).unwrap();
    (dir, Arc::new(ArcSwap::from_pointee(set)))
}

#[tokio::test]
async fn past_its_places_a_request_is_not_asked_about_and_says_so() {
    let (_dir, store) = denying_store();
    let metrics = Arc::new(Metrics::new());
    let shadow = Shadow::with_in_flight(store, Duration::from_secs(5), metrics.clone(), 1);
    let main = Decision::deny("main_says_no");
    let ask = || Ask {
        set: shadow.store.load_full(),
        calls: vec![Call::Input(None, Value::new_object())],
    };
    let start = |shadow: &Shadow| {
        let (later, field) = crate::audit::later::later("shadow");
        shadow.start(ask(), &main, field);
        later
    };
    let outcome = |published: Option<serde_json::Value>| -> Option<Outcome> {
        published.and_then(|v| serde_json::from_value(v).ok())
    };
    // On this single-threaded runtime the first evaluation cannot finish before the second
    // is started: the one place is taken.
    let first = start(&shadow);
    let second = start(&shadow);
    let skipped = outcome(second.wait().await).expect("answered at once");
    assert_eq!(skipped.reason, SKIPPED);
    assert_eq!(skipped.allowed, main.allowed);
    assert!(metrics.encode().contains("regate_shadow_skipped_total 1"));
    // The first one is evaluated, and compared: the shadow's reason differs from the main's.
    let answered = outcome(first.wait().await).expect("a differing answer");
    assert_eq!(answered.reason, "denied");
    // Its place is free again.
    let third = outcome(start(&shadow).wait().await).expect("a differing answer");
    assert_ne!(third.reason, SKIPPED);
    // Two disagreements in reason; the skipped request is not one.
    assert!(metrics
        .encode()
        .contains(r#"regate_shadow_disagreements_total{main="deny",shadow="deny"} 2"#));
}
