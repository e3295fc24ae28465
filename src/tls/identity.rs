//! The peer's identity, read once per connection from its verified leaf certificate.
//!
//! This is the only place regate parses X.509. It does not verify anything: rustls has
//! already checked the chain against the client CA bundle before a connection gets here.

use std::fmt::Write as _;

use thiserror::Error;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// A SPIFFE ID split into its parts, valid per the SPIFFE ID and X509-SVID specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    /// `spiffe://example.org/ns/agents/sa/summarizer`
    pub id: String,
    /// `example.org`
    pub trust_domain: String,
    /// `/ns/agents/sa/summarizer` (empty for a trust domain's own ID)
    pub path: String,
}

/// What regate knows about a peer: everything policy sees under `input.peer`.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub spiffe_id: Option<SpiffeId>,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex of the serial number's bytes, no separators.
    pub serial: String,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub fingerprint_sha256: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("certificate does not parse")]
    Parse,
}

impl PeerIdentity {
    pub fn from_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Parse)?;
        let mut uri_sans = Vec::new();
        let mut dns_sans = Vec::new();
        for ext in cert.extensions() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => uri_sans.push((*u).to_string()),
                        GeneralName::DNSName(d) => dns_sans.push((*d).to_string()),
                        _ => {}
                    }
                }
            }
        }
        // X509-SVID: exactly one URI SAN, and a leaf (not a CA) certificate. Anything else
        // carries no SPIFFE ID; policy still sees the raw SANs.
        let spiffe_id = match uri_sans.as_slice() {
            [only] if !cert.is_ca() => SpiffeId::parse(only),
            _ => None,
        };
        Ok(PeerIdentity {
            spiffe_id,
            uri_sans,
            dns_sans,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: hex(cert.raw_serial()),
            fingerprint_sha256: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether the peer may be heard at all under `--trust-domain`: any peer when the list is
    /// empty, else only a SPIFFE ID from one of the listed trust domains.
    pub fn in_trust_domains(&self, trust_domains: &[String]) -> bool {
        trust_domains.is_empty()
            || self
                .spiffe_id
                .as_ref()
                .is_some_and(|id| trust_domains.contains(&id.trust_domain))
    }

    /// Whether the certificate's validity has ended at `unix_now` (seconds).
    pub fn expired_at(&self, unix_now: i64) -> bool {
        unix_now > self.not_after
    }

    /// The Envoy-style principal: the SPIFFE ID, else the first DNS SAN that is a plain DNS
    /// name, else the subject. Only an X509-SVID's one URI SAN gives a principal that reads as
    /// a SPIFFE ID: a DNS SAN spelt `spiffe://…` (few CAs check what a DNS SAN holds) is
    /// skipped, so a policy matching `source.principal` cannot be fooled by one.
    pub fn principal(&self) -> &str {
        if let Some(id) = &self.spiffe_id {
            return &id.id;
        }
        match self.dns_sans.iter().find(|d| is_dns_name(d)) {
            Some(dns) => dns,
            None => &self.subject,
        }
    }
}

impl SpiffeId {
    /// Parse per the SPIFFE ID spec: `spiffe://` + trust domain + optional path; no port,
    /// user info, query or fragment; path segments non-empty, not `.` or `..`, and made only
    /// of letters, digits, `.`, `-` and `_`.
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        if uri.len() > 2048 {
            return None;
        }
        let rest = uri.strip_prefix("spiffe://")?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !valid_trust_domain(td) || !valid_path(path) {
            return None;
        }
        Some(SpiffeId {
            id: uri.to_string(),
            trust_domain: td.to_string(),
            path: path.to_string(),
        })
    }
}

/// Lowercase letters, digits, `.`, `-` and `_`, at most 255 bytes.
pub fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b))
}

fn valid_path(path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    rest.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b))
    })
}

/// Letters, digits, `-`, `.`, `_` and a leading `*.` wildcard: what a DNS SAN should hold.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_follow_the_spec() {
        let ok = SpiffeId::parse("spiffe://example.org/ns/agents/sa/summarizer").unwrap();
        assert_eq!(ok.trust_domain, "example.org");
        assert_eq!(ok.path, "/ns/agents/sa/summarizer");
        assert!(SpiffeId::parse("spiffe://example.org").is_some());
        for bad in [
            "http://example.org/a",
            "spiffe://",
            "spiffe:///a",
            "spiffe://Example.org/a",
            "spiffe://example.org:8080/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a/./b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#f",
            "spiffe://example.org/a%20b",
            "SPIFFE://example.org/a",
        ] {
            assert!(SpiffeId::parse(bad).is_none(), "{bad} should be refused");
        }
    }
}
