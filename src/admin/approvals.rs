//! The admin API of approvals, for a single host or a demo: `GET /approvals` lists the
//! approval requests waiting for a person; `POST /approvals/{id}` approves one, signing a
//! token with `approvals.local_key` (`{"approver": "alice"}`; the token lasts as long as the
//! request still stands). Each grant is a decision-log event. Without a local key, approvals
//! come from an issuer of the operator's, and this API only lists.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::{json_response, problem, AdminState};
use crate::approvals::record::ApprovalRecord;

/// The largest approve body read.
const MAX_BODY: usize = 4 * 1024;

/// `GET /approvals`, `POST /approvals/{id}`.
pub(super) async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(approvals) = &state.approvals else {
        return problem(
            StatusCode::NOT_FOUND,
            "approvals are not configured (the approvals: section or --approval-local-key)",
        );
    };
    let now = crate::proxy::approval::unix_now();
    let id = req
        .uri()
        .path()
        .strip_prefix("/approvals/")
        .map(str::to_string);
    match (req.method().clone(), id) {
        (Method::GET, None) => {
            let (standing, expired) = approvals.pending.list(now);
            for request in &expired {
                crate::approvals::record::expired(&state.audit, request);
            }
            json_response(StatusCode::OK, &json!({ "approval_requests": standing }))
        }
        (Method::POST, Some(id)) => approve(state, approvals, &id, req, now).await,
        _ => problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /approvals or POST /approvals/{id}",
        ),
    }
}

async fn approve(
    state: &AdminState,
    approvals: &crate::approvals::Approvals,
    id: &str,
    req: Request<Incoming>,
    now: i64,
) -> Response<Full<Bytes>> {
    let Some(signer) = &approvals.local else {
        return problem(
            StatusCode::CONFLICT,
            "no approvals.local_key: approvals come from the configured issuers",
        );
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"),
    };
    let approver = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["approver"].as_str().map(str::to_string))
        .filter(|a| !a.trim().is_empty() && a.len() <= 256);
    let Some(approver) = approver else {
        return problem(
            StatusCode::BAD_REQUEST,
            "the body is {\"approver\": \"who approves\"}",
        );
    };
    let Some(request) = approvals.pending.get(id, now) else {
        return problem(
            StatusCode::NOT_FOUND,
            "no standing approval request has this id",
        );
    };
    let ttl = Duration::from_secs(request.expires_unix.saturating_sub(now).max(1) as u64);
    let token = signer.mint(&request.digest, &approver, Some(&request.id), ttl, now);
    state.audit.log(&ApprovalRecord {
        event: "approval_granted",
        approval_id: Some(&request.id),
        digest: &request.digest,
        request_id: Some(&request.asked.request_id),
        spiffe_id: request.asked.spiffe_id.as_deref(),
        approver: Some(&approver),
        reason: None,
    });
    tracing::warn!(approval.id = %request.id, approver = %approver, "approval granted");
    json_response(
        StatusCode::OK,
        &json!({
            "approval_request": request,
            "token": token,
            "header": crate::approvals::token::HEADER,
        }),
    )
}
