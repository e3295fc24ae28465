//! What the identity inventory costs: per request (counted on the entry the connection
//! holds), per connection (the entry found, or made, at the handshake and let go at the
//! close, among 10,000 others), and in memory per entry.
//!
//! A plain `fn main`; BENCHMARKS.md keeps the figures. Every loop is bounded by a count and a
//! deadline, and nothing asserts on a timing. The allocator is the one regate runs with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use regate::identities::Inventory;
use regate::tls::identity::{PeerIdentity, SpiffeId};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Operations per timed batch: one operation is too short to time on its own.
const BATCH: usize = 1_000;

/// Median nanoseconds per operation over batches of [`BATCH`], and the batches run.
fn median_ns(batches: usize, limit: Duration, mut f: impl FnMut(usize)) -> (f64, usize) {
    let mut times = Vec::with_capacity(batches);
    let deadline = Instant::now() + limit;
    let mut i = 0;
    while times.len() < batches && Instant::now() < deadline {
        let start = Instant::now();
        for _ in 0..BATCH {
            f(i);
            i += 1;
        }
        times.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times.len())
}

fn peer(i: usize) -> PeerIdentity {
    // SPIRE-like: a 16-byte serial, a workload path of a few segments.
    PeerIdentity {
        spiffe_id: SpiffeId::parse(&format!(
            "spiffe://prod.example.org/ns/agents/sa/agent-{i:06}"
        )),
        uri_sans: Vec::new(),
        dns_sans: Vec::new(),
        subject: String::new(),
        issuer: String::new(),
        serial: format!("{:032x}", 0x5eed_0000_0000_0000_u128 + i as u128),
        fingerprint_sha256: String::new(),
        not_before: 0,
        not_after: 1_900_000_000 + i as i64,
    }
}

fn inventory(cap: usize) -> Arc<Inventory> {
    Arc::new(Inventory::new(cap, (Gauge::default(), Counter::default())))
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn main() {
    let quick = std::env::var_os("REGATE_BENCH_QUICK").is_some();
    let (batches, limit) = match quick {
        true => (200, Duration::from_secs(2)),
        false => (2_000, Duration::from_secs(10)),
    };
    const HELD: usize = 10_000;
    let peers: Vec<PeerIdentity> = (0..HELD + 200_000).map(peer).collect();

    println!("| what | median ns | batches of {BATCH} |");
    println!("|---|---:|---:|");

    // Per request: the connection holds its entry.
    let inv = inventory(HELD);
    for p in &peers[..HELD] {
        drop(inv.connected(p));
    }
    let presence = inv.connected(&peers[7]);
    let (ns, n) = median_ns(batches, limit, |_| {
        presence.request(black_box(true), "allowed", None);
    });
    println!("| request allowed, counted on the connection's entry | {ns:.1} | {n} |");
    let (ns, n) = median_ns(batches, limit, |_| {
        presence.request(black_box(false), "not_docs", None);
    });
    println!("| request denied, its reason counted | {ns:.1} | {n} |");
    let (ns, n) = median_ns(batches, limit, |_| {
        presence.request(black_box(true), "allowed", Some("alice@example.org"));
    });
    println!("| request allowed with a delegation subject | {ns:.1} | {n} |");

    // Two threads (this machine's two cores) on one identity: its counters are shared.
    let other = inv.connected(&peers[7]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let ((ns, n), others) = std::thread::scope(|s| {
        let stop = &stop;
        let other = &other;
        let counting = s.spawn(move || {
            let deadline = Instant::now() + limit + Duration::from_secs(1);
            let mut done = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                other.request(black_box(true), "allowed", None);
                done += 1;
            }
            done
        });
        let result = median_ns(batches, limit, |_| {
            presence.request(black_box(true), "allowed", None);
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (result, counting.join().unwrap())
    });
    // The other thread's count says whether it really ran alongside.
    println!(
        "| request allowed, while another thread counts on the same identity ({others} requests meanwhile) | {ns:.1} | {n} |"
    );
    drop((presence, other));

    // Per connection, 10,000 identities held: a known one, connected and closed.
    let (ns, n) = median_ns(batches, limit, |i| {
        drop(black_box(inv.connected(&peers[i % HELD])));
    });
    println!(
        "| connection of a known identity, handshake and close (10,000 held) | {ns:.0} | {n} |"
    );
    // A new identity each time, at the cap: the least recently seen idle entry goes.
    let mut next = HELD;
    let (ns, n) = median_ns(batches / 10, limit, |_| {
        drop(black_box(inv.connected(&peers[next])));
        next = (next + 1) % peers.len();
    });
    println!(
        "| connection of a new identity at the cap, one evicted (10,000 held) | {ns:.0} | {n} |"
    );
    // The worst case: every entry holds a connection, so eviction looks at all of them.
    let busy_inv = inventory(HELD);
    let held: Vec<_> = peers[..HELD]
        .iter()
        .map(|p| busy_inv.connected(p))
        .collect();
    let mut next = HELD;
    let (ns, n) = median_ns((batches / 100).max(5), limit, |_| {
        drop(black_box(busy_inv.connected(&peers[next])));
        next += 1;
    });
    println!(
        "| the same with all 10,000 holding a connection (the eviction scans them all) | {ns:.0} | {n} |"
    );
    drop(held);
    drop(busy_inv);
    drop(inv);

    // Memory: resident bytes added per entry, over many entries.
    println!();
    println!("| entry | bytes (resident, per entry) | entries |");
    println!("|---|---:|---:|");
    let mut kept = Vec::new();
    for (what, count, reasons, serials, subjects, long) in [
        ("one serial, no denials", 50_000, 0, 1, 0, 0),
        (
            "typical: one serial, two deny reasons, one delegation subject",
            50_000,
            2,
            1,
            1,
            0,
        ),
        (
            "full: 16 deny reasons, 8 serials, 8 delegation subjects (30 bytes each)",
            20_000,
            16,
            8,
            8,
            0,
        ),
        (
            "largest: the same, every reason and subject 128 bytes (the cut)",
            20_000,
            16,
            8,
            8,
            100,
        ),
    ] {
        let inv = inventory(count);
        let before = rss();
        for (i, p) in peers[..count].iter().enumerate() {
            let mut renewed = p.clone();
            for s in 0..serials {
                renewed.serial = format!("{:032x}", (i as u128) << 8 | s as u128);
                let presence = inv.connected(&renewed);
                if s + 1 == serials {
                    for r in 0..reasons {
                        let reason = format!("denied_by_rule_number_{r:08}{}", "x".repeat(long));
                        presence.request(false, &reason, None);
                    }
                    for d in 0..subjects {
                        let subject =
                            format!("user-{d:04}@customers.example.org{}", "x".repeat(long));
                        presence.request(true, "allowed", Some(&subject));
                    }
                }
            }
        }
        let after = rss();
        println!(
            "| {what} | {} | {count} |",
            (after.saturating_sub(before)) / count as u64
        );
        assert_eq!(inv.len(), count);
        kept.push(inv);
    }
}
