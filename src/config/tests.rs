use super::merge::parse_upstream;
use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn args(list: &[&str]) -> RunArgs {
    Cli::try_parse_from(std::iter::once("regate").chain(list.iter().copied()))
        .unwrap()
        .run
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let err = Config::from_args(args(&[
        "--listen",
        "nowhere",
        "--upstream",
        "ftp://x",
        "--cert",
        "/does/not/exist.pem",
        "--query",
        "allow",
        "--trust-domain",
        "Bad_Domain",
        "--context",
        "novalue",
        "--upstream-timeout",
        "soon",
    ]))
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "listen:",
        "upstream:",
        "cert:",
        "key: required",
        "client-ca: required",
        "policies: required",
        "query:",
        "trust-domain:",
        "context:",
        "upstream-timeout:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn flags_win_over_the_file_and_file_paths_are_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:9000\nupstream: http://127.0.0.1:8080\ncert: cert.pem\nkey: key.pem\n\
         client_ca: ca.pem\npolicies: policies\nquery: data.file.allow\n\
         context: {env: dev, cluster: a}\ntrust_domains: [example.org]\n",
    )
    .unwrap();
    let cfg = Config::from_args(args(&[
        "--config",
        file.to_str().unwrap(),
        "--query",
        "data.flag.allow",
        "--context",
        "env=prod",
    ]))
    .unwrap();
    assert_eq!(cfg.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(cfg.query, "data.flag.allow");
    assert_eq!(cfg.context["env"], "prod");
    assert_eq!(cfg.context["cluster"], "a");
    assert_eq!(cfg.trust_domains, vec!["example.org"]);
    assert_eq!(cfg.cert, dir.path().join("cert.pem"));
}

#[test]
fn unknown_file_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(&file, "listne: 127.0.0.1:1\n").unwrap();
    let err = Config::from_args(args(&["--config", file.to_str().unwrap()])).unwrap_err();
    assert!(err.to_string().contains("listne"), "{err}");
}

#[test]
fn upstream_with_a_path_is_refused() {
    assert!(parse_upstream("http://127.0.0.1:8080/api").is_err());
    assert!(parse_upstream("http://127.0.0.1:8080/").is_ok());
    assert!(parse_upstream("http://127.0.0.1").is_err());
}

#[test]
fn admin_beyond_loopback_needs_an_explicit_flag() {
    let err = Config::check(args(&["--admin", "0.0.0.0:9901"]))
        .errors
        .join("\n");
    assert!(err.contains("--admin-allow-remote"), "{err}");
    let ok = Config::check(args(&["--admin", "0.0.0.0:9901", "--admin-allow-remote"]));
    assert!(
        !ok.errors.iter().any(|e| e.starts_with("admin")),
        "{:?}",
        ok.errors
    );
    assert_eq!(ok.config.admin.unwrap().to_string(), "0.0.0.0:9901");
    assert_eq!(Config::check(args(&["--admin", "none"])).config.admin, None);
    assert_eq!(
        Config::check(args(&[])).config.admin.unwrap().to_string(),
        DEFAULT_ADMIN
    );
}

