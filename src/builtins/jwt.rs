//! OPA's `io.jwt.*` builtins: decoding, signature verification, and `decode_verify` with
//! OPA's constraints object.
//!
//! Semantics follow OPA's `topdown/tokens.go`: a failed verification or an unmet constraint
//! is `false` / `[false, {}, {}]`; a malformed token, key or constraints object is an error.
//! ES512 is not offered: ring has no P-521 (a P-521 key never verifies here).

use regorus::Value;
use ring::hmac;

use super::crypto::{
    b64url_decode_opa, ecdsa_der, hex, pem_decode, spki_key, string_operand, verify_with, Hash,
    PublicKey, Scheme,
};
use super::type_name;

/// Every builtin this module adds: (OPA name, arity, function).
pub const BUILTINS: &[(&str, u8, super::Builtin)] = &[
    ("io.jwt.decode", 1, decode),
    ("io.jwt.decode_verify", 2, decode_verify),
    ("io.jwt.verify_rs256", 2, verify_rs256),
    ("io.jwt.verify_rs384", 2, verify_rs384),
    ("io.jwt.verify_rs512", 2, verify_rs512),
    ("io.jwt.verify_ps256", 2, verify_ps256),
    ("io.jwt.verify_ps384", 2, verify_ps384),
    ("io.jwt.verify_ps512", 2, verify_ps512),
    ("io.jwt.verify_es256", 2, verify_es256),
    ("io.jwt.verify_es384", 2, verify_es384),
    ("io.jwt.verify_eddsa", 2, verify_eddsa),
    ("io.jwt.verify_hs256", 2, verify_hs256),
    ("io.jwt.verify_hs384", 2, verify_hs384),
    ("io.jwt.verify_hs512", 2, verify_hs512),
];

/// The algorithms OPA knows; a JWK naming another is skipped.
const ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256",
    "HS384", "HS512", "EdDSA",
];

// ---------------------------------------------------------------- the token

struct Token<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split_token(s: &str) -> Result<Token<'_>, String> {
    if !s.contains('.') {
        return Err("encoded JWT had no period separators".into());
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 3 {
        return Err(format!(
            "encoded JWT must have 3 sections, found {}",
            parts.len()
        ));
    }
    Ok(Token {
        header: parts[0],
        payload: parts[1],
        signature: parts[2],
    })
}

fn token_operand<'a>(args: &'a [Value], name: &str) -> Result<Token<'a>, String> {
    split_token(string_operand(args, 1, name)?)
}

/// Go's `json.Unmarshal` into an object, with OPA's messages.
fn json_object(bytes: &[u8]) -> Result<Value, String> {
    let text = String::from_utf8_lossy(bytes);
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err("decoded JSON type was not an Object".into());
    }
    Value::from_json_str(&text).map_err(|e| format!("invalid JSON: {e}"))
}

fn decode_header(t: &Token<'_>) -> Result<Value, String> {
    let bytes =
        b64url_decode_opa(t.header).map_err(|e| format!("JWT header had invalid encoding: {e}"))?;
    let header = json_object(&bytes).map_err(|e| format!("bad JWT header: {e}"))?;
    if get(&header, "enc").is_some() {
        return Err("JWT is a JWE object, which is not supported".into());
    }
    Ok(header)
}

fn get<'v>(o: &'v Value, key: &str) -> Option<&'v Value> {
    o.as_object().ok()?.get(&Value::from(key))
}

fn decode_signature(t: &Token<'_>) -> Result<Vec<u8>, String> {
    b64url_decode_opa(t.signature)
}

/// The header fields OPA reads, checked as OPA checks them.
#[derive(Default)]
struct Header {
    alg: String,
    kid: String,
    cty: String,
    crit: Vec<String>,
    unknown: Vec<String>,
}

