//! Where policy evaluation runs for the proxy, so that it can never starve the threads that
//! move every connection's bytes.
//!
//! An evaluation is CPU work that cannot yield. Two ways to run it:
//!
//! - **Inline**, on the async worker that handles the request: no hand-off between threads,
//!   so the common case costs nothing extra. At most all the runtime's workers but one are
//!   inside an evaluation at once; a request finding them all busy waits its turn as an async
//!   task, so the remaining worker stays free to serve I/O and to take over the others'
//!   queued tasks. regate's runtime has one worker per core ([`crate::worker_threads`]); on a
//!   single core nothing is evaluated inline.
//! - **On the evaluation threads** (`spawn_blocking`, at most [`slots`] at once), while the
//!   request awaits the answer: when no inline turn was given back for [`INLINE_WAIT`]; for
//!   good once any evaluation of the policy set has used more than [`SLOW`] of CPU (a slow
//!   branch, reached by accident or on purpose, then holds an evaluation thread, never a
//!   worker; CPU time, so that a busy machine descheduling a thread does not count); and
//!   always on a runtime with a single worker.
//!
//! `--policy-timeout` bounds the evaluation. On the evaluation threads it also covers waiting
//! for a slot (not the wait for an inline turn before), and it is kept from the client's
//! side: at the deadline the request is denied (`policy_timeout`) whether or not the
//! evaluation has finished. regorus' own timer stops a Rego evaluation near the same
//! deadline, but it is checked between steps: a single builtin call (a regex over a huge
//! string, say) cannot be interrupted, and its thread stays busy until the call returns.
//! Inline, an evaluation is answered when it ends, so the first slow one of a policy set (the
//! one that reveals it) can overrun the timeout by what a builtin takes; every later one of
//! that set runs on the evaluation threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use regorus::Value;
use tokio::sync::Semaphore;

use super::input::{walk, InputView};
use super::{Decision, PolicySet, Question};

/// An evaluation using more CPU than this sends every later one of its policy set to the
/// evaluation threads. Typical evaluations use microseconds; this is far past any of them,
/// cold caches included, and still far below any `--policy-timeout` worth having.
pub const SLOW: Duration = Duration::from_millis(10);

/// How long a request waits for an inline turn while none is given back before it goes to the
/// evaluation threads. Fast evaluations give turns back in microseconds; none in this long
/// means slow ones (of a set not yet known to be slow) hold them all, which a fast request
/// must not wait for.
pub const INLINE_WAIT: Duration = Duration::from_millis(10);

/// How many evaluations may run on the evaluation threads at once: four per core, at least
/// eight, so that a few slow evaluations leave room for fast ones and the scheduler shares the
/// cores among them.
pub fn slots() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).max(8)
}

/// Runs policy evaluations inline or off the async workers, bounded in number and in time.
pub struct Evaluator {
    /// Workers that may be inside an evaluation at once: the runtime's workers but one.
    inline: Semaphore,
    /// Whether anything may be evaluated inline (a single-worker runtime: no).
    inline_allowed: bool,
    /// Inline evaluations finished, to tell a busy proxy from inline turns held by slow ones.
    inline_done: AtomicU64,
    slots: Arc<Semaphore>,
    timeout: Duration,
    /// Evaluations running on the evaluation threads now (`regate_policy_evaluations_running`).
    running: Gauge,
}

