//! `regate policy eval` for scripts: the exit code is the decision (0 allow, 1 deny, 2 error),
//! `--raw` prints the query's value alone, and a broken Rego v0 file reports its v0 error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const POLICY: &str = r#"package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "GET"

result["allowed"] := allow

result.headers := {"x-checked": "yes"}

ratio := 10 / count(input.parsed_query)
"#;

fn policies(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    dir
}

fn eval(dir: &tempfile::TempDir, args: &[&str]) -> (i32, String, String) {
    let path = dir.path().display().to_string();
    let mut all = vec!["policy", "eval", "--policies", path.as_str()];
    all.extend(args);
    let out = regate_command(&all);
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_exit_code_is_allow_deny_or_error() {
    let dir = policies(&[("authz.rego", POLICY)]);
    let allow = eval(&dir, &["--query", "data.envoy.authz.allow"]);
    assert_eq!(allow.0, 0, "{allow:?}");
    let deny = eval(
        &dir,
        &["--query", "data.envoy.authz.allow", "--method", "POST"],
    );
    assert_eq!(deny.0, 1, "{deny:?}");
    assert!(deny.1.contains("\"allowed\": false"), "{deny:?}");
    let missing = eval(&dir, &["--query", "data.envoy.nothing"]);
    assert_eq!(missing.0, 2, "{missing:?}");
    assert!(missing.2.contains("names no rule"), "{missing:?}");
    // With strict builtin errors, a division by zero is an evaluation error: a deny, exit 2.
    let strict = eval(
        &dir,
        &[
            "--query",
            "data.envoy.authz.ratio",
            "--strict-builtin-errors",
            "--skip-sample",
        ],
    );
    assert_eq!(strict.0, 2, "{strict:?}");
    assert!(strict.1.contains("policy_error"), "{strict:?}");
}

#[test]
fn raw_prints_the_value_of_any_data_path() {
    let dir = policies(&[("authz.rego", POLICY)]);
    let (code, out, err) = eval(&dir, &["--query", "data.envoy.authz.result", "--raw"]);
    assert_eq!(code, 0, "{out}{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"allowed": true, "headers": {"x-checked": "yes"}})
    );
    // A package whose `allow` holds but that has no `allowed` is not an allow: as in
    // opa-envoy-plugin, a malformed decision, denied (exit 2).
    let (code, out, _) = eval(&dir, &["--query", "data.envoy.authz", "--raw"]);
    assert_eq!(code, 2, "{out}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["allow"], serde_json::json!(true));
    // A division by zero is undefined, as in OPA, and undefined prints nothing.
    let (code, out, err) = eval(&dir, &["--query", "data.envoy.authz.ratio", "--raw"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    // Strict, it is an error, and the sample request (no query string) warns of it.
    let args = [
        "--query",
        "data.envoy.authz.ratio",
        "--raw",
        "--strict-builtin-errors",
    ];
    let (code, out, err) = eval(&dir, &args);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("warning"), "{err}");
}

#[test]
fn a_broken_v0_file_reports_its_v0_error() {
    let v0 = "package envoy.authz\n\ndefault allow = false\n\nallow {\n\tinput.a == 1\n}\n\ndeny[msg] {\n\tmsg := concat(\",\",\n}\n";
    let dir = policies(&[("authz.rego", v0)]);
    let (code, _, err) = eval(&dir, &["--query", "data.envoy.authz.allow"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        !err.contains("`if`"),
        "the v1 parser's complaint, not the v0 error: {err}"
    );
    assert!(err.contains("authz.rego:9:"), "{err}");
}