fn parse_header(h: &Value) -> Result<Header, String> {
    let mut out = Header::default();
    let Ok(o) = h.as_object() else {
        return Ok(out);
    };
    for (k, v) in o.iter() {
        let Value::String(k) = k else { continue };
        let s = |name: &str| match v {
            Value::String(s) => Ok(s.to_string()),
            _ => Err(format!("{name}: must be a string")),
        };
        match k.as_ref() {
            "alg" => out.alg = s("alg")?,
            "kid" => out.kid = s("kid")?,
            "typ" => {
                s("typ")?;
            }
            "cty" => out.cty = s("cty")?,
            "crit" => {
                let Value::Array(a) = v else {
                    return Err("crit: must be a list".into());
                };
                for e in a.iter() {
                    match e {
                        Value::String(s) => out.crit.push(s.to_string()),
                        _ => break,
                    }
                }
                if out.crit.is_empty() {
                    return Err("crit: must be a nonempty list".into());
                }
            }
            other => out.unknown.push(other.to_string()),
        }
    }
    Ok(out)
}

impl Header {
    fn valid(&self) -> bool {
        !self.alg.is_empty() && !self.unknown.iter().any(|u| self.crit.contains(u))
    }
}

// ---------------------------------------------------------------- io.jwt.decode

fn decode(args: &[Value]) -> Result<Value, String> {
    let token = token_operand(args, "io.jwt.decode")?;
    decode_token(&token)
}

fn decode_token(token: &Token<'_>) -> Result<Value, String> {
    let header = decode_header(token)?;
    let payload = b64url_decode_opa(token.payload)
        .map_err(|e| format!("JWT payload had invalid encoding: {e}"))?;
    if let Some(Value::String(cty)) = get(&header, "cty") {
        if cty.as_ref() == "JWT" {
            let inner = String::from_utf8_lossy(&payload);
            let inner = inner.trim_matches(|c| c == '"' || c == '\'');
            return decode_token(&split_token(inner)?);
        }
    }
    let payload = json_object(&payload)?;
    let sig = b64url_decode_opa(token.signature)
        .map_err(|e| format!("JWT signature had invalid encoding: {e}"))?;
    Ok(Value::from(vec![header, payload, Value::from(hex(&sig))]))
}

// ---------------------------------------------------------------- keys

struct VerificationKey {
    key: PublicKey,
    alg: String,
    kid: String,
}

/// OPA's reading of a `cert` argument: a PEM certificate, a PEM public key, a JWK or a JWKS.
fn keys_from_cert_or_jwk(s: &str) -> Result<Vec<VerificationKey>, String> {
    let (block, rest) = pem_decode(s.as_bytes());
    if let Some(block) = block {
        if !rest.is_empty() {
            return Err("extra data after a PEM certificate block".into());
        }
        let key = match block.kind.as_str() {
            "CERTIFICATE" => {
                let (r, cert) =
                    x509_parser::parse_x509_certificate(&block.bytes).map_err(|_| {
                        "failed to parse a PEM certificate: x509: malformed certificate".to_string()
                    })?;
                if !r.is_empty() {
                    return Err("failed to parse a PEM certificate: x509: trailing data".into());
                }
                spki_key(cert.public_key())
                    .map_err(|e| format!("failed to parse a PEM certificate: {e}"))?
            }
            "PUBLIC KEY" => {
                use x509_parser::prelude::FromDer;
                let (r, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&block.bytes)
                    .map_err(|_| {
                        "failed to parse a PEM public key: asn1: syntax error".to_string()
                    })?;
                if !r.is_empty() {
                    return Err("failed to parse a PEM public key: x509: trailing data after ASN.1 of public-key".into());
                }
                spki_key(&spki).map_err(|e| format!("failed to parse a PEM public key: {e}"))?
            }
            _ => return Err("failed to extract a Key from the PEM certificate".into()),
        };
        return Ok(vec![VerificationKey {
            key,
            alg: String::new(),
            kid: String::new(),
        }]);
    }
    let fail = |e: &str| format!("failed to parse a JWK key (set): {e}");
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| fail(&e.to_string()))?;
    let list: Vec<&serde_json::Value> = match v.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err(fail("keys must be an array")),
        None => vec![&v],
    };
    let mut keys = Vec::new();
    for k in list {
        let key = jwk_key(k).map_err(|e| fail(&e))?;
        let alg = k
            .get("alg")
            .and_then(|a| a.as_str())
            .unwrap_or("")
            .to_string();
        if !alg.is_empty() && !ALGORITHMS.contains(&alg.as_str()) {
            continue;
        }
        let kid = k
            .get("kid")
            .and_then(|a| a.as_str())
            .unwrap_or("")
            .to_string();
        keys.push(VerificationKey { key, alg, kid });
    }
    Ok(keys)
}

