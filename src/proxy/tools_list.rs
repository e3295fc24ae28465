//! Part of step 4: an MCP `tools/list` result shows the caller only the tools it may call.
//!
//! With `--mcp-tools-list-query`, a request that lists tools (a `tools/list` call, alone or in
//! a batch) is forwarded asking for an uncompressed answer, and the upstream's response is
//! read before the client sees it: each tool of each result is asked of the query, with the
//! request's own input and `input.mcp.tool` set to the tool's name, through the policy set
//! the request was decided with (its timeout, its decision cache for this query), and the
//! tools for which the answer is not `true` are removed. A filtered result is marked
//! `cacheScope: "private"` when it carries a cache scope: it is this caller's view, not to be
//! shared with another.
//!
//! A JSON body is read whole, within `--inspect-body-limit`, the inspection budget and
//! `--inspect-body-timeout`, then sent on filtered. An event stream is filtered event by
//! event as it passes (`super::sse`): events that carry no result go on at once, and an event
//! is held only until it is whole, within the same limit and budget. What cannot be read so
//! (too long, compressed, not JSON, a key repeated, a `tools` that is not a list, more than
//! [`MAX_TOOLS`] tools) is never passed on unfiltered: a JSON body becomes a 502 with a
//! JSON-RPC error, an event stream gets an error event and ends. The record says how many
//! tools were listed and hidden, or why the result was refused (`tools_list`): at once for a
//! JSON body, joined later by the audit writer for a stream.
//!
//! What it does not do: decide the request (`super::decision` did), or filter anything but
//! `tools/list` results.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use regorus::Value;

use super::connection::Connection;
use super::error::ProxyError;
use super::record::Noted;
use super::response::{Body, BoxError, Streamed};
use super::sse::{Piece, Splitter};
use super::Proxy;
use crate::audit::later::{later, LaterField};
use crate::limits::{BodyBudget, BodyCharge, RateLimited};
use crate::metrics::Metrics;
use crate::policy::{PolicySet, Question};
use crate::request::body::{Call, Replay};
use crate::request::json::{self, JsonError};

/// More tools than this in one result are not asked about one by one: the result is refused
/// (a server with more pages its list, `nextCursor`).
pub const MAX_TOOLS: usize = 1024;

/// The request's side of filtering: what each tool is asked with.
pub struct Listing {
    /// The policy set the request was decided with.
    set: Arc<PolicySet>,
    /// The input of the request's (first) `tools/list` call.
    input: Value,
    /// That call's id, for an error answer.
    id: Option<serde_json::Value>,
    /// A stream the client opened with `GET` (resumed after `Last-Event-ID`, or the server's
    /// own): only an event-stream answer can carry a list there, and only one is read.
    streams_only: bool,
}

impl Listing {
    /// A listing for `call`, when it is a `tools/list` call and `set` has a tool-visibility
    /// query; `input` builds the call's input only then.
    pub fn of(
        set: &Arc<PolicySet>,
        call: Option<&Call>,
        input: impl FnOnce() -> Value,
    ) -> Option<Listing> {
        set.tools_list_query()?;
        let call = call?;
        let lists = matches!(&call.jsonrpc["method"], Value::String(m) if &**m == "tools/list");
        lists.then(|| Listing {
            set: set.clone(),
            input: input(),
            id: crate::approvals::digest::json_of(&call.jsonrpc["id"]).filter(|id| !id.is_null()),
            streams_only: false,
        })
    }

    /// A listing for a `GET`, when `set` has a tool-visibility query: the stream it opens
    /// may replay a `tools/list` result (a resumed stream), which is filtered like any other.
    pub fn of_stream(set: &Arc<PolicySet>, input: impl FnOnce() -> Value) -> Option<Listing> {
        set.tools_list_query()?;
        Some(Listing {
            set: set.clone(),
            input: input(),
            id: None,
            streams_only: true,
        })
    }

