//! Delegation tokens: a JWT an agent presents (`Authorization: Bearer`, or a configured
//! header) to say on whose behalf it acts, verified here before any policy.
//!
//! The certificate proves *what* the caller is; the token says for *whom* and with what
//! scope. A token is verified against the JWKS of the issuer it names (signature, `kid`, an
//! allowed algorithm, `exp` and `nbf` with the configured leeway, `iss`, `aud`), and, when it
//! carries `cnf.x5t#S256` (RFC 8705), must be bound to the certificate of this very
//! connection: a token lifted from one agent is useless to another. A verified token becomes
//! `input.delegation`; a bad one is an authentication failure (401), and the policy is never
//! asked. No token, no `input.delegation`: the policy decides.
//!
//! Verification reuses the JWS code of the policy builtins (`policy::builtins::jwt`), which
//! is checked against answers recorded from OPA. JWKS files are re-read by the reloader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName};
use regorus::Value;
use serde::Deserialize;

use crate::builtins::jwt::{jws_verify_with_jwks, JwksKeys};

/// One trusted issuer, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Must equal the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must hold one of these.
    pub audiences: Vec<String>,
    /// An RFC 7517 JWKS, re-read when it changes.
    pub jwks_file: PathBuf,
    /// The algorithms accepted: ES256, ES384, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA.
    pub algorithms: Vec<String>,
    /// A token without `cnf.x5t#S256` is refused.
    #[serde(default)]
    pub require_binding: bool,
}

/// The `delegation:` section.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub issuers: Vec<IssuerConfig>,
    pub leeway: Duration,
    /// Where the token is: `None` for `Authorization: Bearer`, else a header holding only
    /// the token.
    pub header: Option<HeaderName>,
    /// A request without a verified token is refused.
    pub require_token: bool,
}

/// The most clock skew `leeway` may forgive.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

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
        }
    }

    /// The `WWW-Authenticate` challenge of the 401 (RFC 6750 §3): no error code when the
    /// request carried no credential, `invalid_request` when it carried one the wrong way.
    pub fn challenge(self) -> &'static str {
        match self {
            TokenError::Missing => "Bearer",
            TokenError::SchemeUnsupported | TokenError::InQuery => {
                "Bearer error=\"invalid_request\""
            }
            _ => "Bearer error=\"invalid_token\"",
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
}

/// An issuer's keys, loaded.
struct Loaded {
    config: IssuerConfig,
    keys: JwksKeys,
    hash: [u8; 32],
}

/// The issuers and their keys, swapped whole when a JWKS file changes.
pub struct Verifier {
    settings: Settings,
    issuers: ArcSwap<Vec<Arc<Loaded>>>,
}

