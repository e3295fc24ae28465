//! The differential test: policies written for opa-envoy-plugin, and one-expression builtin
//! probes, evaluated by regate and compared with what OPA itself decided.
//!
//! The expectations in `tests/opa_corpus` were recorded from OPA 1.20 (the Go engine, through
//! the PyPI package `opa-golib-python-bindings`) in opa-envoy-plugin's non-strict mode by
//! `tests/opa_corpus/record.py`; nothing here is computed by regate and written back. Each
//! case's policy directory is loaded as `regate run` loads one, and each input is decided by
//! the proxy's own `PolicySet::decide`.
//!
//! The promises:
//! - regate never allows what OPA denies;
//! - at least 97% of evaluations give OPA's allow or deny;
//! - every evaluation that differs is named in docs/policy-input.md, with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regate::policy::{Options, PolicySet};
use regorus::Value;
use serde_json::Value as Json;

const TIMEOUT: Duration = Duration::from_secs(2);

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opa_corpus")
}

fn read_json(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// regate's value as JSON, to compare with OPA's; `None` for undefined.
fn as_json(value: &Value) -> Option<Json> {
    match value {
        Value::Undefined => None,
        v => serde_json::from_str(&v.to_json_str().ok()?)
            .ok()
            .map(numbers_by_value),
    }
}

/// Numbers compared by value, as Rego compares them: OPA's `-1500.0` is regate's `-1500`.
fn numbers_by_value(value: Json) -> Json {
    match value {
        Json::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Json::from(f as i64),
            _ => Json::Number(n),
        },
        Json::Array(items) => Json::Array(items.into_iter().map(numbers_by_value).collect()),
        Json::Object(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, numbers_by_value(v)))
                .collect(),
        ),
        other => other,
    }
}

/// One evaluation that did not give OPA's answer.
struct Difference {
    /// `case/input`, or `case (v0)/input`.
    name: String,
    opa_allowed: bool,
    regate_allowed: bool,
    detail: String,
}

#[derive(Default)]
struct Tally {
    evaluations: usize,
    same_decision: usize,
    same_value: usize,
    differences: Vec<Difference>,
    value_differences: Vec<String>,
}

