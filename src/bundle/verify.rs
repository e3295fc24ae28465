//! Signed OPA bundles: `.signatures.json` checked against the configured public key, and
//! every file of the bundle against the digests the signature covers.
//!
//! OPA's format: `{"signatures": ["<compact JWS>"]}`, exactly one JWS, whose payload lists
//! `files` (`name`, `hash` in hex, `algorithm`), with an optional `scope` and (deprecated)
//! `keyid`. As in OPA, the configured `key_id` chooses the key whatever the JWS names; the
//! payload's `scope` must equal the configured one (empty when none is). Every file in the bundle must be listed with a matching digest, and every file
//! listed must be in the bundle. Rego and other plain files are hashed as bytes; `data.json`,
//! `data.yaml` and `.manifest` as OPA hashes structured documents (see [`canonical_digest`]),
//! so whitespace and key order do not matter.
//!
//! This module checks bytes it is given; fetching them and deciding what a failure does are
//! `super`'s.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::BundleError;
use crate::builtins::jwt::{jws_verify_with_jwks, JwksKeys};

/// `verification:` of a `bundle:` section: the key bundles must be signed with.
pub struct Verification {
    keys: JwksKeys,
    /// The id the key goes by; a signature naming another key is refused.
    key_id: String,
    /// The scope a signature must carry (OPA's `scope`); empty when none is configured.
    scope: String,
}

#[derive(Deserialize)]
struct SignaturesFile {
    #[serde(default)]
    signatures: Vec<String>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    files: Vec<FileDigest>,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct FileDigest {
    name: String,
    hash: String,
    #[serde(default)]
    algorithm: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

impl Verification {
    /// The PEM public key (or certificate) at `public_key`, going by `key_id`.
    pub fn load(public_key: &Path, key_id: &str, scope: &str) -> Result<Verification, String> {
        let text = std::fs::read_to_string(public_key)
            .map_err(|e| format!("cannot read {}: {e}", public_key.display()))?;
        let keys =
            JwksKeys::from_pem(&text).map_err(|e| format!("{}: {e}", public_key.display()))?;
        Ok(Verification {
            keys,
            key_id: key_id.to_string(),
            scope: scope.to_string(),
        })
    }

    /// Check `signatures` (the bytes of `.signatures.json`, `None` when the bundle has none)
    /// against `files`, every other file of the bundle by its path (no leading `/`).
    pub fn check(
        &self,
        signatures: Option<&[u8]>,
        files: &[(String, Vec<u8>)],
    ) -> Result<(), BundleError> {
        let bad = |message: String| BundleError::Signature(message);
        let signatures = signatures.ok_or_else(|| bad("the bundle is not signed".into()))?;
        let parsed: SignaturesFile = serde_json::from_slice(signatures)
            .map_err(|e| bad(format!(".signatures.json: {e}")))?;
        let [token] = parsed.signatures.as_slice() else {
            return Err(bad(format!(
                ".signatures.json holds {} signatures; exactly one is expected",
                parsed.signatures.len()
            )));
        };
        let payload = self.verify_token(token)?;
        let mut listed: BTreeMap<String, FileDigest> = BTreeMap::new();
        for file in payload.files {
            listed.insert(file.name.trim_start_matches('/').to_string(), file);
        }
        for (path, bytes) in files {
            let digest = listed
                .remove(path.as_str())
                .ok_or_else(|| bad(format!("{path} is not covered by the signature")))?;
            check_digest(path, bytes, &digest)?;
        }
        if let Some(missing) = listed.keys().next() {
            return Err(bad(format!(
                "{missing} is covered by the signature but not in the bundle"
            )));
        }
        Ok(())
    }

    /// The payload of a JWS that verifies under the configured key, with the right scope.
    fn verify_token(&self, token: &str) -> Result<Payload, BundleError> {
        let bad = |message: &str| BundleError::Signature(message.to_string());
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("the signature is not a compact JWS"));
        };
        let decode = |part: &str| crate::builtins::crypto::b64url_decode_opa(part).ok();
        let header: Header = decode(header)
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(|| bad("the JWS header does not decode"))?;
        let payload_bytes =
            decode(payload).ok_or_else(|| bad("the JWS payload does not decode"))?;
        let parsed: Payload = serde_json::from_slice(&payload_bytes)
            .map_err(|_| bad("the JWS payload is not a signature payload"))?;
        let signature =
            decode(signature).ok_or_else(|| bad("the JWS signature does not decode"))?;
        // OPA takes the configured key id before the header's `kid` or the payload's
        // `keyid`; a key id is always configured here, so those only name, never choose.
        let signed = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
        if !jws_verify_with_jwks(
            &self.keys,
            &header.alg,
            None,
            &token.as_bytes()[..signed],
            &signature,
        ) {
            return Err(BundleError::Signature(format!(
                "the {} signature does not verify under key {:?}",
                header.alg, self.key_id
            )));
        }
        if parsed.scope != self.scope {
            return Err(bad("scope mismatch"));
        }
        Ok(parsed)
    }
}

