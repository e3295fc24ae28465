//! Step 2 of a request: the policy's answer.
//!
//! Each JSON-RPC call of a body is decided on its own, one evaluation each (from the
//! decision cache where it can answer, `crate::policy::cache`); without JSON-RPC, one
//! evaluation with no call. One denied call denies the request, and the record names it; the
//! first allow speaks for the request, and a later allow that would change the request
//! otherwise denies the batch (`batch_decisions_differ`). The shadow set is asked the same
//! calls (`super::shadow`), and never answers for the request.
//!
//! A request admission already refused is denied here with admission's reason, without
//! asking the policy. What the decision then does to the request is `super::effects`'.
//! A tunnel is judged again by [`Decider::judge`], with the input that opened it.

use std::sync::Arc;

use regorus::Value;

use super::admission::Admitted;
use super::budget::Attached;
use super::connection::Connection;
use super::record::{Noted, Recorder, Seen};
use super::shadow::Shadow;
use super::tools_list::Listing;
use crate::metrics::Metrics;
use crate::policy::input::{BodyInput, InputView, RequestInput};
use crate::policy::{Decision, Evaluator, PolicySet, PolicyStore};
use crate::request::body::Call;
use crate::telemetry::CallNames;

/// What a policy deny does: `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The deny is answered (403 or the policy's status).
    #[default]
    Enforce,
    /// The request is forwarded anyway and recorded with `would_deny`; regate's own refusals
    /// (TLS, trust domain, revocations, malformed requests, bad tokens) still refuse.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// The policy sets and where they are evaluated. Shared by every connection and tunnel.
pub struct Decider {
    pub policies: PolicyStore,
    pub evaluator: Evaluator,
    /// `--shadow-policies`: evaluated beside the policy, never deciding.
    pub shadow: Option<Shadow>,
    /// `--mode`: whether a policy deny is answered or only recorded.
    pub mode: Mode,
    pub metrics: Arc<Metrics>,
}

/// The request's decision, and where it came from.
pub struct Decided {
    pub decision: Decision,
    /// The policy decided (not one of regate's own refusals before it).
    pub by_policy: bool,
    /// The input that was allowed, for an upgrade: a tunnel is judged again with it.
    pub upgrade_input: Option<Value>,
    /// For a request that lists MCP tools, with a tool-visibility query: what its result is
    /// filtered with (`super::tools_list`).
    pub listing: Option<Listing>,
    /// The budgets every allowed call attached, each with its call.
    pub rate_limits: Vec<Attached>,
}

