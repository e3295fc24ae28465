//! `regate policy test` reports every `test_*` rule as PASS, FAIL or ERROR by name, and its
//! exit code is CI's verdict: a failing test is never a silent pass, even though regorus
//! leaves a failing test undefined instead of false.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const POLICY: &str = r#"package app

default allow := false

allow if input.user == "alice"
"#;

const PASSING: &str = r#"package app_test

import data.app

test_alice_is_allowed if app.allow with input as {"user": "alice"}

test_bob_is_denied if not app.allow with input as {"user": "bob"}

test_data_can_be_replaced if {
	data.limits.max == 9 with data.limits.max as 9
}

test_prints_are_shown_with_v if {
	print("checked", 1 + 1)
	true
}
"#;

fn suite(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    std::fs::write(dir.path().join("data.json"), r#"{"limits": {"max": 3}}"#).unwrap();
    dir
}

fn policy_test(dir: &tempfile::TempDir, extra: &[&str]) -> (i32, String, String) {
    let path = dir.path().display().to_string();
    let mut args = vec!["policy", "test", path.as_str()];
    args.extend(extra);
    let out = regate_command(&args);
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_passing_suite_exits_0() {
    let dir = suite(&[("app.rego", POLICY), ("app_test.rego", PASSING)]);
    let (code, out, err) = policy_test(&dir, &[]);
    assert_eq!(code, 0, "{out}{err}");
    for name in [
        "test_alice_is_allowed",
        "test_bob_is_denied",
        "test_data_can_be_replaced",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("PASS") && l.contains(&format!("data.app_test.{name}"))),
            "{name} not reported as passing:\n{out}"
        );
    }
    assert!(out.contains("4 passed, 0 failed, 0 errors"), "{out}");
    assert!(
        !out.contains("checked 2"),
        "print() shown without -v:\n{out}"
    );
}

