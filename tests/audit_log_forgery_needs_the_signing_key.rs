//! With `--decision-log-signing-key`, regate signs the decision log's checkpoints, and
//! `regate audit verify --public-key` checks them: whoever can rewrite the file but has no key
//! can recompute the hash chain after an edit, and verify still names the first checkpoint
//! whose signature no longer matches; all such a forger can do unseen is cut the lines after
//! the last signed checkpoint, and verify counts them. A key regate cannot use stops it at
//! startup, named with every other problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use serde_json::Value;

/// An Ed25519 key pair written into `setup`'s directory as `{name}.key` (PKCS#8 PEM) and
/// `{name}.pub` (SubjectPublicKeyInfo PEM); returns the two paths as text.
fn key_pair(setup: &Setup, name: &str) -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let private = setup.path(&format!("{name}.key"));
    let public = setup.path(&format!("{name}.pub"));
    std::fs::write(&private, pair.serialize_pem()).unwrap();
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    (private.display().to_string(), public.display().to_string())
}

/// Run regate on `setup` with `extra` flags (appending to its decisions.log), send `n`
/// requests, every third one denied, and stop it once their records are written.
async fn run_once(setup: &Setup, n: usize, extra: &[&str]) {
    let upstream = Upstream::start().await;
    let text = std::fs::read_to_string(setup.path("decisions.log")).unwrap_or_default();
    let before = records_in(&text).len();
    let regate = setup.start(&upstream.url(), extra).await;
    let mut client = regate.http1(setup, &setup.ca.client(SUMMARIZER)).await;
    for i in 0..n {
        let path = match i % 3 {
            2 => format!("/admin/{i}"),
            _ => format!("/docs/{i}"),
        };
        get(&mut client, &path).await;
    }
    regate.decisions(before + n).await;
    regate.stop().await;
}