fn jwk_key(k: &serde_json::Value) -> Result<PublicKey, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = k
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("required field {name} is missing"))?;
        let bytes = b64url_decode_opa(s.trim_end_matches('='))
            .map_err(|e| format!("failed to decode {name}: {e}"))?;
        Ok(bytes)
    };
    let strip = |b: Vec<u8>| b[b.iter().take_while(|x| **x == 0).count()..].to_vec();
    match k.get("kty").and_then(|v| v.as_str()) {
        Some("RSA") => Ok(PublicKey::Rsa {
            n: strip(field("n")?),
            e: strip(field("e")?),
        }),
        Some("EC") => {
            let bits: u16 = match k.get("crv").and_then(|v| v.as_str()) {
                Some("P-256") => 256,
                Some("P-384") => 384,
                Some("P-521") => 521,
                _ => return Err("invalid curve".into()),
            };
            let size = usize::from(bits).div_ceil(8);
            let (x, y) = (strip(field("x")?), strip(field("y")?));
            if x.len() > size || y.len() > size {
                return Err("invalid EC point".into());
            }
            let mut point = vec![4u8];
            point.extend(std::iter::repeat_n(0, size - x.len()));
            point.extend_from_slice(&x);
            point.extend(std::iter::repeat_n(0, size - y.len()));
            point.extend_from_slice(&y);
            Ok(PublicKey::Ec { bits, point })
        }
        Some("OKP") => match k.get("crv").and_then(|v| v.as_str()) {
            Some("Ed25519") => {
                let x = field("x")?;
                if x.len() != 32 {
                    return Err("invalid Ed25519 key".into());
                }
                Ok(PublicKey::Ed25519(x))
            }
            _ => Ok(PublicKey::Other),
        },
        Some("oct") => Ok(PublicKey::Secret(field("k")?)),
        _ => Err("invalid key type from JSON".into()),
    }
}

/// A JWKS, read for regate's own token checks (delegation tokens), not for a policy.
pub struct JwksKeys(Vec<VerificationKey>);

impl JwksKeys {
    /// A set that verifies nothing.
    pub fn empty() -> JwksKeys {
        JwksKeys(Vec::new())
    }

    /// An RFC 7517 JWK set (or a single JWK). Shared secrets (`kty: oct`) are left out: a
    /// key anyone holding the JWKS can read must never verify a token.
    pub fn parse(text: &str) -> Result<JwksKeys, String> {
        if !text.trim_start().starts_with('{') {
            return Err("not a JWKS (a JSON object with \"keys\")".into());
        }
        let keys: Vec<VerificationKey> = keys_from_cert_or_jwk(text)?
            .into_iter()
            .filter(|k| !matches!(k.key, PublicKey::Secret(_) | PublicKey::Other))
            .collect();
        if keys.is_empty() {
            return Err("the JWKS holds no usable public key".into());
        }
        Ok(JwksKeys(keys))
    }

    /// The keys' ids, in the set's order (a key without one is `""`).
    pub fn kids(&self) -> Vec<String> {
        self.0.iter().map(|k| k.kid.clone()).collect()
    }

    /// Whether a key of the set has this id.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.0.iter().any(|k| k.kid == kid)
    }

    /// A PEM public key (`PUBLIC KEY`) or certificate, as OPA's bundle verification reads
    /// its `public_key`; the JWS algorithm is the signer's to name.
    pub fn from_pem(text: &str) -> Result<JwksKeys, String> {
        if !text.trim_start().starts_with("-----BEGIN") {
            return Err("not a PEM public key or certificate".into());
        }
        let keys: Vec<VerificationKey> = keys_from_cert_or_jwk(text.trim())?
            .into_iter()
            .filter(|k| !matches!(k.key, PublicKey::Secret(_) | PublicKey::Other))
            .collect();
        if keys.is_empty() {
            return Err("the PEM holds no usable public key".into());
        }
        Ok(JwksKeys(keys))
    }
}

