//! The request path's half of delegation: the token of one request, verified against the
//! keys its issuer's [`KeyStore`] holds (signature, `kid`, an allowed algorithm, `exp` and
//! `nbf` with the configured leeway, `iss`, `aud`), and, when it carries `cnf.x5t#S256`
//! (RFC 8705), bound to the certificate of this very connection: a token lifted from one
//! agent is useless to another. A verified token becomes `input.delegation`; a bad one is a
//! [`TokenError`]. No token, no `input.delegation`: the policy decides.
//!
//! Verification reuses the JWS code of the policy builtins (`crate::builtins::jwt`), which
//! is checked against answers recorded from OPA. It never fetches: keys come from the
//! stores, which the reloader (files) and [`super::jwks`] (remote sets) fill. The one wait:
//! a token naming a key id its remote issuer's set lacks asks for a refetch
//! ([`KeyStore::refetch_for_unknown_kid`], rate-limited) and is checked once more after it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use regorus::Value;

use super::keys::{KeySet, KeyStore};
use super::{Delegation, IssuerConfig, KeySource, Settings, TokenError, ALGORITHMS, MAX_LEEWAY};
use crate::builtins::jwt::jws_verify_with_jwks;

/// One configured issuer and its keys.
pub struct Issuer {
    pub config: IssuerConfig,
    pub source: KeySource,
    pub store: Arc<KeyStore>,
}

impl Issuer {
    /// An issuer and its key store: a JWKS file's keys, read now, or an empty store for
    /// [`super::jwks`] to fill, whose keys are used up to `max_staleness` after their fetch.
    pub fn load(
        config: &IssuerConfig,
        max_staleness: std::time::Duration,
    ) -> Result<Issuer, String> {
        let source = config
            .source()
            .ok_or("name exactly one of jwks_file, jwks_uri and discovery: true")?;
        let store = match &source {
            KeySource::File(path) => KeyStore::file(read_jwks(path)?),
            _ => KeyStore::remote(max_staleness),
        };
        Ok(Issuer {
            config: config.clone(),
            source,
            store: Arc::new(store),
        })
    }
}

/// The issuers and their key stores.
pub struct Verifier {
    settings: Settings,
    issuers: Vec<Issuer>,
}

/// Why a check stopped: a refusal, or a key id a remote issuer's set lacks (worth one
/// refetch).
enum Failure {
    Token(TokenError),
    UnknownKid(Arc<KeyStore>),
}

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Failure {
        Failure::Token(e)
    }
}

impl Failure {
    fn token(self) -> TokenError {
        match self {
            Failure::Token(e) => e,
            Failure::UnknownKid(_) => TokenError::Invalid,
        }
    }
}

impl Verifier {
    /// Check the settings and read every JWKS file; every problem is reported. Remote
    /// issuers start with no keys: [`super::jwks`] fetches them once regate serves.
    pub fn load(settings: Settings) -> Result<Verifier, Vec<String>> {
        let mut errors = check(&settings);
        let mut issuers = Vec::new();
        for config in &settings.issuers {
            match Issuer::load(config, settings.max_staleness) {
                Ok(issuer) => issuers.push(issuer),
                Err(e) => errors.push(format!("delegation: issuer {}: {e}", config.issuer)),
            }
        }
        match errors.is_empty() {
            true => Ok(Verifier { settings, issuers }),
            false => Err(errors),
        }
    }

    /// The clock skew forgiven on `exp` and `nbf`.
    pub fn leeway(&self) -> std::time::Duration {
        self.settings.leeway
    }

    /// Whether any issuer is configured.
    pub fn enabled(&self) -> bool {
        !self.settings.issuers.is_empty()
    }

    /// The header holding the token alone, when one is configured instead of `Authorization`.
    pub fn token_header(&self) -> Option<&http::HeaderName> {
        self.settings.header.as_ref()
    }

    /// Every issuer, with its source and store.
    pub fn issuers(&self) -> &[Issuer] {
        &self.issuers
    }

    /// `Err` naming the first issuer whose keys were never fetched: regate is not ready to
    /// verify its tokens.
    pub fn ready(&self) -> Result<(), String> {
        match self.issuers.iter().find(|i| i.store.current().is_none()) {
            None => Ok(()),
            Some(i) => Err(format!(
                "waiting for the keys of issuer {}",
                i.config.issuer
            )),
        }
    }

    /// The JWKS files, for the reloader to watch.
    pub fn files(&self) -> Vec<PathBuf> {
        self.issuers
            .iter()
            .filter_map(|i| match &i.source {
                KeySource::File(path) => Some(path.clone()),
                _ => None,
            })
            .collect()
    }

    /// Re-read the JWKS files; `Ok(true)` when a key set changed. A file that does not parse
    /// keeps that issuer's last good keys.
    pub fn reload(&self) -> Result<bool, Vec<String>> {
        let mut errors = Vec::new();
        let mut changed = false;
        for issuer in &self.issuers {
            let KeySource::File(path) = &issuer.source else {
                continue;
            };
            match read_jwks(path) {
                Ok(keys) if issuer.store.current().is_some_and(|k| k.hash == keys.hash) => {}
                Ok(keys) => {
                    changed = true;
                    issuer.store.publish(keys);
                }
                Err(e) => errors.push(format!("delegation: issuer {}: {e}", issuer.config.issuer)),
            }
        }
        match errors.is_empty() {
            true => Ok(changed),
            false => Err(errors),
        }
    }

