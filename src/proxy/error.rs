//! The one place where an outcome other than a forwarded response becomes an HTTP response.
//!
//! Errors are `application/problem+json` (RFC 9457) with `type, title, status, detail,
//! request_id`, unless the policy supplied its own deny body. What MCP's Streamable HTTP
//! transport refuses (a head that disagrees with its body, an `Origin` not allowed, a
//! `tools/list` result that could not be filtered) is answered as MCP clients read errors: a
//! JSON-RPC error response, with the request's `id` when there is one.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde::Serialize;
use thiserror::Error;

use super::resource::Challenge;
use super::Body;
use crate::policy::Decision;
use crate::request::body::InspectError;
use crate::request::RequestError;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("denied: {}", .0.reason)]
    Denied(Box<Decision>),
    /// Refused before policy: what regate does not serve.
    #[error("refused: {0}")]
    Refused(#[from] RequestError),
    /// A delegation token that does not verify: an authentication failure, never a policy
    /// question.
    #[error("delegation token refused: {}", .0.reason())]
    Unauthenticated(crate::delegation::TokenError, Challenge),
    /// The policy denied, asking for more scope (`required_scope`): MCP's step-up.
    #[error("denied, more scope required: {}", .0.reason)]
    InsufficientScope(Box<Decision>, Challenge),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A JSON body with a key repeated in one object, or two keys equal but for case: the
    /// policy and the upstream could read it differently.
    #[error("the JSON body repeats a key in one object, or has keys that differ only in case")]
    AmbiguousBody,
    /// The body read for the policy did not arrive within `--inspect-body-timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The policy asked for a person's approval: the approval request the client is answered
    /// with.
    #[error("approval required")]
    ApprovalRequired(Box<ApprovalRequired>),
    /// An approval token that does not approve this request.
    #[error("approval refused: {}", .0.reason())]
    Approval(crate::approvals::token::ApprovalError),
    /// A budget the policy attached is spent.
    #[error("rate limited: {}", .0.limit.name)]
    RateLimited(Box<super::budget::Limited>),
    /// The budget store did not answer, and the limits do not say to go on without it.
    #[error("the budget store is unavailable")]
    BudgetUnavailable,
    /// The body could not be read, or not held within the inspection budget.
    #[error(transparent)]
    Inspect(#[from] crate::request::body::InspectError),
    #[error("too many requests in flight to the upstream")]
    UpstreamOverloaded,
    #[error("upstream unreachable")]
    UpstreamUnreachable(#[source] hyper_util::client::legacy::Error),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream failed")]
    Upstream(#[source] hyper_util::client::legacy::Error),
    /// The upstream answered in a way regate will not pass on (a `101` nobody asked for).
    #[error("upstream answered wrongly: {0}")]
    UpstreamProtocol(&'static str),
    /// MCP's `Mcp-Method`, `Mcp-Name` or `MCP-Protocol-Version` disagree with the body
    /// (`crate::request::mcp`): the spec's `HeaderMismatch`.
    #[error("header mismatch: {0}")]
    McpHeaderMismatch(crate::request::mcp::Mismatch),
    /// A browser's `Origin` that `--mcp-allowed-origin` does not list: MCP's DNS-rebinding
    /// defence.
    #[error(transparent)]
    OriginNotAllowed(crate::request::mcp::OriginRefused),
    /// An MCP `tools/list` result that could not be filtered (`super::tools_list`): not
    /// passed on, since unfiltered it would show tools the caller may not call.
    #[error("the tools/list result could not be filtered: {reason}")]
    ToolsListUnfiltered {
        reason: String,
        id: Option<serde_json::Value>,
    },
}

/// The JSON-RPC error code of a request that is not a valid one (here: refused for its
/// `Origin`).
const INVALID_REQUEST: i64 = -32600;
/// The JSON-RPC error code of a server's own failure (here: a result regate could not filter).
const INTERNAL_ERROR: i64 = -32603;

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Denied(d) => d.status,
            ProxyError::Refused(e) => e.status(),
            ProxyError::Unauthenticated(..) => StatusCode::UNAUTHORIZED,
            ProxyError::InsufficientScope(..) => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) | ProxyError::AmbiguousBody => StatusCode::BAD_REQUEST,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Inspect(InspectError::Read(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Inspect(InspectError::OverBudget) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ApprovalRequired(_) | ProxyError::Approval(_) => StatusCode::FORBIDDEN,
            ProxyError::BudgetUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamOverloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::Upstream(_)
            | ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::McpHeaderMismatch(_) => StatusCode::BAD_REQUEST,
            ProxyError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            ProxyError::ToolsListUnfiltered { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The short, bounded reason recorded in the decision log.
    pub fn reason(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            ProxyError::Denied(d) | ProxyError::InsufficientScope(d, _) => return d.reason.clone(),
            ProxyError::Refused(e) => e.reason(),
            ProxyError::Unauthenticated(e, _) => e.reason(),
            ProxyError::BadRequest(_) => "invalid_request",
            ProxyError::AmbiguousBody => "ambiguous_body",
            ProxyError::BodyTimeout => "body_timeout",
            ProxyError::Inspect(InspectError::Read(_)) => "body_unreadable",
            ProxyError::Inspect(InspectError::OverBudget) => "body_budget_exhausted",
            ProxyError::RateLimited(_) => "rate_limited",
            ProxyError::ApprovalRequired(_) => "approval_required",
            ProxyError::Approval(e) => e.reason(),
            ProxyError::BudgetUnavailable => "budget_unavailable",
            ProxyError::UpstreamOverloaded => "upstream_overloaded",
            ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::Upstream(_) | ProxyError::UpstreamProtocol(_) => "upstream_error",
            ProxyError::McpHeaderMismatch(_) => "mcp_header_mismatch",
            ProxyError::OriginNotAllowed(_) => "origin_not_allowed",
            ProxyError::ToolsListUnfiltered { .. } => "tools_list_unfiltered",
        })
    }

    /// MCP's answer to what the transport refuses: the JSON-RPC error code, the message, and
    /// the id of the request it answers (none for a refusal that reads no body).
    fn json_rpc(&self) -> Option<(i64, String, Option<&serde_json::Value>)> {
        Some(match self {
            ProxyError::McpHeaderMismatch(m) => (
                crate::request::mcp::HEADER_MISMATCH,
                format!("Header mismatch: {}", m.message),
                m.id.as_ref(),
            ),
            ProxyError::OriginNotAllowed(refused) => (INVALID_REQUEST, refused.to_string(), None),
            ProxyError::ToolsListUnfiltered { reason, id } => (
                INTERNAL_ERROR,
                format!("the tools/list result could not be filtered for this caller: {reason}"),
                id.as_ref(),
            ),
            _ => return None,
        })
    }

    fn problem_type(&self) -> &'static str {
        if let ProxyError::Denied(_) = self {
            return "urn:regate:problem:forbidden";
        }
        match self.status() {
            StatusCode::FORBIDDEN => "urn:regate:problem:forbidden",
            StatusCode::UNAUTHORIZED => "urn:regate:problem:unauthorized",
            StatusCode::BAD_REQUEST => "urn:regate:problem:bad-request",
            StatusCode::REQUEST_TIMEOUT => "urn:regate:problem:request-timeout",
            StatusCode::METHOD_NOT_ALLOWED => "urn:regate:problem:method-not-allowed",
            StatusCode::NOT_IMPLEMENTED => "urn:regate:problem:not-implemented",
            StatusCode::SERVICE_UNAVAILABLE => "urn:regate:problem:service-unavailable",
            StatusCode::TOO_MANY_REQUESTS => "urn:regate:problem:too-many-requests",
            StatusCode::BAD_GATEWAY => "urn:regate:problem:bad-gateway",
            StatusCode::GATEWAY_TIMEOUT => "urn:regate:problem:gateway-timeout",
            _ => "urn:regate:problem:error",
        }
    }

    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        if let ProxyError::ApprovalRequired(asked) = &self {
            return approval_required(asked, request_id);
        }
        let mut response = match &self {
            // The policy's own body and headers replace the problem document.
            ProxyError::Denied(d) if d.body.is_some() => {
                let mut r = Response::new(Body::own(d.body.clone().unwrap_or_default()));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            _ if self.json_rpc().is_some() => {
                let mut r =
                    Response::new(Body::own(Bytes::from(json_rpc_message(&self, request_id))));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            _ => problem(&self, status, request_id),
        };
        *response.status_mut() = status;
        if let ProxyError::Refused(RequestError::Connect) = self {
            // RFC 9110 §15.5.6: a 405 says which methods are served. regate serves them
            // all but CONNECT; the policy decides among them.
            response.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if let ProxyError::Inspect(InspectError::OverBudget) = self {
            // The budget frees as bodies in flight are sent on: a moment, not a minute.
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ProxyError::RateLimited(limited) = &self {
            let retry = super::budget::ceil_secs(limited.retry_after).max(1);
            let headers = response.headers_mut();
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry));
            for (name, value) in super::budget::headers(&limited.limit, 0, limited.retry_after) {
                headers.insert(name, value);
            }
        }
        if let ProxyError::Unauthenticated(e, challenge) = &self {
            // RFC 6750 §3: the token is what failed, not the client's certificate.
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                bearer(e.error_code(), challenge),
            );
        }
        if let ProxyError::InsufficientScope(_, challenge) = &self {
            // RFC 6750 §3.1, and MCP's step-up: the token is good, its scope is short.
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                bearer(Some("insufficient_scope"), challenge),
            );
        }
        if let ProxyError::Denied(d) | ProxyError::InsufficientScope(d, _) = self {
            let headers = response.headers_mut();
            for (name, value) in d.headers.into_iter().chain(d.response_headers) {
                if name == CONTENT_TYPE {
                    headers.insert(name, value);
                } else {
                    headers.append(name, value);
                }
            }
        }
        response
    }
}

/// The JSON-RPC error response `err` is answered with (empty for an error that is not one of
/// MCP's transport): `id` left out when the request's is not known, as MCP's transport says of
/// refusals that read no body; regate's request id and reason in `data`.
pub fn json_rpc_message(err: &ProxyError, request_id: &str) -> Vec<u8> {
    let Some((code, message, id)) = err.json_rpc() else {
        return Vec::new();
    };
    let mut doc = serde_json::json!({
        "jsonrpc": "2.0",
        "error": {
            "code": code,
            "message": message,
            "data": {"request_id": request_id, "reason": err.reason()},
        },
    });
    if let Some(id) = id {
        doc["id"] = id.clone();
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// An approval request, and how the request that asked is answered.
#[derive(Debug)]
pub struct ApprovalRequired {
    pub request: crate::approvals::Request,
    /// The call of a JSON-RPC batch that needs it.
    pub index: Option<usize>,
    /// For a JSON-RPC request, the id its error carries (null for a batch); `None` answers
    /// with problem+json.
    pub jsonrpc: Option<serde_json::Value>,
}

/// The JSON-RPC error code of an approval required (a server error of regate's own).
pub const APPROVAL_REQUIRED_CODE: i64 = -32042;

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    request_id: &'a str,
    reason: &'a str,
}

/// 403 with the approval request: in problem+json, or as a JSON-RPC error carrying it in
/// `data`.
fn approval_required(asked: &ApprovalRequired, request_id: &str) -> Response<Body> {
    let body = match &asked.jsonrpc {
        Some(id) => serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": APPROVAL_REQUIRED_CODE,
                "message": "approval required",
                "data": {
                    "reason": "approval_required",
                    "request_id": request_id,
                    "call": asked.index,
                    "approval_request": asked.request,
                },
            },
        }),
        None => serde_json::json!({
            "type": "urn:regate:problem:approval-required",
            "title": "Forbidden",
            "status": 403,
            "detail": "the action needs a person's approval",
            "request_id": request_id,
            "reason": "approval_required",
            "call": asked.index,
            "approval_request": asked.request,
        }),
    };
    let content_type = match asked.jsonrpc {
        Some(_) => "application/json",
        None => "application/problem+json",
    };
    let mut r = Response::new(Body::own(Bytes::from(
        serde_json::to_vec(&body).unwrap_or_default(),
    )));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn problem(err: &ProxyError, status: StatusCode, request_id: &str) -> Response<Body> {
    let detail = match err {
        ProxyError::Denied(d) => format!("request denied: {}", d.reason),
        ProxyError::InsufficientScope(d, challenge) => format!(
            "request denied: {}; a token with scope \"{}\" may be allowed",
            d.reason,
            challenge.scope.as_deref().unwrap_or_default()
        ),
        other => other.to_string(),
    };
    let doc = Problem {
        kind: err.problem_type(),
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        request_id,
        reason: &err.reason(),
    };
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let mut r = Response::new(Body::own(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// A `WWW-Authenticate: Bearer` challenge (RFC 6750 §3, RFC 9728 §5.1): the error code, the
/// scope, the metadata URL, each when there is one. Scopes are checked scope tokens and the
/// URL a checked URI, so neither needs escaping; a value that is no header value anyway
/// leaves the bare scheme.
fn bearer(error: Option<&str>, challenge: &Challenge) -> HeaderValue {
    let mut params = Vec::new();
    if let Some(error) = error {
        params.push(format!("error=\"{error}\""));
    }
    if let Some(scope) = &challenge.scope {
        params.push(format!("scope=\"{scope}\""));
    }
    if let Some(url) = &challenge.resource_metadata {
        params.push(format!("resource_metadata=\"{url}\""));
    }
    match params.is_empty() {
        true => HeaderValue::from_static("Bearer"),
        false => HeaderValue::from_str(&format!("Bearer {}", params.join(", ")))
            .unwrap_or(HeaderValue::from_static("Bearer")),
    }
}
