//! `json.match_schema` and `json.verify_schema` in OPA's shapes. regorus has both, but
//! answers a match with `[true, null]` where OPA answers `[true, []]`, so the common
//! `count(errors) == 0` fails on a valid document; and it reports an invalid schema to
//! `verify_schema` as an error where OPA answers `[false, "message"]`.
//!
//! The validation itself is the `jsonschema` crate's, as in regorus. Each error is an object
//! with OPA's keys: `field` (the dotted path, `(Root)` for the document), `type` (the schema
//! keyword that failed), `desc` and `error` (`field: desc`). The wording of `desc` is the
//! crate's, not OPA's gojsonschema's.

use regorus::Value;

use super::{type_name, Builtin};

pub const BUILTINS: &[(&str, u8, Builtin)] = &[
    ("json.match_schema", 2, match_schema),
    ("json.verify_schema", 1, verify_schema),
];

/// A schema given as a JSON string or as a value.
fn schema_json(value: &Value) -> Result<serde_json::Value, String> {
    let text = match value {
        Value::String(s) => s.to_string(),
        Value::Object(_) | Value::Bool(_) => value.to_json_str().map_err(|e| e.to_string())?,
        other => {
            return Err(format!(
                "operand must be one of {{object, string}} but got {}",
                type_name(other)
            ))
        }
    };
    serde_json::from_str(&text).map_err(|e| format!("invalid schema: {e}"))
}

fn validator(value: &Value) -> Result<jsonschema::Validator, String> {
    let schema = schema_json(value)?;
    jsonschema::validator_for(&schema).map_err(|e| format!("jsonschema: {e}"))
}

/// `json.verify_schema(schema)`: `[true, null]`, or `[false, message]`.
fn verify_schema(args: &[Value]) -> Result<Value, String> {
    let schema = args.first().ok_or("operand 1 is missing")?;
    Ok(Value::from(match validator(schema) {
        Ok(_) => vec![Value::from(true), Value::Null],
        Err(message) => vec![Value::from(false), Value::from(message)],
    }))
}

/// `json.match_schema(document, schema)`: `[true, []]`, or `[false, errors]`; an invalid
/// schema is a builtin error, as in OPA.
fn match_schema(args: &[Value]) -> Result<Value, String> {
    let (Some(document), Some(schema)) = (args.first(), args.get(1)) else {
        return Err("two operands are needed".into());
    };
    let validator = validator(schema)?;
    let document: serde_json::Value = match document {
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| format!("invalid document: {e}"))?
        }
        other => serde_json::from_str(&other.to_json_str().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?,
    };
    let errors: Vec<Value> = validator
        .iter_errors(&document)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let field = match pointer.trim_start_matches('/') {
                "" => "(Root)".to_string(),
                path => path.replace('/', "."),
            };
            let desc = e.to_string();
            let mut error = std::collections::BTreeMap::new();
            error.insert(
                Value::from("error"),
                Value::from(format!("{field}: {desc}")),
            );
            error.insert(Value::from("type"), Value::from(e.kind().keyword()));
            error.insert(Value::from("field"), Value::from(field));
            error.insert(Value::from("desc"), Value::from(desc));
            Value::from(error)
        })
        .collect();
    Ok(Value::from(vec![
        Value::from(errors.is_empty()),
        Value::from(errors),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> Value {
        Value::from_json_str(s).unwrap_or(Value::Undefined)
    }

    #[test]
    fn a_match_has_an_empty_error_list() {
        let schema = json(r#"{"type": "object", "properties": {"a": {"type": "integer"}}}"#);
        assert_eq!(
            match_schema(&[json(r#"{"a": 1}"#), schema.clone()]),
            Ok(json("[true, []]"))
        );
        let got = match_schema(&[json(r#"{"a": "x"}"#), schema]).unwrap_or(Value::Undefined);
        assert_eq!(got[0], Value::from(false));
        assert_eq!(got[1][0]["field"], Value::from("a"));
        assert_eq!(got[1][0]["type"], Value::from("type"));
        assert!(match_schema(&[json("{}"), json(r#"{"type": "objekt"}"#)]).is_err());
        let bad = verify_schema(&[json(r#"{"type": 12}"#)]).unwrap_or(Value::Undefined);
        assert_eq!(bad[0], Value::from(false));
    }
}
