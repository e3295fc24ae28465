//! Where policy evaluation runs for the proxy: on a bounded set of blocking threads, never on
//! the async workers that move every connection's bytes.
//!
//! An evaluation is CPU work that cannot yield. Run inline, a slow branch hit by a few
//! clients would hold every worker, and every other request on every connection would wait
//! behind it. Here each evaluation takes a slot (at most [`slots`] at once) and runs with
//! `spawn_blocking`; the request awaits its result.
//!
//! `--policy-timeout` is kept from the client's side: it covers waiting for a slot and the
//! evaluation. At the deadline the request is denied (`policy_timeout`) whether or not the
//! evaluation has finished. regorus' own timer stops a Rego evaluation near the same
//! deadline, but it is checked between steps: a single builtin call (a regex over a huge
//! string, say) cannot be interrupted, and its thread stays busy until that call returns.
//! The request is still answered on time, and the slot comes back when the thread does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use regorus::Value;
use tokio::sync::Semaphore;

use super::{Decision, PolicySet};

/// How many evaluations may run at once: four per core, at least eight, so that a few slow
/// evaluations leave room for fast ones and the scheduler shares the cores among them.
pub fn slots() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).max(8)
}

/// Runs policy evaluations off the async workers, bounded in number and in time.
pub struct Evaluator {
    slots: Arc<Semaphore>,
    timeout: Duration,
    /// Evaluations running now (`regate_policy_evaluations_running`).
    running: Gauge,
}

impl Evaluator {
    pub fn new(timeout: Duration, running: Gauge) -> Evaluator {
        Evaluator {
            slots: Arc::new(Semaphore::new(slots())),
            timeout,
            running,
        }
    }

    /// Decide `input` with `set`. Never fails: a full queue, an overrun, a panic are denies.
    pub async fn decide(&self, set: Arc<PolicySet>, input: Value) -> Decision {
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
            let decision = set.decide(input);
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
