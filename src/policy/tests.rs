use super::*;

const TIMEOUT: Duration = Duration::from_millis(100);

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

fn load_error(dir: &tempfile::TempDir, query: &str) -> String {
    let errors = PolicySet::load(dir.path(), query, TIMEOUT).err().unwrap();
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn decide(files: &[(&str, &str)], query: &str) -> Decision {
    let dir = dir_with(files);
    PolicySet::load(dir.path(), query, TIMEOUT)
        .unwrap()
        .decide(input::sample())
}

#[test]
fn boolean_and_object_results_decide() {
    let d = decide(&[("p.rego", "package t\nallow := true\n")], "data.t.allow");
    assert!(d.allowed);
    let d = decide(&[("p.rego", "package t\nallow := false\n")], "data.t.allow");
    assert!(!d.allowed);
    assert_eq!(d.reason, "denied");
    let d = decide(
        &[(
            "p.rego",
            r#"package t
allow := {"allowed": false, "reason": "nope", "http_status": 451, "body": "go away",
          "headers": {"x-a": "1", "x-b": ["2", "3"]}}"#,
        )],
        "data.t.allow",
    );
    assert!(!d.allowed);
    assert_eq!(d.reason, "nope");
    assert_eq!(d.status, StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    assert_eq!(d.body.as_deref(), Some(&b"go away"[..]));
    assert_eq!(d.headers.len(), 3);
}

#[test]
fn malformed_results_are_denies() {
    for (body, reason) in [
        ("package t\nallow := 1\n", "policy_invalid_result"),
        ("package t\nallow := \"true\"\n", "policy_invalid_result"),
        (
            "package t\nallow := {\"allowed\": \"yes\"}\n",
            "policy_invalid_result",
        ),
        (
            "package t\nallow := {\"reason\": \"x\"}\n",
            "policy_invalid_result",
        ),
        (
            "package t\nallow := {\"allowed\": true, \"headers\": {\"bad name\": \"v\"}}\n",
            "policy_invalid_result",
        ),
        (
            "package t\nallow := {\"allowed\": false, \"http_status\": 99}\n",
            "policy_invalid_result",
        ),
        (
            "package t\nallow if input.nothing == 1\n",
            "policy_undefined",
        ),
    ] {
        let d = decide(&[("p.rego", body)], "data.t.allow");
        assert!(!d.allowed, "{body}");
        assert_eq!(d.reason, reason, "{body}");
    }
}

#[test]
fn rego_v0_policies_load_too() {
    let d = decide(
        &[(
            "p.rego",
            "package envoy.authz\ndefault allow = false\nallow { input.attributes.request.http.method == \"GET\" }\n",
        )],
        "data.envoy.authz.allow",
    );
    assert!(d.allowed);
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let dir = dir_with(&[
        ("ok.rego", "package t\nallow := true\n"),
        ("sub/bad.rego", "package t\n\nallow if {\n"),
    ]);
    let err = load_error(&dir, "data.t.allow");
    assert!(err.contains("bad.rego:"), "{err}");
    assert!(err.contains(":3:") || err.contains(":4:"), "{err}");
}

#[test]
fn data_files_merge_at_their_directory() {
    let d = decide(
        &[
            (
                "p.rego",
                "package t\nallow if { data.a.x == 1; data.a.b.y == 2; data.top == true }\n",
            ),
            ("data.json", "{\"top\": true}"),
            ("a/data.json", "{\"x\": 1}"),
            ("a/b/more.yaml", "y: 2\n"),
        ],
        "data.t.allow",
    );
    assert!(d.allowed, "{d:?}");
}

#[test]
fn conflicting_data_is_refused() {
    let dir = dir_with(&[
        ("p.rego", "package t\nallow := true\n"),
        ("a/one.json", "{\"x\": 1}"),
        ("a/two.json", "{\"x\": 2}"),
    ]);
    let err = load_error(&dir, "data.t.allow");
    assert!(err.contains("a.x") && err.contains("two.json"), "{err}");
}

#[test]
fn hidden_entries_are_skipped_like_kubernetes_volumes() {
    // A ConfigMap volume holds the real files under ..2024_…/ and symlinks beside them.
    let dir = dir_with(&[("..2026_11_23/p.rego", "package t\nallow := true\n")]);
    std::os::unix::fs::symlink("..2026_11_23", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/p.rego", dir.path().join("p.rego")).unwrap();
    let set = PolicySet::load(dir.path(), "data.t.allow", TIMEOUT).unwrap();
    assert!(set.decide(input::sample()).allowed);
}

#[test]
fn missing_builtins_fail_at_load_not_per_request() {
    let dir = dir_with(&[(
        "p.rego",
        "package t\nallow if { [_, p, _] := io.jwt.decode(\"a.b.c\"); p.sub == \"x\" }\n",
    )]);
    let err = load_error(&dir, "data.t.allow");
    assert!(
        err.contains("p.rego:2") && err.contains("io.jwt.decode"),
        "{err}"
    );
}

#[test]
fn every_broken_file_is_reported() {
    let dir = dir_with(&[
        ("a.rego", "package t\nallow if {\n"),
        (
            "b.rego",
            "package t\nallow if { http.send({\"url\": \"x\"}).status_code == 200 }\n",
        ),
        ("c.json", "{not json"),
        (
            "d.rego",
            "package t\n# crypto.sha256(x) in a comment is fine\nx := \"io.jwt.decode(\"\n",
        ),
    ]);
    let err = load_error(&dir, "data.t.allow");
    assert!(err.contains("a.rego:"), "{err}");
    assert!(err.contains("b.rego:2: calls http.send"), "{err}");
    assert!(err.contains("c.json"), "{err}");
    assert!(!err.contains("d.rego"), "{err}");
}

#[test]
fn unsupported_calls_are_found_outside_comments_and_strings() {
    let found = unsupported_calls(
        "x := io.jwt.decode_verify(t, {})\n# crypto.sha256(x)\ny := \"http.send(\"\nz := crypto.x509.parse_certificates (c)\n",
    );
    assert_eq!(
        found,
        vec![
            (1, "io.jwt.decode_verify".to_string()),
            (4, "crypto.x509.parse_certificates".to_string())
        ]
    );
}

#[test]
fn revision_follows_content() {
    let a = dir_with(&[("p.rego", "package t\nallow := true\n")]);
    let b = dir_with(&[("p.rego", "package t\nallow := false\n")]);
    let ra = PolicySet::load(a.path(), "data.t.allow", TIMEOUT)
        .unwrap()
        .revision;
    let ra2 = PolicySet::load(a.path(), "data.t.allow", TIMEOUT)
        .unwrap()
        .revision;
    let rb = PolicySet::load(b.path(), "data.t.allow", TIMEOUT)
        .unwrap()
        .revision;
    assert_eq!(ra, ra2);
    assert_ne!(ra, rb);
}

#[test]
fn unknown_query_is_refused() {
    let dir = dir_with(&[("p.rego", "package t\nallow := true\n")]);
    assert!(load_error(&dir, "data.other.allow").contains("data.other.allow"));
}

#[test]
fn a_v0_policy_mentioning_if_in_a_comment_still_loads() {
    let d = decide(
        &[(
            "p.rego",
            "package t\n# allow if the method is GET\ndefault allow = false\nallow { input.attributes.request.http.method == \"GET\" }\n",
        )],
        "data.t.allow",
    );
    assert!(d.allowed);
}