/// Whether `sig` over `input` verifies under one of `keys`: the key `kid` names when the
/// token names one (a `kid` the set lacks verifies nothing), else any key whose own `alg`, if
/// it has one, is `alg`. HMAC and `none` never verify here.
pub fn jws_verify_with_jwks(
    keys: &JwksKeys,
    alg: &str,
    kid: Option<&str>,
    input: &[u8],
    sig: &[u8],
) -> bool {
    if alg.starts_with("HS") || alg.eq_ignore_ascii_case("none") {
        return false;
    }
    keys.0
        .iter()
        .filter(|k| k.alg.is_empty() || k.alg == alg)
        .filter(|k| kid.is_none_or(|kid| k.kid == kid))
        .any(|k| jws_verify(&k.key, alg, input, sig))
}

// ---------------------------------------------------------------- verification

fn hash_of(alg: &str) -> Hash {
    if alg.ends_with("384") {
        Hash::Sha384
    } else if alg.ends_with("512") {
        Hash::Sha512
    } else {
        Hash::Sha256
    }
}

/// A JWS signature check of `alg` under `key`, as jwx's `jwsbb.Verify` (the key must fit the
/// algorithm, an ECDSA key its curve).
fn jws_verify(key: &PublicKey, alg: &str, input: &[u8], sig: &[u8]) -> bool {
    match (alg, key) {
        ("HS256" | "HS384" | "HS512", PublicKey::Secret(secret)) => {
            hmac_ok(hash_of(alg), secret, input, sig)
        }
        ("RS256" | "RS384" | "RS512", PublicKey::Rsa { .. }) => {
            verify_with(key, Scheme::RsaPkcs1(hash_of(alg)), input, sig)
        }
        ("PS256" | "PS384" | "PS512", PublicKey::Rsa { .. }) => {
            verify_with(key, Scheme::RsaPss(hash_of(alg)), input, sig)
        }
        ("ES256" | "ES384", PublicKey::Ec { bits, .. }) => {
            let want = if alg == "ES256" { 256 } else { 384 };
            let size = usize::from(want).div_ceil(8);
            *bits == want
                && sig.len() == 2 * size
                && verify_with(
                    key,
                    Scheme::EcdsaDer(hash_of(alg)),
                    input,
                    &ecdsa_der(&sig[..size], &sig[size..]),
                )
        }
        ("EdDSA", PublicKey::Ed25519(_)) => verify_with(key, Scheme::Ed25519, input, sig),
        _ => false,
    }
}

