//! `regate dev-certs`: a throwaway CA, a server certificate and client SVIDs for trying
//! regate out. Every certificate says DEV ONLY in its subject; never deploy them.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The client identities written next to the CA: (file stem, SPIFFE ID).
pub const CLIENTS: &[(&str, &str)] = &[
    ("summarizer", "spiffe://example.org/ns/agents/sa/summarizer"),
    ("executor", "spiffe://example.org/ns/agents/sa/executor"),
    ("intruder", "spiffe://evil.example/ns/agents/sa/intruder"),
];
pub const SERVER_SPIFFE_ID: &str = "spiffe://example.org/ns/default/sa/regate";

const README: &str = "\
DEV ONLY. These certificates and keys are public (they are checked into the regate
repository). They exist so `regate run --config regate.dev.yaml` works on a fresh clone.
Never trust this CA anywhere real.

Regenerate with: cargo run -- dev-certs --out certs-dev

ca.pem / ca.key                 the dev CA (client CA bundle and issuer of everything here)
server.pem / server.key         regate's certificate: localhost, 127.0.0.1, SERVER_ID
summarizer.pem / .key           client spiffe://example.org/ns/agents/sa/summarizer
executor.pem / .key             client spiffe://example.org/ns/agents/sa/executor
intruder.pem / .key             client spiffe://evil.example/ns/agents/sa/intruder (a foreign trust domain)
";

/// Write the CA, server and client certificates into `out` (created if missing).
pub fn generate(out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out)?;
    let now = OffsetDateTime::now_utc();
    let validity = |p: &mut CertificateParams| {
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(3650);
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name = name("regate DEV ONLY CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    write(out, "ca.pem", &ca_cert.pem())?;
    write(out, "ca.key", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf =
        |cn: &str, sans: Vec<SanType>, server: bool| -> Result<(String, String), rcgen::Error> {
            let key = KeyPair::generate()?;
            let mut p = CertificateParams::new(Vec::<String>::new())?;
            p.distinguished_name = name(cn);
            p.subject_alt_names = sans;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![if server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
            validity(&mut p);
            let cert = p.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };

    let (pem, key) = leaf(
        "regate DEV ONLY server",
        vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::URI(SERVER_SPIFFE_ID.try_into()?),
        ],
        true,
    )?;
    write(out, "server.pem", &pem)?;
    write(out, "server.key", &key)?;
    for (stem, id) in CLIENTS {
        let (pem, key) = leaf(
            &format!("regate DEV ONLY {stem}"),
            vec![SanType::URI((*id).try_into()?)],
            false,
        )?;
        write(out, &format!("{stem}.pem"), &pem)?;
        write(out, &format!("{stem}.key"), &key)?;
    }
    write(
        out,
        "README",
        &README.replace("SERVER_ID", SERVER_SPIFFE_ID),
    )?;
    Ok(())
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(dir: &Path, file: &str, contents: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(file), contents)
}
