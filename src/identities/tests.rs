use super::*;
use crate::tls::identity::SpiffeId;

fn peer(id: &str, serial: &str, not_after: i64) -> PeerIdentity {
    PeerIdentity {
        spiffe_id: SpiffeId::parse(id),
        uri_sans: Vec::new(),
        dns_sans: Vec::new(),
        subject: format!("CN={id}"),
        issuer: String::new(),
        serial: serial.into(),
        fingerprint_sha256: String::new(),
        not_before: 0,
        not_after,
    }
}

fn spiffe(n: usize) -> String {
    format!("spiffe://example.org/ns/agents/sa/agent-{n}")
}

fn inventory(cap: usize) -> (Arc<Inventory>, Gauge, Counter) {
    let (held, evictions) = (Gauge::default(), Counter::default());
    let inventory = Arc::new(Inventory::new(cap, (held.clone(), evictions.clone())));
    (inventory, held, evictions)
}

fn listed<'a>(listing: &'a Listing, id: &str) -> Option<&'a Listed> {
    listing
        .identities
        .iter()
        .find(|l| l.spiffe_id.as_deref() == Some(id))
}

#[test]
fn reasons_past_the_limit_are_counted_as_other_and_the_top_five_are_listed() {
    let (inv, _, _) = inventory(10);
    let p = inv.connected(&peer(&spiffe(1), "01", 100));
    for i in 0..(MAX_DENY_REASONS + 4) {
        // reason_0 is given most often, then reason_1, ...
        for _ in 0..(40 - i) {
            p.request(false, &format!("reason_{i}"), None);
        }
    }
    let listing = inv.listing(None);
    let entry = listed(&listing, &spiffe(1)).unwrap();
    let reasons: Vec<(&str, u64)> = entry
        .deny_reasons
        .iter()
        .map(|r| (r.reason.as_str(), r.count))
        .collect();
    // The four reasons past the 16th fold into `other`: 24 + 23 + 22 + 21 = 90.
    assert_eq!(
        reasons,
        [
            ("other", 90),
            ("reason_0", 40),
            ("reason_1", 39),
            ("reason_2", 38),
            ("reason_3", 37)
        ]
    );
    assert_eq!(entry.allowed, 0);
    assert_eq!(entry.denied, (0..20).map(|i| 40 - i).sum::<u64>());
}

#[test]
fn serials_and_subjects_keep_the_most_recent_and_count_all() {
    let (inv, _, _) = inventory(10);
    let mut open = Vec::new();
    for i in 0..12 {
        open.push(inv.connected(&peer(&spiffe(1), &format!("{i:02x}"), 1_000 + i)));
        open[0].request(true, "allowed", Some(&format!("user-{i}")));
    }
    open[0].request(true, "allowed", Some("user-3"));
    open[0].request(true, "allowed", Some(&"x".repeat(1000)));
    let listing = inv.listing(None);
    let entry = listed(&listing, &spiffe(1)).unwrap();
    assert_eq!(entry.open_connections, 12);
    assert_eq!(
        entry.serials,
        ["0b", "0a", "09", "08", "07", "06", "05", "04"]
    );
    assert_eq!(entry.serials_seen, 12);
    assert_eq!(
        entry.earliest_not_after.as_deref(),
        Some("1970-01-01T00:16:40Z")
    );
    // user-3 had fallen out, so it counts again; a long subject is cut.
    assert_eq!(entry.delegation_subjects.len(), MAX_RECENT);
    assert_eq!(entry.delegation_subjects[0], "x".repeat(MAX_TEXT));
    assert_eq!(entry.delegation_subjects[1], "user-3");
    assert_eq!(entry.delegation_subjects_seen, 14);
    drop(open);
    assert_eq!(
        listed(&inv.listing(None), &spiffe(1))
            .unwrap()
            .open_connections,
        0
    );
}

#[test]
fn the_least_recently_seen_idle_entry_is_evicted_before_a_busy_one() {
    let (inv, held, evictions) = inventory(2);
    let busy = inv.connected(&peer(&spiffe(1), "01", 100));
    drop(inv.connected(&peer(&spiffe(2), "02", 100)));
    drop(inv.connected(&peer(&spiffe(3), "03", 100)));
    let listing = inv.listing(None);
    assert_eq!(listing.count, 2);
    assert!(listed(&listing, &spiffe(1)).is_some(), "{listing:?}");
    assert!(listed(&listing, &spiffe(2)).is_none(), "{listing:?}");
    assert_eq!((listing.evicted, evictions.get(), held.get()), (1, 1, 2));
    drop(busy);
}

#[test]
fn with_every_entry_busy_the_cap_holds_and_counts_stay_right() {
    let (inv, held, evictions) = inventory(2);
    let a = inv.connected(&peer(&spiffe(1), "01", 100));
    let b = inv.connected(&peer(&spiffe(2), "02", 100));
    // Both busy: the least recently connected (1) goes.
    let c = inv.connected(&peer(&spiffe(3), "03", 100));
    assert_eq!((inv.len(), evictions.get(), held.get()), (2, 1, 2));
    // 1 comes back while its old connection is still open: a fresh entry (evicting 2, busy).
    let a2 = inv.connected(&peer(&spiffe(1), "01", 100));
    a.request(true, "allowed", None);
    a2.request(false, "denied", None);
    drop(a);
    let listing = inv.listing(None);
    assert_eq!(listing.count, 2);
    let one = listed(&listing, &spiffe(1)).unwrap();
    assert_eq!((one.open_connections, one.allowed, one.denied), (1, 0, 1));
    drop((b, c, a2));
    let listing = inv.listing(None);
    assert!(listing.identities.iter().all(|l| l.open_connections == 0));
    assert_eq!(listing.evicted, 2);
}

#[test]
fn certificates_without_a_spiffe_id_are_listed_by_subject() {
    let (inv, _, _) = inventory(4);
    let mut p = peer("not a spiffe id", "01", 100);
    p.subject = "CN=legacy batch job".into();
    drop(inv.connected(&p));
    let listing = inv.listing(None);
    assert_eq!(listing.identities.len(), 1);
    assert_eq!(listing.identities[0].spiffe_id, None);
    assert_eq!(
        listing.identities[0].subject.as_deref(),
        Some("CN=legacy batch job")
    );
}

#[test]
fn the_listing_is_most_recent_first_and_limited() {
    let (inv, _, _) = inventory(10);
    let mut open = Vec::new();
    for i in 0..5 {
        let p = inv.connected(&peer(&spiffe(i), "01", 100));
        // Distinct milliseconds, so the order is the order of last sight.
        p.entry
            .last_seen
            .store(1_000_000 + i as u64, Ordering::Relaxed);
        open.push(p);
    }
    let listing = inv.listing(Some(3));
    let ids: Vec<_> = listing
        .identities
        .iter()
        .map(|l| l.spiffe_id.clone().unwrap())
        .collect();
    assert_eq!(ids, [spiffe(4), spiffe(3), spiffe(2)]);
    assert_eq!(listing.count, 5);
}
