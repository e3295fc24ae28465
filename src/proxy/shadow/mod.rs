//! The shadow policy set (`--shadow-policies`): a candidate policy evaluated beside the main
//! one on every request the main policy decided, and compared with it. It decides nothing.
//! Its answer reaches the decision record (`shadow`, only when it differs) and the metrics,
//! never a response, a status, a header or the upstream.
//!
//! The request path asks the shadow set's decision cache, as it asks the main set's; what
//! the cache cannot answer is evaluated once the main decision is known, while the request is
//! forwarded, on evaluation threads of its own (an [`Evaluator`] that never evaluates
//! inline): a slow shadow set holds neither an async worker nor a slot that the main set's
//! evaluations need. Neither the response nor the request's record waits for it: the shadow
//! set publishes its outcome to the audit writer ([`crate::audit::later`]), which joins it
//! to the request's record when it comes in.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regorus::Value;

use super::decision::Batch;
use crate::audit::later::LaterField;
use crate::metrics::Metrics;
use crate::policy::input::{ConnInput, InputView, RequestInput};
use crate::policy::{Decision, Evaluator, PolicySet, PolicyStore};

/// Shadow decisions under way at once (each holds its request's input, up to
/// `--inspect-body-limit` of body). Past it a request is not asked about (`shadow_skipped`),
/// so a slow shadow set under load cannot grow memory without bound.
pub const IN_FLIGHT: usize = 256;

/// What a record says of a request the shadow set was not asked about.
pub const SKIPPED: &str = "shadow_skipped";

/// The shadow set and where its evaluations run. Shared by all connections.
pub struct Shadow {
    pub store: PolicyStore,
    evaluator: Arc<Evaluator>,
    metrics: Arc<Metrics>,
    /// Places for shadow decisions under way: [`IN_FLIGHT`].
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The shadow set's decision for one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub allowed: bool,
    pub reason: Cow<'static, str>,
    pub revision: Arc<str>,
}

/// The calls of one request, gathered for the shadow set.
pub struct Ask {
    set: Arc<PolicySet>,
    calls: Vec<Call>,
}

enum Call {
    /// From the shadow set's decision cache.
    Answered(Box<Decision>),
    /// To evaluate; with its cache key, computed already for the lookup that missed.
    Input(Option<Box<[u8]>>, Value),
}

impl Ask {
    /// Add one call (the request, without JSON-RPC). The shadow set's cache is asked through
    /// a view, as the main set's is; only when it cannot answer is the input kept: `built`
    /// when the main set already built it, else built here.
    pub fn call(&mut self, conn: &ConnInput, request: &RequestInput<'_>, built: Option<&Value>) {
        let view = InputView::new(conn, request);
        let key = self.set.cache().map(|cache| cache.key(|p| view.at(p)));
        if let (Some(cache), Some(key)) = (self.set.cache(), &key) {
            if let Some(decision) = cache.get(key) {
                self.calls.push(Call::Answered(Box::new(decision)));
                return;
            }
        }
        let input = match built {
            Some(input) => input.clone(),
            None => view.into_value(),
        };
        self.calls.push(Call::Input(key, input));
    }

    /// How many calls were added.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// What the shadow set decided, as the record's `shadow` field says it, when it differs
/// from the main set's decision in `allowed` or in `reason`. An evaluation that failed is a
/// deny with its reason (`policy_error`, `policy_timeout`, ...), as for the main set.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub allowed: bool,
    pub reason: String,
    /// The shadow set's revision that decided.
    pub revision: String,
}

/// Where one request's shadow outcome goes: the record's `shadow` field, compared with the
/// main decision first. Dropped unpublished (the runtime went down mid-evaluation), it
/// publishes a failed evaluation.
struct Publish {
    field: Option<LaterField>,
    main_allowed: bool,
    main_reason: Cow<'static, str>,
    metrics: Arc<Metrics>,
}

impl Publish {
    fn answer(mut self, answer: Answer) {
        if let Some(field) = self.field.take() {
            field.publish(self.compare(answer));
        }
    }

