//! The action digest: what an approval binds to. The same request, and nothing else, has the
//! same digest, so an approval for one action never approves another.
//!
//! The digest is `sha256:` and the hex SHA-256 of the action in canonical JSON: one object,
//! keys sorted by their UTF-8 bytes, no whitespace, strings escaped as JSON requires
//! (serde_json's compact output; Python's `json.dumps(obj, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False)` writes the same bytes):
//!
//! ```text
//! {"action":…,"delegation_subject":…,"method":…,"path":…,"spiffe_id":…,"v":1}
//! ```
//!
//! `action` is, for an MCP `tools/call`, `{"arguments":…,"tool":…}`; for another JSON-RPC
//! call, `{"method":…,"params":…}`; for any other JSON body, the body parsed; else `null`
//! (the body was not read: the approval binds the caller, the method and the path).
//! `path` is the request target as sent, query included. docs/securing-ai-agents.md shows how
//! an approver recomputes it.

use regorus::Value;
use serde_json::json;

/// What is approved, as the digest reads it.
pub struct Action<'a> {
    pub spiffe_id: Option<&'a str>,
    pub delegation_subject: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    /// The body's action, already in its canonical shape ([`call_action`], [`body_action`]).
    pub action: serde_json::Value,
}

impl Action<'_> {
    /// The canonical JSON of the action.
    pub fn canonical(&self) -> String {
        json!({
            "v": 1,
            "spiffe_id": self.spiffe_id,
            "delegation_subject": self.delegation_subject,
            "method": self.method,
            "path": self.path,
            "action": self.action,
        })
        .to_string()
    }

    /// `sha256:` and the hex SHA-256 of [`Action::canonical`].
    pub fn digest(&self) -> String {
        let hash = ring::digest::digest(&ring::digest::SHA256, self.canonical().as_bytes());
        format!("sha256:{}", crate::tls::identity::hex(hash.as_ref()))
    }
}

/// The action of one JSON-RPC call, from the call as the policy sees it (`input.mcp`).
pub fn call_action(mcp: &Value) -> serde_json::Value {
    let field = |v: &Value| json_of(v).unwrap_or(serde_json::Value::Null);
    match mcp["method"].as_string() {
        Ok(m) if m.as_ref() == "tools/call" => json!({
            "tool": field(&mcp["tool"]),
            "arguments": field(&mcp["arguments"]),
        }),
        _ => json!({
            "method": field(&mcp["method"]),
            "params": field(&mcp["params"]),
        }),
    }
}

/// The action of a JSON body that is not JSON-RPC: the body parsed; `null` without one.
pub fn body_action(parsed: Option<&Value>) -> serde_json::Value {
    parsed.and_then(json_of).unwrap_or(serde_json::Value::Null)
}

/// A policy value as JSON; `None` for undefined.
pub fn json_of(v: &Value) -> Option<serde_json::Value> {
    if let Value::Undefined = v {
        return None;
    }
    serde_json::from_str(&v.to_json_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_key_order_and_whitespace_and_sees_every_argument() {
        let mcp = |args: &str| {
            Value::from_json_str(&format!(
                r#"{{"method": "tools/call", "tool": "send_email", "arguments": {args}}}"#
            ))
            .unwrap_or(Value::Undefined)
        };
        let action = |args: &str| Action {
            spiffe_id: Some("spiffe://example.org/a"),
            delegation_subject: None,
            method: "POST",
            path: "/mcp",
            action: call_action(&mcp(args)),
        };
        let a = action(r#"{"to": "x@example.org", "subject": "hi"}"#);
        let b = action(r#"{ "subject":"hi",   "to":"x@example.org" }"#);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(
            a.digest(),
            action(r#"{"to": "y@example.org", "subject": "hi"}"#).digest()
        );
        assert_eq!(
            a.canonical(),
            r#"{"action":{"arguments":{"subject":"hi","to":"x@example.org"},"tool":"send_email"},"delegation_subject":null,"method":"POST","path":"/mcp","spiffe_id":"spiffe://example.org/a","v":1}"#
        );
        assert!(a.digest().starts_with("sha256:") && a.digest().len() == 71);
    }
}
