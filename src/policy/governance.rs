//! What a policy's answer may ask of regate beyond allow and deny, for agents above all: that
//! a person approve the action first (`approval`, on a deny), and that the action be charged to
//! budgets (`rate_limits`, on an allow). This module only reads those fields of the decision
//! object and checks their shape; `crate::proxy::approval` and `crate::proxy::budget` act on
//! them.

use std::time::Duration;

use regorus::Value;

/// Longest an approval may be asked for.
pub const MAX_APPROVAL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// When the policy names no `ttl`.
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(15 * 60);
/// Most `rate_limits` one answer may carry.
pub const MAX_RATE_LIMITS: usize = 16;
/// Longest budget key.
pub const MAX_KEY_LEN: usize = 512;
/// Longest window.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// `approval` of a deny: the action may go ahead once a person approves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalAsk {
    /// How long the request for approval stands (`ttl`, default 15 minutes).
    pub ttl: Duration,
    /// Who may approve, as the policy says it (`approvers`: a string or a list), shown to
    /// the approvers; regate does not check it against the approving token.
    pub approvers: Vec<String>,
}

/// One entry of `rate_limits`: at most `limit` requests per `per` for `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Any string the policy builds (`"send_email:" + input.peer.spiffe_id`).
    pub key: String,
    pub limit: u64,
    pub per: Duration,
    /// The label of the metrics (`name`, default `unnamed`): never the key.
    pub name: String,
    /// `on_error: allow`: a budget store regate cannot reach lets this limit pass.
    pub on_error_allow: bool,
}

/// The `approval` field, when there is one.
pub fn approval(value: Option<&Value>) -> Result<Option<ApprovalAsk>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Object(_) = value else {
        return Err("`approval` is not an object".into());
    };
    let ttl = match &value["ttl"] {
        Value::Undefined => DEFAULT_APPROVAL_TTL,
        v => duration(v).ok_or("`approval.ttl` is not a duration like 15m")?,
    };
    if ttl.is_zero() || ttl > MAX_APPROVAL_TTL {
        return Err(format!(
            "`approval.ttl` must be over 0 and at most {} days",
            MAX_APPROVAL_TTL.as_secs() / 86_400
        ));
    }
    let approvers = match &value["approvers"] {
        Value::Undefined | Value::Null => Vec::new(),
        Value::String(s) => vec![s.to_string()],
        Value::Array(list) => list
            .iter()
            .map(|v| v.as_string().map(|s| s.to_string()).ok())
            .collect::<Option<Vec<_>>>()
            .ok_or("`approval.approvers` holds a non-string")?,
        _ => return Err("`approval.approvers` is not a string or a list of strings".into()),
    };
    Ok(Some(ApprovalAsk { ttl, approvers }))
}

/// The `rate_limits` field: none when absent.
pub fn rate_limits(value: Option<&Value>) -> Result<Vec<RateLimit>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = value else {
        return Err("`rate_limits` is not an array".into());
    };
    if items.len() > MAX_RATE_LIMITS {
        return Err(format!(
            "`rate_limits` has more than {MAX_RATE_LIMITS} entries"
        ));
    }
    items.iter().map(rate_limit).collect()
}

fn rate_limit(value: &Value) -> Result<RateLimit, String> {
    let Value::Object(_) = value else {
        return Err("a `rate_limits` entry is not an object".into());
    };
    let key = match &value["key"] {
        Value::String(s) if !s.is_empty() && s.len() <= MAX_KEY_LEN => s.to_string(),
        _ => {
            return Err(format!(
                "a `rate_limits` entry has no `key` string of 1 to {MAX_KEY_LEN} bytes"
            ))
        }
    };
    let limit = value["limit"]
        .as_u64()
        .map_err(|_| "a `rate_limits` entry's `limit` is not a whole number".to_string())?;
    let per = duration(&value["per"])
        .filter(|d| !d.is_zero() && *d <= MAX_WINDOW)
        .ok_or("a `rate_limits` entry's `per` is not a duration like 1s or 1h (at most 31 days)")?;
    let name =
        match &value["name"] {
            Value::Undefined => "unnamed".to_string(),
            Value::String(s) if valid_name(s) => s.to_string(),
            _ => return Err(
                "a `rate_limits` entry's `name` is not 1 to 64 letters, digits, `_`, `-` or `.`"
                    .into(),
            ),
        };
    let on_error_allow = match &value["on_error"] {
        Value::Undefined => false,
        Value::String(s) if s.as_ref() == "allow" => true,
        Value::String(s) if s.as_ref() == "deny" => false,
        _ => return Err("a `rate_limits` entry's `on_error` is not \"allow\" or \"deny\"".into()),
    };
    Ok(RateLimit {
        key,
        limit,
        per,
        name,
        on_error_allow,
    })
}

/// A metric label a policy may choose: short and plain.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn duration(v: &Value) -> Option<Duration> {
    crate::units::parse_duration(v.as_string().ok()?.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(json: &str) -> Value {
        Value::from_json_str(json).unwrap_or(Value::Undefined)
    }

    #[test]
    fn approvals_and_rate_limits_are_read_or_refused_by_shape() {
        let ask = approval(Some(&value(
            r#"{"ttl": "30m", "approvers": "group:oncall"}"#,
        )));
        assert_eq!(
            ask,
            Ok(Some(ApprovalAsk {
                ttl: Duration::from_secs(1800),
                approvers: vec!["group:oncall".into()],
            }))
        );
        assert_eq!(
            approval(Some(&value("{}"))).map(|a| a.map(|a| a.ttl)),
            Ok(Some(DEFAULT_APPROVAL_TTL))
        );
        for bad in [
            r#""yes""#,
            r#"{"ttl": "soon"}"#,
            r#"{"ttl": "30d"}"#,
            r#"{"approvers": 7}"#,
        ] {
            assert!(approval(Some(&value(bad))).is_err(), "{bad}");
        }
        let limits = rate_limits(Some(&value(
            r#"[{"key": "send_email:a", "limit": 10, "per": "1h", "name": "send_email"},
                {"key": "all:a", "limit": 100, "per": "1s", "on_error": "allow"}]"#,
        )));
        let limits = limits.unwrap_or_default();
        assert_eq!(limits.len(), 2);
        assert_eq!(limits[0].per, Duration::from_secs(3600));
        assert_eq!(limits[1].name, "unnamed");
        assert!(limits[1].on_error_allow && !limits[0].on_error_allow);
        for bad in [
            r#"{"key": "k"}"#,
            r#"[{"limit": 1, "per": "1s"}]"#,
            r#"[{"key": "k", "limit": -1, "per": "1s"}]"#,
            r#"[{"key": "k", "limit": 1, "per": "0s"}]"#,
            r#"[{"key": "k", "limit": 1, "per": "1s", "name": "a key:with spaces"}]"#,
            r#"[{"key": "k", "limit": 1, "per": "1s", "on_error": "maybe"}]"#,
        ] {
            assert!(rate_limits(Some(&value(bad))).is_err(), "{bad}");
        }
    }
}
