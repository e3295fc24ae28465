//! A client cannot forge or hide diagnostic lines: whatever a certificate's subject holds
//! (a newline followed by a fake log line, a terminal escape), it reaches stderr escaped,
//! inside the one line that names the connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Evaluation fails for /boom only: the load-time sample request has no path, so the policy
/// loads, and every /boom request logs an error inside its connection's span.
const FAILS_ON_BOOM: &str = r#"package regate.authz

default allow := false

# Two values for one complete rule: an evaluation error even with non-strict builtins.
boom := 1 if input.parsed_path[0] == "boom"

boom := 2 if input.parsed_path[0] == "boom"

allow if boom == 1
"#;

/// What the subject's common name smuggles: a line break, a whole fake log line, and an
/// escape that clears a terminal.
const FORGED: &str = "evil\n2026-01-01T00:00:00.000000Z  INFO regate: forged line\u{1b}[2J";

/// A CA of this file's own (the shared one's key is private) and, signed by it, a client
/// certificate with no SAN at all, so regate names the connection by its subject.
fn client_named_by_subject(cn: &str) -> (String, Identity) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let validity = |p: &mut CertificateParams| {
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut ca_dn = DistinguishedName::new();
    ca_dn.push(DnType::CommonName, "forgery test CA");
    ca.distinguished_name = ca_dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    leaf.distinguished_name = dn;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut leaf);
    let chain_pem = leaf.signed_by(&key, &issuer).unwrap().pem();
    let key_pem = key.serialize_pem();
    let identity = Identity {
        chain: CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        chain_pem,
        key_pem,
    };
    (ca_pem, identity)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_subject_cannot_forge_or_hide_a_log_line() {
    let setup = Setup::new(&[("authz.rego", FAILS_ON_BOOM)]);
    let (forger_ca, forger) = client_named_by_subject(FORGED);
    // regate trusts both roots; the forger's chain is as valid as anyone's.
    std::fs::write(
        setup.path("ca.pem"),
        format!("{}{}", setup.ca.pem, forger_ca),
    )
    .unwrap();
    let upstream = Upstream::start().await;
    // Text format and the default RUST_LOG, as an operator runs it.
    let process = Process::start(&setup.args(&upstream.url()), &[]);

    let mut client = process.http1(&setup, &forger).await;
    let (status, _, _) = get(&mut client, "/boom").await;
    assert_eq!(status, 403);
    let logged = eventually(Duration::from_secs(10), || {
        let stderr = process.stderr();
        async move { stderr.contains("policy evaluation failed") }
    })
    .await;
    let stderr = process.stderr();
    assert!(logged, "no evaluation error was logged:\n{stderr}");
    assert!(upstream.requests().is_empty());

    // The line that names the connection is one line, and holds the subject escaped.
    let error_line = stderr
        .lines()
        .find(|l| l.contains("policy evaluation failed"))
        .unwrap();
    assert!(
        error_line.contains(r"evil\n2026-01-01T00:00:00.000000Z  INFO regate: forged line"),
        "the subject is not in the error line, escaped:\n{stderr}"
    );
    assert!(
        error_line.contains(r"\u{1b}[2J"),
        "the escape character is not shown escaped:\n{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")),
        "a client forged a log line:\n{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "a raw escape character reached stderr:\n{stderr:?}"
    );
}
