//! Step 1 of a request: what regate refuses before any policy is asked.
//!
//! In order: the request's head (`crate::request::prepare`: CONNECT, ambiguous targets, bad
//! hosts, transfer codings, upgrades, headers spelt to collide; then the headers cleaned into
//! what the upstream receives); a browser's `Origin`, when `--mcp-allowed-origin` lists the
//! ones allowed (`crate::request::mcp`); trust in the caller ([`super::trust`]: the kill switch, its
//! certificate, its trust domain) and its delegation token (`crate::delegation`); the body's
//! framing; a JSON body read for the policy (`crate::request::body`), within the
//! inspection budget and deadline, refused when a server could read it otherwise than the
//! policy; and MCP's `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` held to that body
//! (`crate::request::mcp`), shown to the policy in `input.mcp` once they match.
//!
//! A refusal of the request itself is an error (400, 401, 403, 408, 503: `super::error` maps
//! it).
//! A caller regate no longer trusts is not an error: the request goes on to be denied with
//! that reason ([`Admitted::refused`]), recorded like a policy's deny. Nothing here evaluates
//! a policy or forwards anything.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::connection::Connection;
use super::error::ProxyError;
use super::record::{Noted, Seen};
use super::trust::Trust;
use crate::delegation::Verifier;
use crate::limits::BodyBudget;
use crate::request::body::{self, Inspected, Replay};
use crate::request::{self, mcp, Forwarded, Prepared};

/// The operator's settings for admission.
pub struct Admission {
    /// What a request may carry (`--upgrade-protocol`, `--headers-with-underscores`, ...).
    pub rules: request::Rules,
    /// Delegation tokens, verified before any policy.
    pub delegation: Arc<Verifier>,
    /// What a 401 for a token says besides its error (`oauth_resource:`: where the
    /// resource's metadata is, which scopes to ask for).
    pub challenge: super::resource::Challenge,
    /// How JSON bodies are read for the policy.
    pub inspection: Inspection,
    /// `--replace-request-id`: the upstream always gets regate's own `x-request-id`.
    pub replace_request_id: bool,
    /// `--mcp-allowed-origin`: the browser origins that may call (none listed: no check).
    pub origins: crate::request::mcp::Origins,
    /// Approval tokens, verified before any policy; none without `approvals:`.
    pub approvals: Option<Arc<super::approval::ApprovalStep>>,
}

/// `--inspect-body-limit`, `--inspect-body-budget[-per-identity]`, `--inspect-body-timeout`.
pub struct Inspection {
    /// JSON bodies up to this many bytes are read for the policy; 0 reads none.
    pub limit: usize,
    /// What every read body is charged to while it is held.
    pub budget: Arc<BodyBudget>,
    /// How long a body may take to arrive.
    pub timeout: Duration,
}

/// A request admitted to the decision.
pub struct Admitted {
    /// The head as the upstream will receive it (the policy sees these very headers).
    pub parts: http::request::Parts,
    pub prepared: Prepared,
    /// When the request was admitted: the policy's `now`.
    pub now: SystemTime,
    /// Why the request is to be denied without asking the policy: the caller is no longer
    /// trusted (`revoked`, `certificate_expired`, `untrusted_issuer`,
    /// `untrusted_trust_domain`), or its body holds more JSON-RPC calls than are decided one
    /// by one (`batch_too_large`).
    pub refused: Option<&'static str>,
    /// What the policy is shown of a JSON body.
    pub inspected: Option<Inspected>,
}

impl Admission {
    /// Admit the request whose head is `parts` and whose body is `body` (taken from it when
    /// it is read, and put back as what will be forwarded). The verified delegation token is
    /// noted for the record.
    pub async fn admit(
        &self,
        trust: &Trust,
        conn: &Connection,
        mut parts: http::request::Parts,
        body: &mut Option<Replay>,
        seen: &Seen,
        noted: &mut Noted,
    ) -> Result<Admitted, ProxyError> {
        // Read before the headers are cleaned, which strips every client `x-regate-*` header.
        let approval = super::approval::token(&parts.headers);
        let prepared = self.prepare(conn, &mut parts, seen)?;
        self.origins
            .check(&parts.headers)
            .map_err(ProxyError::OriginNotAllowed)?;
        let now = SystemTime::now();
        // A token is verified whoever presents it; whether the caller is trusted at all is
        // answered first, and a token that does not verify is refused (401) only then.
        let token = self
            .delegation
            .verify(
                &parts.headers,
                &prepared.target.query,
                &conn.cert_sha256,
                now,
            )
            .await;
        let jti = token
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(|d| d.jti.as_deref());
        let mut refused = trust.refusal(conn, jti, now);
        match token {
            Err(e) if refused.is_none() => {
                return Err(ProxyError::Unauthenticated(e, self.challenge.clone()))
            }
            Err(_) => {}
            Ok(delegation) => noted.delegation = delegation,
        }
        check_framing(&parts, &prepared, body)?;
        let mut inspected = match refused {
            None => self.inspect(conn, &parts, body).await?,
            Some(_) => None,
        };
        if refused.is_none() {
            mcp_headers(&parts.headers, &mut inspected, self.inspection.limit > 0)?;
        }
        let calls = inspected.as_ref().and_then(|i| i.calls.as_ref());
        if refused.is_none() && calls.is_some_and(|c| c.len() > body::MAX_BATCH) {
            refused = Some("batch_too_large");
        }
        let admitted = Admitted {
            parts,
            prepared,
            now,
            refused,
            inspected,
        };
        if let (Some(step), None) = (&self.approvals, admitted.refused) {
            noted.approval = step
                .verify(approval, &admitted, seen, conn.spiffe_id(), noted)
                .await?;
        }
        Ok(admitted)
    }

