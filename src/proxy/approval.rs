//! The steps of a request that concern approvals ([`crate::approvals`]).
//!
//! - At admission, an approval token (`x-regate-approval`) is verified, whoever presents it:
//!   signature, issuer, expiry, and its digest against this request's actions. A token that
//!   does not verify, or approves another action, is refused (403 `approval_invalid`,
//!   `approval_expired`, `approval_mismatch`); one that does is `input.approval` for the call
//!   it approves.
//! - When the policy's deny asks for approval, the request is refused with an approval
//!   request (403 `approval_required`; for JSON-RPC, an error carrying it), kept for approvers
//!   and recorded; in `--mode audit` it is recorded only, and the request goes on.
//! - When an allowed request carried an approval, the token is spent: a token is good once
//!   (per replica, or across the fleet with a shared budget store).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use regorus::Value;

use super::admission::Admitted;
use super::effects::Allowed;
use super::error::ProxyError;
use super::record::{Noted, Seen};
use crate::approvals::digest::{body_action, call_action, Action};
use crate::approvals::record::ApprovalRecord;
use crate::approvals::token::{ApprovalError, Approved, HEADER};
use crate::approvals::{Approvals, Asked, Request};
use crate::audit::Audit;
use crate::budgets::Store;
use crate::policy::governance::ApprovalAsk;
use crate::request::body::Call;

/// A verified approval, and the call of the request it approves.
#[derive(Debug, Clone)]
pub struct Verified {
    pub approved: Approved,
    /// `input.approval`.
    pub input: Value,
    /// The JSON-RPC call it approves; `None` for a request without calls.
    pub call: Option<usize>,
}

/// The approvals step's settings.
pub struct ApprovalStep {
    pub approvals: Arc<Approvals>,
    pub audit: Audit,
}

/// The approval token a request carries, read before its headers are cleaned (regate strips
/// every `x-regate-*` header the client sends, this one included: it never reaches the
/// upstream).
pub fn token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
}

impl ApprovalStep {
    /// Verify `token` against the admitted request's actions.
    pub async fn verify(
        &self,
        token: Option<String>,
        admitted: &Admitted,
        seen: &Seen,
        spiffe_id: Option<&str>,
        noted: &Noted,
    ) -> Result<Option<Verified>, ProxyError> {
        let Some(token) = token else {
            return Ok(None);
        };
        let refused = |e: ApprovalError| {
            self.audit.log(&ApprovalRecord {
                event: "approval_refused",
                approval_id: None,
                digest: "",
                request_id: Some(&seen.request_id),
                spiffe_id,
                approver: None,
                reason: Some(e.reason()),
            });
            ProxyError::Approval(e)
        };
        let now = unix_now();
        let approved = self
            .approvals
            .verifier
            .verify(&token, now)
            .await
            .map_err(refused)?;
        let subject = noted.delegation.as_ref().and_then(|d| d.subject.as_deref());
        let digest_of =
            |call: Option<&Call>| action(admitted, seen, spiffe_id, subject, call).digest();
        let calls = admitted
            .inspected
            .as_ref()
            .and_then(|i| i.calls.as_deref())
            .unwrap_or_default();
        let call = match calls.is_empty() {
            true => (digest_of(None) == approved.digest).then_some(None),
            false => calls
                .iter()
                .position(|c| digest_of(Some(c)) == approved.digest)
                .map(Some),
        };
        let Some(call) = call else {
            return Err(refused(ApprovalError::Mismatch));
        };
        Ok(Some(Verified {
            input: approved.input(),
            approved,
            call,
        }))
    }