fn lines(setup: &Setup) -> Vec<String> {
    std::fs::read_to_string(setup.path("decisions.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A copy of the log with `lines`, one a line.
fn tampered(setup: &Setup, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = setup.path(name);
    std::fs::write(&path, format!("{}\n", lines.join("\n"))).unwrap();
    path
}

fn verify(file: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let name = file.display().to_string();
    let mut args = vec!["audit", "verify", name.as_str()];
    args.extend_from_slice(extra);
    let out = regate_command(&args);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The forger's move: recompute `seq`'s `chain` on every line, and every checkpoint's
/// `previous_chain`, from the hash chain's public definition (docs/policy-input.md). There is
/// no key in it: signatures are left as they were.
fn rechain(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut prev: Option<String> = None;
    for line in lines {
        let record: Value = serde_json::from_str(line).unwrap();
        let cut = line.rfind(r#","chain":""#).unwrap();
        let mut body = line[..cut].to_string();
        if let (Some(old), Some(new)) = (record["previous_chain"].as_str(), &prev) {
            body = body.replace(old, new);
        }
        let canonical = format!("{body}}}");
        let chain = sha256_hex(format!("{}{canonical}", prev.as_deref().unwrap_or("")).as_bytes());
        out.push(format!(r#"{body},"chain":"{chain}"}}"#));
        prev = Some(chain);
    }
    out
}

fn checkpoints(lines: &[String]) -> Vec<(usize, Value)> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i, serde_json::from_str::<Value>(l).unwrap()))
        .filter(|(_, r)| r["event"] == "chain_checkpoint")
        .collect()
}

#[tokio::test]
async fn a_signed_log_verifies_with_its_public_key_up_to_its_last_line() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let (private, public) = key_pair(&setup, "signing");
    let signing = ["--decision-log-signing-key", private.as_str()];
    run_once(&setup, 3, &signing).await;
    run_once(&setup, 3, &signing).await;
    let log = lines(&setup);
    // Each run: its start, three records, and the checkpoint at exit that signs them.
    assert_eq!(log.len(), 10);
    let marks: Vec<(usize, String)> = checkpoints(&log)
        .into_iter()
        .map(|(i, r)| {
            assert_eq!(r["signature"].as_str().map(str::len), Some(128), "{r}");
            (i, r["reason"].as_str().unwrap().to_string())
        })
        .collect();
    let expected = [(0, "start"), (4, "exit"), (5, "start"), (9, "exit")];
    assert_eq!(
        marks,
        expected.map(|(i, r)| (i, r.to_string())).to_vec(),
        "{log:#?}"
    );

    let (code, out) = verify(&setup.path("decisions.log"), &["--public-key", &public]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "signed: up to seq 10, the checkpoint at {}:10; no line after it is unsigned"
                .replace("{}", &setup.path("decisions.log").display().to_string())
                .as_str()
        ),
        "{out}"
    );
    assert!(out.contains("intact: 10 records"), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[tokio::test]
async fn an_edit_with_the_chain_recomputed_fails_at_the_first_checkpoint_after_it() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let (private, public) = key_pair(&setup, "signing");
    let signing = ["--decision-log-signing-key", private.as_str()];
    run_once(&setup, 3, &signing).await;
    run_once(&setup, 3, &signing).await;
    let log = lines(&setup);
    // The helper reproduces regate's chain, so what follows is a faithful forgery.
    assert_eq!(rechain(&log), log);

    // A deny of the first run turned into an allow, every chain after it recomputed.
    let mut forged = log.clone();
    assert!(forged[3].contains(r#""allowed":false"#), "{}", forged[3]);
    forged[3] = forged[3].replace(r#""allowed":false"#, r#""allowed":true"#);
    let forged = tampered(&setup, "forged.log", &rechain(&forged));
    // The chain alone cannot tell: it is consistent again.
    let (code, out) = verify(&forged, &[]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = verify(&forged, &["--public-key", &public]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("forged.log:5: seq 5: the checkpoint's signature does not verify"),
        "{out}"
    );

    // Re-signing is what the forger cannot do: a checkpoint whose signature is dropped is a
    // break of its own.
    let mut unsigned = log.clone();
    let cut = unsigned[4].find(r#","signature":""#).unwrap();
    let end = cut + unsigned[4][cut + 1..].find(",\"").unwrap() + 1;
    unsigned[4].replace_range(cut..end, "");
    let unsigned = tampered(&setup, "unsigned.log", &rechain(&unsigned));
    let (code, out) = verify(&unsigned, &["--public-key", &public]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("unsigned.log:5: seq 5: the checkpoint is not signed"),
        "{out}"
    );
}

#[tokio::test]
async fn a_tail_cut_after_the_last_signed_checkpoint_is_counted_as_unsigned_lines() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let (private, public) = key_pair(&setup, "signing");
    run_once(&setup, 3, &["--decision-log-signing-key", &private]).await;
    let mut log = lines(&setup);
    assert_eq!(log.len(), 5);
    // The checkpoint at exit and the last record cut: what is left verifies, and verify
    // says how much of it no signature covers.
    log.truncate(3);
    let cut = tampered(&setup, "cut.log", &log);
    let (code, out) = verify(&cut, &["--public-key", &public]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("signed: up to seq 1, the checkpoint at ")
            && out.contains("cut.log:1; 2 lines after it are unsigned"),
        "{out}"
    );
}

#[tokio::test]
async fn another_public_key_or_an_unsigned_log_fails() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let (private, _) = key_pair(&setup, "signing");
    let (_, other) = key_pair(&setup, "other");
    run_once(&setup, 3, &["--decision-log-signing-key", &private]).await;
    let log = lines(&setup);
    let path = setup.path("decisions.log");
    let (code, out) = verify(&path, &["--public-key", &other]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("decisions.log:1: seq 1: the checkpoint's signature does not verify"),
        "{out}"
    );

    // No checkpoint left at all (a copy of the middle of the log): nothing is signed.
    let middle = tampered(&setup, "middle.log", &log[1..4]);
    let (code, out) = verify(&middle, &["--allow-new-chain", "--public-key", &other]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("broken: no checkpoint in the log is signed"),
        "{out}"
    );

    // A log written without a key has unsigned checkpoints.
    let plain = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    run_once(&plain, 2, &[]).await;
    let (code, out) = verify(&plain.path("decisions.log"), &["--public-key", &other]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("decisions.log:1: seq 1: the checkpoint is not signed"),
        "{out}"
    );

    // A public key that is not one is exit 2, like an unreadable log.
    let (code, out) = verify(&path, &["--public-key", &private]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--public-key:"), "{out}");
}

#[test]
fn a_signing_key_regate_cannot_use_is_a_startup_error_named_with_the_others() {
    let setup = Setup::new(&[("bad.rego", "package regate.authz\nallow if {\n")]);
    let ecdsa = rcgen::KeyPair::generate().unwrap();
    std::fs::write(setup.path("ecdsa.key"), ecdsa.serialize_pem()).unwrap();
    std::fs::write(setup.path("text.key"), "not a key").unwrap();
    let run = |key: &str| {
        let mut args = setup.args("http://127.0.0.1:9");
        args.extend(["--decision-log-signing-key".into(), key.to_string()]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
            .arg("run")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (key, why) in [
        ("/no/such/signing.key", "does not exist"),
        (
            &*setup.path("text.key").display().to_string(),
            "PRIVATE KEY",
        ),
        (
            &*setup.path("ecdsa.key").display().to_string(),
            "is not an Ed25519 key",
        ),
    ] {
        let (code, stderr) = run(key);
        assert_eq!(code, Some(2), "{stderr}");
        let named = stderr.lines().any(|l| {
            l.contains("decision-log-signing-key: ") && l.contains(key) && l.contains(why)
        });
        assert!(named, "{key}: {stderr}");
        // Reported with the broken policy, in the same run.
        assert!(stderr.contains("bad.rego:3"), "{stderr}");
        assert!(!stderr.contains("serving"), "{stderr}");
    }

    // In the YAML file, the key's path is relative to the file.
    let yaml = setup.path("regate.yaml");
    std::fs::write(&yaml, "decision_log_signing_key: keys/missing.key\n").unwrap();
    let mut args = setup.args("http://127.0.0.1:9");
    args.extend(["--config".into(), yaml.display().to_string()]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_regate"))
        .arg("run")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let resolved = setup.path("keys/missing.key").display().to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "decision-log-signing-key: {resolved} does not exist"
        )),
        "{stderr}"
    );
}