    /// The request as forwarded: asking for an answer regate can read (a compressed one could
    /// not be filtered, and would be refused).
    pub fn prepare(req: &mut Request<Replay>) {
        req.headers_mut().insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
}

/// What asking about one tool takes, shared with a stream's task.
struct Asker {
    evaluator: Arc<super::Decider>,
    set: Arc<PolicySet>,
    input: Value,
    metrics: Arc<Metrics>,
    failure_log: Arc<RateLimited>,
    request_id: String,
    /// Answers so far, by tool name: a name listed twice is asked once.
    seen: HashMap<String, bool>,
    listed: u64,
    hidden: u64,
}

/// Filter the upstream's `response` to a request that lists tools.
pub(super) async fn filter(
    proxy: &Proxy,
    conn: &Connection,
    listing: Listing,
    response: Response<Incoming>,
    request_id: &str,
    noted: &mut Noted,
) -> Result<Response<Body>, ProxyError> {
    let (mut head, body) = response.into_parts();
    let inspection = &proxy.admission.inspection;
    let id = listing.id.clone();
    let listing_streams_only = listing.streams_only;
    let asker = Asker {
        evaluator: proxy.decider.clone(),
        set: listing.set,
        input: listing.input,
        metrics: proxy.recorder.metrics.clone(),
        failure_log: proxy.recorder.failure_log.clone(),
        request_id: request_id.to_string(),
        seen: HashMap::new(),
        listed: 0,
        hidden: 0,
    };
    let refuse = |reason: String, noted: &mut Noted| {
        proxy.recorder.metrics.tools_list(false, 0);
        noted.tools_list = Some(serde_json::json!({"refused": reason}));
        Err(ProxyError::ToolsListUnfiltered {
            reason,
            id: id.clone(),
        })
    };
    if body_is_empty(&head, &body) {
        return Ok(Response::from_parts(head, Body::upstream(body)));
    }
    let encoded = head
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    let kind = Kind::of(&head.headers);
    if listing_streams_only && kind != Kind::Events {
        return Ok(Response::from_parts(head, Body::upstream(body)));
    }
    match (kind, encoded) {
        // An error page is no list of tools a client would read.
        (Kind::Other, _) if !head.status.is_success() => {
            return Ok(Response::from_parts(head, Body::upstream(body)))
        }
        (Kind::Other, _) => {
            return refuse(
                "the result is neither JSON nor an event stream".into(),
                noted,
            )
        }
        (_, true) => return refuse("the result is compressed (content-encoding)".into(), noted),
        _ => {}
    }
    let charge = inspection.budget.charge(conn.budget_key.clone());
    if kind == Kind::Events {
        let (field_later, field) = later("tools_list");
        noted.tools_list_later = Some(field_later);
        let (tx, streamed) = Streamed::channel(2);
        let stream = Stream {
            asker,
            upstream: body,
            tx,
            splitter: Splitter::new(inspection.limit),
            budget: inspection.budget.clone(),
            budget_key: conn.budget_key.clone(),
            charge,
            id,
        };
        tokio::spawn(stream.run(field));
        unframed(&mut head.headers);
        return Ok(Response::from_parts(head, Body::streamed(streamed)));
    }
    let read = tokio::time::timeout(
        inspection.timeout,
        read_whole(body, inspection.limit, charge),
    );
    let (data, _charge) = match read.await {
        Err(_) => {
            return refuse(
                "the result did not arrive within the inspection timeout".into(),
                noted,
            )
        }
        Ok(Err(why)) => return refuse(why.into(), noted),
        Ok(Ok(read)) => read,
    };
    let mut asker = asker;
    match rewrite(&mut asker, &data).await {
        Ok(Some(filtered)) => {
            asker.counted();
            noted.tools_list = Some(asker.tally(None));
            unframed(&mut head.headers);
            Ok(Response::from_parts(head, Body::own(Bytes::from(filtered))))
        }
        Ok(None) => {
            asker.counted();
            noted.tools_list = Some(asker.tally(None));
            Ok(Response::from_parts(head, Body::own(data)))
        }
        Err(why) => refuse(why.into(), noted),
    }
}

/// How the upstream wrote its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Events,
    Other,
}

