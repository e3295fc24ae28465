//! What OPA compatibility costs per evaluation, on policies from the differential corpus
//! (`tests/opa_corpus`): a rule queried directly against the same decision queried as a
//! result object built from partial rules or as a whole package (which regate evaluates
//! through a rule of its own), and the JWT builtins (HS256 with a secret, RS256 against a
//! JWKS).
//!
//! A plain `fn main`; BENCHMARKS.md keeps the figures. Each measurement is bounded by a
//! count and a deadline, and nothing asserts on a timing. Figures are the median of
//! `decide()` wall times with the decision cache off, as the proxy pays them on a miss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regate::policy::{Options, PolicySet};
use regorus::Value;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/opa_corpus/cases")
        .join(name)
}

fn input(case_dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(case_dir.join("cases.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    Value::from_json_str(&cases["inputs"][name].to_string()).unwrap()
}

/// Median `decide()` time in µs over up to `runs` evaluations or `limit`, whichever ends first.
fn median_us(set: &PolicySet, input: &Value, runs: usize, limit: Duration) -> (f64, usize, bool) {
    let mut times = Vec::with_capacity(runs);
    let deadline = Instant::now() + limit;
    let mut allowed = false;
    while times.len() < runs && Instant::now() < deadline {
        let start = Instant::now();
        let decision = set.decide(input.clone());
        times.push(start.elapsed().as_nanos() as f64 / 1000.0);
        allowed = decision.allowed;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[times.len() / 2], times.len(), allowed)
}

fn main() {
    let quick = std::env::var_os("REGATE_BENCH_QUICK").is_some();
    let (runs, limit) = match quick {
        true => (2_000, Duration::from_secs(2)),
        false => (20_000, Duration::from_secs(10)),
    };
    let rows = [
        (
            "result_partial_rules_rbac",
            "data.envoy.authz.allow",
            "alice_productpage",
            "rule, queried directly",
        ),
        (
            "result_partial_rules_rbac",
            "data.envoy.authz.result",
            "alice_productpage",
            "result object from partial rules",
        ),
        (
            "package_decision_allowed",
            "data.envoy.authz",
            "docs_get",
            "whole package as the decision",
        ),
        (
            "package_decision_allowed",
            "data.envoy.authz.allowed",
            "docs_get",
            "the same package's rule, directly",
        ),
        (
            "tutorial_standalone_envoy",
            "data.envoy.authz.allow",
            "alice_list",
            "io.jwt.decode_verify, HS256 secret",
        ),
        (
            "jwks_decode_verify_iss_aud",
            "data.envoy.authz.allow",
            "valid_get",
            "io.jwt.decode_verify, RS256 JWKS",
        ),
        (
            "net_mapped_denylist",
            "data.envoy.authz.allow",
            "mapped_outside",
            "net.cidr_contains, mapped address",
        ),
    ];
    println!("| policy (tests/opa_corpus/cases) | query | what | median µs | runs | allowed |");
    println!("|---|---|---|---:|---:|---|");
    for (name, query, input_name, what) in rows {
        let dir = case(name);
        let options = Options::new(query, Duration::from_secs(1));
        let set = match PolicySet::load(&dir.join("policy"), &options) {
            Ok(set) => set,
            Err(e) => {
                println!(
                    "| {name} | `{query}` | {what} | load failed: {} | | |",
                    e[0]
                );
                continue;
            }
        };
        let input = input(&dir, input_name);
        if input == Value::Null {
            println!("| {name} | `{query}` | {what} | no input {input_name} | | |");
            continue;
        }
        let (us, n, allowed) = median_us(&set, &input, runs, limit);
        println!("| {name} | `{query}` | {what} | {us:.1} | {n} | {allowed} |");
    }
}
