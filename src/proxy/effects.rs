//! Step 3 of a request: what the decision does to it.
//!
//! A deny is answered, unless the policy made it in `--mode audit`: then the request goes on
//! as it came, recorded as `would_deny`, and nothing of the deny applies. A deny that names
//! `required_scope` is answered as a step-up challenge (a 403 `insufficient_scope`,
//! `super::resource`). An allow rewrites the request as the policy said (headers to remove
//! and to set, query parameters to remove and to set). Last, the kill switch is asked again:
//! a revocation that landed while the body was read or the policy ran still stops the
//! request. A policy that failed is logged here, at most once a second, with credentials
//! kept out.

use std::sync::Arc;

use regorus::Value;

use super::admission::Admitted;
use super::connection::Connection;
use super::decision::{Decided, Decider};
use super::error::ProxyError;
use super::record::{Noted, Recorder, Seen};
use super::trust::Trust;
use crate::policy::Decision;
use crate::request::body::Replay;
use crate::request::target;

/// A request allowed, ready to forward.
pub struct Allowed {
    pub req: http::Request<Replay>,
    pub decision: Decision,
    /// The protocol of an allowed upgrade.
    pub upgrade: Option<String>,
    /// The input that was allowed, for a tunnel to be judged again with.
    pub input: Option<Value>,
    pub revision: Arc<str>,
    /// A request that lists MCP tools: how its result is filtered.
    pub listing: Option<super::tools_list::Listing>,
    /// The budgets to charge before forwarding (`super::budget`).
    pub rate_limits: Vec<super::budget::Attached>,
}

/// What the step needs besides the request.
pub struct Context<'a> {
    pub decider: &'a Decider,
    pub trust: &'a Trust,
    pub recorder: &'a Recorder,
    pub revision: &'a Arc<str>,
    /// regate as an OAuth protected resource, whose metadata a step-up challenge names.
    pub resource: Option<&'a super::resource::ProtectedResource>,
    /// Approvals, when configured: a deny that asks for one becomes an approval request.
    pub approvals: Option<&'a super::approval::ApprovalStep>,
}

/// Apply `decided` to the admitted request; `body` is what will be forwarded.
pub fn apply(
    cx: &Context<'_>,
    conn: &Connection,
    mut admitted: Admitted,
    decided: Decided,
    body: &mut Option<Replay>,
    seen: &Seen,
    noted: &mut Noted,
) -> Result<Allowed, ProxyError> {
    let Decided {
        mut decision,
        by_policy,
        upgrade_input,
        listing,
        rate_limits,
    } = decided;
    if let Some(error) = &decision.error {
        cx.recorder
            .policy_failed(seen, &admitted.parts.headers, &decision, error, cx.revision);
    }
    if !decision.allowed {
        if by_policy {
            ask_approval(cx, conn, &admitted, &decision, seen, noted)?;
        }
        // regate's own refusals always refuse; the policy's only when enforced.
        if !by_policy || cx.decider.enforces() {
            return Err(match decision.required_scope.is_empty() {
                true => ProxyError::Denied(Box::new(decision)),
                false => super::resource::step_up(decision, noted, cx.resource),
            });
        }
        // Audit mode forwards the request as it came; what the policy's answer would have
        // added to the deny (status, body, headers) applies to nothing.
        noted.would_deny = true;
        cx.decider.metrics.would_deny(&decision.reason);
        decision = unenforced(decision);
    }
    rewrite(&mut admitted.parts, &decision, seen)?;
    // A revocation that landed while the body was read or the policy ran still stops this
    // request.
    let jti = noted.delegation.as_ref().and_then(|d| d.jti.as_deref());
    if cx.trust.revoked(conn, jti) {
        noted.input = None;
        // Refused after all: nothing was forwarded, so nothing "would" have been denied.
        noted.would_deny = false;
        return Err(ProxyError::Denied(Box::new(Decision::deny("revoked"))));
    }
    let body = body
        .take()
        .ok_or(ProxyError::BadRequest("the request body was already taken"))?;
    // A policy deny forwarded in audit mode has no budgets to charge.
    let rate_limits = match decision.allowed {
        true => rate_limits,
        false => Vec::new(),
    };
    Ok(Allowed {
        req: http::Request::from_parts(admitted.parts, body),
        decision,
        upgrade: admitted.prepared.upgrade,
        input: upgrade_input,
        revision: cx.revision.clone(),
        listing,
        rate_limits,
    })
}

/// A policy deny that asks for approval (`approval` in its answer) becomes an approval
/// request: refused with it when enforced; recorded only in audit mode. Without approvals
/// configured, it stays a plain deny, with a warning in the log.
fn ask_approval(
    cx: &Context<'_>,
    conn: &Connection,
    admitted: &Admitted,
    decision: &Decision,
    seen: &Seen,
    noted: &mut Noted,
) -> Result<(), ProxyError> {
    let Some(ask) = &decision.approval else {
        return Ok(());
    };
    let Some(step) = cx.approvals else {
        tracing::warn!(request.id = %seen.request_id, "the policy asked for an approval, but no approvals are configured; denying");
        return Ok(());
    };
    let calls = admitted
        .inspected
        .as_ref()
        .and_then(|i| i.calls.as_deref())
        .unwrap_or_default();
    let index = noted
        .denied_call
        .as_ref()
        .and_then(|c| c["index"].as_u64())
        .map(|i| i as usize);
    let call = index.and_then(|i| calls.get(i));
    let enforce = cx.decider.enforces();
    let request = step.ask(
        ask,
        &decision.reason,
        admitted,
        seen,
        conn.spiffe_id(),
        call,
        noted,
        enforce,
    );
    noted.approval_request = Some(request.clone());
    if !enforce {
        return Ok(());
    }
    // A JSON-RPC request is answered as JSON-RPC: its id, or null for a batch.
    let jsonrpc = call.map(|c| match calls.len() {
        1 => crate::approvals::digest::json_of(&c.jsonrpc["id"]).unwrap_or_default(),
        _ => serde_json::Value::Null,
    });
    Err(ProxyError::ApprovalRequired(Box::new(
        super::error::ApprovalRequired {
            request,
            index,
            jsonrpc,
        },
    )))
}

/// The policy's rewrites of an allowed request: headers removed, the query rewritten,
/// headers set (a policy header replaces the client's; a list of values for one name is
/// kept whole).
fn rewrite(
    parts: &mut http::request::Parts,
    decision: &Decision,
    seen: &Seen,
) -> Result<(), ProxyError> {
    for name in &decision.remove_headers {
        parts.headers.remove(name);
    }
    if !decision.query_set.is_empty() || !decision.query_remove.is_empty() {
        let rewritten =
            target::rewrite_query(&seen.path, &decision.query_remove, &decision.query_set);
        parts.uri = rewritten
            .parse()
            .map_err(|_| ProxyError::BadRequest("the policy's query rewrite is not a URI"))?;
    }
    let mut previous: Option<&http::HeaderName> = None;
    for (name, value) in &decision.headers {
        if previous == Some(name) {
            parts.headers.append(name.clone(), value.clone());
        } else {
            parts.headers.insert(name.clone(), value.clone());
        }
        previous = Some(name);
    }
    Ok(())
}

/// A policy deny forwarded in audit mode: its reason and timings are recorded, nothing else
/// of it applies.
fn unenforced(decision: Decision) -> Decision {
    Decision {
        reason: decision.reason,
        error: decision.error,
        eval_ns: decision.eval_ns,
        cached: decision.cached,
        ..Decision::deny("denied")
    }
}