fn hmac_ok(h: Hash, secret: &[u8], input: &[u8], sig: &[u8]) -> bool {
    let alg = match h {
        Hash::Sha384 => hmac::HMAC_SHA384,
        Hash::Sha512 => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    hmac::verify(&hmac::Key::new(alg, secret), input, sig).is_ok()
}

/// The generic check of OPA's `io.jwt.verify_<alg>` builtins: Go's digest-then-verify with
/// the key's type checked, not its curve or size.
fn builtin_verify(key: &PublicKey, family: Family, input: &[u8], sig: &[u8]) -> bool {
    match (family, key) {
        (Family::Rs(h), PublicKey::Rsa { .. }) => verify_with(key, Scheme::RsaPkcs1(h), input, sig),
        (Family::Ps(h), PublicKey::Rsa { .. }) => verify_with(key, Scheme::RsaPss(h), input, sig),
        (Family::Es(h), PublicKey::Ec { .. }) => {
            let n = sig.len() / 2;
            verify_with(
                key,
                Scheme::EcdsaDer(h),
                input,
                &ecdsa_der(&sig[..n], &sig[n..]),
            )
        }
        (Family::EdDsa, PublicKey::Ed25519(_)) => verify_with(key, Scheme::Ed25519, input, sig),
        _ => false,
    }
}

#[derive(Clone, Copy)]
enum Family {
    Rs(Hash),
    Ps(Hash),
    Es(Hash),
    EdDsa,
}

fn verify_asymmetric(args: &[Value], name: &str, family: Family) -> Result<Value, String> {
    let token = token_operand(args, name)?;
    let cert = string_operand(args, 2, name)?;
    let keys = keys_from_cert_or_jwk(cert)?;
    let sig = decode_signature(&token)?;
    let header = parse_header(&decode_header(&token)?)?;
    let input = format!("{}.{}", token.header, token.payload);
    let input = input.as_bytes();
    if !header.kid.is_empty() {
        if let Some(k) = keys.iter().find(|k| k.kid == header.kid) {
            return Ok(Value::from(builtin_verify(&k.key, family, input, &sig)));
        }
    }
    let ok = keys
        .iter()
        .filter(|k| k.alg.is_empty() || k.alg == header.alg)
        .any(|k| builtin_verify(&k.key, family, input, &sig));
    Ok(Value::from(ok))
}

macro_rules! asymmetric {
    ($($fn:ident, $name:literal, $family:expr;)*) => {$(
        fn $fn(args: &[Value]) -> Result<Value, String> {
            verify_asymmetric(args, $name, $family)
        }
    )*};
}

asymmetric! {
    verify_rs256, "io.jwt.verify_rs256", Family::Rs(Hash::Sha256);
    verify_rs384, "io.jwt.verify_rs384", Family::Rs(Hash::Sha384);
    verify_rs512, "io.jwt.verify_rs512", Family::Rs(Hash::Sha512);
    verify_ps256, "io.jwt.verify_ps256", Family::Ps(Hash::Sha256);
    verify_ps384, "io.jwt.verify_ps384", Family::Ps(Hash::Sha384);
    verify_ps512, "io.jwt.verify_ps512", Family::Ps(Hash::Sha512);
    verify_es256, "io.jwt.verify_es256", Family::Es(Hash::Sha256);
    verify_es384, "io.jwt.verify_es384", Family::Es(Hash::Sha384);
    verify_eddsa, "io.jwt.verify_eddsa", Family::EdDsa;
}

fn verify_hs(args: &[Value], name: &str, h: Hash) -> Result<Value, String> {
    let jwt = string_operand(args, 1, name)?;
    let secret = string_operand(args, 2, name)?;
    let token = split_token(jwt)?;
    let sig = decode_signature(&token)?;
    let input = format!("{}.{}", token.header, token.payload);
    Ok(Value::from(hmac_ok(
        h,
        secret.as_bytes(),
        input.as_bytes(),
        &sig,
    )))
}

fn verify_hs256(args: &[Value]) -> Result<Value, String> {
    verify_hs(args, "io.jwt.verify_hs256", Hash::Sha256)
}

fn verify_hs384(args: &[Value]) -> Result<Value, String> {
    verify_hs(args, "io.jwt.verify_hs384", Hash::Sha384)
}

fn verify_hs512(args: &[Value]) -> Result<Value, String> {
    verify_hs(args, "io.jwt.verify_hs512", Hash::Sha512)
}

// ---------------------------------------------------------------- io.jwt.decode_verify

#[derive(Default)]
struct Constraints {
    keys: Option<Vec<VerificationKey>>,
    secret: String,
    alg: String,
    iss: String,
    aud: String,
    /// Nanoseconds since the epoch.
    time: Option<f64>,
}

/// A number as Go's nearest float64 (regorus's `as_f64` refuses integers beyond 2^53).
fn number_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().or_else(|| format!("{n:?}").parse::<f64>().ok()),
        _ => None,
    }
}

fn time_from(v: &Value) -> Result<f64, String> {
    if !matches!(v, Value::Number(_)) {
        return Err("token time constraint: must be a number".into());
    }
    let t = number_f64(v).ok_or("token time constraint: unvalid float64")?;
    if t < 0.0 {
        return Err("token time constraint: must not be negative".into());
    }
    Ok(t)
}

fn parse_constraints(v: &Value) -> Result<Constraints, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "io.jwt.decode_verify: operand 2 must be object but got {}",
            type_name(v)
        ));
    };
    let mut c = Constraints::default();
    for (k, v) in o.iter() {
        let name = match k {
            Value::String(s) => s.to_string(),
            other => format!("{other}"),
        };
        let string = |field: &mut String| match v {
            Value::String(s) => {
                *field = s.to_string();
                Ok(())
            }
            _ => Err(format!("{name} constraint: must be a string")),
        };
        match name.as_str() {
            "cert" => {
                let Value::String(s) = v else {
                    return Err("cert constraint: must be a string".into());
                };
                c.keys = Some(keys_from_cert_or_jwk(s)?);
            }
            "secret" => string(&mut c.secret)?,
            "alg" => string(&mut c.alg)?,
            "iss" => string(&mut c.iss)?,
            "aud" => string(&mut c.aud)?,
            "time" => c.time = Some(time_from(v)?),
            _ => return Err(format!("unknown token validation constraint: {name}")),
        }
    }
    let count = usize::from(c.keys.is_some()) + usize::from(!c.secret.is_empty());
    if count > 1 {
        return Err("duplicate key constraints".into());
    }
    if count < 1 {
        return Err("no key constraint".into());
    }
    Ok(c)
}

