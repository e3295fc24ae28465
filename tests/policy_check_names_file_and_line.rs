//! `regate policy check` refuses what `regate run` would refuse, naming the file and line:
//! a syntax error, a builtin neither regorus nor regate implements, a query that names nothing
//! or a path below a true/false rule. It runs the proxy's own load, so the two cannot disagree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

const SYNTAX_ERROR: &str = "package regate.authz

default allow := false

allow if {
\tinput.peer.spiffe_id ==
}
";

const TEMPLATE: &str = r#"package tokens

# net.lookup_ip_addr(in a comment) is not a call.
body := b if {
	b := net.lookup_ip_addr(input.name)
	b != ""
}
"#;

fn check(dir: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["policy", "check", dir];
    args.extend(extra);
    let out = regate_command(&args);
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap()
        ),
    )
}

#[test]
fn policy_check_names_the_file_and_line_of_a_syntax_error_and_of_a_missing_builtin() {
    let setup = Setup::new(&[("authz.rego", SYNTAX_ERROR), ("tokens.rego", TEMPLATE)]);
    let dir = setup.path("policies").display().to_string();
    let (code, out) = check(&dir, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("authz.rego:7:1: expecting expression"),
        "{out}"
    );
    assert!(
        out.contains("tokens.rego:5: calls net.lookup_ip_addr, which regate does not implement"),
        "{out}"
    );
    assert!(out.contains("2 problems"), "{out}");

    // `regate run` refuses the same directory with the same messages.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .arg("run")
        .args(setup.args("http://127.0.0.1:9"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert!(
        stderr.contains("authz.rego:7:1: expecting expression"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tokens.rego:5: calls net.lookup_ip_addr"),
        "{stderr}"
    );
}

#[test]
fn policy_check_passes_a_clean_directory_and_refuses_a_missing_query() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let dir = setup.path("policies").display().to_string();
    let (code, out) = check(&dir, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 1 Rego files"), "{out}");
    assert!(out.contains("revision sha256:"), "{out}");

    let (code, out) = check(&dir, &["--query", "data.envoy.authz.allow"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("data.envoy.authz.allow"), "{out}");

    // A library names no query: compiling is the whole check.
    let lib = Setup::new(&[("lib.rego", "package lib\n\ndouble(x) := 2 * x\n")]);
    let dir = lib.path("policies").display().to_string();
    assert_eq!(check(&dir, &[]).0, 1);
    let (code, out) = check(&dir, &["--no-query"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn policy_check_refuses_a_query_below_a_true_or_false_rule_and_passes_a_package() {
    let setup = Setup::new(&[
        ("authz.rego", ALLOW_DOCS),
        (
            "inner/authz.rego",
            "package regate.authz.inner\n\nallow := true\n",
        ),
    ]);
    let dir = setup.path("policies").display().to_string();
    let (code, out) = check(&dir, &["--query", "data.regate.authz.allow.x.y"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("names a path below data.regate.authz.allow,"),
        "{out}"
    );
    assert!(out.contains("1 problem"), "{out}");

    // A whole package, and a rule in a nested package, are still queries.
    for query in ["data.regate.authz", "data.regate.authz.inner.allow"] {
        let (code, out) = check(&dir, &["--query", query]);
        assert_eq!(code, 0, "{query}: {out}");
    }
}