    /// The token of this request, verified: `Ok(None)` when there is none (and none is
    /// required). `query` is the request's decoded query; `cert_sha256` is the SHA-256 of this
    /// connection's client certificate (DER). A token naming a key id its remote issuer lacks
    /// waits for one refetch (rate-limited) and is checked again.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        query: &BTreeMap<String, Vec<String>>,
        cert_sha256: &[u8],
        now: SystemTime,
    ) -> Result<Option<Delegation>, TokenError> {
        match self.check(headers, query, cert_sha256, now) {
            Err(Failure::UnknownKid(store)) if store.refetch_for_unknown_kid().await => self
                .check(headers, query, cert_sha256, SystemTime::now())
                .map_err(Failure::token),
            checked => checked.map_err(Failure::token),
        }
    }

    fn check(
        &self,
        headers: &HeaderMap,
        query: &BTreeMap<String, Vec<String>>,
        cert_sha256: &[u8],
        now: SystemTime,
    ) -> Result<Option<Delegation>, Failure> {
        if !self.enabled() {
            return Ok(None);
        }
        // A server that reads tokens from the query would take one regate never checked.
        if query.keys().any(|k| k.eq_ignore_ascii_case("access_token")) {
            return Err(TokenError::InQuery.into());
        }
        let Some(token) = self.token(headers)? else {
            return match self.settings.require_token {
                true => Err(TokenError::Missing.into()),
                false => Ok(None),
            };
        };
        let (claims, issuer) = self.signed(&token, now)?;
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.timely(&claims, now)?;
        audience(&claims, &issuer.config)?;
        if let Some(required) = &self.settings.required_audience {
            audience_holds(&claims, required)?;
        }
        let bound = binding(&claims, &issuer.config, cert_sha256)?;
        // RFC 7519 §4.1.7: `jti` is a string. A number would be recorded and revoked as one
        // thing and compared as another.
        if claims.get("jti").is_some_and(|jti| !jti.is_string()) {
            return Err(TokenError::Invalid.into());
        }
        let iss = issuer.config.issuer.as_str();
        Ok(Some(delegation(&claims, iss, exp_in(&claims, now), bound)))
    }

    /// The token's claims, once its signature verifies with a key of the issuer it names,
    /// by an algorithm that issuer allows.
    fn signed(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<(serde_json::Value, &Issuer), Failure> {
        let (header, claims, input, signature) = split(token)?;
        let alg = header["alg"].as_str().ok_or(TokenError::Invalid)?;
        let iss = claims["iss"].as_str().ok_or(TokenError::Issuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(TokenError::Issuer)?;
        if !issuer.config.algorithms.iter().any(|a| a == alg) {
            return Err(TokenError::Invalid.into());
        }
        // A kid that is not a string names no key; a `crit` header asks for extensions regate
        // does not implement (RFC 7515 §4.1.11).
        let kid = match header.get("kid") {
            None => None,
            Some(serde_json::Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(TokenError::Invalid.into()),
        };
        if header.get("crit").is_some() {
            return Err(TokenError::Invalid.into());
        }
        let keys = issuer
            .store
            .usable(now)
            .ok_or(TokenError::IssuerUnavailable)?;
        if let Some(kid) = kid.filter(|kid| !keys.keys.has_kid(kid)) {
            // The issuer may have rotated its keys since the last fetch.
            return Err(match issuer.store.is_remote() && !kid.is_empty() {
                true => Failure::UnknownKid(issuer.store.clone()),
                false => TokenError::Invalid.into(),
            });
        }
        if !jws_verify_with_jwks(&keys.keys, alg, kid, input.as_bytes(), &signature) {
            return Err(TokenError::Invalid.into());
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

/// What [`Verifier::load`] refuses before reading anything: the leeway, issuers named
/// twice, unknown algorithms, issuers without audiences.
fn check(settings: &Settings) -> Vec<String> {
    let mut errors = Vec::new();
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
    }
    errors
}

/// Whether an `Authorization` value is a `Bearer` credential (the scheme alone is looked
/// at): what a resource server that does not pass tokens on removes.
pub fn is_bearer(value: &[u8]) -> bool {
    let value = value.trim_ascii_start();
    value.len() >= 6
        && value[..6].eq_ignore_ascii_case(b"bearer")
        && value.get(6).is_none_or(|c| !is_tchar(char::from(*c)))
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
    match issuer
        .audiences
        .iter()
        .any(|want| audience_holds(claims, want).is_ok())
    {
        true => Ok(()),
        false => Err(TokenError::Audience),
    }
}

/// The token's `aud` (a string or a list of them) must hold `want`, exactly.
fn audience_holds(claims: &serde_json::Value, want: &str) -> Result<(), TokenError> {
    let holds = match &claims["aud"] {
        serde_json::Value::String(a) => a == want,
        serde_json::Value::Array(list) => list.iter().any(|a| a.as_str() == Some(want)),
        _ => false,
    };
    match holds {
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

type Parts = (serde_json::Value, serde_json::Value, String, Vec<u8>);

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
        scope,
    }
}

fn read_jwks(path: &std::path::Path) -> Result<KeySet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    KeySet::parse(&bytes, SystemTime::now()).map_err(|e| format!("{}: {e}", path.display()))
}