impl Verifier {
    /// Read every issuer's JWKS; every problem is reported.
    pub fn load(settings: Settings) -> Result<Verifier, Vec<String>> {
        let mut errors = Vec::new();
        let mut loaded = Vec::new();
        if settings.leeway > MAX_LEEWAY {
            errors.push(format!(
                "delegation: leeway {:?} is over {}s; clocks that far apart are a problem to fix",
                settings.leeway,
                MAX_LEEWAY.as_secs()
            ));
        }
        for (i, issuer) in settings.issuers.iter().enumerate() {
            if settings.issuers[..i]
                .iter()
                .any(|o| o.issuer == issuer.issuer)
            {
                errors.push(format!(
                    "delegation: issuer {} is configured twice",
                    issuer.issuer
                ));
            }
            for alg in &issuer.algorithms {
                if !ALGORITHMS.contains(&alg.as_str()) {
                    errors.push(format!(
                        "delegation: issuer {}: algorithm {alg} is not one of {}",
                        issuer.issuer,
                        ALGORITHMS.join(", ")
                    ));
                }
            }
            if issuer.audiences.is_empty() {
                errors.push(format!(
                    "delegation: issuer {}: no audiences; a token for anyone is accepted by no one",
                    issuer.issuer
                ));
            }
            match read_jwks(&issuer.jwks_file) {
                Ok((keys, hash)) => loaded.push(Arc::new(Loaded {
                    config: issuer.clone(),
                    keys,
                    hash,
                })),
                Err(e) => errors.push(format!("delegation: issuer {}: {e}", issuer.issuer)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Verifier {
            settings,
            issuers: ArcSwap::from_pointee(loaded),
        })
    }

    /// The clock skew forgiven on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.settings.leeway
    }

    /// Whether any issuer is configured.
    pub fn enabled(&self) -> bool {
        !self.settings.issuers.is_empty()
    }

    /// The JWKS files, for the reloader to watch.
    pub fn files(&self) -> Vec<PathBuf> {
        self.settings
            .issuers
            .iter()
            .map(|i| i.jwks_file.clone())
            .collect()
    }

    /// Re-read the JWKS files; `Ok(true)` when a key set changed. A file that does not parse
    /// keeps that issuer's last good keys.
    pub fn reload(&self) -> Result<bool, Vec<String>> {
        let current = self.issuers.load_full();
        let mut next = Vec::with_capacity(current.len());
        let mut errors = Vec::new();
        let mut changed = false;
        for loaded in current.iter() {
            match read_jwks(&loaded.config.jwks_file) {
                Ok((_, hash)) if hash == loaded.hash => next.push(loaded.clone()),
                Ok((keys, hash)) => {
                    changed = true;
                    next.push(Arc::new(Loaded {
                        config: loaded.config.clone(),
                        keys,
                        hash,
                    }));
                }
                Err(e) => {
                    errors.push(format!("delegation: issuer {}: {e}", loaded.config.issuer));
                    next.push(loaded.clone());
                }
            }
        }
        if changed {
            self.issuers.store(Arc::new(next));
        }
        match errors.is_empty() {
            true => Ok(changed),
            false => Err(errors),
        }
    }

    /// The token of this request, verified: `Ok(None)` when there is none (and none is
    /// required). `query` is the request's decoded query; `cert_sha256` is the SHA-256 of this
    /// connection's client certificate (DER).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        query: &BTreeMap<String, Vec<String>>,
        cert_sha256: &[u8],
        now: SystemTime,
    ) -> Result<Option<Delegation>, TokenError> {
        if !self.enabled() {
            return Ok(None);
        }
        // A server that reads tokens from the query would take one regate never checked.
        if query.keys().any(|k| k.eq_ignore_ascii_case("access_token")) {
            return Err(TokenError::InQuery);
        }
        let Some(token) = self.token(headers)? else {
            return match self.settings.require_token {
                true => Err(TokenError::Missing),
                false => Ok(None),
            };
        };
        let (claims, issuer) = self.signed(&token)?;
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.timely(&claims, now)?;
        audience(&claims, &issuer.config)?;
        let bound = binding(&claims, &issuer.config, cert_sha256)?;
        // RFC 7519 §4.1.7: `jti` is a string. A number would be recorded and revoked as one
        // thing and compared as another.
        if claims.get("jti").is_some_and(|jti| !jti.is_string()) {
            return Err(TokenError::Invalid);
        }
        let iss = issuer.config.issuer.as_str();
        Ok(Some(delegation(&claims, iss, exp_in(&claims, now), bound)))
    }

