//! regate: an mTLS sidecar proxy that authorizes every request with Rego.
//!
//! # Layout
//!
//! The request flows one way:
//!
//! ```text
//! listener -> TLS handshake (tls) -> identity, once per connection (tls::identity)
//!          -> per request: check the request and clean its headers (request)
//!          -> revoked? (revocations) -> delegation token verified (delegation)
//!          -> build input (policy::input)
//!          -> decide (policy::evaluator) [-> shadow set, beside (proxy::shadow)]
//!          -> record (audit)
//!          -> forward (proxy::forward) or deny (proxy::error); a 101 becomes a tunnel
//!             (proxy::tunnel)
//! ```
//!
//! - [`config`]: flags and YAML merged into one validated [`Config`].
//! - `listener`: one client connection from accept to close (handshake, identity, idle and
//!   shutdown closing); [`limits`]: how many connections, in all and per certificate.
//! - [`tls`]: the rustls server configuration; [`tls::identity`] parses peer certificates;
//!   [`tls::workload`] takes regate's SVID and trust bundles from the SPIFFE Workload API.
//! - [`policy`]: the compiled policy set behind an `ArcSwap`, and the decision contract;
//!   [`policy::git`] names a set by the git commit it was checked out at;
//!   [`policy::evaluator`] places evaluations; [`policy::cache`] keeps answers by what
//!   [`policy::analysis`] finds the policy can read.
//! - [`request`]: what a request may carry before policy, and the headers it is forwarded
//!   with; shared with `regate policy eval`.
//! - [`proxy`]: the per-request service; [`proxy::error`] is the only error-to-response map;
//!   [`proxy::tunnel`] supervises upgraded connections; [`proxy::shadow`] evaluates the
//!   shadow policy set beside the decision, off the response's path.
//! - [`audit`]: one decision record per request, on its own stream.
//!   [`audit::chain`] links every line into a hash chain in the writer thread, and
//!   [`audit::signing`] signs its checkpoints (`--decision-log-signing-key`);
//!   [`audit::input`] is the policy input as a record keeps it (`--decision-log-input`);
//!   [`audit::verify`] is `regate audit verify`. `regate policy replay` (in
//!   [`policy::tools`]) re-evaluates recorded inputs.
//! - [`reload`]: watches files and publishes new policy and TLS state; keeps the last good.
//! - [`delegation`]: delegation tokens (JWT, bound to the client certificate), verified
//!   before the policy and shown to it as `input.delegation`.
//! - [`revocations`]: the kill switch, revoked SPIFFE IDs and serials, asked on every request
//!   and kept in `--revocations FILE` and its journal.
//! - [`metrics`], [`admin`]: Prometheus metrics, the admin listener (which answers only a
//!   `Host` naming it) and the read-only health listener (side channels that only read, but
//!   for the admin API's changes to [`revocations`]).
//! - [`identities`]: the identity inventory; each connection publishes its identity's
//!   requests there, and `GET /identities` reads it.
//! - [`demo`], [`devcerts`]: the built-in echo application and dev certificate generator.
//!
//! [`App::load`] reads everything and reports every problem at once; [`App::serve`] takes its
//! listener and a shutdown future, so tests run a real server on `127.0.0.1:0`.

#![forbid(unsafe_code)]

pub mod admin;
mod app;
pub mod audit;
pub mod builtins;
pub mod cli;
pub mod config;
pub mod delegation;
pub mod demo;
pub mod identities;
pub mod limits;
mod listener;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod revocations;
pub mod tls;

pub use app::{worker_threads, App, StartupErrors};
pub use config::Config;

/// An error and its causes on one line.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