    /// Check the head and clean its headers into what the upstream receives.
    fn prepare(
        &self,
        conn: &Connection,
        parts: &mut http::request::Parts,
        seen: &Seen,
    ) -> Result<Prepared, ProxyError> {
        let head = request::Head {
            method: &parts.method,
            version: parts.version,
            scheme: parts.uri.scheme_str(),
            authority: parts.uri.authority().map(|a| a.as_str()),
            target: &seen.path,
        };
        let forwarded = Forwarded {
            xfcc: &conn.xfcc,
            xff: &conn.xff,
            request_id: seen.forwarded_request_id(),
            host: &seen.host,
        };
        Ok(request::prepare(
            &head,
            &mut parts.headers,
            &forwarded,
            &self.rules,
        )?)
    }

    /// A JSON body read (up to the limit) for the policy, to be forwarded as read; `None`
    /// for a body the policy is not shown.
    async fn inspect(
        &self,
        conn: &Connection,
        parts: &http::request::Parts,
        body: &mut Option<Replay>,
    ) -> Result<Option<Inspected>, ProxyError> {
        if self.inspection.limit == 0 || !body::is_json(&parts.headers) {
            return Ok(None);
        }
        let encoded = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            // regate does not decompress; the policy is told it cannot read this body.
            return Ok(Some(Inspected {
                error: Some("the body is compressed (content-encoding)".into()),
                ..Default::default()
            }));
        }
        let Some(incoming) = body.take().and_then(Replay::into_incoming) else {
            return Err(ProxyError::BadRequest("the request body was already read"));
        };
        let charge = self.inspection.budget.charge(conn.budget_key.clone());
        let (replay, inspected) = tokio::time::timeout(
            self.inspection.timeout,
            body::inspect(incoming, self.inspection.limit, charge),
        )
        .await
        .map_err(|_| ProxyError::BodyTimeout)??;
        *body = Some(replay);
        // Keys a server could read otherwise than the policy: refused, as an ambiguous path
        // is.
        if inspected.ambiguous.is_some() {
            return Err(ProxyError::AmbiguousBody);
        }
        Ok(Some(inspected))
    }
}

/// MCP's headers held to the body; once they match, each call's `input.mcp` shows them.
fn mcp_headers(
    headers: &http::HeaderMap,
    inspected: &mut Option<Inspected>,
    body_read: bool,
) -> Result<(), ProxyError> {
    let sent = mcp::check(headers, inspected.as_ref(), body_read)
        .map_err(ProxyError::McpHeaderMismatch)?;
    if sent == mcp::Sent::default() {
        return Ok(());
    }
    let calls = inspected.as_mut().and_then(|i| i.calls.as_mut());
    for call in calls.into_iter().flatten() {
        sent.annotate(call);
    }
    Ok(())
}

/// Two content types leave the upstream to pick one; an upgrade carries no body (a body
/// beside it would reach a server that ignores the upgrade, unread by the policy).
fn check_framing(
    parts: &http::request::Parts,
    prepared: &Prepared,
    body: &Option<Replay>,
) -> Result<(), ProxyError> {
    if parts
        .headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .count()
        > 1
    {
        return Err(ProxyError::BadRequest("more than one content-type"));
    }
    let has_body = body
        .as_ref()
        .is_some_and(|b| !hyper::body::Body::is_end_stream(b));
    if prepared.upgrade.is_some() && has_body {
        return Err(ProxyError::BadRequest("an upgrade request carries a body"));
    }
    Ok(())
}