    /// The token's claims, once its signature verifies with a key of the issuer it names,
    /// by an algorithm that issuer allows.
    fn signed(&self, token: &str) -> Result<(serde_json::Value, Arc<Loaded>), TokenError> {
        let (header, claims, input, signature) = split(token)?;
        let alg = header["alg"].as_str().ok_or(TokenError::Invalid)?;
        let iss = claims["iss"].as_str().ok_or(TokenError::Issuer)?;
        let issuer = self
            .issuers
            .load()
            .iter()
            .find(|i| i.config.issuer == iss)
            .cloned()
            .ok_or(TokenError::Issuer)?;
        if !issuer.config.algorithms.iter().any(|a| a == alg) {
            return Err(TokenError::Invalid);
        }
        // A kid that is not a string names no key; a `crit` header asks for extensions regate
        // does not implement (RFC 7515 §4.1.11).
        let kid = match header.get("kid") {
            None => None,
            Some(serde_json::Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(TokenError::Invalid),
        };
        if header.get("crit").is_some() {
            return Err(TokenError::Invalid);
        }
        if !jws_verify_with_jwks(&issuer.keys, alg, kid, input.as_bytes(), &signature) {
            return Err(TokenError::Invalid);
        }
        Ok((claims, issuer))
    }

    /// `exp` (required) and `nbf`, with the leeway, at `now` (Unix seconds).
    fn timely(&self, claims: &serde_json::Value, now: f64) -> Result<(), TokenError> {
        let leeway = self.settings.leeway.as_secs_f64();
        let exp = claims
            .get("exp")
            .map(|v| v.as_f64().ok_or(TokenError::Invalid));
        match exp {
            Some(Ok(exp)) if now >= exp + leeway => return Err(TokenError::Expired),
            Some(Err(e)) => return Err(e),
            // A delegation without an end is not one regate accepts.
            None => return Err(TokenError::Invalid),
            Some(Ok(_)) => {}
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_f64().ok_or(TokenError::Invalid)?;
            if now + leeway < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        Ok(())
    }

    /// The raw token, from the configured header or `Authorization: Bearer`. A header that is
    /// there but holds no usable token, or is there twice, is an invalid token, not an absent
    /// one: a bearer the upstream would take must not pass unverified.
    fn token(&self, headers: &HeaderMap) -> Result<Option<String>, TokenError> {
        let mut tokens = Vec::new();
        if let Some(name) = &self.settings.header {
            for v in headers.get_all(name) {
                let t = v.to_str().map_err(|_| TokenError::Invalid)?.trim();
                if t.is_empty() {
                    return Err(TokenError::Invalid);
                }
                tokens.push(t.to_string());
            }
        }
        for v in headers.get_all(http::header::AUTHORIZATION) {
            let Ok(v) = v.to_str() else {
                return Err(TokenError::Invalid);
            };
            if let Some(token) = bearer(v)? {
                tokens.push(token.to_string());
            }
        }
        match tokens.len() {
            0 => Ok(None),
            1 => Ok(tokens.pop()),
            _ => Err(TokenError::Invalid),
        }
    }
}

/// The token of an `Authorization` value: `Some` for `Bearer <token>`, `None` for another
/// scheme that carries no JWT (`Basic`, `Digest`, `Negotiate`: the policy decides). A JWT
/// under any other scheme (`JWT`, `DPoP`), or a `Bearer` spelt otherwise than RFC 6750 §2.1
/// (`Bearer,<token>`), is refused: some server would take it, and regate would not have
/// verified it.
fn bearer(value: &str) -> Result<Option<&str>, TokenError> {
    let value = value.trim_matches([' ', '\t']);
    let scheme_end = value.find(|c: char| !is_tchar(c)).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case("bearer") {
        return match carries_jwt(value) {
            true => Err(TokenError::SchemeUnsupported),
            false => Ok(None),
        };
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if rest.len() == token.len() && !rest.is_empty() {
        // Something other than a space after the scheme: `Bearer,<token>`.
        return Err(TokenError::SchemeUnsupported);
    }
    if token.is_empty() {
        return Err(TokenError::Invalid);
    }
    // b64token (RFC 6750 §2.1): one run of these characters, `=` only at its end.
    let body = token.trim_end_matches('=');
    if !body
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c))
    {
        return Err(TokenError::SchemeUnsupported);
    }
    Ok(Some(token))
}

/// A character of an HTTP token (RFC 9110 §5.6.2), which an auth scheme is.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Whether `text` holds a JWS or JWT in compact form anywhere: three base64url segments
/// (the last may be empty, as with `alg: none`), the first a JSON object.
fn carries_jwt(text: &str) -> bool {
    use crate::builtins::crypto::b64url_decode_opa;
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .any(|part| {
            let segments: Vec<&str> = part.split('.').collect();
            segments.len() == 3
                && !segments[0].is_empty()
                && !segments[1].is_empty()
                && b64url_decode_opa(segments[0])
                    .is_ok_and(|header| header.trim_ascii_start().first() == Some(&b'{'))
        })
}

/// The token's `aud` must hold one of the issuer's audiences.
fn audience(claims: &serde_json::Value, issuer: &IssuerConfig) -> Result<(), TokenError> {
    let audiences: Vec<&str> = match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.as_str()],
        serde_json::Value::Array(list) => list.iter().filter_map(|a| a.as_str()).collect(),
        _ => Vec::new(),
    };
    match audiences
        .iter()
        .any(|a| issuer.audiences.iter().any(|want| want == a))
    {
        true => Ok(()),
        false => Err(TokenError::Audience),
    }
}