#[test]
fn max_identities_is_read_from_the_file_and_a_flag_wins_and_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "upstream: http://127.0.0.1:8080\ncert: cert.pem\nkey: key.pem\nclient_ca: ca.pem\n\
         policies: policies\nmax_identities: 50\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let from_file = Config::from_args(args(&["--config", config])).unwrap();
    assert_eq!(from_file.max_identities, 50);
    let flag = Config::from_args(args(&["--config", config, "--max-identities", "7"])).unwrap();
    assert_eq!(flag.max_identities, 7);
    let err = Config::from_args(args(&["--config", config, "--max-identities", "0"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("max-identities: must be at least 1"),
        "{err}"
    );
    let default = Config::from_args(args(&[
        "--upstream",
        "http://127.0.0.1:8080",
        "--cert",
        dir.path().join("cert.pem").to_str().unwrap(),
        "--key",
        dir.path().join("key.pem").to_str().unwrap(),
        "--client-ca",
        dir.path().join("ca.pem").to_str().unwrap(),
        "--policies",
        dir.path().join("policies").to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(
        default.max_identities,
        crate::identities::DEFAULT_MAX_IDENTITIES
    );
}

#[test]
fn redacted_headers_add_to_the_defaults_and_bad_names_are_refused() {
    let checked = Config::check(args(&[
        "--decision-log-input",
        "--redact-header",
        "X-Session",
        "--redact-header",
        "x-*-secret",
        "--delegation-header",
        "x-agent-token-v2",
    ]));
    assert!(checked.config.decision_log_input);
    let recording = checked.config.redaction;
    for name in [
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-*-token",
        "x-session",
        "x-*-secret",
        "x-agent-token-v2",
    ] {
        assert!(recording.redacted().iter().any(|r| r == name), "{name}");
    }
    let off = Config::check(args(&["--redact-header", "x-session"]));
    assert!(!off.config.decision_log_input);
    let bad = Config::check(args(&["--redact-header", "bad name"]));
    assert!(bad.errors.iter().any(|e| e.starts_with("redact-header:")));
}

#[test]
fn the_shadow_set_and_the_mode_come_from_the_file_with_the_main_query_by_default() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    for d in ["policies", "candidate"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "upstream: http://127.0.0.1:8080\ncert: cert.pem\nkey: key.pem\nclient_ca: ca.pem\n\
         policies: policies\nquery: data.main.allow\nshadow_policies: candidate\nmode: audit\n",
    )
    .unwrap();
    let cfg = Config::from_args(args(&["--config", file.to_str().unwrap()])).unwrap();
    let shadow = cfg.shadow.unwrap();
    assert_eq!(shadow.policies, dir.path().join("candidate"));
    assert_eq!(shadow.query, "data.main.allow");
    assert_eq!(cfg.mode, Mode::Audit);

    let cfg = Config::from_args(args(&[
        "--config",
        file.to_str().unwrap(),
        "--mode",
        "enforce",
    ]))
    .unwrap();
    assert_eq!(cfg.mode, Mode::Enforce);
}

#[test]
fn a_shadow_set_inside_the_main_one_or_a_shadow_query_alone_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies/candidate")).unwrap();
    let policies = dir.path().join("policies");
    let nested = policies.join("candidate");
    let err = Config::from_args(args(&[
        "--policies",
        policies.to_str().unwrap(),
        "--shadow-policies",
        nested.to_str().unwrap(),
    ]))
    .unwrap_err();
    assert!(
        err.to_string().contains("must not be inside one another"),
        "{err}"
    );

    let err = Config::from_args(args(&["--shadow-query", "data.x.allow"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("shadow-query: needs --shadow-policies"),
        "{err}"
    );
    let err = Config::from_args(args(&[
        "--policies",
        policies.to_str().unwrap(),
        "--shadow-policies",
        dir.path().join("missing").to_str().unwrap(),
        "--shadow-query",
        "allow",
    ]))
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("shadow-policies:") && text.contains("is not a directory"),
        "{text}"
    );
    assert!(text.contains("shadow-query: \"allow\""), "{text}");
}

#[test]
fn admin_hosts_and_max_revocations_come_from_the_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "upstream: http://127.0.0.1:8080\ncert: cert.pem\nkey: key.pem\nclient_ca: ca.pem\n\
         policies: policies\nadmin_host: [Regate-Admin.internal, '[::1]']\nmax_revocations: 9\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let from_file = Config::from_args(args(&["--config", config])).unwrap();
    assert_eq!(from_file.admin_hosts, ["regate-admin.internal", "::1"]);
    assert_eq!(from_file.max_revocations, 9);
    let flags = Config::from_args(args(&[
        "--config",
        config,
        "--admin-host",
        "10.0.0.7",
        "--max-revocations",
        "3",
    ]))
    .unwrap();
    assert_eq!(flags.admin_hosts, ["10.0.0.7"]);
    assert_eq!(flags.max_revocations, 3);
    let err = Config::from_args(args(&[
        "--config",
        config,
        "--admin-host",
        "localhost:9901",
        "--admin-host",
        "evil host",
        "--max-revocations",
        "0",
    ]))
    .unwrap_err()
    .to_string();
    for needle in [
        "admin-host: \"localhost:9901\"",
        "admin-host: \"evil host\"",
        "max-revocations: must be at least 1",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn a_misspelt_file_key_names_the_key_it_meant_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("regate.yaml");
    // Every required setting is in the file; only one key is misspelt.
    std::fs::write(
        &file,
        "upstream: http://127.0.0.1:8080\ncert: cert.pem\nkey: key.pem\nclient_ca: ca.pem\n\
         policies: policies\npolcy_timeout: 1s\n",
    )
    .unwrap();
    let checked = Config::check(args(&["--config", file.to_str().unwrap()]));
    assert_eq!(checked.errors.len(), 1, "{:?}", checked.errors);
    let error = &checked.errors[0];
    assert!(error.contains("`polcy_timeout`"), "{error}");
    assert!(error.contains("did you mean `policy_timeout`?"), "{error}");
    assert!(error.contains("line 6"), "{error}");
    assert!(!error.contains("`replace_request_id`"), "{error}");

    // Nothing near: the list of known keys stays, and still nothing else is reported.
    std::fs::write(&file, "upstream: http://127.0.0.1:8080\nzzzzzzzz: 1\n").unwrap();
    let checked = Config::check(args(&["--config", file.to_str().unwrap()]));
    assert_eq!(checked.errors.len(), 1, "{:?}", checked.errors);
    assert!(
        checked.errors[0].contains("`zzzzzzzz`, expected one of"),
        "{:?}",
        checked.errors
    );
    assert!(
        !checked.errors[0].contains("did you mean"),
        "{:?}",
        checked.errors
    );

    // A key inside the delegation section is matched against that section's keys.
    std::fs::write(&file, "delegation:\n  require_tokn: true\n").unwrap();
    let checked = Config::check(args(&["--config", file.to_str().unwrap()]));
    assert!(
        checked.errors[0].contains("did you mean `require_token`?"),
        "{:?}",
        checked.errors
    );

    // A file that is not there is the one problem too.
    let missing = dir.path().join("missing.yaml");
    let checked = Config::check(args(&["--config", missing.to_str().unwrap()]));
    assert_eq!(checked.errors.len(), 1, "{:?}", checked.errors);
    assert!(
        checked.errors[0].contains("cannot read"),
        "{:?}",
        checked.errors
    );
}

#[test]
fn edit_distance_counts_a_swap_as_one() {
    assert_eq!(file::edit_distance("polcy_timeout", "policy_timeout"), 1);
    assert_eq!(file::edit_distance("listne", "listen"), 1);
    assert_eq!(file::edit_distance("", "key"), 3);
    assert_eq!(file::edit_distance("mode", "mode"), 0);
}

#[test]
fn an_issuer_names_exactly_one_key_source_fetched_over_https() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), "{}").unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "delegation:\n  issuers:\n\
         \x20   - {issuer: https://a.example, jwks_file: jwks.json, discovery: true, algorithms: [ES256], audiences: [x]}\n\
         \x20   - {issuer: https://b.example, jwks_uri: http://b.example/keys, algorithms: [ES256], audiences: [x]}\n\
         \x20   - {issuer: http://c.example, discovery: true, algorithms: [ES256], audiences: [x]}\n\
         \x20   - {issuer: https://d.example, algorithms: [ES256], audiences: [x]}\n\
         \x20   - {issuer: https://e.example, jwks_uri: http://127.0.0.1:9/keys, ca: missing.pem, algorithms: [ES256], audiences: [x]}\n\
         \x20   - {issuer: https://f.example, jwks_uri: https://f.example/keys, algorithms: [ES256], audiences: [x]}\n\
         jwks_max_staleness: 1s\n"
            .replace("jwks_max_staleness", "  jwks_max_staleness"),
    )
    .unwrap();
    let checked = Config::check(args(&["--config", file.to_str().unwrap()]));
    let text = checked.errors.join("\n");
    for needle in [
        "issuer https://a.example: name exactly one of",
        "issuer https://b.example: jwks_uri",
        "issuer http://c.example: discovery",
        "issuer https://d.example: name exactly one of",
        "issuer https://e.example: ca",
        "jwks-max-staleness",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(!text.contains("f.example"), "{text}");
    let issuers: Vec<_> = checked
        .config
        .delegation
        .issuers
        .iter()
        .map(|i| i.issuer.as_str())
        .collect();
    assert_eq!(
        issuers,
        ["https://f.example"],
        "the others are reported and left out"
    );
}