impl Kind {
    fn of(headers: &http::HeaderMap) -> Kind {
        let mut kinds = headers.get_all(header::CONTENT_TYPE).iter().map(|v| {
            let v = v.as_bytes();
            let essence = v.split(|&b| b == b';').next().unwrap_or_default();
            if essence
                .trim_ascii()
                .eq_ignore_ascii_case(b"text/event-stream")
            {
                Kind::Events
            } else if v.windows(4).any(|w| w.eq_ignore_ascii_case(b"json")) {
                Kind::Json
            } else {
                Kind::Other
            }
        });
        match (kinds.next(), kinds.next()) {
            (Some(kind), None) => kind,
            // None, or two: a client would have to guess.
            _ => Kind::Other,
        }
    }
}

/// A response with no body at all (`202 Accepted`, `204`, a `Content-Length: 0`).
fn body_is_empty(head: &http::response::Parts, body: &Incoming) -> bool {
    head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
        || hyper::body::Body::is_end_stream(body)
}

/// Headers that described the upstream's bytes, not the ones sent now.
fn unframed(headers: &mut http::HeaderMap) {
    for name in [
        "content-length",
        "content-md5",
        "content-digest",
        "repr-digest",
        "digest",
        "etag",
    ] {
        headers.remove(name);
    }
}

/// The whole body, up to `limit` bytes held under `charge`, or why it cannot be read so.
async fn read_whole(
    mut body: Incoming,
    limit: usize,
    mut charge: BodyCharge,
) -> Result<(Bytes, BodyCharge), &'static str> {
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "the result could not be read")?;
        // Trailers end the body; a JSON result has nothing in them.
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if data.len() + chunk.len() > limit {
            return Err("the result is longer than --inspect-body-limit");
        }
        if !charge.take(chunk.len()) {
            return Err("no room in the inspection budget to hold the result");
        }
        data.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(data), charge))
}

/// `data` (one JSON-RPC message or a batch of them) with every tool list filtered, or `None`
/// when it holds no tool list; or why it cannot be filtered.
async fn rewrite(asker: &mut Asker, data: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
    let mut message = match json::parse(data) {
        Ok(message) => message,
        Err(JsonError::Ambiguous(_)) => {
            return Err("the result repeats a key, or has keys that differ only in case")
        }
        Err(JsonError::Invalid(_)) => return Err("the result is not JSON"),
    };
    let lists = tool_lists(&mut message)?;
    if lists.is_empty() {
        return Ok(None);
    }
    for tools in lists {
        asker.hide(tools).await?;
    }
    serde_json::to_vec(&message)
        .map(Some)
        .map_err(|_| "the filtered result could not be written")
}

/// The tool lists in a message: `result.tools` of each response in it. A filtered result is
/// marked private where it carries a cache scope.
fn tool_lists(
    message: &mut serde_json::Value,
) -> Result<Vec<&mut Vec<serde_json::Value>>, &'static str> {
    let responses: Vec<&mut serde_json::Value> = match message {
        serde_json::Value::Array(batch) => batch.iter_mut().collect(),
        one => vec![one],
    };
    let mut lists = Vec::new();
    for response in responses {
        let Some(serde_json::Value::Object(result)) = response.get_mut("result") else {
            continue;
        };
        if !result.contains_key("tools") {
            continue;
        }
        if let Some(scope) = result.get_mut("cacheScope") {
            *scope = serde_json::Value::from("private");
        }
        match result.get_mut("tools") {
            Some(serde_json::Value::Array(tools)) => lists.push(tools),
            _ => return Err("the result's tools is not a list"),
        }
    }
    Ok(lists)
}

