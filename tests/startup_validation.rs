//! Bad settings stop regate before it listens, all reported in one run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

fn run_regate(args: &[String]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .arg("run")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broken_policy_at_startup_exits_nonzero_and_names_the_file() {
    let setup = Setup::new(&[
        ("ok.rego", "package regate.authz\nallow := true\n"),
        (
            "team/broken.rego",
            "package regate.authz\n\nallow if {\n  input.x ==\n}\n",
        ),
    ]);
    let (code, stderr) = run_regate(&setup.args("http://127.0.0.1:9"));
    assert_ne!(code, 0);
    assert!(stderr.contains("broken.rego:5:"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn every_bad_setting_is_reported_at_once() {
    let setup = Setup::new(&[
        ("bad.rego", "package regate.authz\nallow if {\n"),
        (
            "also/bad.rego",
            "package regate.authz\nallow := net.lookup_ip_addr(\"x\")\n",
        ),
    ]);
    // The key of another certificate: it does not match server.pem.
    let other = setup.ca.client(SUMMARIZER);
    std::fs::write(setup.path("server.key"), &other.key_pem).unwrap();
    std::fs::write(setup.path("ca.pem"), "not a certificate").unwrap();
    let mut args = setup.args("ftp://nowhere");
    args.extend(["--upstream-timeout".into(), "soon".into()]);
    let (code, stderr) = run_regate(&args);
    assert_eq!(code, 2, "{stderr}");
    for needle in [
        "upstream:",
        "upstream-timeout:",
        "does not match",
        "client-ca",
        "bad.rego:3",
        "also/bad.rego:2: calls net.lookup_ip_addr",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("serving"), "{stderr}");

    let mut args = setup.args("http://127.0.0.1:9");
    let cert = args.iter().position(|a| a == "--cert").unwrap() + 1;
    args[cert] = "/no/such/cert.pem".into();
    let (code, stderr) = run_regate(&args);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/no/such/cert.pem") && stderr.contains("bad.rego"),
        "{stderr}"
    );
}

#[test]
fn a_policy_calling_a_missing_builtin_is_refused_at_startup() {
    let setup = Setup::new(&[(
        "jwt.rego",
        "package regate.authz\nallow if {\n  b := net.lookup_ip_addr(\"example.org\")\n  count(b) > 0\n}\n",
    )]);
    let (code, stderr) = run_regate(&setup.args("http://127.0.0.1:9"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("jwt.rego:3: calls net.lookup_ip_addr"),
        "{stderr}"
    );
}

#[test]
fn a_misspelt_config_key_is_named_with_the_key_it_meant_and_nothing_else() {
    let setup = Setup::new(&[("ok.rego", "package regate.authz\nallow := true\n")]);
    let yaml = setup.path("regate.yaml");
    // Every required setting is in the file; one key is misspelt.
    std::fs::write(
        &yaml,
        "listen: 127.0.0.1:0\nupstream: http://127.0.0.1:9\ncert: server.pem\nkey: server.key\n\
         client_ca: ca.pem\npolicies: policies\npolcy_timeout: 1s\n",
    )
    .unwrap();
    let (code, stderr) = run_regate(&["--config".into(), yaml.display().to_string()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("unknown field `polcy_timeout`")
            && stderr.contains("did you mean `policy_timeout`?"),
        "{stderr}"
    );
    let reported: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("regate: "))
        .collect();
    assert_eq!(reported.len(), 1, "{stderr}");
    assert!(!stderr.contains("required"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn a_query_below_a_true_or_false_rule_is_refused_at_startup_and_so_is_such_a_shadow_query() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let mut args = setup.args("http://127.0.0.1:9");
    args.extend(["--query".into(), "data.regate.authz.allow.x.y".into()]);
    let (code, stderr) = run_regate(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "query: data.regate.authz.allow.x.y: names a path below data.regate.authz.allow,"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("serving"), "{stderr}");

    let shadow = setup.path("shadow");
    std::fs::create_dir(&shadow).unwrap();
    std::fs::write(shadow.join("authz.rego"), ALLOW_DOCS).unwrap();
    let mut args = setup.args("http://127.0.0.1:9");
    args.extend([
        "--shadow-policies".into(),
        shadow.display().to_string(),
        "--shadow-query".into(),
        "data.regate.authz.allow.x".into(),
    ]);
    let (code, stderr) = run_regate(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "shadow-policies: query: data.regate.authz.allow.x: names a path below \
             data.regate.authz.allow,"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("serving"), "{stderr}");
}