impl Decider {
    /// Decide an admitted request with `policies` (read once, at the request's start).
    pub async fn decide(
        &self,
        conn: &Connection,
        admitted: &Admitted,
        seen: &Seen,
        policies: &Arc<PolicySet>,
        recorder: &Recorder,
        noted: &mut Noted,
    ) -> Decided {
        if let Some(reason) = admitted.refused {
            return Decided {
                decision: Decision::deny(reason),
                by_policy: false,
                upgrade_input: None,
                listing: None,
                rate_limits: Vec::new(),
            };
        }
        let delegation = noted.delegation.as_ref().map(|d| d.input.clone());
        let approval = noted.approval.as_ref().map(|a| (a.input.clone(), a.call));
        let asked = Asked {
            admitted,
            seen,
            delegation: delegation.as_ref(),
            approval: approval.as_ref().map(|(input, call)| (input, *call)),
        };
        let upgrade = admitted.prepared.upgrade.is_some();
        let mut batch = Batch::default();
        let mut upgrade_input = None;
        let mut rate_limits = Vec::new();
        // The shadow set is asked the same calls.
        let mut shadow_ask = self.shadow.as_ref().map(Shadow::ask);
        // The call a span names: the one that settled the batch, else the first.
        let mut deciding = asked.calls().next().and_then(|(_, call)| call);
        for (index, call) in asked.calls() {
            let request = asked.request(call);
            // The whole input is built only if the decision cache does not answer.
            let view = InputView::new(&conn.input, &request);
            let (mut decision, built) = self.evaluator.decide_view(policies.clone(), view).await;
            if let Some(ask) = &mut shadow_ask {
                ask.call(&conn.input, &request, built.as_ref());
            }
            if policies.cache().is_some() {
                self.metrics.decision_cache(decision.cached);
            }
            // The record keeps the input of the call that decides: the denied one, or the
            // first. A cached decision built none; it is built now, for the record.
            let recorded = recorder.record_input && (!decision.allowed || batch.is_empty());
            let whole = match (upgrade || recorded, built) {
                (true, Some(input)) => Some(input),
                (true, None) => Some(conn.input.build(&request)),
                (false, _) => None,
            };
            if let (true, Some(input)) = (recorded, &whole) {
                noted.input = Some(recorder.redaction.record(input.clone()));
            }
            if upgrade {
                upgrade_input = whole;
            }
            // Every allowed call is charged to its own budgets, the batch's first call too.
            let call_index = call.map(|_| index);
            rate_limits.extend(std::mem::take(&mut decision.rate_limits).into_iter().map(
                |limit| Attached {
                    call: call_index,
                    limit,
                },
            ));
            if let Some(settled) = batch.add(decision) {
                deciding = call.or(deciding);
                settle(&mut batch, settled, index, call, noted);
                break;
            }
        }
        let decision = batch.end();
        // Every call, not only those decided before a deny settled the batch: in audit mode
        // a batch is forwarded whole, and its list must still be filtered.
        let listing = asked
            .calls()
            .find_map(|(_, call)| {
                Listing::of(policies, call, || conn.input.build(&asked.request(call)))
            })
            .or_else(|| match admitted.parts.method == http::Method::GET {
                true => Listing::of_stream(policies, || conn.input.build(&asked.request(None))),
                false => None,
            });
        noted.call = deciding.map(|call| call_names(call, asked.calls().count()));
        if let (Some(shadow), Some(ask)) = (&self.shadow, shadow_ask) {
            noted.shadow = Some(asked.of_shadow(conn, shadow, ask, &decision));
        }
        Decided {
            decision,
            by_policy: true,
            upgrade_input,
            listing,
            rate_limits,
        }
    }

    /// A tunnel's request judged again after a reload, with the input that opened it and
    /// the policy set current now: the decision, and whether it is enforced (`--mode`).
    pub async fn judge(&self, input: Value) -> (Decision, Arc<str>) {
        let policies = self.policies.load_full();
        let revision = policies.revision.clone();
        (self.evaluator.decide(policies, input).await, revision)
    }

    /// Whether a deny by the policy is answered (not only recorded, as in `--mode audit`).
    pub fn enforces(&self) -> bool {
        self.mode == Mode::Enforce
    }
}

/// The calls of one request, as the policy is asked about each.
struct Asked<'a> {
    admitted: &'a Admitted,
    seen: &'a Seen,
    delegation: Option<&'a Value>,
    /// `input.approval`, and the call it approves (`None`: a request without calls).
    approval: Option<(&'a Value, Option<usize>)>,
}

impl<'a> Asked<'a> {
    /// Each JSON-RPC call of the body with its place in the batch; one call of none when the
    /// body is not JSON-RPC.
    fn calls(&self) -> impl Iterator<Item = (usize, Option<&'a Call>)> {
        let calls: &'a [Call] = self
            .admitted
            .inspected
            .as_ref()
            .and_then(|i| i.calls.as_deref())
            .unwrap_or_default();
        (0..calls.len().max(1)).map(move |index| (index, calls.get(index)))
    }