impl Asker {
    /// Remove from `tools` those the caller may not see. A tool without a string name is
    /// removed: there is nothing to ask about it.
    async fn hide(&mut self, tools: &mut Vec<serde_json::Value>) -> Result<(), &'static str> {
        if tools.len() > MAX_TOOLS {
            return Err("the result lists more tools than regate asks about one by one");
        }
        let mut keep = Vec::with_capacity(tools.len());
        for tool in tools.iter() {
            let visible = match tool.get("name").and_then(serde_json::Value::as_str) {
                Some(name) => self.visible(name).await,
                None => false,
            };
            keep.push(visible);
        }
        let listed = tools.len();
        let mut verdicts = keep.into_iter();
        tools.retain(|_| verdicts.next().unwrap_or(false));
        self.listed += listed as u64;
        self.hidden += (listed - tools.len()) as u64;
        Ok(())
    }

    /// Whether the caller may see the tool `name`: the query is `true` for the request's
    /// input with `input.mcp.tool` set to it. A failed evaluation hides the tool.
    async fn visible(&mut self, name: &str) -> bool {
        if let Some(&known) = self.seen.get(name) {
            return known;
        }
        let mut input = self.input.clone();
        // A request that carried no call (a stream opened with GET) has no `input.mcp`: it
        // gets one, so the query always finds the tool it is asked about.
        if let Ok(map) = input.as_object_mut() {
            let mcp = map.get_or_insert_with(Value::from("mcp"), Value::new_object);
            if let Ok(mcp) = mcp.as_object_mut() {
                mcp.insert(Value::from("tool"), Value::from(name));
            }
        }
        let decision = self
            .evaluator
            .evaluator
            .tool_visible(self.set.clone(), input)
            .await;
        if self.set.cache_of(Question::ToolVisible).is_some() {
            self.metrics.decision_cache(decision.cached);
        }
        if let Some(error) = &decision.error {
            // As a request's failed evaluation is: rate-limited, and the tool hidden.
            if let Some(held_back) = self.failure_log.check() {
                tracing::error!(
                    request.id = %self.request_id,
                    reason = %decision.reason,
                    error = %error,
                    held_back,
                    "the tool-visibility query failed; hiding the tool",
                );
            }
        }
        // Names are the server's, not the client's: a handful per server.
        if self.seen.len() < MAX_TOOLS {
            self.seen.insert(name.to_string(), decision.allowed);
        }
        decision.allowed
    }

    /// Count what was filtered in the metrics.
    fn counted(&self) {
        self.metrics.tools_list(true, self.hidden);
    }

    /// The record's `tools_list`: how many tools were listed and hidden, and why the result
    /// was refused when it was.
    fn tally(&self, refused: Option<&str>) -> serde_json::Value {
        let mut tally = serde_json::json!({"listed": self.listed, "hidden": self.hidden});
        if let Some(why) = refused {
            tally["refused"] = why.into();
        }
        tally
    }
}

/// A result streamed as events, filtered as it passes, by a task of its own.
struct Stream {
    asker: Asker,
    upstream: Incoming,
    tx: tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    splitter: Splitter,
    budget: Arc<BodyBudget>,
    budget_key: Arc<str>,
    /// What the event being read holds of the inspection budget.
    charge: BodyCharge,
    id: Option<serde_json::Value>,
}

impl Stream {
    /// Pass the stream on, filtered, until it ends, the client goes away, or an event cannot
    /// be filtered (then an error event ends it); then publish the record's `tools_list`.
    async fn run(mut self, field: LaterField) {
        let refused = self.pass().await.err();
        match refused {
            Some(why) => {
                self.asker.metrics.tools_list(false, self.asker.hidden);
                let error = super::error::json_rpc_message(
                    &ProxyError::ToolsListUnfiltered {
                        reason: why.to_string(),
                        id: self.id.clone(),
                    },
                    &self.asker.request_id,
                );
                let mut event = b"event: message\ndata: ".to_vec();
                event.extend_from_slice(&error);
                event.extend_from_slice(b"\n\n");
                let _ = self.tx.send(Ok(Frame::data(Bytes::from(event)))).await;
                field.publish(Some(self.asker.tally(Some(why))));
            }
            None => {
                self.asker.counted();
                field.publish(Some(self.asker.tally(None)));
            }
        }
    }

