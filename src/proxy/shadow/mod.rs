//! The shadow policy set (`--shadow-policies`): a candidate policy evaluated beside the main
//! one on every request the main policy decided, and compared with it. It decides nothing.
//! Its answer reaches the decision record (`shadow`, only when it differs) and the metrics,
//! never a response, a status, a header or the upstream.
//!
//! The request path asks the shadow set's decision cache, as it asks the main set's; what
//! the cache cannot answer is evaluated once the main decision is known, while the request is
//! forwarded, on evaluation threads of its own (an [`Evaluator`] that never evaluates
//! inline): a slow shadow set holds neither an async worker nor a slot that the main set's
//! evaluations need. The response never waits for the shadow. The request's record does:
//! when the shadow's answer is not in by the time the response head is, the record is
//! written by a task once it is ([`Shadow::write_later`]), and shutdown waits for those
//! ([`Shadow::drained`]) before the decision log is closed.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regorus::Value;
use tokio::sync::{oneshot, watch};

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
    /// Records waiting for a shadow answer after their response went out.
    waiting: watch::Sender<usize>,
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
    Answered(Decision),
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
                self.calls.push(Call::Answered(decision));
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

/// A shadow decision under way, and the main decision it is to be compared with.
pub struct Running {
    main_allowed: bool,
    main_reason: Cow<'static, str>,
    answer: oneshot::Receiver<Answer>,
    metrics: Arc<Metrics>,
}

/// Counts a record as waiting while it lives.
pub struct Waiting(watch::Sender<usize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
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
            waiting: watch::Sender::new(0),
        }
    }

    /// A shadow decision to gather, call by call, with the shadow set current now.
    pub fn ask(&self) -> Ask {
        Ask {
            set: self.store.load_full(),
            calls: Vec::new(),
        }
    }

    /// Decide what `ask` gathered; `main` is the main set's decision on the same calls.
    /// Returns at once: what the cache answered is decided now, the rest on a task.
    pub fn start(&self, ask: Ask, main: &Decision) -> Running {
        let (tx, answer) = oneshot::channel();
        let Ask { set, calls } = ask;
        let revision = set.revision.clone();
        let skipped_revision = revision.clone();
        let answered = |d: Decision| Answer {
            allowed: d.allowed,
            reason: d.reason,
            revision,
        };
        let start = Instant::now();
        if calls.iter().all(|c| matches!(c, Call::Answered(_))) {
            let mut batch = Batch::default();
            let decided = calls.into_iter().find_map(|call| match call {
                Call::Answered(d) => batch.add(d),
                Call::Input(..) => None,
            });
            self.metrics.shadow_evaluated(start.elapsed());
            let _ = tx.send(answered(decided.unwrap_or_else(|| batch.end())));
        } else if let Ok(place) = self.in_flight.clone().try_acquire_owned() {
            let evaluator = self.evaluator.clone();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let _place = place;
                let mut batch = Batch::default();
                let mut decided = None;
                for call in calls {
                    let decision = match call {
                        Call::Answered(d) => d,
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
                let _ = tx.send(answered(decided.unwrap_or_else(|| batch.end())));
            });
        } else {
            // Not asked: the record says so, and no disagreement is counted for it.
            self.metrics.shadow_skipped();
            let _ = tx.send(Answer {
                allowed: main.allowed,
                reason: Cow::Borrowed(SKIPPED),
                revision: skipped_revision,
            });
        }
        Running {
            main_allowed: main.allowed,
            main_reason: main.reason.clone(),
            answer,
            metrics: self.metrics.clone(),
        }
    }

    /// Hold a place among the records waiting for their shadow answer.
    pub fn waiting(&self) -> Waiting {
        self.waiting.send_modify(|n| *n += 1);
        Waiting(self.waiting.clone())
    }

    /// Wait, at most `within`, until no record waits for a shadow answer; false if some
    /// still do.
    pub async fn drained(&self, within: Duration) -> bool {
        let mut waiting = self.waiting.subscribe();
        let drained = tokio::time::timeout(within, waiting.wait_for(|n| *n == 0)).await;
        drained.is_ok()
    }

    /// Run `write` with the shadow's answer once it is in, on a task of its own that holds a
    /// place among the waiting records until it has run.
    pub fn write_later<F>(&self, running: Running, write: F)
    where
        F: FnOnce(Option<Answer>) + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to wait on: the process is going down. The record is written now,
            // its shadow unanswered (a failed evaluation).
            let answer = running.now().unwrap_or_else(|running| running.lost());
            return write(answer);
        };
        let waiting = self.waiting();
        runtime.spawn(async move {
            let answer = running.wait().await;
            write(answer);
            drop(waiting);
        });
    }
}

impl Running {
    /// The shadow's answer if it is already in: `Ok(Some)` when it differs from the main
    /// decision, `Ok(None)` when it agrees; `Err` gives the decision back to wait for.
    pub fn now(mut self) -> Result<Option<Answer>, Running> {
        match self.answer.try_recv() {
            Ok(answer) => Ok(self.compare(answer)),
            Err(oneshot::error::TryRecvError::Empty) => Err(self),
            Err(oneshot::error::TryRecvError::Closed) => Ok(self.lost()),
        }
    }

    /// The shadow's answer once it is in; as [`Running::now`].
    async fn wait(mut self) -> Option<Answer> {
        match (&mut self.answer).await {
            Ok(answer) => self.compare(answer),
            Err(_) => self.lost(),
        }
    }

    /// The evaluation task went away without an answer (the runtime is shutting down): a
    /// failed evaluation, which is a deny.
    fn lost(&self) -> Option<Answer> {
        self.compare(Answer {
            allowed: false,
            reason: Cow::Borrowed("policy_error"),
            revision: Arc::from(""),
        })
    }

    /// `answer` when it differs from the main decision, counted; `None` when they agree.
    fn compare(&self, answer: Answer) -> Option<Answer> {
        if answer.reason == SKIPPED {
            return Some(answer);
        }
        let differs = answer.allowed != self.main_allowed || answer.reason != self.main_reason;
        if !differs {
            return None;
        }
        self.metrics
            .shadow_disagreement(self.main_allowed, answer.allowed);
        Some(answer)
    }
}

/// The calls' decisions combined as the request path combines the main set's: the first
/// deny decides; allows that would change the request otherwise deny
/// (`batch_decisions_differ`); else the first allow.
#[derive(Default)]
struct Batch {
    first: Option<Decision>,
}

impl Batch {
    /// The request's decision once one call settles it.
    fn add(&mut self, decision: Decision) -> Option<Decision> {
        if !decision.allowed {
            return Some(decision);
        }
        match &self.first {
            None => self.first = Some(decision),
            Some(first) if super::same_changes(first, &decision) => {}
            Some(_) => return Some(Decision::deny("batch_decisions_differ")),
        }
        None
    }

    fn end(self) -> Decision {
        self.first
            .unwrap_or_else(|| Decision::deny("policy_undefined"))
    }
}

#[cfg(test)]
mod tests;
