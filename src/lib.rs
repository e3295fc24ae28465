//! regate: an mTLS sidecar proxy that authorizes every request with Rego.
//!
//! # Layout
//!
//! One request, in the order the code runs it (docs/architecture.md draws the same):
//!
//! ```text
//! listener        accept, TLS handshake (tls), identity once per connection (tls::identity),
//!                 connection limits (limits); HTTP/1.1 or HTTP/2 on the connection
//!  └ proxy        Proxy::handle, per request:
//!     0 resource    proxy::resource: the OAuth protected resource metadata, answered here
//!     1 admission   proxy::admission: the head (request), trust in the caller
//!                   (proxy::trust: the kill switch, certificate, trust domain), the
//!                   delegation token (delegation), the JSON body (request::body), MCP's
//!                   headers held to it and the Origin allowlist (request::mcp); the
//!                   client's bearer token stripped (proxy::resource)
//!     2 decision    proxy::decision: one evaluation per JSON-RPC call (policy: input,
//!                   evaluator, cache); the shadow set asked beside (proxy::shadow)
//!     3 effects     proxy::effects: audit mode, the policy's rewrites, a late revocation
//!     4 forward     proxy::forward: to the upstream; a 101 becomes a tunnel (proxy::tunnel);
//!                   a tools/list result filtered for the caller (proxy::tools_list, sse)
//!     5 record      proxy::record: the decision record once the response head is ready
//!                   (audit: the writer thread, the hash chain, the shadow's outcome joined)
//! ```
//!
//! The rooms, from the ground up:
//! - [`error`] (an error and its causes on one line), [`units`] (durations and sizes as
//!   flags spell them): what every room may use.
//! - [`builtins`]: the Rego builtins regate adds (JWT, crypto, net, globs, ...): a library
//!   with no state, used by [`policy`], [`delegation`] and the cache's analysis.
//! - [`policy`]: policy sets (load, compile, evaluate, the decision cache and the analysis
//!   behind it, git revisions), behind an `ArcSwap`, and the decision contract.
//! - [`request`]: what a request may carry before any policy: target, host, headers,
//!   upgrades, JSON bodies (parsed so that every server reads them alike).
//! - [`tls`]: the rustls server configuration, peer identities, the SPIFFE Workload API.
//! - [`delegation`]: delegation tokens, verified before the policy (`input.delegation`),
//!   against each issuer's key store; its side channel `delegation::jwks` fetches remote
//!   issuers' keys into those stores.
//! - [`revocations`]: the kill switch, kept in a file and its journal; every change is
//!   told once ([`revocations::record`]).
//! - [`audit`]: decision records on their own stream: the writer thread, the hash chain,
//!   signed checkpoints, recorded inputs, fields joined later ([`audit::later`]).
//! - [`proxy`]: the request path above, in one file per step; [`proxy::error`] is the only
//!   error-to-response map.
//! - Side channels, which publish or read and never call into the request path: [`reload`]
//!   (files and the Workload API, keeping the last good), [`metrics`], [`admin`] (the admin
//!   and health listeners), [`identities`] (the identity inventory), [`bundle`] (what the
//!   fleet publishes and each replica polls: OPA bundles, published through `reload`, and
//!   the revocations feed, handed to `revocations`), [`telemetry`] (a span per request to an
//!   OpenTelemetry collector: the record step hands each finished request to its queue, and
//!   its task exports them).
//! - [`config`]: flags and YAML (`config::file`) merged, one step per concern
//!   (`config::merge`), into one validated [`Config`]; `App` (`app.rs`)
//!   loads what it names ([`App::load`], every problem at once) and serves it
//!   ([`App::serve`] takes its listener and a shutdown future, so tests run a real server on
//!   `127.0.0.1:0`); [`demo`]: the built-in echo application.
//! - [`cli`]: every command but `regate run` (`policy test|eval|check|replay`,
//!   `audit verify`, `dev-certs`), the policy flags they share, and output that ends quietly
//!   on a closed pipe. The runtime never imports it.
//!
//! A new request step is a new file in `proxy/`, called from `Proxy::authorize`; a new
//! builtin goes in `builtins/`; a new command in `cli/`.

#![forbid(unsafe_code)]

pub mod admin;
mod app;
pub mod approvals;
pub mod audit;
pub mod budgets;
pub mod builtins;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod delegation;
pub mod demo;
pub mod error;
pub mod identities;
pub mod limits;
mod listener;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod revocations;
pub mod telemetry;
pub mod tls;
pub mod units;

pub use app::{worker_threads, App, StartupErrors};
pub use config::Config;