    /// The stream, filtered; `Err` when an event cannot be.
    async fn pass(&mut self) -> Result<(), &'static str> {
        loop {
            let frame = tokio::select! {
                frame = self.upstream.frame() => frame,
                // The client went away: nothing left to filter for.
                _ = self.tx.closed() => return Ok(()),
            };
            let frame = match frame {
                None => return Ok(()),
                Some(Err(e)) => {
                    // The upstream broke off: so does the stream to the client.
                    let _ = self.tx.send(Err(Box::new(e))).await;
                    return Ok(());
                }
                Some(Ok(frame)) => frame,
            };
            let chunk = match frame.into_data() {
                Ok(chunk) => chunk,
                Err(trailers) => {
                    let _ = self.tx.send(Ok(trailers)).await;
                    continue;
                }
            };
            let mut pieces = Vec::new();
            let split = self.splitter.push(&chunk, &mut pieces);
            for piece in pieces {
                let bytes = match piece {
                    Piece::Pass(bytes) => bytes,
                    Piece::Event(event) => match &event.data {
                        None => event.raw,
                        Some(data) => match rewrite(&mut self.asker, data).await? {
                            None => event.raw,
                            Some(filtered) => {
                                let mut out = event.other;
                                out.extend_from_slice(b"data: ");
                                out.extend_from_slice(&filtered);
                                out.extend_from_slice(b"\n\n");
                                out
                            }
                        },
                    },
                };
                if self
                    .tx
                    .send(Ok(Frame::data(Bytes::from(bytes))))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            split.map_err(|_| "an event is longer than --inspect-body-limit")?;
            self.hold()?;
        }
    }

    /// Charge what the splitter holds now to the inspection budget (given back as events
    /// leave it).
    fn hold(&mut self) -> Result<(), &'static str> {
        let held = self.splitter.held();
        if held < self.charge.bytes() {
            self.charge = self.budget.charge(self.budget_key.clone());
        }
        let more = held - self.charge.bytes();
        match more == 0 || self.charge.take(more) {
            true => Ok(()),
            false => Err("no room in the inspection budget to hold an event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_lists_are_found_in_responses_and_batches_only() {
        let mut one = serde_json::json!({"jsonrpc": "2.0", "id": 1,
            "result": {"tools": [{"name": "a"}], "cacheScope": "public", "ttlMs": 5}});
        assert_eq!(tool_lists(&mut one).map(|l| l.len()), Ok(1));
        assert_eq!(one["result"]["cacheScope"], "private");
        let mut batch = serde_json::json!([
            {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}},
            {"jsonrpc": "2.0", "id": 2, "result": {"content": []}},
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"tools": 1}},
            {"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": "b"}]}},
        ]);
        assert_eq!(tool_lists(&mut batch).map(|l| l.len()), Ok(2));
        let mut bad = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": {"a": 1}}});
        assert!(tool_lists(&mut bad).is_err());
        let mut error = serde_json::json!({"jsonrpc": "2.0", "id": 1, "error": {"code": 1}});
        assert_eq!(tool_lists(&mut error).map(|l| l.len()), Ok(0));
    }

    #[test]
    fn content_types_are_read_by_their_essence() {
        let kind = |ct: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in ct {
                h.append(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            }
            Kind::of(&h)
        };
        assert_eq!(kind(&["application/json"]), Kind::Json);
        assert_eq!(kind(&["text/event-stream; charset=utf-8"]), Kind::Events);
        assert_eq!(kind(&["Text/Event-Stream"]), Kind::Events);
        assert_eq!(kind(&["text/html"]), Kind::Other);
        assert_eq!(kind(&[]), Kind::Other);
        assert_eq!(
            kind(&["application/json", "text/event-stream"]),
            Kind::Other
        );
    }
}
