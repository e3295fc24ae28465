//! JSON request bodies the policy may read: tool calls (MCP over JSON-RPC 2.0) above all.
//!
//! A request with a JSON content type has its body read, up to `--inspect-body-limit`, before
//! the decision. What was read is forwarded byte for byte ([`Replay`]), then whatever is left
//! of the body streams on, so the limit bounds memory per request, not the body. Every byte
//! held is charged to the inspection budget (`crate::limits::BodyBudget`) as it arrives,
//! and given back once it is sent on. The policy sees the body parsed
//! (`input.parsed_body`, as opa-envoy-plugin shows it), and each JSON-RPC call in it
//! (`input.jsonrpc`; `input.mcp` with the tool name and its arguments for an MCP
//! `tools/call`). A body over the limit is `input.body_truncated`; one that is not JSON is
//! `input.body_error`. Neither is an error: the policy decides. A body whose keys a server
//! could read otherwise than the policy ([`super::json`]) is `ambiguous`, for the proxy to
//! refuse.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use regorus::Value;

use super::json::{self, JsonError};
use crate::limits::BodyCharge;

/// A request body to forward: the frames already read, then the rest of the client's body.
pub struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    /// The inspection budget the read frames hold, given back once they are sent on.
    charge: Option<BodyCharge>,
}

impl Replay {
    /// The client's body, untouched.
    pub fn streaming(body: Incoming) -> Replay {
        Replay {
            frames: VecDeque::new(),
            rest: Some(body),
            charge: None,
        }
    }

    /// No body at all.
    pub fn empty() -> Replay {
        Replay {
            frames: VecDeque::new(),
            rest: None,
            charge: None,
        }
    }

    /// The client's body, when nothing of it has been read yet.
    pub fn into_incoming(self) -> Option<Incoming> {
        match self.frames.is_empty() {
            true => self.rest,
            false => None,
        }
    }
}

impl Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            if self.frames.is_empty() {
                self.charge = None;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        match &self.rest {
            None => SizeHint::with_exact(buffered),
            // What is left of the client's body is not known exactly here; the request's own
            // framing headers say it.
            Some(_) => {
                let mut out = SizeHint::new();
                out.set_lower(buffered);
                out
            }
        }
    }
}

/// Most of an unread body read and thrown away after an early answer.
const DRAIN_BYTES: usize = 1 << 20;
/// How long that may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The body of a request answered without being forwarded (a 401 before its body was read):
/// once the answer is sent, what is left of it is read and thrown away, up to a bound. A
/// client still sending sees its stream end normally; dropped unread, HTTP/2 would reset the
/// stream under the client's upload, and some clients (curl 7.88) then report a framing error
/// instead of the answer.
pub fn drain_later(body: Replay) {
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut body = body;
        let mut read = 0usize;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while read < DRAIN_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        read += frame.data_ref().map_or(0, Bytes::len);
                    }
                    _ => break,
                }
            }
        })
        .await;
    });
}

/// What the policy is shown of a body.
#[derive(Debug, Clone, Default)]
pub struct Inspected {
    /// The body as text, when it was read whole and is UTF-8: the very bytes forwarded.
    pub text: Option<Arc<str>>,
    /// The body parsed, when it was read whole and is JSON.
    pub parsed: Option<Value>,
    /// Why it is not parsed, when it was read whole and is not JSON.
    pub error: Option<String>,
    /// A key that repeats another of its object, or equals one but for case: the body means
    /// different things to different servers, and is refused before the policy.
    pub ambiguous: Option<String>,
    /// Longer than the limit: only the first part was read, and nothing is parsed.
    pub truncated: bool,
    /// The JSON-RPC calls of the body, when it is JSON-RPC: each is decided on its own.
    pub calls: Option<Vec<Call>>,
}

/// Whether the body is to be read as JSON: any `Content-Type` that mentions JSON
/// (`application/json`, `application/vnd.api+json`, and the odd spellings a server may
/// still take for JSON, such as `text/plain, application/json`). Reading too much only costs
/// memory up to the limit; reading too little would let a server execute a body the policy
/// never saw.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::CONTENT_TYPE).iter().any(|v| {
        v.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"json"))
    })
}

/// Why a body could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("the request body could not be read")]
    Read(#[source] hyper::Error),
    /// The bytes held for inspection, in all or by this caller, would pass the budget.
    #[error("no room to hold the request body for the policy")]
    OverBudget,
}

/// Read up to `limit` bytes of `body`, each charged to `charge` as it arrives: the body to
/// forward, and what the policy may see. Each chunk is held once; a body read whole is
/// joined into one buffer that the policy reads and the upstream is sent.
pub async fn inspect(
    mut body: Incoming,
    limit: usize,
    mut charge: BodyCharge,
) -> Result<(Replay, Inspected), InspectError> {
    let mut chunks = Vec::new();
    let mut trailers = None;
    let mut read = 0usize;
    let mut over = false;
    while let Some(frame) = body.frame().await {
        match frame.map_err(InspectError::Read)?.into_data() {
            Ok(chunk) => {
                if !charge.take(chunk.len()) {
                    return Err(InspectError::OverBudget);
                }
                read += chunk.len();
                chunks.push(chunk);
                if read > limit {
                    over = true;
                    break;
                }
            }
            // Trailers end the body.
            Err(frame) => trailers = Some(frame),
        }
    }
    if over {
        let replay = Replay {
            frames: chunks.into_iter().map(Frame::data).collect(),
            rest: Some(body),
            charge: Some(charge),
        };
        let inspected = Inspected {
            truncated: true,
            ..Inspected::default()
        };
        return Ok((replay, inspected));
    }
    let (data, inspected) = examine(joined(chunks, read));
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::with_capacity(2);
    if !data.is_empty() {
        frames.push_back(Frame::data(data));
    }
    frames.extend(trailers);
    let replay = Replay {
        frames,
        rest: None,
        charge: Some(charge),
    };
    Ok((replay, inspected))
}

