//! Builtins regorus lacks, or implements differently from OPA, written in OPA's semantics and
//! registered on every engine as regorus extensions. A policy written for opa-envoy-plugin
//! calls `io.jwt.decode_verify` or `net.cidr_contains` and must get OPA's answer.
//!
//! Each builtin is a plain function: its arguments in, its value out, or OPA's error message.
//! What an error means is decided here, once, by the builtin-error mode:
//! - non-strict (OPA's default, and opa-envoy-plugin's): the call is undefined, so the
//!   expression holding it is undefined, exactly as a failing regorus builtin is;
//! - strict (`--strict-builtin-errors`): the evaluation fails, and the request is denied.
//!
//! Neither can allow by itself: an undefined expression makes its rule body fail.

pub mod crypto;
pub mod globs;
pub mod jwt;
pub mod jwt_sign;
pub mod net;
pub mod schema;
pub mod template;
pub mod values;

use regorus::{Engine, Value};

/// One builtin: its arguments in, its value out, or OPA's error message (a builtin error).
pub type Builtin = fn(&[Value]) -> Result<Value, String>;

/// Every builtin regate adds or replaces: (OPA name, arity, function).
pub fn all() -> impl Iterator<Item = &'static (&'static str, u8, Builtin)> {
    [
        jwt::BUILTINS,
        jwt_sign::BUILTINS,
        crypto::BUILTINS,
        net::BUILTINS,
        globs::BUILTINS,
        schema::BUILTINS,
        template::BUILTINS,
        values::BUILTINS,
    ]
    .into_iter()
    .flatten()
}

/// Whether regate supplies `name` itself.
pub fn provides(name: &str) -> bool {
    all().any(|(n, _, _)| *n == name)
}

/// Builtins whose answer depends on the clock, though their arguments are the same: the
/// decision cache never keeps an answer that called one.
pub const CLOCK_DEPENDENT: &[&str] = &[
    // Checks `exp` and `nbf` against now when the constraints give no `time`.
    "io.jwt.decode_verify",
    // Checks each certificate's validity period against now.
    "crypto.x509.parse_and_verify_certificates",
];

/// Add the builtins of [`all`] that `wanted` names to `engine`, failing as `strict` says.
/// Every evaluation clones the engine's extensions, so a set registers only those it calls.
pub fn register(
    engine: &mut Engine,
    strict: bool,
    wanted: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    for &(name, arity, builtin) in all().filter(|(name, _, _)| wanted(name)) {
        let extension = move |args: Vec<Value>| -> anyhow::Result<Value> {
            match builtin(&args) {
                Ok(value) => Ok(value),
                Err(message) if strict => Err(anyhow::anyhow!("{name}: {message}")),
                Err(_) => Ok(Value::Undefined),
            }
        };
        engine.add_extension(name.to_string(), arity, Box::new(extension))?;
    }
    Ok(())
}

/// The string argument at `i`, or OPA's operand type error.
pub(crate) fn string_arg(args: &[Value], i: usize) -> Result<&str, String> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "operand {} must be string but got {}",
            i + 1,
            type_name(other)
        )),
        None => Err(format!("operand {} is missing", i + 1)),
    }
}

/// OPA's name for a value's type, as its error messages spell it.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

#[cfg(test)]
mod tests;