#[test]
fn a_deliberately_failing_test_is_reported_as_fail_by_name_and_exits_1() {
    let failing = r#"package app_test

import data.app

test_bob_is_allowed_on_purpose if app.allow with input as {"user": "bob"}

test_value_that_is_not_true := 3
"#;
    let dir = suite(&[
        ("app.rego", POLICY),
        ("app_test.rego", PASSING),
        ("failing_test.rego", failing),
    ]);
    let (code, out, err) = policy_test(&dir, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("data.app_test.test_bob_is_allowed_on_purpose"))
        .unwrap_or_else(|| panic!("the failing test is missing:\n{out}"));
    assert!(line.starts_with("FAIL"), "{line}");
    // Where it is, so an author can jump to it.
    assert!(out.contains("failing_test.rego:5:"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("test_value_that_is_not_true"))
        .unwrap();
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(out.contains("4 passed, 2 failed, 0 errors"), "{out}");
}

#[test]
fn an_erroring_test_is_reported_as_error() {
    // Two complete definitions that disagree: an evaluation error in OPA and regate alike.
    let erroring = r#"package app_test

v := 1 if input.a
v := 2 if input.a

test_conflicting_values if v == 1 with input.a as true
"#;
    let dir = suite(&[("app.rego", POLICY), ("app_test.rego", erroring)]);
    let (code, out, err) = policy_test(&dir, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("data.app_test.test_conflicting_values"))
        .unwrap_or_else(|| panic!("the erroring test is missing:\n{out}"));
    assert!(line.starts_with("ERROR"), "{line}");
    assert!(out.contains("0 passed, 0 failed, 1 error"), "{out}");
}

#[test]
fn a_builtin_error_fails_the_test_as_opa_test_does() {
    let failing = r#"package app_test

test_counts_a_number if count(1) == 1
"#;
    let dir = suite(&[("app.rego", POLICY), ("app_test.rego", failing)]);
    let (code, out, err) = policy_test(&dir, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("data.app_test.test_counts_a_number"))
        .unwrap_or_else(|| panic!("the failing test is missing:\n{out}"));
    assert!(line.starts_with("FAIL"), "{line}");
    assert!(out.contains("0 passed, 1 failed, 0 errors"), "{out}");
}

#[test]
fn set_and_case_tests_are_listed_and_judged_as_opa_test_does() {
    let tests = r#"package app_test

import data.app

cases := {"alice": {"user": "alice", "want": true}, "bob": {"user": "bob", "want": false}}

test_each_user[name] if {
	some name, c in cases
	object.get(app, "allow", false) == c.want with input as c
}

verdicts := {"alice": false, "bob": true}

test_wrong_expectations[name] := verdict if {
	some name, verdict in verdicts
}

test_as_a_set contains name if {
	some name, _ in cases
}
"#;
    let dir = suite(&[("app.rego", POLICY), ("app_test.rego", tests)]);
    let (code, out, err) = policy_test(&dir, &[]);
    assert_eq!(code, 1, "{out}{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.contains(&format!("data.app_test.{name}")))
            .unwrap_or_else(|| panic!("{name} is missing:\n{out}"))
            .to_string()
    };
    assert!(line("test_each_user").starts_with("PASS"), "{out}");
    assert!(line("test_wrong_expectations").starts_with("FAIL"), "{out}");
    assert!(line("test_as_a_set").starts_with("FAIL"), "{out}");
    assert!(out.contains("cases not true: alice"), "{out}");
    assert!(out.contains("a `contains` test is a set"), "{out}");
    assert!(out.contains("1 passed, 2 failed, 0 errors"), "{out}");
}

#[test]
fn a_failing_test_that_replaces_a_function_by_its_path_says_so() {
    let policy = r#"package authz

default allow := false

is_admin(user) if user == "root"

allow if is_admin(input.user)
"#;
    let tests = r#"package authz_test

import data.authz

test_admin_mocked if authz.allow with input as {"user": "alice"} with data.authz.is_admin as true
"#;
    let dir = suite(&[("authz.rego", policy), ("authz_test.rego", tests)]);
    let (code, out, err) = policy_test(&dir, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("the test replaces data.authz.is_admin with `with`"),
        "{out}"
    );
}

#[test]
fn a_test_defined_by_several_bodies_runs_once_and_passes_if_one_holds() {
    let several = r#"package app_test

test_either if false

test_either if true
"#;
    let dir = suite(&[("app.rego", POLICY), ("app_test.rego", several)]);
    let (code, out, _) = policy_test(&dir, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("test_either").count(), 1, "{out}");
}

#[test]
fn run_filters_tests_and_v_shows_prints() {
    let dir = suite(&[("app.rego", POLICY), ("app_test.rego", PASSING)]);
    let (code, out, _) = policy_test(&dir, &["--run", "prints", "-v"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("test_prints_are_shown_with_v"), "{out}");
    assert!(!out.contains("test_alice_is_allowed"), "{out}");
    assert!(out.contains("checked 2"), "{out}");
    assert!(out.contains("1 passed, 0 failed, 0 errors"), "{out}");

    let (code, _, err) = policy_test(&dir, &["--run", "no_such_test"]);
    assert_eq!(code, 1, "running nothing must not look green");
    assert!(err.contains("no test_* rule"), "{err}");
}

#[test]
fn coverage_names_uncovered_lines_per_file() {
    let only_alice = r#"package app_test

import data.app

test_alice_is_allowed if app.allow with input as {"user": "alice"}
"#;
    let untested = "package other\n\nx := 1\n";
    let dir = suite(&[
        ("app.rego", POLICY),
        ("app_test.rego", only_alice),
        ("other.rego", untested),
    ]);
    let (code, out, _) = policy_test(&dir, &["--coverage"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("other.rego: not reached by the tests run"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("app.rego:") && !l.contains("app_test"))
        .unwrap_or_else(|| panic!("no coverage line for app.rego:\n{out}"));
    assert!(line.contains("lines ("), "{line}");
}

#[test]
fn json_and_junit_reports_carry_every_outcome() {
    let mixed = r#"package app_test

import data.app

test_passes if app.allow with input as {"user": "alice"}

test_fails if app.allow with input as {"user": "bob"}

v := 1 if input.a
v := 2 if input.a

test_errors if v == 1 with input.a as true
"#;
    let dir = suite(&[("app.rego", POLICY), ("app_test.rego", mixed)]);
    let (code, out, _) = policy_test(&dir, &["--format", "json"]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        doc["summary"],
        serde_json::json!({"passed": 1, "failed": 1, "errors": 1})
    );
    let result = |name: &str| {
        doc["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["result"].as_str().unwrap().to_string())
    };
    assert_eq!(result("test_passes").as_deref(), Some("pass"));
    assert_eq!(result("test_fails").as_deref(), Some("fail"));
    assert_eq!(result("test_errors").as_deref(), Some("error"));

    let (code, out, _) = policy_test(&dir, &["--format", "junit"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("<?xml"), "{out}");
    assert!(
        out.contains(r#"tests="3" failures="1" errors="1""#),
        "{out}"
    );
    assert!(out.contains(r#"name="test_fails""#), "{out}");
    assert!(out.contains("<failure message="), "{out}");
    assert!(out.contains("<error message="), "{out}");
}

#[test]
fn a_directory_that_does_not_load_is_an_error() {
    let dir = suite(&[("app.rego", "package app\n\nallow if {\n")]);
    let (code, out, _) = policy_test(&dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("app.rego:"), "{out}");
    assert!(out.contains("0 passed, 0 failed, 1 error"), "{out}");
}
