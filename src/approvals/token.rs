//! Approval tokens: a short-lived JWT an approval issuer signs, whose claims name the action
//! digest it approves (`regate_approval_digest`). Checked before the policy (signature by a
//! key of the issuer it names, an algorithm that issuer allows, `exp` required, `nbf`, a
//! string `jti`); used once ([`super`] marks the `jti`). [`LocalSigner`] signs them with
//! `approvals.local_key` for `regate approve` and the admin API.

use std::time::{Duration, SystemTime};

use regorus::Value;
use serde_json::json;

use crate::audit::signing::SigningKey;
use crate::builtins::jwt::{jws_verify_with_jwks, JwksKeys};
use crate::delegation::{Issuer, IssuerConfig};

/// The header an agent repeats a request with, carrying the approval.
pub const HEADER: &str = "x-regate-approval";
/// The claim that names the approved action's digest.
pub const DIGEST_CLAIM: &str = "regate_approval_digest";
/// The claim that names the approval request, when the token answers one.
pub const REQUEST_CLAIM: &str = "regate_approval_request";
/// The issuer of tokens signed with `approvals.local_key`.
pub const LOCAL_ISSUER: &str = "regate:local";
/// The `kid` of the local key.
const LOCAL_KID: &str = "regate-local";

/// Why an approval token is refused: the reason of the 403 and the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalError {
    /// Malformed, a bad signature, an unknown issuer or key, no `jti` or digest.
    Invalid,
    Expired,
    /// Valid, but for another action than this request.
    Mismatch,
    /// Used before.
    Used,
}

impl ApprovalError {
    pub fn reason(self) -> &'static str {
        match self {
            ApprovalError::Invalid => "approval_invalid",
            ApprovalError::Expired => "approval_expired",
            ApprovalError::Mismatch => "approval_mismatch",
            ApprovalError::Used => "approval_used",
        }
    }
}

/// A verified approval.
#[derive(Debug, Clone)]
pub struct Approved {
    pub issuer: String,
    /// `sub`: who approved.
    pub approver: Option<String>,
    /// `iat`, Unix seconds.
    pub approved_at: Option<i64>,
    /// The approval request it answers, when it names one.
    pub request_id: Option<String>,
    pub jti: String,
    pub digest: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

impl Approved {
    /// `input.approval`.
    pub fn input(&self) -> Value {
        let text = json!({
            "issuer": self.issuer,
            "approver": self.approver,
            "approved_at": self.approved_at,
            "request_id": self.request_id,
            "digest": self.digest,
        })
        .to_string();
        Value::from_json_str(&text).unwrap_or(Value::Null)
    }
}

/// The issuers' key stores, and the local key.
pub struct Verifier {
    /// Configured like delegation issuers: keys from a JWKS file, a `jwks_uri` or discovery
    /// (fetched by `crate::delegation::jwks`, which fills these stores).
    issuers: Vec<Issuer>,
    /// The local key's JWKS, trusted under [`LOCAL_ISSUER`].
    local: Option<JwksKeys>,
    leeway: Duration,
}

impl Verifier {
    /// Each issuer's key store (a JWKS file read now; remote keys fetched once regate
    /// serves, used up to `max_staleness` after their fetch), and `local` trusted too.
    pub fn load(
        issuers: &[IssuerConfig],
        local: Option<&LocalSigner>,
        leeway: Duration,
        max_staleness: Duration,
    ) -> Result<Verifier, Vec<String>> {
        let mut errors = Vec::new();
        let mut loaded = Vec::new();
        for issuer in issuers {
            for alg in &issuer.algorithms {
                if !crate::delegation::ALGORITHMS.contains(&alg.as_str()) {
                    errors.push(format!(
                        "approvals: issuer {}: algorithm {alg} is not one of {}",
                        issuer.issuer,
                        crate::delegation::ALGORITHMS.join(", ")
                    ));
                }
            }
            match Issuer::load(issuer, max_staleness) {
                Ok(issuer) => loaded.push(issuer),
                Err(e) => errors.push(format!("approvals: issuer {}: {e}", issuer.issuer)),
            }
        }
        match errors.is_empty() {
            true => Ok(Verifier {
                issuers: loaded,
                local: local.map(LocalSigner::jwks),
                leeway,
            }),
            false => Err(errors),
        }
    }

    /// Whether any issuer is trusted.
    pub fn enabled(&self) -> bool {
        !self.issuers.is_empty() || self.local.is_some()
    }

    /// The configured issuers, for the fetchers of their remote keys.
    pub fn issuers(&self) -> &[Issuer] {
        &self.issuers
    }

