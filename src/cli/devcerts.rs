//! `regate dev-certs`: a throwaway CA, a server certificate and client SVIDs for trying
//! regate out, and a key to sign the decision log's checkpoints with. Every certificate says
//! DEV ONLY in its subject; never deploy them.

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
decision-log-signing.key / .pub Ed25519 key for --decision-log-signing-key, and its public key
                                for `regate audit verify --public-key`
approvals.key                   Ed25519 key for approvals.local_key: `regate approve` and
                                POST /approvals/{id} sign approval tokens with it
";

/// The decision log signing key and its public key, as written into the output directory.
pub const SIGNING_KEY: &str = "decision-log-signing.key";
pub const SIGNING_PUBLIC_KEY: &str = "decision-log-signing.pub";
/// The local approval key (`approvals.local_key` of `regate.approvals.yaml`).
pub const APPROVAL_KEY: &str = "approvals.key";

/// Write the CA, server and client certificates, and the decision log signing key, into `out`
/// (created if missing).
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
    let signing = signing_key()?;
    write(out, SIGNING_KEY, &signing.serialize_pem())?;
    let mut public = signing.public_key_pem();
    if !public.ends_with('\n') {
        public.push('\n');
    }
    write(out, SIGNING_PUBLIC_KEY, &public)?;
    write(out, APPROVAL_KEY, &signing_key()?.serialize_pem())?;
    write(
        out,
        "README",
        &README.replace("SERVER_ID", SERVER_SPIFFE_ID),
    )?;
    Ok(())
}

/// PKCS#8 v1 of an Ed25519 private key (RFC 8410 section 7), up to its 32-byte seed.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new Ed25519 key, kept as PKCS#8 v1: what `openssl genpkey -algorithm ed25519` writes.
/// ring would write v2 (the public key inside), which OpenSSL 3.0 cannot read, and an
/// auditor may well look at the key with OpenSSL.
fn signing_key() -> Result<KeyPair, Box<dyn std::error::Error>> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "no randomness for the decision log signing key")?;
    let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(der),
        &rcgen::PKCS_ED25519,
    )?)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(dir: &Path, file: &str, contents: &str) -> std::io::Result<()> {
    std::fs::write(dir.join(file), contents)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::signing::{PublicKey, SigningKey};

    #[test]
    fn the_dev_signing_key_loads_and_its_public_key_checks_what_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path()).unwrap();
        let key = SigningKey::load(&dir.path().join(SIGNING_KEY)).unwrap();
        let public = PublicKey::load(&dir.path().join(SIGNING_PUBLIC_KEY)).unwrap();
        let chain = "5e".repeat(32);
        assert!(public.verifies(3, Some(&chain), &key.sign(3, Some(&chain))));
        let readme = std::fs::read_to_string(dir.path().join("README")).unwrap();
        assert!(readme.contains(SIGNING_KEY), "{readme}");
        assert!(readme.contains(APPROVAL_KEY), "{readme}");
        SigningKey::load(&dir.path().join(APPROVAL_KEY)).unwrap();
    }
}