fn run_case(dir: &Path, policy: &str, label: &str, tally: &mut Tally) {
    let cases = read_json(&dir.join("cases.json"));
    let expected = read_json(&dir.join("expected.json"));
    let query = cases["query"].as_str().expect("a query");
    let inputs = cases["inputs"].as_object().expect("inputs");
    let results = expected["results"].as_object().expect("results");
    assert_eq!(
        inputs.len(),
        results.len(),
        "{label}: every input has an expectation"
    );
    let set = PolicySet::load(&dir.join(policy), &Options::new(query, TIMEOUT));
    for (name, input) in inputs {
        let want = &results[name];
        let opa_allowed = want["allowed"].as_bool().expect("allowed");
        tally.evaluations += 1;
        let (regate_allowed, value, detail) = match &set {
            Err(errors) => (
                false,
                None,
                format!(
                    "refused at load: {}",
                    errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
            Ok(set) => {
                let input = Value::from_json_str(&input.to_string()).expect("input");
                let decision = set.decide(input.clone());
                let value = set.value(input).ok().as_ref().and_then(as_json);
                let detail = format!(
                    "reason {}{}",
                    decision.reason,
                    decision
                        .error
                        .as_deref()
                        .map(|e| format!(", error: {e}"))
                        .unwrap_or_default()
                );
                (decision.allowed, value, detail)
            }
        };
        let full = format!("{label}/{name}");
        if regate_allowed == opa_allowed {
            tally.same_decision += 1;
        } else {
            tally.differences.push(Difference {
                name: full.clone(),
                opa_allowed,
                regate_allowed,
                detail,
            });
        }
        let opa_value = want["defined"]
            .as_bool()
            .unwrap_or(false)
            .then(|| numbers_by_value(want["value"].clone()));
        if value == opa_value {
            tally.same_value += 1;
        } else {
            tally.value_differences.push(format!(
                "{full}: OPA {} regate {}",
                opa_value.map_or("undefined".into(), |v| v.to_string()),
                value.map_or("undefined".into(), |v| v.to_string())
            ));
        }
    }
}

#[test]
fn opa_envoy_policies_decide_as_opa_does() {
    let mut tally = Tally::default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus().join("cases"))
        .expect("the corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 50, "the corpus holds {} cases", dirs.len());
    let mut twins = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        run_case(dir, "policy", &name, &mut tally);
        if dir.join("policy_v0").is_dir() {
            twins += 1;
            run_case(dir, "policy_v0", &format!("{name} (v0)"), &mut tally);
        }
    }
    assert!(twins >= 5, "only {twins} v0 twins");

    let share = |n: usize| 100.0 * n as f64 / tally.evaluations as f64;
    eprintln!(
        "{} evaluations ({} cases, {twins} v0 twins): same allow/deny {} ({:.1}%), same value {} ({:.1}%)",
        tally.evaluations,
        dirs.len(),
        tally.same_decision,
        share(tally.same_decision),
        tally.same_value,
        share(tally.same_value),
    );
    for d in &tally.differences {
        eprintln!(
            "  differs: {}: OPA {}, regate {} ({})",
            d.name,
            if d.opa_allowed { "allow" } else { "deny" },
            if d.regate_allowed { "allow" } else { "deny" },
            d.detail
        );
    }
    for v in &tally.value_differences {
        eprintln!("  value differs: {v}");
    }

    let wider: Vec<&str> = tally
        .differences
        .iter()
        .filter(|d| d.regate_allowed && !d.opa_allowed)
        .map(|d| d.name.as_str())
        .collect();
    assert!(wider.is_empty(), "regate allows what OPA denies: {wider:?}");
    assert!(
        share(tally.same_decision) >= 97.0,
        "only {:.1}% of evaluations decide as OPA does",
        share(tally.same_decision)
    );
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policy-input.md"))
            .expect("docs/policy-input.md");
    let unlisted: Vec<&str> = tally
        .differences
        .iter()
        .map(|d| d.name.as_str())
        .filter(|name| !docs.contains(&format!("`{name}`")))
        .collect();
    assert!(
        unlisted.is_empty(),
        "differences from OPA not listed in docs/policy-input.md: {unlisted:?}"
    );
}

/// Each probe, `x := <expr>`, in one mode: its value, or `None` when undefined or refused.
fn probe(expr: &str, strict: bool) -> Result<Option<Json>, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("probe.rego"),
        format!("package probe\nimport rego.v1\nx := {expr}\n"),
    )
    .expect("write");
    let options = Options {
        strict_builtin_errors: strict,
        sample: false,
        ..Options::new("data.probe.x", TIMEOUT)
    };
    let set = PolicySet::load(dir.path(), &options).map_err(|es| {
        es.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let input = Value::from_json_str("{}").expect("input");
    match set.value(input) {
        Ok(v) => Ok(as_json(&v)),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn builtin_probes_answer_as_opa_does() {
    let probes = read_json(&corpus().join("probes.json"));
    let expected = read_json(&corpus().join("probes.expected.json"));
    let probes = probes.as_array().expect("probes");
    assert!(probes.len() >= 200, "only {} probes", probes.len());
    let mut same: BTreeMap<&str, usize> = BTreeMap::new();
    let mut differ = Vec::new();
    let mut true_where_opa_is_not = Vec::new();
    for p in probes {
        let name = p["name"].as_str().expect("name");
        let expr = p["expr"].as_str().expect("expr");
        for (mode, strict) in [("nonstrict", false), ("strict", true)] {
            let want = &expected[name][mode];
            let opa = match (want["error"].is_null(), want["defined"].as_bool()) {
                (false, _) => Err(()),
                (true, Some(true)) => Ok(Some(numbers_by_value(want["value"].clone()))),
                (true, _) => Ok(None),
            };
            let got = probe(expr, strict);
            let agree = match (&opa, &got) {
                (Err(()), Err(_)) => true,
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if agree {
                *same.entry(mode).or_default() += 1;
            } else {
                if matches!(got, Ok(Some(Json::Bool(true)))) {
                    true_where_opa_is_not.push(format!("{name} ({mode})"));
                }
                differ.push(format!(
                    "{name} ({mode}): {expr}\n      OPA {} regate {}",
                    match &opa {
                        Err(()) => format!("error {}", want["error"]),
                        Ok(None) => "undefined".into(),
                        Ok(Some(v)) => v.to_string(),
                    },
                    match &got {
                        Err(e) => format!("error {e}"),
                        Ok(None) => "undefined".into(),
                        Ok(Some(v)) => v.to_string(),
                    }
                ));
            }
        }
    }
    eprintln!(
        "{} probes: same in non-strict mode {}, in strict mode {}",
        probes.len(),
        same.get("nonstrict").copied().unwrap_or_default(),
        same.get("strict").copied().unwrap_or_default()
    );
    for d in &differ {
        eprintln!("  {d}");
    }
    assert!(
        true_where_opa_is_not.is_empty(),
        "true where OPA is not: {true_where_opa_is_not:?}"
    );
}
