//! Approvals: a policy may answer that an action needs a person's approval first; regate then
//! refuses it with an approval request naming the action's digest ([`digest`]), keeps the
//! request for approvers to see ([`Pending`]), and lets the action through once it comes
//! back with an approval token for that very digest ([`token`]), once.
//!
//! What each step means for a request is `crate::proxy::approval`'s; this room holds the
//! digest, the tokens, the pending requests and their decision-log events ([`record`]), and
//! the webhook that tells approvers of each request ([`webhook`], a side channel).

pub mod digest;
pub mod record;
pub mod token;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

/// Everything approvals need at run time: the trusted issuers, the local key (when
/// configured), and the requests waiting for a person. Shared by the proxy and the admin API.
pub struct Approvals {
    pub verifier: token::Verifier,
    pub local: Option<token::LocalSigner>,
    pub pending: Pending,
    /// `approvals.webhook`: where each request kept is also posted, off the request path.
    pub webhook: Option<webhook::Webhook>,
}

/// Most approval requests kept for approvers at once; past it the soonest to expire goes.
pub const MAX_PENDING: usize = 10_000;

/// An approval request, as the 403 shows it and approvers see it.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub id: String,
    /// The digest an approval token must name ([`digest`]).
    pub digest: String,
    /// What was asked.
    pub asked: Asked,
    /// Who may approve, as the policy said.
    pub approvers: Vec<String>,
    /// The policy's reason for asking.
    pub reason: String,
    /// RFC 3339; the request is dropped after it.
    pub expires_at: String,
    /// Unix seconds, for expiry.
    #[serde(skip)]
    pub expires_unix: i64,
}

/// What an approval request says was asked.
#[derive(Debug, Clone, Serialize)]
pub struct Asked {
    pub spiffe_id: Option<String>,
    pub delegation_subject: Option<String>,
    pub method: String,
    pub path: String,
    /// The MCP tool, for a tool call.
    pub tool: Option<String>,
    /// The request that asked (its `request_id` in the decision log).
    pub request_id: String,
}

/// The approval requests waiting for a person, bounded.
#[derive(Default)]
pub struct Pending {
    requests: Mutex<HashMap<String, Request>>,
}

impl Pending {
    /// Keep `request`; returns those that expired meanwhile (for their events).
    pub fn add(&self, request: Request, now: i64) -> Vec<Request> {
        let mut requests = self.lock();
        let mut expired = take_expired(&mut requests, now);
        if requests.len() >= MAX_PENDING {
            if let Some(first) = requests
                .values()
                .min_by_key(|r| r.expires_unix)
                .map(|r| r.id.clone())
            {
                expired.extend(requests.remove(&first));
            }
        }
        requests.insert(request.id.clone(), request);
        expired
    }

    /// The requests still standing at `now`, soonest to expire first; and those that
    /// expired.
    pub fn list(&self, now: i64) -> (Vec<Request>, Vec<Request>) {
        let mut requests = self.lock();
        let expired = take_expired(&mut requests, now);
        let mut standing: Vec<Request> = requests.values().cloned().collect();
        standing.sort_by_key(|r| r.expires_unix);
        (standing, expired)
    }

    /// The request `id`, if it still stands.
    pub fn get(&self, id: &str, now: i64) -> Option<Request> {
        self.lock()
            .get(id)
            .filter(|r| r.expires_unix > now)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Request>> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn take_expired(requests: &mut HashMap<String, Request>, now: i64) -> Vec<Request> {
    let gone: Vec<String> = requests
        .values()
        .filter(|r| r.expires_unix <= now)
        .map(|r| r.id.clone())
        .collect();
    gone.iter().filter_map(|id| requests.remove(id)).collect()
}