    /// The approval `token` carries, checked at `now` (Unix seconds); not yet against a
    /// digest, nor for reuse. A key id a remote issuer's set lacks asks for its keys again
    /// once (rate-limited by the store), as a rotation would need.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Approved, ApprovalError> {
        let (header, claims, input, signature) =
            crate::delegation::split(token).map_err(|_| ApprovalError::Invalid)?;
        let alg = header["alg"].as_str().ok_or(ApprovalError::Invalid)?;
        let iss = claims["iss"].as_str().ok_or(ApprovalError::Invalid)?;
        let kid = match header.get("kid") {
            None => None,
            Some(serde_json::Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(ApprovalError::Invalid),
        };
        if header.get("crit").is_some() {
            return Err(ApprovalError::Invalid);
        }
        let signed = match (&self.local, iss == LOCAL_ISSUER) {
            (Some(keys), true) => {
                alg == "EdDSA" && jws_verify_with_jwks(keys, alg, kid, input.as_bytes(), &signature)
            }
            (None, true) => false,
            (_, false) => {
                let issuer = self
                    .issuers
                    .iter()
                    .find(|i| i.config.issuer == iss)
                    .ok_or(ApprovalError::Invalid)?;
                if !issuer.config.algorithms.iter().any(|a| a == alg) {
                    return Err(ApprovalError::Invalid);
                }
                let store = &issuer.store;
                let keys = store
                    .usable(SystemTime::now())
                    .ok_or(ApprovalError::Invalid)?;
                let known = kid.is_none_or(|kid| keys.keys.has_kid(kid));
                let keys = match known || !store.is_remote() {
                    true => keys,
                    false if store.refetch_for_unknown_kid().await => store
                        .usable(SystemTime::now())
                        .ok_or(ApprovalError::Invalid)?,
                    false => keys,
                };
                jws_verify_with_jwks(&keys.keys, alg, kid, input.as_bytes(), &signature)
            }
        };
        if !signed {
            return Err(ApprovalError::Invalid);
        }
        let leeway = self.leeway.as_secs() as i64;
        let exp = claims["exp"].as_i64().ok_or(ApprovalError::Invalid)?;
        if now >= exp.saturating_add(leeway) {
            return Err(ApprovalError::Expired);
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| now + leeway < nbf) {
            return Err(ApprovalError::Invalid);
        }
        let text = |name: &str| claims[name].as_str().map(str::to_string);
        Ok(Approved {
            issuer: iss.to_string(),
            approver: text("sub"),
            approved_at: claims["iat"].as_i64(),
            request_id: text(REQUEST_CLAIM),
            jti: text("jti")
                .filter(|j| !j.is_empty())
                .ok_or(ApprovalError::Invalid)?,
            digest: text(DIGEST_CLAIM).ok_or(ApprovalError::Invalid)?,
            expires_at: exp,
        })
    }
}

/// Signs approval tokens with `approvals.local_key` (Ed25519), for a single host or a demo.
pub struct LocalSigner {
    key: SigningKey,
    issuer: String,
}

impl LocalSigner {
    pub fn new(key: SigningKey) -> LocalSigner {
        LocalSigner {
            key,
            issuer: LOCAL_ISSUER.to_string(),
        }
    }

    /// A token approving `digest` for `ttl` from `now` (Unix seconds), by `approver`.
    pub fn mint(
        &self,
        digest: &str,
        approver: &str,
        request_id: Option<&str>,
        ttl: Duration,
        now: i64,
    ) -> String {
        let b64 = |bytes: &[u8]| crate::builtins::crypto::b64_encode(bytes, true, false);
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": LOCAL_KID});
        let mut claims = json!({
            "iss": self.issuer,
            "sub": approver,
            "iat": now,
            "exp": now.saturating_add(ttl.as_secs() as i64),
            "jti": uuid::Uuid::new_v4().to_string(),
            DIGEST_CLAIM: digest,
        });
        if let Some(id) = request_id {
            claims[REQUEST_CLAIM] = json!(id);
        }
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.key.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }

    /// The local key as a JWKS, for the verifier.
    fn jwks(&self) -> JwksKeys {
        let x = crate::builtins::crypto::b64_encode(self.key.public_key().raw(), true, false);
        let jwk = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": LOCAL_KID, "alg": "EdDSA"}]});
        // A key of our own making always parses; a set without it trusts nothing.
        JwksKeys::parse(&jwk.to_string()).unwrap_or_else(|_| JwksKeys::empty())
    }
}