/// Whether `bytes` hash to what the signature lists for `path`.
fn check_digest(path: &str, bytes: &[u8], digest: &FileDigest) -> Result<(), BundleError> {
    let bad = |message: String| BundleError::Signature(message);
    let algorithm = match digest.algorithm.as_str() {
        "SHA-256" => &ring::digest::SHA256,
        "SHA-384" => &ring::digest::SHA384,
        "SHA-512" => &ring::digest::SHA512,
        other => {
            return Err(bad(format!(
                "{path}: digest algorithm {other:?} is not SHA-256, SHA-384 or SHA-512"
            )))
        }
    };
    let got = if structured(path) {
        canonical_digest(path, bytes, algorithm)?
    } else {
        ring::digest::digest(algorithm, bytes).as_ref().to_vec()
    };
    if crate::tls::identity::hex(&got) != digest.hash.to_ascii_lowercase() {
        return Err(bad(format!("{path}: digest mismatch")));
    }
    Ok(())
}

/// The files OPA hashes as parsed documents rather than bytes.
fn structured(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    matches!(
        base,
        "data.json" | "data.yaml" | ".manifest" | "signatures.json"
    )
}

/// OPA's digest of a structured document: objects as `{` then `"key":value` pairs in byte
/// order of their keys, comma-separated, then `}`; arrays as `[` items `]`; strings, numbers,
/// booleans and null as Go's JSON encoder writes them (HTML characters left as they are).
pub fn canonical_digest(
    path: &str,
    bytes: &[u8],
    algorithm: &'static ring::digest::Algorithm,
) -> Result<Vec<u8>, BundleError> {
    let value: serde_json::Value = if path.ends_with(".yaml") {
        yaml_serde::from_slice(bytes).map_err(|e| BundleError::Signature(format!("{path}: {e}")))?
    } else {
        serde_json::from_slice(bytes).map_err(|e| BundleError::Signature(format!("{path}: {e}")))?
    };
    let mut out = Vec::with_capacity(bytes.len());
    canonical(&value, &mut out);
    Ok(ring::digest::digest(algorithm, &out).as_ref().to_vec())
}

fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            out.push(b'{');
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                go_string(key, out);
                out.push(b':');
                canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => go_string(s, out),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
    }
}

/// A string as Go's `json.Encoder` with HTML escaping off writes it.
fn go_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_documents_hash_without_regard_to_spacing_or_key_order() {
        let a = canonical_digest(
            "data.json",
            br#"{"b": [1, "x\n<"], "a": {"z": null, "y": true}}"#,
            &ring::digest::SHA256,
        )
        .unwrap();
        let b = canonical_digest(
            "data.json",
            br#"{"a":{"y":true,"z":null},"b":[1,"x\n<"]}"#,
            &ring::digest::SHA256,
        )
        .unwrap();
        assert_eq!(a, b);
        let mut out = Vec::new();
        canonical(
            &serde_json::json!({"b": [1, "x\n<\u{2028}"], "a": {"z": null}}),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":{"z":null},"b":[1,"x\n<\u2028"]}"#
        );
    }
}