    /// `answer` when it differs from the main decision, counted; `None` when they agree.
    fn compare(&self, answer: Answer) -> Option<Outcome> {
        let outcome = Outcome {
            allowed: answer.allowed,
            reason: answer.reason.into_owned(),
            revision: answer.revision.to_string(),
        };
        if outcome.reason == SKIPPED {
            return Some(outcome);
        }
        let differs = outcome.allowed != self.main_allowed || outcome.reason != self.main_reason;
        if !differs {
            return None;
        }
        self.metrics
            .shadow_disagreement(self.main_allowed, outcome.allowed);
        Some(outcome)
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        if let Some(field) = self.field.take() {
            field.publish(self.compare(Answer {
                allowed: false,
                reason: Cow::Borrowed("policy_error"),
                revision: Arc::from(""),
            }));
        }
    }
}

impl Shadow {
    /// Evaluations bounded by `timeout` each, as the main set's are.
    pub fn new(store: PolicyStore, timeout: Duration, metrics: Arc<Metrics>) -> Shadow {
        Shadow::with_in_flight(store, timeout, metrics, IN_FLIGHT)
    }

    /// As [`Shadow::new`], with at most `in_flight` shadow decisions under way.
    pub fn with_in_flight(
        store: PolicyStore,
        timeout: Duration,
        metrics: Arc<Metrics>,
        in_flight: usize,
    ) -> Shadow {
        Shadow {
            in_flight: Arc::new(tokio::sync::Semaphore::new(in_flight)),
            store,
            evaluator: Arc::new(Evaluator::with_inline(
                0,
                timeout,
                metrics.shadow_evaluations_running(),
            )),
            metrics,
        }
    }

    /// A shadow decision to gather, call by call, with the shadow set current now.
    pub fn ask(&self) -> Ask {
        Ask {
            set: self.store.load_full(),
            calls: Vec::new(),
        }
    }

    /// Decide what `ask` gathered; `main` is the main set's decision on the same calls. The
    /// outcome is published into `field` (the request's record): at once when the cache
    /// answered every call, else by a task when the evaluations end.
    pub fn start(&self, ask: Ask, main: &Decision, field: LaterField) {
        let publish = Publish {
            field: Some(field),
            main_allowed: main.allowed,
            main_reason: main.reason.clone(),
            metrics: self.metrics.clone(),
        };
        let Ask { set, calls } = ask;
        let revision = set.revision.clone();
        let start = Instant::now();
        if calls.iter().all(|c| matches!(c, Call::Answered(_))) {
            let mut batch = Batch::default();
            let decided = calls.into_iter().find_map(|call| match call {
                Call::Answered(d) => batch.add(*d),
                Call::Input(..) => None,
            });
            self.metrics.shadow_evaluated(start.elapsed());
            publish.answer(answered(decided.unwrap_or_else(|| batch.end()), revision));
        } else if let Ok(place) = self.in_flight.clone().try_acquire_owned() {
            let evaluator = self.evaluator.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let _place = place;
                let mut batch = Batch::default();
                let mut decided = None;
                for call in calls {
                    let decision = match call {
                        Call::Answered(d) => *d,
                        Call::Input(key, input) => {
                            evaluator.decide_keyed(set.clone(), key, input).await
                        }
                    };
                    decided = batch.add(decision);
                    if decided.is_some() {
                        break;
                    }
                }
                metrics.shadow_evaluated(start.elapsed());
                publish.answer(answered(decided.unwrap_or_else(|| batch.end()), revision));
            });
        } else {
            // Not asked: the record says so, and no disagreement is counted for it.
            self.metrics.shadow_skipped();
            publish.answer(Answer {
                allowed: main.allowed,
                reason: Cow::Borrowed(SKIPPED),
                revision,
            });
        }
    }
}

/// The shadow set's answer from its decision.
fn answered(decision: Decision, revision: Arc<str>) -> Answer {
    Answer {
        allowed: decision.allowed,
        reason: decision.reason,
        revision,
    }
}

#[cfg(test)]
mod tests;
