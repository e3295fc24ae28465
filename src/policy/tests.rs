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
    let errors = PolicySet::load(dir.path(), &Options::new(query, TIMEOUT))
        .err()
        .unwrap();
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn decide(files: &[(&str, &str)], query: &str) -> Decision {
    let dir = dir_with(files);
    PolicySet::load(dir.path(), &Options::new(query, TIMEOUT))
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
    let set = PolicySet::load(dir.path(), &Options::new("data.t.allow", TIMEOUT)).unwrap();
    assert!(set.decide(input::sample()).allowed);
}

#[test]
fn missing_builtins_fail_at_load_not_per_request() {
    let dir = dir_with(&[(
        "p.rego",
        "package t\nallow if { x := net.lookup_ip_addr(\"a\"); count(x) > 0 }\n",
    )]);
    let err = load_error(&dir, "data.t.allow");
    assert!(
        err.contains("p.rego:2") && err.contains("net.lookup_ip_addr"),
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
fn calls_of_missing_functions_are_refused_by_line_outside_comments_and_strings() {
    let dir = dir_with(&[(
        "p.rego",
        "package t\n\n# net.lookup_ip_addr(x)\nallow if {\n\tx := \"rego.parse_module(\"\n\tcount(net.lookup_ip_addr(x)) > 0\n}\n",
    )]);
    let err = load_error(&dir, "data.t.allow");
    assert!(err.contains("p.rego:6: calls net.lookup_ip_addr"), "{err}");
    assert!(!err.contains("p.rego:3"), "{err}");
    assert!(!err.contains("rego.parse_module"), "{err}");
}

#[test]
fn builtins_regate_adds_are_not_refused() {
    let decision = decide(
        &[(
            "p.rego",
            "package t\nallow if net.cidr_contains(\"10.0.0.0/8\", \"::ffff:10.1.2.3\")\n",
        )],
        "data.t.allow",
    );
    assert!(decision.allowed, "{decision:?}");
}

#[test]
fn failing_builtins_make_expressions_undefined_unless_strict() {
    let files = [(
        "p.rego",
        "package t\nallow if not deny\ndeny if to_number(input.x) > 1\ndeny if net.cidr_contains(\"10.0.0.0/8\", \"10.0.0.1:80\")\n",
    )];
    let dir = dir_with(&files);
    let mut options = Options::new("data.t.allow", TIMEOUT);
    let input = Value::from_json_str(r#"{"x": "lots"}"#).unwrap();
    let lenient = PolicySet::load(dir.path(), &options).unwrap();
    assert!(lenient.decide(input.clone()).allowed);
    options.strict_builtin_errors = true;
    let strict = PolicySet::load(dir.path(), &options).unwrap();
    let decision = strict.decide(input);
    assert!(!decision.allowed);
    assert_eq!(decision.reason, "policy_error");
}

#[test]
fn any_data_path_is_a_query() {
    let files = [(
        "p.rego",
        "package envoy.authz\nimport rego.v1\nallow if input.attributes.request.http.method == \"GET\"\nresult[\"allowed\"] := allow\nresult.headers := {\"x-a\": \"1\"}\nallowed := allow\n",
    )];
    for query in [
        "data.envoy.authz.result",
        "data.envoy.authz",
        "data.envoy.authz.allow",
    ] {
        let decision = decide(&files, query);
        assert!(decision.allowed, "{query}: {decision:?}");
    }
    let dir = dir_with(&files);
    let err = load_error(&dir, "data.envoy.nothing");
    assert!(err.contains("names no rule"), "{err}");
    let err = load_error(&dir, "data.envoy.authz.allow; true");
    assert!(err.contains("is not a path"), "{err}");
    let err = load_error(&dir, "data");
    assert!(err.contains("names all of data"), "{err}");
}

#[test]
fn regates_own_query_package_cannot_be_defined_by_a_policy() {
    let dir = dir_with(&[
        (
            "p.rego",
            "package envoy.authz\nresult[\"allowed\"] := false\n",
        ),
        (
            "q.rego",
            "package regate_query__\nvalue := {\"allowed\": true}\n",
        ),
    ]);
    let err = load_error(&dir, "data.envoy.authz.result");
    assert!(err.contains("regate_query__ is regate's own"), "{err}");
}

#[test]
fn a_failing_sample_evaluation_is_a_warning() {
    let dir = dir_with(&[(
        "p.rego",
        "package t\nallow if input.parsed_query.n[0] == \"1\"\nallow if 1 / count(input.parsed_query) > 0\n",
    )]);
    let mut options = Options::new("data.t.allow", TIMEOUT);
    options.strict_builtin_errors = true;
    let set = PolicySet::load(dir.path(), &options).unwrap();
    assert!(set.sample_error.is_some());
}

#[test]
fn revision_follows_content() {
    let a = dir_with(&[("p.rego", "package t\nallow := true\n")]);
    let b = dir_with(&[("p.rego", "package t\nallow := false\n")]);
    let ra = PolicySet::load(a.path(), &Options::new("data.t.allow", TIMEOUT))
        .unwrap()
        .revision;
    let ra2 = PolicySet::load(a.path(), &Options::new("data.t.allow", TIMEOUT))
        .unwrap()
        .revision;
    let rb = PolicySet::load(b.path(), &Options::new("data.t.allow", TIMEOUT))
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

#[test]
fn a_symlink_out_of_the_policy_directory_is_refused_and_a_loop_is_read_once() {
    let secret = dir_with(&[("p.rego", "package t\nallow := true\n")]);
    std::fs::write(
        secret.path().join("tls.key"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();
    let dir = dir_with(&[("p.rego", "package t\nallow := true\n")]);
    std::os::unix::fs::symlink(secret.path().join("tls.key"), dir.path().join("k.yaml")).unwrap();
    let error = load_error(&dir, "data.t.allow");
    assert!(
        error.contains("k.yaml") && error.contains("outside"),
        "{error}"
    );
    std::fs::remove_file(dir.path().join("k.yaml")).unwrap();
    std::os::unix::fs::symlink(secret.path(), dir.path().join("elsewhere")).unwrap();
    let error = load_error(&dir, "data.t.allow");
    assert!(
        error.contains("elsewhere") && error.contains("outside"),
        "{error}"
    );
    std::fs::remove_file(dir.path().join("elsewhere")).unwrap();

    // Inside the directory, symlinks are followed (a ConfigMap's files are), and one that
    // loops back is not walked again.
    std::fs::create_dir(dir.path().join("..data")).unwrap();
    std::fs::write(dir.path().join("..data/d.json"), r#"{"x": 1}"#).unwrap();
    std::os::unix::fs::symlink("..data/d.json", dir.path().join("d.json")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("again")).unwrap();
    let set = PolicySet::load(dir.path(), &Options::new("data.t.allow", TIMEOUT)).unwrap();
    assert!(set.revision.starts_with("sha256:"));
}

#[test]
fn a_query_below_a_rule_with_nothing_below_it_is_refused() {
    let files = [
        (
            "p.rego",
            "package regate.authz\nimport rego.v1\ndefault allow := false\nallow if input.x == 1\n\
             status := 403 if input.x == 2\nelse := 401\n\
             result := {\"allowed\": true, \"headers\": {\"x-a\": \"1\"}}\n\
             partial[\"allowed\"] := true\nname := input.name\n",
        ),
        (
            "inner.rego",
            "package regate.authz.inner\nimport rego.v1\nallow := true\n",
        ),
    ];
    let dir = dir_with(&files);
    for (query, rule) in [
        ("data.regate.authz.allow.x.y", "data.regate.authz.allow"),
        ("data.regate.authz.allow.x", "data.regate.authz.allow"),
        ("data.regate.authz.status.code", "data.regate.authz.status"),
        (
            "data.regate.authz.partial.allowed.x",
            "data.regate.authz.partial.allowed",
        ),
        (
            "data.regate.authz.inner.allow.x",
            "data.regate.authz.inner.allow",
        ),
    ] {
        let err = load_error(&dir, query);
        assert!(
            err.contains(&format!("names a path below {rule},")),
            "{query}: {err}"
        );
    }
    // Inside a document a rule builds, or one whose value is not known before a request,
    // a path may be defined; a package, nested ones included, is a document.
    for query in [
        "data.regate.authz.result.allowed",
        "data.regate.authz.partial.allowed",
        "data.regate.authz.name.first",
        "data.regate.authz",
        "data.regate.authz.inner",
        "data.regate.authz.inner.allow",
        "data.regate",
    ] {
        PolicySet::load(dir.path(), &Options::new(query, TIMEOUT))
            .map_err(|es| es.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("{query}: {e:?}"));
    }
}

#[test]
fn required_scope_is_a_deny_asking_for_scope_tokens() {
    let rule = |result: &str| {
        decide(
            &[("p.rego", &format!("package t\nallow := {result}\n"))],
            "data.t.allow",
        )
    };
    let d = rule(r#"{"allowed": false, "required_scope": "tools:call"}"#);
    assert_eq!(d.required_scope, ["tools:call"]);
    assert_eq!(
        d.reason, "insufficient_scope",
        "the reason when the policy gives none"
    );
    assert_eq!(d.status, StatusCode::FORBIDDEN);
    let d = rule(r#"{"allowed": false, "reason": "needs_call", "required_scope": ["a", "b:c"]}"#);
    assert_eq!(d.required_scope, ["a", "b:c"]);
    assert_eq!(d.reason, "needs_call");
    for bad in [
        r#"{"allowed": true, "required_scope": "tools:call"}"#,
        r#"{"allowed": false, "required_scope": "two words"}"#,
        r#"{"allowed": false, "required_scope": []}"#,
        r#"{"allowed": false, "required_scope": 7}"#,
        r#"{"allowed": false, "required_scope": "x", "http_status": 401}"#,
    ] {
        let d = rule(bad);
        assert!(!d.allowed, "{bad}");
        assert_eq!(d.reason, "policy_invalid_result", "{bad}");
        assert!(d.required_scope.is_empty(), "{bad}");
    }
}
