//! `input.attributes.source.principal` reads as a SPIFFE ID only when the client presented an
//! X509-SVID (its one URI SAN). A DNS SAN spelt `spiffe://…` (few CAs check what a DNS SAN
//! holds) is never the principal, so a policy matching the principal cannot be fooled by one;
//! a plain DNS name still is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

const ADMIN: &str = "spiffe://example.org/ns/agents/sa/admin";

/// Allows the admin principal; denies anyone else with the principal it saw as the reason.
const POLICY: &str = r#"package regate.authz

admin := "spiffe://example.org/ns/agents/sa/admin"

principal := input.attributes.source.principal

allow := {"allowed": true} if principal == admin

allow := {"allowed": false, "reason": concat("", ["principal=", principal])} if principal != admin
"#;

/// A CA of this file's own, for certificate shapes `common::Ca` does not issue.
struct LocalCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl LocalCa {
    fn new() -> LocalCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn("principal test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_now(&mut p);
        let cert = p.self_signed(&key).unwrap();
        LocalCa {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A client certificate named `cn` with exactly `sans`.
    fn client(&self, cn: &str, sans: Vec<SanType>) -> Identity {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = dn(cn);
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        valid_now(&mut p);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let key_pem = key.serialize_pem();
        Identity {
            chain_pem: cert.pem(),
            chain: vec![CertificateDer::from(cert.der().to_vec())],
            key: PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            key_pem,
        }
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn valid_now(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

#[tokio::test]
async fn a_dns_san_spelt_as_a_spiffe_id_is_not_the_principal() {
    let setup = Setup::new(&[("authz.rego", POLICY)]);
    // regate trusts the setup's CA (for the real SVID) and this file's CA.
    let local = LocalCa::new();
    std::fs::write(
        setup.path("ca.pem"),
        format!("{}{}", setup.ca.pem, local.pem),
    )
    .unwrap();
    let upstream = Upstream::start().await;
    let regate = setup.start(&upstream.url(), &[]).await;

    // Only a DNS SAN, holding the admin's SPIFFE ID: the principal falls back to the subject.
    let forged = local.client("dns-san client", vec![dns(ADMIN)]);
    let mut client = regate.http1(&setup, &forged).await;
    let (status, _, body) = get(&mut client, "/admin").await;
    assert_eq!(status, 403, "{body:?}");
    let records = regate.decisions(1).await;
    assert_eq!(records[0]["allowed"], false);
    assert_eq!(records[0]["reason"], "principal=CN=dns-san client");
    assert!(records[0]["spiffe_id"].is_null(), "{}", records[0]);

    // A plain DNS name is still a principal.
    let plain = local.client("plain dns client", vec![dns("spiffe.example.org")]);
    let mut client = regate.http1(&setup, &plain).await;
    let (status, _, _) = get(&mut client, "/admin").await;
    assert_eq!(status, 403);
    let records = regate.decisions(2).await;
    assert_eq!(records[1]["reason"], "principal=spiffe.example.org");

    assert!(upstream.requests().is_empty());

    // A real X509-SVID for the admin: its SPIFFE ID is the principal, and it is allowed.
    let svid = setup.ca.client(ADMIN);
    let mut client = regate.http1(&setup, &svid).await;
    let (status, _, _) = get(&mut client, "/admin").await;
    assert_eq!(status, 200);
    let records = regate.decisions(3).await;
    assert_eq!(records[2]["allowed"], true);
    assert_eq!(records[2]["spiffe_id"], ADMIN);
    assert_eq!(upstream.requests().len(), 1);
    regate.stop().await;
}