#[test]
fn the_oauth_resource_is_every_tokens_audience_and_relies_on_the_issuers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "delegation:\n  issuers:\n\
         \x20   - {issuer: https://idp.example.org, discovery: true, algorithms: [ES256]}\n\
         oauth_resource:\n  resource: https://mcp.example.org/mcp\n  scopes_supported: [tools:read]\n",
    )
    .unwrap();
    let checked = Config::check(args(&["--config", file.to_str().unwrap()]));
    let delegation = &checked.config.delegation;
    assert_eq!(
        delegation.required_audience.as_deref(),
        Some("https://mcp.example.org/mcp")
    );
    assert_eq!(
        delegation.issuers[0].audiences,
        ["https://mcp.example.org/mcp"]
    );
    assert!(delegation.require_token, "a token is required by default");
    let resource = checked.config.oauth_resource.unwrap();
    assert_eq!(resource.authorization_servers, ["https://idp.example.org"]);
    assert!(!resource.forward_token);

    std::fs::write(
        &file,
        "oauth_resource:\n  resource: http://mcp.example.org/mcp\n  \
         authorization_servers: [https://elsewhere.example]\n  scopes_supported: [\"two words\"]\n",
    )
    .unwrap();
    let checked = Config::check(args(&["--config", file.to_str().unwrap()]));
    let text = checked.errors.join("\n");
    for needle in [
        "oauth_resource: resource",
        "needs a delegation issuer",
        "authorization server https://elsewhere.example is not a delegation issuer",
        "scope \"two words\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn the_mcp_section_comes_from_the_file_and_the_flags_list_replaces_the_files() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "upstream: http://127.0.0.1:8080\ncert: cert.pem\nkey: key.pem\nclient_ca: ca.pem\n\
         policies: policies\nshadow_policies: policies/../policies\n\
         mcp:\n  allowed_origins: [https://app.example.org]\n  \
         tools_list_query: data.mcp.authz.tool_visible\n",
    )
    .unwrap();
    let checked = Config::check(args(&["--config", file.to_str().unwrap()]));
    let cfg = checked.config;
    let query = cfg.policy_options().tools_list_query;
    assert_eq!(query.as_deref(), Some("data.mcp.authz.tool_visible"));
    let origin = |o: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ORIGIN, o.parse().unwrap());
        cfg.mcp.allowed_origins.check(&h).is_ok()
    };
    assert!(origin("https://app.example.org") && !origin("https://other.example"));
    // The shadow set only decides: it is never asked the tool-visibility query.
    let (_, shadow) = cfg.shadow_policy_options().unwrap();
    assert_eq!(shadow.tools_list_query, None);

    let cfg = Config::check(args(&[
        "--config",
        file.to_str().unwrap(),
        "--mcp-allowed-origin",
        "https://other.example",
    ]))
    .config;
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::ORIGIN,
        "https://app.example.org".parse().unwrap(),
    );
    assert!(cfg.mcp.allowed_origins.check(&h).is_err());

    let err = Config::from_args(args(&[
        "--config",
        file.to_str().unwrap(),
        "--mcp-allowed-origin",
        "*",
        "--mcp-tools-list-query",
        "tool_visible",
    ]))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("mcp-allowed-origin:") && err.contains("mcp-tools-list-query:"),
        "{err}"
    );
}

