//! Step 3b of a request: the budgets an allowing policy attached (`rate_limits`) are charged,
//! all or nothing, before the request is forwarded.
//!
//! Over any limit, the request is 429 `rate_limited`, with `Retry-After` and the IETF
//! `RateLimit-Policy`/`RateLimit` headers naming the limit that refused it; the record names
//! the limit (its `name` and `key`) and, in a JSON-RPC batch, the call. A store that does not
//! answer refuses the request (`budget_unavailable`, 503) unless every limit says
//! `on_error: allow`. In `--mode audit` the request goes on and is recorded as what would
//! have been refused. An allowed request carries the same headers for its tightest limit.
//!
//! The stores are `crate::budgets`'; this step only decides what a charge means for the
//! request.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::HeaderName;

use super::effects::Allowed;
use super::error::ProxyError;
use super::record::Noted;
use crate::budgets::{self, Charge, Verdict};
use crate::metrics::Metrics;
use crate::policy::governance::RateLimit;

/// The store and where charges are counted.
pub struct Budgets {
    pub store: budgets::Store,
    pub metrics: Arc<Metrics>,
}

/// A limit that refused a request, and when it would let one through: what the 429 and the
/// record say.
#[derive(Debug, Clone)]
pub struct Limited {
    pub limit: RateLimit,
    pub retry_after: Duration,
}

/// One limit of a request, and the JSON-RPC call that attached it.
#[derive(Debug, Clone)]
pub struct Attached {
    pub call: Option<usize>,
    pub limit: RateLimit,
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl Budgets {
    /// Charge `limits` for `allowed`; `enforce` is false in `--mode audit`.
    pub async fn charge(
        &self,
        allowed: &mut Allowed,
        limits: &[Attached],
        enforce: bool,
        noted: &mut Noted,
    ) -> Result<(), ProxyError> {
        if limits.is_empty() {
            return Ok(());
        }
        let charges: Vec<Charge<'_>> = limits
            .iter()
            .map(|a| Charge {
                key: &a.limit.key,
                limit: a.limit.limit,
                per: a.limit.per,
            })
            .collect();
        let refused = match self.store.charge(&charges).await {
            Ok(verdicts) => self.judge(allowed, limits, &verdicts, noted),
            Err(e) => self.unavailable(limits, &e),
        };
        let Some(refused) = refused else {
            return Ok(());
        };
        if enforce {
            return Err(refused);
        }
        // Audit mode: what would have been refused is recorded, and the request goes on.
        noted.would_deny = true;
        allowed.decision.reason = refused.reason();
        Ok(())
    }

    /// Count each limit; the refusal, if any limit refused.
    fn judge(
        &self,
        allowed: &mut Allowed,
        limits: &[Attached],
        verdicts: &[Verdict],
        noted: &mut Noted,
    ) -> Option<ProxyError> {
        let refusing = verdicts.iter().position(|v| !v.allowed);
        for (attached, verdict) in limits.iter().zip(verdicts) {
            let result = match (refusing, verdict.allowed) {
                (None, _) => "allowed",
                (Some(_), false) => "limited",
                // Not charged: another limit of the request refused it.
                (Some(_), true) => continue,
            };
            self.metrics.budget(&attached.limit.name, result);
        }
        let Some(i) = refusing else {
            if let Some((attached, verdict)) = tightest(limits, verdicts) {
                let headers = headers(&attached.limit, verdict.remaining, verdict.reset);
                allowed.decision.response_headers.extend(headers);
            }
            return None;
        };
        let (attached, verdict) = (&limits[i], &verdicts[i]);
        if let Some(call) = attached.call {
            noted.denied_call = Some(serde_json::json!({ "index": call }));
        }
        let limited = Limited {
            limit: attached.limit.clone(),
            retry_after: verdict.retry_after,
        };
        noted.rate_limited = Some(limited.clone());
        Some(ProxyError::RateLimited(Box::new(limited)))
    }

    /// The store did not answer: a refusal unless every limit lets it pass.
    fn unavailable(&self, limits: &[Attached], e: &budgets::BudgetError) -> Option<ProxyError> {
        for attached in limits {
            self.metrics.budget(&attached.limit.name, "unavailable");
        }
        if limits.iter().all(|a| a.limit.on_error_allow) {
            tracing::warn!(error = %e, "budget store unavailable; the limits say on_error: allow");
            return None;
        }
        tracing::warn!(error = %e, "budget store unavailable; refusing");
        Some(ProxyError::BudgetUnavailable)
    }
}

/// The limit with the fewest requests left.
fn tightest<'a>(
    limits: &'a [Attached],
    verdicts: &'a [Verdict],
) -> Option<(&'a Attached, &'a Verdict)> {
    limits.iter().zip(verdicts).min_by_key(|(_, v)| v.remaining)
}

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) for one limit:
/// its quota and window, and what is left and when the window resets, in seconds.
pub fn headers(
    limit: &RateLimit,
    remaining: u64,
    reset: Duration,
) -> Vec<(HeaderName, HeaderValue)> {
    let name = &limit.name;
    let policy = format!(
        "\"{name}\";q={};w={}",
        limit.limit,
        limit.per.as_secs().max(1)
    );
    let now = format!("\"{name}\";r={remaining};t={}", ceil_secs(reset));
    [(RATELIMIT_POLICY, policy), (RATELIMIT, now)]
        .into_iter()
        .filter_map(|(h, v)| HeaderValue::from_str(&v).ok().map(|v| (h, v)))
        .collect()
}

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
