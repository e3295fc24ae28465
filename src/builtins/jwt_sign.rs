//! `io.jwt.encode_sign` and `io.jwt.encode_sign_raw`: a JWS in compact form, signed with a
//! JWK, as OPA makes one. Policy tests mint tokens with them; a policy can sign what it
//! forwards.
//!
//! The header and payload of `encode_sign` are objects, written as Go's `json.Marshal` writes
//! them (keys sorted, no spaces, `<`, `>` and `&` escaped), so an HMAC or RSA PKCS#1 token is
//! byte for byte OPA's. `encode_sign_raw` signs the strings exactly as given. The key is a JWK,
//! or the first key of a JWKS: `oct` for HS256/384/512, `RSA` with its private parts for
//! RS* and PS*, `EC` with `d` for ES256/384. ECDSA and PSS signatures are randomised, in OPA
//! as here.

use regorus::Value;
use ring::signature;

use super::crypto::{b64_encode, b64url_decode_opa};
use super::{string_arg, type_name, Builtin};

pub const BUILTINS: &[(&str, u8, Builtin)] = &[
    ("io.jwt.encode_sign", 3, encode_sign),
    ("io.jwt.encode_sign_raw", 3, encode_sign_raw),
];

fn encode_sign(args: &[Value]) -> Result<Value, String> {
    let object = |i: usize| match args.get(i) {
        Some(v @ Value::Object(_)) => go_json(v),
        Some(other) => Err(format!(
            "operand {} must be object but got {}",
            i + 1,
            type_name(other)
        )),
        None => Err(format!("operand {} is missing", i + 1)),
    };
    sign(&object(0)?, &object(1)?, &object(2)?)
}

fn encode_sign_raw(args: &[Value]) -> Result<Value, String> {
    sign(
        string_arg(args, 0)?,
        string_arg(args, 1)?,
        string_arg(args, 2)?,
    )
}