impl Constraints {
    fn verify(&self, kid: &str, alg: &str, input: &[u8], sig: &[u8]) -> bool {
        if let Some(keys) = &self.keys {
            if !kid.is_empty() {
                if let Some(k) = keys.iter().find(|k| k.kid == kid) {
                    return jws_verify(&k.key, alg, input, sig);
                }
            }
            return keys
                .iter()
                .filter(|k| k.alg.is_empty() || k.alg == alg)
                .any(|k| jws_verify(&k.key, alg, input, sig));
        }
        jws_verify(
            &PublicKey::Secret(self.secret.as_bytes().to_vec()),
            alg,
            input,
            sig,
        )
    }

    fn valid_audience(&self, aud: &Value) -> bool {
        match aud {
            Value::String(s) => s.as_ref() == self.aud,
            Value::Array(a) => a
                .iter()
                .any(|e| matches!(e, Value::String(s) if s.as_ref() == self.aud)),
            _ => false,
        }
    }
}

fn now_nanos() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as f64)
        .unwrap_or(0.0)
}

fn decode_verify(args: &[Value]) -> Result<Value, String> {
    let name = "io.jwt.decode_verify";
    let first = string_operand(args, 1, name)?;
    let constraints = parse_constraints(args.get(1).unwrap_or(&Value::Null))?;
    let unverified = || {
        Ok(Value::from(vec![
            Value::from(false),
            Value::new_object(),
            Value::new_object(),
        ]))
    };
    let mut jwt = first.to_string();
    let (header, payload_bytes) = loop {
        let token = split_token(&jwt)?;
        let header_value = decode_header(&token)?;
        let header = parse_header(&header_value)?;
        if !header.valid() {
            return unverified();
        }
        if !constraints.alg.is_empty() && constraints.alg != header.alg {
            return unverified();
        }
        let sig = decode_signature(&token)?;
        let input = format!("{}.{}", token.header, token.payload);
        if !constraints.verify(&header.kid, &header.alg, input.as_bytes(), &sig) {
            return unverified();
        }
        let payload = b64url_decode_opa(token.payload)
            .map_err(|e| format!("JWT payload had invalid encoding: {e}"))?;
        if header.cty.eq_ignore_ascii_case("JWT") {
            jwt = String::from_utf8_lossy(&payload).into_owned();
            continue;
        }
        break (header_value, payload);
    };
    let payload = json_object(&payload_bytes)?;
    if !constraints.iss.is_empty() {
        match get(&payload, "iss") {
            Some(Value::String(s)) if s.as_ref() == constraints.iss => {}
            _ => return unverified(),
        }
    }
    match get(&payload, "aud") {
        Some(aud) => {
            if !constraints.valid_audience(aud) {
                return unverified();
            }
        }
        None => {
            if !constraints.aud.is_empty() {
                return unverified();
            }
        }
    }
    let now = constraints.time.unwrap_or_else(now_nanos) / 1_000_000_000.0;
    if let Some(exp) = get(&payload, "exp") {
        if !matches!(exp, Value::Number(_)) {
            return Err("exp value must be a number".into());
        }
        let exp = number_f64(exp).ok_or("exp value must be a number")?;
        if now >= exp {
            return unverified();
        }
    }
    if let Some(nbf) = get(&payload, "nbf") {
        if !matches!(nbf, Value::Number(_)) {
            return Err("nbf value must be a number".into());
        }
        let nbf = number_f64(nbf).ok_or("nbf value must be a number")?;
        if now < nbf {
            return unverified();
        }
    }
    Ok(Value::from(vec![Value::from(true), header, payload]))
}

#[cfg(test)]
#[path = "vectors.rs"]
mod vectors;
