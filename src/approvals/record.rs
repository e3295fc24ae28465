//! The decision-log events of approvals: requested, granted (by whom), used, expired,
//! refused. Each is said once, by [`event`], wherever it happens.

use serde::Serialize;

use crate::audit::Audit;

/// One approval event, as the decision log keeps it.
#[derive(Debug, Serialize)]
pub struct ApprovalRecord<'a> {
    /// `approval_requested`, `approval_granted`, `approval_used`, `approval_expired` or
    /// `approval_refused`.
    pub event: &'static str,
    /// The approval request's id, when the event concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<&'a str>,
    pub digest: &'a str,
    /// The HTTP request that asked, used or was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approver: Option<&'a str>,
    /// Why a token was refused (`approval_invalid`, …), or the policy's reason for asking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// Write one event.
pub fn event(audit: &Audit, record: &ApprovalRecord<'_>) {
    audit.log(record);
}

/// An approval request no one approved in time.
pub fn expired(audit: &Audit, request: &super::Request) {
    event(
        audit,
        &ApprovalRecord {
            event: "approval_expired",
            approval_id: Some(&request.id),
            digest: &request.digest,
            request_id: Some(&request.asked.request_id),
            spiffe_id: request.asked.spiffe_id.as_deref(),
            approver: None,
            reason: None,
        },
    );
}
