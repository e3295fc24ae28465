//! Delegation tokens: a JWT an agent presents (`Authorization: Bearer`, or a configured
//! header) to say on whose behalf it acts, verified here before any policy; and the keys
//! they are verified with.
//!
//! The certificate proves *what* the caller is; the token says for *whom* and with what
//! scope. Two parts, kept apart so the request path never waits on a provider it need not:
//!
//! - [`verify`] (the request path): a token is verified against the keys of the issuer it
//!   names, as last published in that issuer's [`keys::KeyStore`]; a verified token becomes
//!   `input.delegation`, a bad one is an authentication failure (401), and the policy is
//!   never asked. The one wait it may make: a token naming a key id the issuer's set lacks
//!   asks for one refetch, rate-limited per issuer, and waits for it (briefly).
//! - [`jwks`] (a side channel): fetches each remote issuer's JWKS (`jwks_uri`, or found by
//!   discovery), over HTTPS with a timeout and a size cap, on the schedule its
//!   `Cache-Control` sets, and publishes it into the store. A JWKS file (`jwks_file`) is
//!   re-read by the reloader instead, and published the same way.
//!
//! Nothing here decides a request or builds a response.

pub mod jwks;
pub mod keys;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use regorus::Value;
use serde::Deserialize;

pub(crate) use verify::split;
pub use verify::{is_bearer, Issuer, Verifier};

/// One trusted issuer, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must hold one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// An RFC 7517 JWKS file, re-read when it changes (for air-gapped setups).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The issuer's JWKS URL, fetched and kept current.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Find the JWKS URL in the issuer's metadata (OpenID Connect discovery, else RFC 8414).
    #[serde(default)]
    pub discovery: bool,
    /// PEM roots the issuer's HTTPS certificate must chain to; the system's otherwise.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The algorithms accepted: ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA.
    pub algorithms: Vec<String>,
    /// A token without `cnf.x5t#S256` is refused.
    #[serde(default)]
    pub require_binding: bool,
}

/// Where an issuer's keys come from: exactly one per issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Uri(String),
    Discovery,
}

impl IssuerConfig {
    /// The issuer's key source, or `None` unless exactly one is named.
    pub fn source(&self) -> Option<KeySource> {
        match (&self.jwks_file, &self.jwks_uri, self.discovery) {
            (Some(file), None, false) => Some(KeySource::File(file.clone())),
            (None, Some(uri), false) => Some(KeySource::Uri(uri.clone())),
            (None, None, true) => Some(KeySource::Discovery),
            _ => None,
        }
    }
}

/// The `delegation:` section.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuers: Vec<IssuerConfig>,
    pub leeway: Duration,
    /// Where the token is: `None` for `Authorization: Bearer`, else a header holding only
    /// the token.
    pub header: Option<HeaderName>,
    /// A request without a verified token is refused.
    pub require_token: bool,
    /// Every token's `aud` must also hold this (the protected resource, RFC 8707).
    pub required_audience: Option<String>,
    /// How long after its last successful fetch a remote issuer's keys are still used.
    pub max_staleness: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            issuers: Vec::new(),
            leeway: Duration::from_secs(30),
            header: None,
            require_token: false,
            required_audience: None,
            max_staleness: DEFAULT_MAX_STALENESS,
        }
    }
}

/// The most clock skew `leeway` may forgive.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// `--jwks-max-staleness` unless set: a provider down for a day is an incident someone has
/// noticed; keys a day old are still the keys it signed with.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(24 * 3600);

/// Algorithms a JWKS may verify; never `none`, never HMAC with a public key set.
pub const ALGORITHMS: &[&str] = &[
    "ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// Why a token is refused: the reason in the 401 and the decision record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, a bad signature, an unknown key, an algorithm not allowed.
    Invalid,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    /// `require_binding`, and the token has no `cnf.x5t#S256`.
    NotBound,
    /// Bound to another certificate.
    Binding,
    /// A token under another scheme than `Bearer` (`JWT`, `DPoP`), or a malformed `Bearer`:
    /// the upstream might take it, and regate would not have checked it.
    SchemeUnsupported,
    /// `access_token` in the query string (RFC 6750 §2.3), which OAuth 2.1 and MCP forbid.
    InQuery,
    /// `require_token`, and the request carries none.
    Missing,
    /// The issuer's keys are not at hand: never fetched yet, or older than
    /// `--jwks-max-staleness`. Fail closed: a token regate cannot check is not accepted.
    IssuerUnavailable,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Invalid => "token_invalid",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::Issuer => "token_issuer",
            TokenError::Audience => "token_audience",
            TokenError::NotBound => "token_not_bound",
            TokenError::Binding => "token_binding",
            TokenError::SchemeUnsupported => "token_scheme_unsupported",
            TokenError::InQuery => "token_in_query",
            TokenError::Missing => "token_missing",
            TokenError::IssuerUnavailable => "issuer_unavailable",
        }
    }

    /// The error code of the 401's `WWW-Authenticate: Bearer` challenge (RFC 6750 §3): none
    /// when the request carried no credential, `invalid_request` when it carried one the
    /// wrong way, `invalid_token` otherwise.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            TokenError::Missing => None,
            TokenError::SchemeUnsupported | TokenError::InQuery => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }
}

/// A verified token, as the policy and the decision record see it.
#[derive(Debug, Clone)]
pub struct Delegation {
    /// `input.delegation`.
    pub input: Value,
    pub subject: Option<String>,
    pub actor: Option<String>,
    pub jti: Option<String>,
    /// The scopes the token grants (`scope`, else `scp`).
    pub scope: Vec<String>,
}