/// Whether the token is bound to the connection's certificate (`cnf.x5t#S256`, RFC 8705); a
/// token bound to another is refused, and so is an unbound one where binding is required. A
/// confirmation regate cannot check (DPoP's `jkt`, a malformed thumbprint) is not taken as no
/// confirmation: the issuer meant the token for one holder only.
fn binding(
    claims: &serde_json::Value,
    issuer: &IssuerConfig,
    cert_sha256: &[u8],
) -> Result<bool, TokenError> {
    match claims.get("cnf") {
        None if issuer.require_binding => Err(TokenError::NotBound),
        None => Ok(false),
        Some(cnf) => match cnf["x5t#S256"].as_str() {
            Some(thumbprint) if !thumbprint.is_empty() && !cert_sha256.is_empty() => {
                let ours = crate::builtins::crypto::b64_encode(cert_sha256, true, false);
                match thumbprint == ours {
                    true => Ok(true),
                    false => Err(TokenError::Binding),
                }
            }
            _ => Err(TokenError::Binding),
        },
    }
}

pub(crate) type Parts = (serde_json::Value, serde_json::Value, String, Vec<u8>);

/// A compact JWS: header and claims decoded, the signing input, the signature.
pub(crate) fn split(token: &str) -> Result<Parts, TokenError> {
    use crate::builtins::crypto::b64url_decode_opa;
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let json = |part: &str| -> Result<serde_json::Value, TokenError> {
        let bytes = b64url_decode_opa(part).map_err(|_| TokenError::Invalid)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Invalid)?;
        value
            .is_object()
            .then_some(value)
            .ok_or(TokenError::Invalid)
    };
    let header = json(h)?;
    let claims = json(c)?;
    let signature = b64url_decode_opa(s).map_err(|_| TokenError::Invalid)?;
    Ok((header, claims, format!("{h}.{c}"), signature))
}

fn exp_in(claims: &serde_json::Value, now: f64) -> i64 {
    claims["exp"]
        .as_f64()
        .map_or(0, |exp| (exp - now).floor() as i64)
}

/// `input.delegation`, and what the decision record keeps.
fn delegation(claims: &serde_json::Value, iss: &str, expires_in: i64, bound: bool) -> Delegation {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let subject = text(&claims["sub"]);
    let jti = text(&claims["jti"]);
    let scope: Vec<String> = match (&claims["scope"], &claims["scp"]) {
        (serde_json::Value::String(s), _) => s.split_whitespace().map(str::to_string).collect(),
        (_, serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        (_, serde_json::Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    // RFC 8693: `act` is the current actor; its own `act` the one before, and so on.
    let mut actors = Vec::new();
    let mut act = &claims["act"];
    while let Some(sub) = act["sub"].as_str() {
        actors.push(sub.to_string());
        act = &act["act"];
        if actors.len() >= 16 {
            break;
        }
    }
    let actor = actors.first().cloned();
    let mut fields = BTreeMap::new();
    let mut put = |k: &str, v: Value| {
        fields.insert(Value::from(k), v);
    };
    put("issuer", Value::from(iss));
    put(
        "subject",
        subject.as_deref().map_or(Value::Null, Value::from),
    );
    put("jti", jti.as_deref().map_or(Value::Null, Value::from));
    put("expires_in_seconds", Value::from(expires_in));
    put("bound", Value::from(bound));
    put(
        "scope",
        Value::from(
            scope
                .iter()
                .map(|s| Value::from(s.as_str()))
                .collect::<Vec<_>>(),
        ),
    );
    put("actor", actor.as_deref().map_or(Value::Null, Value::from));
    put(
        "actors",
        Value::from(
            actors
                .iter()
                .map(|s| Value::from(s.as_str()))
                .collect::<Vec<_>>(),
        ),
    );
    put("claims", Value::from(claims.clone()));
    Delegation {
        input: Value::from(fields),
        subject,
        actor,
        jti,
    }
}

fn read_jwks(path: &Path) -> Result<(JwksKeys, [u8; 32]), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8", path.display()))?;
    let keys = JwksKeys::parse(text).map_err(|e| format!("{}: {e}", path.display()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    Ok((keys, hash))
}
