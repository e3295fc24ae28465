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
    requests: Mutex<Requests>,
}

#[derive(Default)]
struct Requests {
    by_id: HashMap<String, Request>,
    /// How many may be kept before expired ones are swept on an add: twice what the last
    /// sweep left, so asking costs O(1) per request, amortized, however many stand.
    sweep_at: usize,
}

impl Pending {
    /// Keep `request`; returns those that expired meanwhile (for their events).
    pub fn add(&self, request: Request, now: i64) -> Vec<Request> {
        let mut requests = self.lock();
        let mut expired = Vec::new();
        if requests.by_id.len() >= requests.sweep_at {
            expired = take_expired(&mut requests.by_id, now);
            requests.sweep_at = (requests.by_id.len() * 2).clamp(64, MAX_PENDING);
        }
        if requests.by_id.len() >= MAX_PENDING {
            if let Some(first) = requests
                .by_id
                .values()
                .min_by_key(|r| r.expires_unix)
                .map(|r| r.id.clone())
            {
                expired.extend(requests.by_id.remove(&first));
            }
        }
        requests.by_id.insert(request.id.clone(), request);
        expired
    }

    /// The requests still standing at `now`, soonest to expire first; and those that
    /// expired.
    pub fn list(&self, now: i64) -> (Vec<Request>, Vec<Request>) {
        let mut requests = self.lock();
        let expired = take_expired(&mut requests.by_id, now);
        let mut standing: Vec<Request> = requests.by_id.values().cloned().collect();
        standing.sort_by_key(|r| r.expires_unix);
        (standing, expired)
    }

    /// The request `id`, if it still stands.
    pub fn get(&self, id: &str, now: i64) -> Option<Request> {
        self.lock()
            .by_id
            .get(id)
            .filter(|r| r.expires_unix > now)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Requests> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: usize, expires_unix: i64) -> Request {
        Request {
            id: id.to_string(),
            digest: "sha256:00".into(),
            asked: Asked {
                spiffe_id: None,
                delegation_subject: None,
                method: "POST".into(),
                path: "/mcp".into(),
                tool: None,
                request_id: id.to_string(),
            },
            approvers: Vec::new(),
            reason: "r".into(),
            expires_at: String::new(),
            expires_unix,
        }
    }

    #[test]
    fn expired_requests_are_swept_as_they_pile_up_and_told_once() {
        let pending = Pending::default();
        let mut told = 0;
        for i in 0..1_000 {
            told += pending.add(request(i, 10), 5).len();
        }
        // Later, every one of those has expired: adding sweeps them, each told once.
        for i in 1_000..1_200 {
            told += pending.add(request(i, 100), 50).len();
        }
        let (standing, expired) = pending.list(50);
        assert_eq!(told + expired.len(), 1_000);
        assert_eq!(standing.len(), 200);
        assert!(pending.get("1100", 50).is_some() && pending.get("5", 50).is_none());
    }

    #[test]
    fn at_capacity_the_soonest_to_expire_goes() {
        let pending = Pending::default();
        for i in 0..MAX_PENDING {
            assert!(pending.add(request(i, 1_000 + i as i64), 0).is_empty());
        }
        let gone = pending.add(request(MAX_PENDING, 5_000_000), 0);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, "0");
        assert_eq!(pending.list(0).0.len(), MAX_PENDING);
    }
}
