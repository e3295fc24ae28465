//! The policy input as a decision record keeps it (`--decision-log-input`), for
//! `regate policy replay`: the document the policy evaluated, with the values of credential
//! headers and query parameters replaced by their SHA-256 and nothing taken from the request
//! body. Also the request target as every record and log line writes it, credential query
//! parameters masked ([`Recording::target`]).
//!
//! What is dropped or digested is listed in docs/policy-input.md ("Recorded input"). The
//! input itself is [`crate::policy::input`]'s; this module only takes parts out of a copy.

use regorus::Value;

/// Headers whose values are never recorded, whatever `--redact-header` adds.
pub const DEFAULT_REDACTED: &[&str] = &[
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-*-token",
];

/// Query parameters that carry credentials (OAuth 2.0's and OpenID Connect's), whatever
/// `--redact-header` adds: their values are never written out.
pub const SECRET_QUERY_PARAMETERS: &[&str] =
    &["access_token", "id_token", "token", "code", "client_secret"];

/// What a masked query value is written as.
const MASKED: &str = "[redacted]";

/// What of `input.jsonrpc` and `input.mcp` is kept: which call it was, never its arguments.
const KEPT_CALL_FIELDS: &[&str] = &["method", "tool", "id", "batch_index", "batch_size"];

/// The longest string kept of a call's `id`, `tool` or `method`.
const MAX_CALL_NAME: usize = 128;

/// A number, null or boolean, or a string of at most [`MAX_CALL_NAME`] bytes.
fn names_a_call(v: &Value) -> bool {
    match v {
        Value::String(s) => s.len() <= MAX_CALL_NAME,
        Value::Number(_) | Value::Null | Value::Bool(_) => true,
        _ => false,
    }
}

/// How inputs are recorded: which header names (lowercase, `*` matching any run of
/// characters) have their values digested.
#[derive(Debug, Clone)]
pub struct Recording {
    redacted: Vec<String>,
}

impl Recording {
    /// The default names and `extra`, lowercased.
    pub fn new<'a>(extra: impl IntoIterator<Item = &'a str>) -> Recording {
        let mut redacted: Vec<String> = DEFAULT_REDACTED.iter().map(|s| s.to_string()).collect();
        for name in extra {
            let name = name.trim().to_ascii_lowercase();
            if !redacted.contains(&name) {
                redacted.push(name);
            }
        }
        Recording { redacted }
    }

    /// The names whose values are digested.
    pub fn redacted(&self) -> &[String] {
        &self.redacted
    }

    /// Whether `header` (lowercase) names a credential whose value is never written out.
    pub fn redacts(&self, header: &str) -> bool {
        self.redacted.iter().any(|p| wildcard(p, header))
    }

    /// Whether the query parameter `name` (decoded) holds a credential: one of
    /// [`SECRET_QUERY_PARAMETERS`], or a name the header list redacts.
    pub fn redacts_query(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        SECRET_QUERY_PARAMETERS.contains(&name.as_str()) || self.redacts(&name)
    }

    /// A request target (`/path?query`) as records and logs write it: the value of every
    /// credential parameter is `[redacted]`, everything else as sent.
    pub fn target<'a>(&self, target: &'a str) -> std::borrow::Cow<'a, str> {
        let Some((path, query)) = target.split_once('?') else {
            return target.into();
        };
        let secret = |pair: &str| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            self.redacts_query(&crate::request::target::decoded_query_part(name))
        };
        if !query.split('&').any(secret) {
            return target.into();
        }
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if secret(pair) => format!("{name}={MASKED}"),
                _ => pair.to_string(),
            })
            .collect();
        format!("{path}?{}", masked.join("&")).into()
    }

    /// `input` as recorded: credential header and query values digested, the target masked,
    /// body-derived fields dropped.
    /// The objects `input` shares with the proxy's copy are copied only where they change.
    pub fn record(&self, mut input: Value) -> Value {
        let Ok(top) = input.as_object_mut() else {
            return input;
        };
        top.remove(&Value::from("parsed_body"));
        if let Some(Ok(query)) = top
            .get_mut(&Value::from("parsed_query"))
            .map(Value::as_object_mut)
        {
            for (name, values) in query.iter_mut() {
                if name.as_string().is_ok_and(|n| self.redacts_query(n)) {
                    if let Ok(values) = values.as_array_mut() {
                        for value in values.iter_mut() {
                            *value = Value::from(digest(value));
                        }
                    }
                }
            }
        }
        for name in ["jsonrpc", "mcp"] {
            if let Some(Ok(call)) = top.get_mut(&Value::from(name)).map(Value::as_object_mut) {
                call.retain(|k, _| {
                    k.as_string()
                        .is_ok_and(|k| KEPT_CALL_FIELDS.contains(&k.as_ref()))
                });
                // `id` and `tool` come from the body too: a client could put anything in
                // them. Only a plain, short value names a call; anything else is not kept.
                call.retain(|_, v| names_a_call(v));
            }
        }
        let http = top
            .get_mut(&Value::from("attributes"))
            .and_then(|v| v.as_object_mut().ok())
            .and_then(|a| a.get_mut(&Value::from("request")))
            .and_then(|v| v.as_object_mut().ok())
            .and_then(|r| r.get_mut(&Value::from("http")))
            .and_then(|v| v.as_object_mut().ok());
        if let Some(http) = http {
            http.remove(&Value::from("body"));
            http.remove(&Value::from("raw_body"));
            let path = http
                .get(&Value::from("path"))
                .and_then(|p| p.as_string().ok());
            if let Some(masked) = path.and_then(|p| match self.target(p) {
                std::borrow::Cow::Owned(masked) => Some(masked),
                std::borrow::Cow::Borrowed(_) => None,
            }) {
                http.insert(Value::from("path"), Value::from(masked));
            }
            if let Some(Ok(headers)) = http
                .get_mut(&Value::from("headers"))
                .map(Value::as_object_mut)
            {
                for (name, value) in headers.iter_mut() {
                    let redact = name.as_string().is_ok_and(|n| self.redacts(n));
                    if redact {
                        *value = Value::from(digest(value));
                    } else if name.as_string().is_ok_and(|n| n.as_ref() == ":path") {
                        // HTTP/2's target, as opa-envoy-plugin shows it: masked as `path` is.
                        if let Some(masked) =
                            value.as_string().ok().and_then(|p| match self.target(p) {
                                std::borrow::Cow::Owned(masked) => Some(masked),
                                std::borrow::Cow::Borrowed(_) => None,
                            })
                        {
                            *value = Value::from(masked);
                        }
                    }
                }
            }
        }
        input
    }
}