/// Text shared by the policy's input and the body forwarded.
struct SharedText(Arc<str>);

impl AsRef<[u8]> for SharedText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The chunks of a body read whole, as one buffer.
fn joined(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(len);
            for chunk in chunks.drain(..) {
                all.extend_from_slice(&chunk);
            }
            Bytes::from(all)
        }
    }
}

/// What the policy is shown of a body read whole, and the body to forward: when it is UTF-8,
/// the very bytes the policy reads as `input.attributes.request.http.body`, held once.
pub fn examine(data: Bytes) -> (Bytes, Inspected) {
    let (data, text) = match std::str::from_utf8(&data) {
        Ok(text) => {
            let text: Arc<str> = Arc::from(text);
            (Bytes::from_owner(SharedText(text.clone())), Some(text))
        }
        Err(_) => (data, None),
    };
    // A UTF-8 byte order mark is not JSON to serde, but many servers skip it.
    let json = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&data);
    let mut inspected = Inspected {
        text,
        ..Inspected::default()
    };
    match json::parse(json) {
        Ok(json) => {
            inspected.calls = calls(&json);
            inspected.parsed = Some(Value::from(json));
        }
        Err(JsonError::Ambiguous(key)) => inspected.ambiguous = Some(key),
        Err(e) => inspected.error = Some(e.to_string()),
    }
    (data, inspected)
}

/// More calls than this in one batch are not decided one by one: the request is refused.
pub const MAX_BATCH: usize = 64;

/// One JSON-RPC call of a request body, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `input.jsonrpc`: `method`, `params`, `id`, and for a batch `batch_index`, `batch_size`.
    pub jsonrpc: Value,
    /// `input.mcp`: for `tools/call`, `method`, `tool`, `arguments`, `id`; for any other
    /// method, `method`, `params`, `id`.
    pub mcp: Value,
}

/// The JSON-RPC 2.0 calls of a parsed body: one for a request object, one per element of a
/// batch (an element that is not a request is a call with a null method, which a policy
/// denies like any other unknown method). `None` when the body is not JSON-RPC.
pub fn calls(parsed: &serde_json::Value) -> Option<Vec<Call>> {
    let is_request = |v: &serde_json::Value| v["jsonrpc"] == "2.0" && v["method"].is_string();
    match parsed {
        serde_json::Value::Object(_) if is_request(parsed) => Some(vec![call(parsed, None)]),
        serde_json::Value::Array(items) if !items.is_empty() && items.iter().any(is_request) => {
            let size = items.len();
            Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| call(item, Some((i, size))))
                    .collect(),
            )
        }
        _ => None,
    }
}

fn call(v: &serde_json::Value, batch: Option<(usize, usize)>) -> Call {
    let method = v["method"].as_str().map(str::to_string);
    let params = v.get("params").cloned().unwrap_or(serde_json::Value::Null);
    let id = v.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let mut jsonrpc = serde_json::json!({
        "method": method,
        "params": params,
        "id": id,
    });
    if let Some((index, size)) = batch {
        jsonrpc["batch_index"] = index.into();
        jsonrpc["batch_size"] = size.into();
    }
    let mcp = match method.as_deref() {
        Some("tools/call") => serde_json::json!({
            "method": "tools/call",
            "tool": params["name"],
            "arguments": params.get("arguments").cloned().unwrap_or(serde_json::json!({})),
            "id": id,
        }),
        _ => serde_json::json!({"method": method, "params": params, "id": id}),
    };
    Call {
        jsonrpc: Value::from(jsonrpc),
        mcp: Value::from(mcp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        let mut h = HeaderMap::new();
        for (ct, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/plain, application/json", true),
            ("text/plain;application/json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            h.insert(
                http::header::CONTENT_TYPE,
                ct.parse().unwrap_or_else(|_| unreachable!()),
            );
            assert_eq!(is_json(&h), json, "{ct}");
        }
    }

    #[test]
    fn tool_calls_single_and_batched_become_calls() {
        let single = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "search", "arguments": {"q": "rego"}}});
        let calls = calls(&single).unwrap_or_default();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].mcp["tool"], Value::from("search"));
        assert_eq!(calls[0].mcp["arguments"]["q"], Value::from("rego"));
        let batch = serde_json::json!([
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "send_email"}},
            "junk",
        ]);
        let calls = super::calls(&batch).unwrap_or_default();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[1].jsonrpc["batch_index"], Value::from(1u64));
        assert_eq!(calls[1].mcp["tool"], Value::from("send_email"));
        assert_eq!(calls[2].jsonrpc["method"], Value::Null);
        assert!(super::calls(&serde_json::json!({"a": 1})).is_none());
        let twins = br#"{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "Name": "send_email"}}"#;
        let (_, seen) = examine(Bytes::from_static(twins));
        assert!(seen.ambiguous.is_some() && seen.calls.is_none() && seen.parsed.is_none());
        assert!(super::calls(&serde_json::json!([])).is_none());
    }
}
