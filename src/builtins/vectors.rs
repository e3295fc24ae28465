//! Every builtin checked against OPA's own answers, recorded by
//! `tests/builtin_vectors/record.py` (OPA 1.20 through `opa-golib-python-bindings`).
//!
//! Values must be equal as JSON. Errors: where OPA errors we must error; the message is
//! compared too, and the count of exact matches printed (OPA's messages from Go's
//! libraries, e.g. jwx's JWK errors, are not all reproduced word for word).

use std::collections::BTreeMap;

use regorus::Value;

use super::super::{crypto, jwt, Builtin};

const VECTORS: &str = include_str!("../../tests/builtin_vectors/vectors.json");

#[derive(serde::Deserialize)]
struct Vector {
    name: String,
    builtin: String,
    args: Vec<serde_json::Value>,
    value: Option<serde_json::Value>,
    error: Option<String>,
}

fn builtins() -> BTreeMap<&'static str, Builtin> {
    jwt::BUILTINS
        .iter()
        .chain(crypto::BUILTINS.iter())
        .map(|(name, _, f)| (*name, *f))
        .collect()
}

/// Integers too large for f64 (RSA moduli, serial numbers) written as strings, so that both
/// sides compare digit for digit.
fn quote_big_integers(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() > 20 && digits.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            out.push('"');
            out.push_str(digits);
            out.push('"');
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_ascii_digit() || "-+.eE".contains(c) {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out);
        if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    flush(&mut digits, &mut out);
    out
}

/// Our value as JSON, big integers as digit strings (regorus cannot serialize a number
/// beyond f64's range, such as an RSA modulus, without serde_json's arbitrary precision).
fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => {
            let s = format!("{n:?}");
            let quoted = quote_big_integers(&s);
            serde_json::from_str(&quoted).expect("number")
        }
        Value::String(s) => serde_json::Value::String(s.to_string()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Set(s) => serde_json::Value::Array(s.iter().map(to_json).collect()),
        Value::Object(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => s.to_string(),
                        other => other.to_json_str().expect("key"),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        _ => serde_json::Value::Null,
    }
}

#[test]
fn every_builtin_answers_as_opa() {
    let vectors: Vec<Vector> =
        serde_json::from_str(&quote_big_integers(VECTORS)).expect("vectors.json parses");
    let table = builtins();
    let mut checked = 0usize;
    let mut same_message = 0usize;
    let mut failures = Vec::new();
    let ours: Vec<&Vector> = vectors
        .iter()
        .filter(|v| table.contains_key(v.builtin.as_str()))
        .collect();
    for v in &ours {
        let f = table[v.builtin.as_str()];
        let args: Vec<Value> = v.args.iter().map(|a| Value::from(a.clone())).collect();
        let got = f(&args);
        checked += 1;
        match (&v.error, got) {
            (Some(want), Err(got)) => {
                if want.ends_with(&got) || *want == got {
                    same_message += 1;
                } else {
                    println!("message differs: {}\n  OPA: {want}\n  us:  {got}", v.name);
                }
            }
            (Some(want), Ok(got)) => failures.push(format!(
                "{}: OPA errors ({want}), we give {}",
                v.name,
                got.to_json_str().unwrap_or_default()
            )),
            (None, Err(got)) => {
                failures.push(format!("{}: OPA gives a value, we error: {got}", v.name))
            }
            (None, Ok(got)) => {
                let got = to_json(&got);
                let want = v.value.clone().unwrap_or(serde_json::Value::Null);
                if got != want {
                    failures.push(format!(
                        "{}: value differs\n  OPA: {}\n  us:  {}",
                        v.name, want, got
                    ));
                }
            }
        }
    }
    let errors = ours.iter().filter(|v| v.error.is_some()).count();
    println!(
        "builtin vectors: {checked} checked of {} recorded; {same_message} of {errors} error messages word for word",
        vectors.len()
    );
    assert!(
        failures.is_empty(),
        "{} vectors differ from OPA:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, ours.len());
    assert!(checked >= 320, "only {checked} vectors checked");
}

#[test]
fn md5_matches_rfc_1321() {
    let cases = [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(crypto::md5_hex(input), want);
    }
}