    /// The request as the policy reads it for `call`: the headers exactly as the upstream
    /// will receive them.
    fn request(&self, call: Option<&'a Call>) -> RequestInput<'a> {
        let (admitted, seen) = (self.admitted, self.seen);
        // The approval is this call's only if it approves this very call.
        let index = call.and_then(|c| {
            admitted
                .inspected
                .as_ref()
                .and_then(|i| i.calls.as_deref())
                .and_then(|calls| calls.iter().position(|other| std::ptr::eq(other, c)))
        });
        let approval = self
            .approval
            .filter(|(_, approved)| *approved == index)
            .map(|(input, _)| input);
        RequestInput {
            id: &seen.request_id,
            method: seen.method.as_str(),
            headers: &admitted.parts.headers,
            path: &seen.path,
            host: &seen.host,
            protocol: super::record::protocol(admitted.parts.version),
            parsed_path: &admitted.prepared.target.segments,
            parsed_query: &admitted.prepared.target.query,
            upgrade: admitted.prepared.upgrade.as_deref(),
            delegation: self.delegation,
            approval,
            body: admitted
                .inspected
                .as_ref()
                .map(|inspected| BodyInput { inspected, call }),
            now: admitted.now,
        }
    }

    /// Start the shadow set on every call: the calls after a denied one were not asked of
    /// the main set, but the shadow set decides the whole batch as the main set would have
    /// on its own. Its outcome is the record's to wait for.
    fn of_shadow(
        &self,
        conn: &Connection,
        shadow: &Shadow,
        mut ask: super::shadow::Ask,
        decision: &Decision,
    ) -> crate::audit::later::Later {
        for (_, call) in self.calls().skip(ask.len()) {
            ask.call(&conn.input, &self.request(call), None);
        }
        let (later, field) = crate::audit::later::later("shadow");
        shadow.start(ask, decision, field);
        later
    }
}

/// A call settled the batch: the record names it, and a batch denied by regate's own rule
/// records no input.
fn settle(
    batch: &mut Batch,
    settled: Decision,
    index: usize,
    call: Option<&Call>,
    noted: &mut Noted,
) {
    if let Some(call) = call {
        noted.denied_call = Some(denied_call(index, call));
    }
    if settled.reason == BATCH_DIFFERS {
        // regate's own rule decided, not the policy on one input.
        noted.input = None;
    }
    batch.first = Some(settled);
}

/// The reason of a batch whose allowed calls would change the request in different ways.
pub const BATCH_DIFFERS: &str = "batch_decisions_differ";

/// The calls' decisions combined: the first deny decides; allows that would change the
/// request otherwise deny ([`BATCH_DIFFERS`]); else the first allow. The shadow set combines
/// its own calls the same way.
#[derive(Default)]
pub struct Batch {
    first: Option<Decision>,
}

impl Batch {
    /// The request's decision once one call settles it; `None` while the batch goes on.
    pub fn add(&mut self, decision: Decision) -> Option<Decision> {
        if !decision.allowed {
            return Some(decision);
        }
        match &self.first {
            None => self.first = Some(decision),
            Some(first) if same_changes(first, &decision) => {}
            Some(_) => return Some(Decision::deny(BATCH_DIFFERS)),
        }
        None
    }

    /// No call decided yet.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// The decision: the settled one, the first allow, or no answer at all.
    pub fn end(self) -> Decision {
        self.first
            .unwrap_or_else(|| Decision::deny("policy_undefined"))
    }
}

/// Whether two allows change the forwarded request and the response alike.
fn same_changes(a: &Decision, b: &Decision) -> bool {
    a.headers == b.headers
        && a.response_headers == b.response_headers
        && a.remove_headers == b.remove_headers
        && a.query_set == b.query_set
        && a.query_remove == b.query_remove
}

/// A call's names, for its span: the JSON-RPC method and the MCP tool, and the batch's size.
fn call_names(call: &Call, calls: usize) -> CallNames {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.to_string()),
        _ => None,
    };
    CallNames {
        method: text(&call.jsonrpc["method"]),
        tool: text(&call.mcp["tool"]),
        calls,
    }
}

/// A denied call, for the record: its place in the batch, method, tool and id.
fn denied_call(index: usize, call: &Call) -> serde_json::Value {
    let field = |v: &Value| {
        v.to_json_str()
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    serde_json::json!({
        "index": index,
        "method": field(&call.jsonrpc["method"]),
        "tool": field(&call.mcp["tool"]),
        "id": field(&call.jsonrpc["id"]),
    })
}
