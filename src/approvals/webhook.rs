//! The approvals webhook (`approvals.webhook`): every approval request regate keeps is also
//! posted there as JSON, for a chat bot or a ticket queue to show approvers. A side channel:
//! the request path only offers the request to a bounded queue and never waits; one task
//! posts them in order, each retried with backoff, over the same HTTPS client (and URL rules)
//! that fetches issuers' keys.
//!
//! Owns the queue and the delivery. Not the request's contents (`super::Request`), nor whether
//! anything is approved: a webhook that is down only means approvers learn of requests
//! another way (`GET /approvals`); it never lets an action through.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Request;
use crate::delegation::jwks::fetch::Client;

/// Requests waiting to be posted; past it a new one is dropped (and logged).
pub const QUEUE: usize = 1024;
/// Tries per request: the first and three retries, after 1, 2 and 4 seconds.
pub const ATTEMPTS: u32 = 4;

/// The request path's end of the queue.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<Request>,
}

/// The delivering task's end: run it with [`Delivery::run`].
pub struct Delivery {
    url: String,
    client: Client,
    queue: mpsc::Receiver<Request>,
    backoff: Duration,
}

/// A webhook posting to `url` with `client`, and its delivery task, not yet started.
pub fn webhook(url: String, client: Client) -> (Webhook, Delivery) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let delivery = Delivery {
        url,
        client,
        queue: rx,
        backoff: Duration::from_secs(1),
    };
    (Webhook { queue: tx }, delivery)
}

impl Webhook {
    /// Offer `request` for delivery; `false` when the queue is full (it is not posted).
    pub fn offer(&self, request: &Request) -> bool {
        match self.queue.try_send(request.clone()) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(
                    approval.id = %request.id,
                    "approvals webhook: the queue is full; this request is not posted"
                );
                false
            }
        }
    }
}

impl Delivery {
    /// Post every request offered, in order, until every [`Webhook`] is dropped.
    pub async fn run(mut self) {
        while let Some(request) = self.queue.recv().await {
            self.deliver(&request).await;
        }
    }

    async fn deliver(&self, request: &Request) {
        let body = match serde_json::to_vec(&serde_json::json!({ "approval_request": request })) {
            Ok(body) => Bytes::from(body),
            Err(_) => return,
        };
        let mut wait = self.backoff;
        for attempt in 1..=ATTEMPTS {
            match self
                .client
                .post(&self.url, "application/json", body.clone())
                .await
            {
                Ok(()) => return,
                Err(e) if attempt == ATTEMPTS => {
                    tracing::warn!(
                        approval.id = %request.id,
                        error = %e,
                        "approvals webhook: not delivered after {ATTEMPTS} attempts"
                    );
                }
                Err(e) => {
                    tracing::debug!(approval.id = %request.id, error = %e, attempt, "approvals webhook: retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}