    /// The policy denied `call` (or the request) asking for approval: the approval request,
    /// kept for approvers (unless `enforce` is false, in audit mode) and recorded.
    #[allow(clippy::too_many_arguments)]
    pub fn ask(
        &self,
        ask: &ApprovalAsk,
        reason: &str,
        admitted: &Admitted,
        seen: &Seen,
        spiffe_id: Option<&str>,
        call: Option<&Call>,
        noted: &Noted,
        enforce: bool,
    ) -> Request {
        let subject = noted.delegation.as_ref().and_then(|d| d.subject.as_deref());
        let now = unix_now();
        let expires_unix = now.saturating_add(ask.ttl.as_secs() as i64);
        let request = Request {
            id: uuid::Uuid::new_v4().to_string(),
            digest: action(admitted, seen, spiffe_id, subject, call).digest(),
            asked: Asked {
                spiffe_id: spiffe_id.map(str::to_string),
                delegation_subject: subject.map(str::to_string),
                method: seen.method.to_string(),
                path: seen.path.clone(),
                tool: call.and_then(|c| c.mcp["tool"].as_string().ok().map(|t| t.to_string())),
                request_id: seen.request_id.clone(),
            },
            approvers: ask.approvers.clone(),
            reason: reason.to_string(),
            expires_at: rfc3339(expires_unix),
            expires_unix,
        };
        self.audit.log(&ApprovalRecord {
            event: "approval_requested",
            approval_id: Some(&request.id),
            digest: &request.digest,
            request_id: Some(&seen.request_id),
            spiffe_id,
            approver: None,
            reason: Some(reason),
        });
        if enforce {
            for expired in self.approvals.pending.add(request.clone(), now) {
                crate::approvals::record::expired(&self.audit, &expired);
            }
            if let Some(webhook) = &self.approvals.webhook {
                webhook.offer(&request);
            }
        }
        request
    }

    /// Spend the approval an allowed request carried, if any: `Err(approval_used)` when it
    /// was spent before (in `--mode audit`, with `enforce` false, recorded as what would have
    /// been refused). `store` marks it used, shared by the fleet when the store is.
    pub async fn spend(
        &self,
        allowed: &mut Allowed,
        store: &Store,
        seen: &Seen,
        spiffe_id: Option<&str>,
        enforce: bool,
        noted: &mut Noted,
    ) -> Result<(), ProxyError> {
        let Some(verified) = &noted.approval else {
            return Ok(());
        };
        match self.mark_used(verified, store, seen, spiffe_id).await {
            Err(e) if !enforce => {
                noted.would_deny = true;
                allowed.decision.reason = e.reason();
                Ok(())
            }
            spent => spent,
        }
    }

    /// Mark the token used, and record which it was: its first use, or a reuse.
    async fn mark_used(
        &self,
        verified: &Verified,
        store: &Store,
        seen: &Seen,
        spiffe_id: Option<&str>,
    ) -> Result<(), ProxyError> {
        let approved = &verified.approved;
        let left = approved.expires_at.saturating_sub(unix_now()).max(1) as u64;
        // Kept a while past expiry: the verifier's leeway lets a token live that long.
        let ttl = Duration::from_secs(left + 300);
        let key = format!("approval:{}:{}", approved.issuer, approved.jti);
        let first = store
            .use_once(&key, ttl)
            .await
            .map_err(|_| ProxyError::BudgetUnavailable)?;
        let (event, reason) = match first {
            true => ("approval_used", None),
            false => ("approval_refused", Some(ApprovalError::Used.reason())),
        };
        self.audit.log(&ApprovalRecord {
            event,
            approval_id: approved.request_id.as_deref(),
            digest: &approved.digest,
            request_id: Some(&seen.request_id),
            spiffe_id,
            approver: approved.approver.as_deref(),
            reason,
        });
        match first {
            true => Ok(()),
            false => Err(ProxyError::Approval(ApprovalError::Used)),
        }
    }
}

/// The action `call` of the admitted request (or the request itself) is.
fn action<'a>(
    admitted: &Admitted,
    seen: &'a Seen,
    spiffe_id: Option<&'a str>,
    delegation_subject: Option<&'a str>,
    call: Option<&Call>,
) -> Action<'a> {
    let action = match call {
        Some(call) => call_action(&call.mcp),
        None => body_action(admitted.inspected.as_ref().and_then(|i| i.parsed.as_ref())),
    };
    Action {
        spiffe_id,
        delegation_subject,
        method: seen.method.as_str(),
        path: &seen.path,
        action,
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