/// A value as Go's `json.Marshal` writes it: compact, keys sorted, HTML characters escaped.
fn go_json(value: &Value) -> Result<String, String> {
    let json: serde_json::Value =
        serde_json::from_str(&value.to_json_str().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let compact = serde_json::to_string(&json).map_err(|e| e.to_string())?;
    // These appear only inside strings in JSON text, so replacing them is escaping them.
    Ok(compact
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

fn sign(header: &str, payload: &str, jwk: &str) -> Result<Value, String> {
    let header_json: serde_json::Value =
        serde_json::from_str(header).map_err(|e| format!("invalid header: {e}"))?;
    let alg = header_json["alg"].as_str().unwrap_or_default();
    let typ = header_json["typ"].as_str().unwrap_or_default();
    if (typ.is_empty() || typ == "JWT")
        && serde_json::from_str::<serde_json::Value>(payload).is_err()
    {
        return Err("type is JWT but payload is not JSON".into());
    }
    let key = first_key(jwk)?;
    let input = format!(
        "{}.{}",
        b64_encode(header.as_bytes(), true, false),
        b64_encode(payload.as_bytes(), true, false)
    );
    let signature = signature_of(&key, alg, input.as_bytes())?;
    Ok(Value::from(format!(
        "{input}.{}",
        b64_encode(&signature, true, false)
    )))
}

/// The JWK, or the first key of a JWKS.
fn first_key(jwk: &str) -> Result<serde_json::Value, String> {
    let parsed: serde_json::Value =
        serde_json::from_str(jwk).map_err(|e| format!("invalid JWK: {e}"))?;
    match parsed.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys
            .first()
            .cloned()
            .ok_or_else(|| "the JWKS holds no key".to_string()),
        _ => Ok(parsed),
    }
}

fn member(key: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    let text = key[name]
        .as_str()
        .ok_or_else(|| format!("the JWK has no {name}"))?;
    b64url_decode_opa(text)
}

fn signature_of(key: &serde_json::Value, alg: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let kty = key["kty"].as_str().unwrap_or_default();
    let rng = ring::rand::SystemRandom::new();
    match (alg, kty) {
        ("HS256" | "HS384" | "HS512", "oct") => {
            let hash = match alg {
                "HS256" => ring::hmac::HMAC_SHA256,
                "HS384" => ring::hmac::HMAC_SHA384,
                _ => ring::hmac::HMAC_SHA512,
            };
            let secret = member(key, "k")?;
            Ok(
                ring::hmac::sign(&ring::hmac::Key::new(hash, &secret), input)
                    .as_ref()
                    .to_vec(),
            )
        }
        ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", "RSA") => {
            let padding: &'static dyn signature::RsaEncoding = match alg {
                "RS256" => &signature::RSA_PKCS1_SHA256,
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                "PS256" => &signature::RSA_PSS_SHA256,
                "PS384" => &signature::RSA_PSS_SHA384,
                _ => &signature::RSA_PSS_SHA512,
            };
            let parts = ["n", "e", "d", "p", "q", "dp", "dq", "qi"].map(|name| member(key, name));
            let [n, e, d, p, q, dp, dq, qi] = parts;
            let components = ring::rsa::KeyPairComponents {
                public_key: signature::RsaPublicKeyComponents { n: n?, e: e? },
                d: d?,
                p: p?,
                q: q?,
                dP: dp?,
                dQ: dq?,
                qInv: qi?,
            };
            let pair = signature::RsaKeyPair::from_components(&components)
                .map_err(|e| format!("invalid RSA key: {e}"))?;
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(padding, &rng, input, &mut out)
                .map_err(|_| "signing failed".to_string())?;
            Ok(out)
        }
        ("ES256" | "ES384", "EC") => {
            let (ring_alg, crv) = match alg {
                "ES256" => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
                _ => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
            };
            if key["crv"].as_str() != Some(crv) {
                return Err(format!("{alg} needs a {crv} key"));
            }
            let mut point = vec![4u8];
            point.extend(member(key, "x")?);
            point.extend(member(key, "y")?);
            let d = member(key, "d")?;
            let pair = signature::EcdsaKeyPair::from_private_key_and_public_key(
                ring_alg, &d, &point, &rng,
            )
            .map_err(|e| format!("invalid EC key: {e}"))?;
            let sig = pair
                .sign(&rng, input)
                .map_err(|_| "signing failed".to_string())?;
            Ok(sig.as_ref().to_vec())
        }
        ("", _) | ("none", _) => Err("unknown signature algorithm".into()),
        (alg, kty) => Err(format!("cannot sign {alg} with a {kty} key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(s: &str) -> Value {
        Value::from_json_str(s).unwrap_or(Value::Undefined)
    }

    #[test]
    fn an_hmac_token_is_opas_byte_for_byte() {
        // Recorded from OPA 1.20 (tests/opa_corpus/probes.expected.json, jwt_encode_sign_hs256).
        let token = encode_sign(&[
            object(r#"{"alg": "HS256", "typ": "JWT"}"#),
            object(r#"{"sub": "a"}"#),
            object(r#"{"kty": "oct", "k": "c2VjcmV0"}"#),
        ]);
        assert_eq!(
            token,
            Ok(Value::from(
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhIn0.qBdA9L_PTGPhu7ipY7Xs4Eol-m79U_HNIifGEFJXeJQ"
            ))
        );
    }

    #[test]
    fn unsigned_or_mismatched_tokens_are_refused() {
        let key = object(r#"{"kty": "oct", "k": "c2VjcmV0"}"#);
        for header in [
            r#"{"alg": "none"}"#,
            r#"{"typ": "JWT"}"#,
            r#"{"alg": "RS256"}"#,
        ] {
            let got = encode_sign(&[object(header), object(r#"{"sub": "a"}"#), key.clone()]);
            assert!(got.is_err(), "{header}: {got:?}");
        }
        let raw = encode_sign_raw(&[
            Value::from(r#"{"alg":"HS256"}"#),
            Value::from("not json"),
            Value::from(r#"{"kty":"oct","k":"c2VjcmV0"}"#),
        ]);
        assert!(raw.is_err());
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;

    /// The test keys of tests/builtin_vectors as private JWKs, with their public PEMs.
    const KEYS: &str = include_str!("../../tests/builtin_vectors/keys/signing_jwks.json");

    fn verify(name: &str, token: &Value, pem: &str) -> Value {
        let (_, _, f) = super::super::jwt::BUILTINS
            .iter()
            .find(|(n, _, _)| *n == name)
            .copied()
            .unwrap_or_else(|| panic!("{name}"));
        f(&[token.clone(), Value::from(pem)]).unwrap_or(Value::Undefined)
    }

    #[test]
    fn tokens_signed_here_verify_with_the_public_key_and_not_with_another() {
        let keys: serde_json::Value = serde_json::from_str(KEYS).unwrap_or_default();
        for (alg, key, pem, verifier) in [
            ("RS256", "rsa", "rsa_pub_pem", "io.jwt.verify_rs256"),
            ("PS256", "rsa", "rsa_pub_pem", "io.jwt.verify_ps256"),
            ("ES256", "ec256", "ec256_pub_pem", "io.jwt.verify_es256"),
            ("ES384", "ec384", "ec384_pub_pem", "io.jwt.verify_es384"),
        ] {
            let token = encode_sign_raw(&[
                Value::from(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
                Value::from(r#"{"sub":"alice"}"#),
                Value::from(keys[key].to_string()),
            ])
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
            let pem_text = keys[pem].as_str().unwrap_or_default();
            assert_eq!(
                verify(verifier, &token, pem_text),
                Value::from(true),
                "{alg}"
            );
            let other = if key == "rsa" {
                "ec256_pub_pem"
            } else {
                "rsa_pub_pem"
            };
            let other_text = keys[other].as_str().unwrap_or_default();
            assert_ne!(
                verify(verifier, &token, other_text),
                Value::from(true),
                "{alg}"
            );
        }
    }
}
