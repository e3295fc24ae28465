//! Parsing a JSON body so that every server reads it the same way the policy does.
//!
//! JSON parsers disagree on what an object with a repeated key means: serde_json keeps the
//! last value, gjson, fastjson and simdjson the first, and Go's `encoding/json` matches keys
//! to struct fields ignoring case (Unicode simple case folding: `Path` is `path`, `argumentſ`
//! is `arguments`). A body that repeats a key in one object, or holds two keys equal under
//! simple case folding, therefore means one thing to the policy and another to some server.
//! [`parse`] finds them at any depth, and the proxy refuses such a body before the policy
//! (`ambiguous_body`), as it refuses an ambiguous path.
//!
//! What it does not do: decide anything else about the body. A body that is not JSON at all is
//! reported as such; the policy decides what to do with it.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use thiserror::Error;

/// Why a body is not shown to the policy as JSON.
#[derive(Debug, Error)]
pub enum JsonError {
    /// Two keys of one object that a server could read as one: the key (as sent) that
    /// repeats another.
    #[error("the key {0:?} repeats another key of its object, or equals one but for case")]
    Ambiguous(String),
    #[error("the body is not JSON: {0}")]
    Invalid(#[source] serde_json::Error),
}

/// Parse `text` as JSON, refusing keys that repeat in one object (exactly or under simple case
/// folding).
pub fn parse(data: &[u8]) -> Result<Value, JsonError> {
    let twin = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(data);
    let parsed = Strict { twin: &twin }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, twin.take()) {
        (_, Some(key)) => Err(JsonError::Ambiguous(key)),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(JsonError::Invalid(e)),
    }
}

/// A key as a case-insensitive server matches it: each character mapped to one
/// representative of its simple case folding orbit (`K`, `k` and the Kelvin sign `K` all to
/// `k`; `S`, `s` and the long s `ſ` to `s`; `Σ`, `σ`, `ς` to `σ`).
fn folded(key: &str) -> String {
    if key.is_ascii() {
        // Two ASCII keys can fold equal only in ASCII; a non-ASCII twin (`K`) folds here too.
        return key.to_ascii_lowercase();
    }
    key.chars().map(fold_char).collect()
}

/// Upper case then lower case, where each maps one character to one: the characters of one
/// simple folding orbit meet there. Characters whose case mapping is longer (`ß`, `İ`) have
/// no simple folding to another single character and stay as they are.
fn fold_char(c: char) -> char {
    let upper = single(c.to_uppercase()).unwrap_or(c);
    single(upper.to_lowercase()).unwrap_or(upper)
}

/// The one character of a case mapping, if it maps to one.
fn single(mut mapped: impl Iterator<Item = char>) -> Option<char> {
    match (mapped.next(), mapped.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// Builds a `serde_json::Value` as serde_json would, but stops at the first ambiguous key,
/// leaving it in `twin`.
#[derive(Clone, Copy)]
struct Strict<'a> {
    twin: &'a Cell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(folded(&key)) {
                self.twin.set(Some(key));
                return Err(de::Error::custom("ambiguous key"));
            }
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ambiguous(body: &str) -> Option<String> {
        match parse(body.as_bytes()) {
            Err(JsonError::Ambiguous(key)) => Some(key),
            _ => None,
        }
    }

    #[test]
    fn plain_json_parses_as_serde_json_would() {
        for body in [
            r#"{"a": 1, "b": [1, -2, 3.5, "x", null, true], "c": {"d": {}}}"#,
            r#"[{"a": 1}, {"a": 2}]"#,
            r#""text""#,
            "18446744073709551615",
            r#"{"name": "x", "names": "y", "nam e": "z"}"#,
        ] {
            let ours = parse(body.as_bytes()).unwrap_or_default();
            let theirs: Value = serde_json::from_str(body).unwrap_or_default();
            assert_eq!(ours, theirs, "{body}");
        }
    }

    #[test]
    fn repeated_keys_are_ambiguous_at_any_depth() {
        assert_eq!(
            ambiguous(r#"{"method":"tools/call","method":"tools/list"}"#).as_deref(),
            Some("method")
        );
        assert_eq!(
            ambiguous(r#"{"params":{"arguments":{"path":"/a","path":"/secret/a"}}}"#).as_deref(),
            Some("path")
        );
        assert_eq!(
            ambiguous(r#"[1, {"x": [{"k": 1, "k": 2}]}]"#).as_deref(),
            Some("k")
        );
    }

    #[test]
    fn keys_equal_under_simple_case_folding_are_ambiguous() {
        for (body, key) in [
            (r#"{"name": 1, "Name": 2}"#, "Name"),
            (r#"{"arguments": {}, "argumentſ": {}}"#, "argumentſ"),
            (r#"{"kind": 1, "\u212aind": 2}"#, "\u{212a}ind"),
            (r#"{"σ": 1, "ς": 2}"#, "ς"),
            (r#"{"Σ": 1, "σ": 2}"#, "σ"),
            (r#"{"\u00b5": 1, "μ": 2}"#, "μ"),
            (r#"{"\u212b": 1, "å": 2}"#, "å"),
        ] {
            assert_eq!(ambiguous(body).as_deref(), Some(key), "{body}");
        }
        // Full case folding would make these equal; simple folding, as Go uses, does not.
        assert!(parse(r#"{"ß": 1, "ss": 2}"#.as_bytes()).is_ok());
        // Keys in different objects never collide.
        assert!(parse(r#"{"a": {"path": 1}, "b": {"Path": 2}}"#.as_bytes()).is_ok());
    }

    #[test]
    fn what_is_not_json_is_invalid_not_ambiguous() {
        for body in ["{", "{\"a\": 1} x", "{\"a\": \"\\ud800\"}", "[1,]"] {
            assert!(
                matches!(parse(body.as_bytes()), Err(JsonError::Invalid(_))),
                "{body}"
            );
        }
    }
}