/// `sha256:` and the hex SHA-256 of a header value as the policy saw it.
fn digest(value: &Value) -> String {
    let text = value.as_string().map(|s| s.to_string()).unwrap_or_default();
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!("sha256:{}", crate::tls::identity::hex(hash.as_ref()))
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (`/` too) and
/// everything else matches itself.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        for (p, t, m) in [
            ("x-*-token", "x-api-token", true),
            ("x-*-token", "x-token", false),
            ("x-*-token", "x-a-b-token", true),
            ("authorization", "authorization", true),
            ("authorization", "authorizations", false),
            ("/admin/*", "/admin/users/1", true),
            ("/admin/*", "/admins", false),
            ("*", "", true),
        ] {
            assert_eq!(wildcard(p, t), m, "{p} {t}");
        }
    }

    #[test]
    fn credentials_are_digested_and_bodies_dropped() {
        let input = Value::from_json_str(
            r#"{"attributes": {"request": {"http": {"method": "POST", "body": "{\"q\":1}",
                "headers": {"authorization": "Bearer s3cret", "x-api-token": "t",
                            "x-custom": "c", "accept": "*/*"}}}},
               "parsed_body": {"q": 1},
               "jsonrpc": {"method": "tools/call", "params": {"q": 1}, "id": 7},
               "mcp": {"method": "tools/call", "tool": "search", "arguments": {"q": 1}, "id": 7}}"#,
        )
        .unwrap();
        let recorded = Recording::new(["X-Custom"]).record(input);
        let http = &recorded["attributes"]["request"]["http"];
        let sha = |s: &str| digest(&Value::from(s));
        assert_eq!(
            http["headers"]["authorization"],
            Value::from(sha("Bearer s3cret"))
        );
        assert_eq!(http["headers"]["x-api-token"], Value::from(sha("t")));
        assert_eq!(http["headers"]["x-custom"], Value::from(sha("c")));
        assert_eq!(http["headers"]["accept"], Value::from("*/*"));
        assert_eq!(http["body"], Value::Undefined);
        assert_eq!(recorded["parsed_body"], Value::Undefined);
        assert_eq!(recorded["jsonrpc"]["params"], Value::Undefined);
        assert_eq!(recorded["mcp"]["arguments"], Value::Undefined);
        assert_eq!(recorded["mcp"]["tool"], Value::from("search"));
        assert_eq!(recorded["jsonrpc"]["method"], Value::from("tools/call"));
    }

    #[test]
    fn credential_query_parameters_are_masked_in_targets_and_digested_in_inputs() {
        let recording = Recording::new(["x-api-key"]);
        for (target, written) in [
            ("/a", "/a"),
            ("/a?q=1&page=2", "/a?q=1&page=2"),
            (
                "/a?access_token=eyJ.x.y&q=1",
                "/a?access_token=[redacted]&q=1",
            ),
            ("/cb?code=abc&state=s", "/cb?code=[redacted]&state=s"),
            (
                "/a?Client_Secret=s&id%5Ftoken=t&token&x-api-key=k",
                "/a?Client_Secret=[redacted]&id%5Ftoken=[redacted]&token&x-api-key=[redacted]",
            ),
            ("/a?x-session-token=k", "/a?x-session-token=[redacted]"),
        ] {
            assert_eq!(recording.target(target), written, "{target}");
        }
        let input = Value::from_json_str(
            r#"{"attributes": {"request": {"http": {"path": "/a?code=abc&q=1"}}},
               "parsed_query": {"code": ["abc"], "q": ["1"]}}"#,
        )
        .unwrap();
        let recorded = recording.record(input);
        assert_eq!(
            recorded["attributes"]["request"]["http"]["path"],
            Value::from("/a?code=[redacted]&q=1")
        );
        assert_eq!(
            recorded["parsed_query"]["code"][0],
            Value::from(digest(&Value::from("abc")))
        );
        assert_eq!(recorded["parsed_query"]["q"][0], Value::from("1"));
    }

    #[test]
    fn a_call_id_or_tool_that_carries_more_than_a_name_is_not_kept() {
        let long = "x".repeat(129);
        let input = Value::from_json_str(&format!(
            r#"{{"jsonrpc": {{"method": "tools/call", "id": {{"secret": "s3cret"}}}},
                "mcp": {{"method": "tools/call", "tool": "{long}", "id": "call-1"}}}}"#
        ))
        .unwrap();
        let recorded = Recording::new([]).record(input);
        assert_eq!(recorded["jsonrpc"]["id"], Value::Undefined);
        assert_eq!(recorded["mcp"]["tool"], Value::Undefined);
        assert_eq!(recorded["mcp"]["id"], Value::from("call-1"));
        assert_eq!(recorded["jsonrpc"]["method"], Value::from("tools/call"));
    }
}