impl Evaluator {
    /// For the runtime this is called on: with one worker (a current-thread runtime), nothing
    /// is evaluated inline.
    pub fn new(timeout: Duration, running: Gauge) -> Evaluator {
        let workers =
            tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers());
        Evaluator::with_inline(workers.saturating_sub(1), timeout, running)
    }

    /// At most `inline` evaluations on the async workers at once (0: none).
    pub fn with_inline(inline: usize, timeout: Duration, running: Gauge) -> Evaluator {
        Evaluator {
            inline: Semaphore::new(inline),
            inline_allowed: inline > 0,
            inline_done: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(slots())),
            timeout,
            running,
        }
    }

    /// Evaluate on this worker once it is one of the inline ones; `None` to go to the
    /// evaluation threads instead. Waiting yields the worker. A busy proxy keeps inline turns
    /// coming, and the request keeps waiting for one (it would gain nothing elsewhere); no turn
    /// for a whole [`INLINE_WAIT`] means slow evaluations hold them all.
    async fn inline(&self, set: &PolicySet, question: Question, input: &Value) -> Option<Decision> {
        let mut done = self.inline_done.load(Ordering::Relaxed);
        // A task this worker woke a moment ago waits in its LIFO slot, which no other worker
        // may steal: let it run before the worker is held by the evaluation, or a slow one
        // strands it (a client's handshake timed out behind a slow evaluation in the
        // black-box tests). Before the turn is taken, so that no turn sits idle meanwhile.
        tokio::task::yield_now().await;
        loop {
            match tokio::time::timeout(INLINE_WAIT, self.inline.acquire()).await {
                Ok(Ok(_worker)) => {
                    // The set may have shown itself slow while this request waited.
                    if set.slow_seen() {
                        return None;
                    }
                    let decision = set.answer(question, input.clone());
                    self.inline_done.fetch_add(1, Ordering::Relaxed);
                    return Some(decision);
                }
                Ok(Err(_)) => return None,
                Err(_) => {
                    let now = self.inline_done.load(Ordering::Relaxed);
                    if now == done || set.slow_seen() {
                        return None;
                    }
                    done = now;
                }
            }
        }
    }

    /// Decide `input` with `set`: from its decision cache when the same request (to the
    /// policy) was decided before, else by evaluating it. Never fails: a full queue, an
    /// overrun, a panic are denies.
    pub async fn decide(&self, set: Arc<PolicySet>, input: Value) -> Decision {
        let key = set.cache().map(|c| c.key(|p| walk(&input, p)));
        self.decide_keyed(set, key, input).await
    }

    /// As [`Evaluator::decide`], for a request seen through an [`InputView`]: the whole input
    /// is built only when the cache does not answer. The view's document is handed back for
    /// whoever must keep it (a tunnel).
    pub async fn decide_view(
        &self,
        set: Arc<PolicySet>,
        view: InputView<'_>,
    ) -> (Decision, Option<Value>) {
        let start = Instant::now();
        let key = set.cache().map(|c| c.key(|p| view.at(p)));
        if let (Some(cache), Some(key)) = (set.cache(), &key) {
            if let Some(mut decision) = cache.get(key) {
                decision.eval_ns = start.elapsed().as_nanos() as u64;
                return (decision, None);
            }
        }
        let input = view.into_value();
        let decision = self
            .evaluate_and_keep(set, Question::Decide, key, input.clone())
            .await;
        (decision, Some(input))
    }

    /// Whether one tool of an MCP `tools/list` result may be shown, for `input` (the request's,
    /// with `input.mcp.tool` naming the tool): `set`'s tool-visibility query, from its own
    /// decision cache where it can answer. Never fails: a failure hides the tool.
    pub async fn tool_visible(&self, set: Arc<PolicySet>, input: Value) -> Decision {
        let start = Instant::now();
        let cache = set.cache_of(Question::ToolVisible);
        let key = cache.map(|c| c.key(|p| walk(&input, p)));
        if let (Some(cache), Some(key)) = (cache, &key) {
            if let Some(mut decision) = cache.get(key) {
                decision.eval_ns = start.elapsed().as_nanos() as u64;
                return decision;
            }
        }
        self.evaluate_and_keep(set, Question::ToolVisible, key, input)
            .await
    }

    /// As [`Evaluator::decide`], with the cache key already computed (`None`: no cache).
    pub async fn decide_keyed(
        &self,
        set: Arc<PolicySet>,
        key: Option<Box<[u8]>>,
        input: Value,
    ) -> Decision {
        let start = Instant::now();
        if let (Some(cache), Some(key)) = (set.cache(), &key) {
            if let Some(mut decision) = cache.get(key) {
                decision.eval_ns = start.elapsed().as_nanos() as u64;
                return decision;
            }
        }
        self.evaluate_and_keep(set, Question::Decide, key, input)
            .await
    }

    /// Evaluate, and keep the answer under `key` when the set has a cache for `question`.
    async fn evaluate_and_keep(
        &self,
        set: Arc<PolicySet>,
        question: Question,
        key: Option<Box<[u8]>>,
        input: Value,
    ) -> Decision {
        let kept = set.clone();
        let decision = self.evaluate(set, question, input).await;
        if let (Some(cache), Some(key)) = (kept.cache_of(question), key) {
            cache.put(key, &decision);
        }
        decision
    }

    /// Ask `set` `question` about `input`, inline or on the evaluation threads.
    async fn evaluate(&self, set: Arc<PolicySet>, question: Question, input: Value) -> Decision {
        if self.inline_allowed && !set.slow_seen() {
            if let Some(decision) = self.inline(&set, question, &input).await {
                return decision;
            }
        }
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start + self.timeout);
        let timed_out = |what: &str| Decision {
            error: Some(what.to_string()),
            eval_ns: start.elapsed().as_nanos() as u64,
            ..Decision::deny("policy_timeout")
        };
        let permit = match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Decision::deny("policy_error"),
            Err(_) => return timed_out("every evaluation slot was busy until the policy timeout"),
        };
        let gauge = self.running.clone();
        let running = tokio::task::spawn_blocking(move || {
            gauge.inc();
            let decision = set.answer(question, input);
            gauge.dec();
            drop(permit);
            decision
        });
        match tokio::time::timeout_at(deadline, running).await {
            Ok(Ok(decision)) => decision,
            Ok(Err(e)) => Decision {
                error: Some(format!("evaluation failed: {e}")),
                ..Decision::deny("policy_error")
            },
            Err(_) => timed_out("the evaluation was still running at the policy timeout"),
        }
    }
}