#[test]
fn an_otlp_endpoint_is_the_traces_url_or_its_base() {
    use super::merge::traces_url;
    let url = |s: &str| traces_url(s).map(|u| u.to_string());
    assert_eq!(
        url("http://127.0.0.1:4318").unwrap(),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(url("http://c:4318/").unwrap(), "http://c:4318/v1/traces");
    assert_eq!(
        url("http://c:4318/otlp").unwrap(),
        "http://c:4318/otlp/v1/traces"
    );
    assert_eq!(url("https://c/v1/traces").unwrap(), "https://c/v1/traces");
    assert!(url("grpc://c:4317").is_err());
    assert!(url("c:4318").is_err());
    assert!(url("http://user:secret@c:4318").is_err());
    assert!(url("http://c:4318/?token=secret").is_err());
}

#[test]
fn tracing_settings_come_from_the_file_section_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem", "collector-ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let file = dir.path().join("regate.yaml");
    std::fs::write(
        &file,
        "upstream: http://127.0.0.1:8080\ncert: cert.pem\nkey: key.pem\nclient_ca: ca.pem\n\
         policies: policies\ntracing: {otlp_endpoint: 'https://collector:4318', \
         otlp_ca: collector-ca.pem, sample_ratio: 0.25}\n",
    )
    .unwrap();
    let cfg = Config::from_args(args(&["--config", file.to_str().unwrap()])).unwrap();
    let tracing = cfg.tracing.unwrap();
    assert_eq!(
        tracing.endpoint.to_string(),
        "https://collector:4318/v1/traces"
    );
    assert_eq!(tracing.ca, Some(dir.path().join("collector-ca.pem")));
    assert_eq!(tracing.sample_ratio, 0.25);

    let off = Config::check(args(&[]));
    assert!(off.config.tracing.is_none());

    let bad = Config::check(args(&[
        "--otlp-endpoint",
        "https://collector:4318",
        "--trace-sample-ratio",
        "1.5",
    ]));
    let text = bad.errors.join("\n");
    assert!(text.contains("trace-sample-ratio: 1.5"), "{text}");
    assert!(text.contains("otlp-ca: an https otlp-endpoint"), "{text}");

    let pointless = Config::check(args(&["--trace-sample-ratio", "0.5"]));
    assert!(
        pointless
            .errors
            .iter()
            .any(|e| e.starts_with("otlp-endpoint:")),
        "{:?}",
        pointless.errors
    );
}
