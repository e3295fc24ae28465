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
pub mod audit;
pub mod builtins;
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
pub mod tls;
pub mod units;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

pub use config::Config;
use config::Upstream;
use policy::{PolicySet, PolicyStore};
use proxy::Proxy;
use tls::{TlsState, TlsStore};

/// Worker threads for regate's runtime: one per core. Policy evaluations run inline on all of
/// them but one, so one is always free to serve connections (see [`policy::evaluator`]); on a
/// single core, evaluations the decision cache cannot answer go to the evaluation threads. A
/// worker more than cores would keep one free everywhere, but doubles the tail latency of a
/// one-core sidecar (BENCHMARKS.md).
pub fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Everything loaded and checked, not yet listening.
pub struct App {
    config: Config,
    tls: TlsStore,
    policies: PolicyStore,
    reloader: Arc<reload::Reloader>,
    metrics: Arc<metrics::Metrics>,
    health: Arc<admin::Health>,
    audit: (audit::Audit, audit::AuditWriter),
    revocations: Arc<revocations::Revocations>,
    delegation: Arc<delegation::Verifier>,
    /// Serves /healthz, /readyz and /metrics alone (`--health-listen`).
    health_listener: Option<TcpListener>,
    /// `--shadow-policies`, loaded; none without the flag.
    shadow: Option<PolicyStore>,
}

/// Every problem found at startup, each naming its setting or file.
#[derive(Debug)]
pub struct StartupErrors(pub Vec<String>);

impl std::fmt::Display for StartupErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for StartupErrors {}

impl App {
    /// Load certificates and policies and open the decision log.
    pub fn load(config: Config) -> Result<App, StartupErrors> {
        App::load_checked(config::Checked {
            config,
            errors: Vec::new(),
        })
    }

    /// Load what a checked config names, adding every failure to the config's own errors,
    /// so one run reports all of them. Files the config already found missing are skipped.
    pub fn load_checked(checked: config::Checked) -> Result<App, StartupErrors> {
        let config::Checked { config, mut errors } = checked;
        let tls_files = [&config.cert, &config.key, &config.client_ca];
        let tls = if config.spiffe_socket.is_some() {
            // Fetched last, once everything else checks out: an agent that is not there yet
            // is waited for, and nobody should wait that long to learn of a typo.
            None
        } else if tls_files.iter().all(|p| p.is_file()) {
            TlsState::load(&config.cert, &config.key, &config.client_ca)
                .map_err(|es| errors.extend(es.iter().map(|e| error::chain(e))))
                .ok()
        } else {
            None
        };
        let policies = if config.policies.is_dir() {
            PolicySet::load(&config.policies, &config.policy_options())
                .map(|set| set.with_decision_cache(config.decision_cache_entries))
                .map_err(|es| errors.extend(es.iter().map(|e| error::chain(e))))
                .ok()
        } else {
            None
        };
        // None: a key was named and cannot be used (a missing file is already reported).
        let signing = match &config.decision_log_signing_key {
            Some(path) if path.is_file() => audit::signing::SigningKey::load(path)
                .map(Some)
                .map_err(|e| errors.push(format!("decision-log-signing-key: {}", error::chain(&e))))
                .ok(),
            Some(_) => None,
            None => Some(None),
        };
        // Not opened without its key: a run that should sign must not write unsigned lines.
        let audit = signing.and_then(|key| {
            audit::Audit::start(&config.decision_log, key)
                .map_err(|e| errors.push(format!("decision-log: cannot open it: {e}")))
                .ok()
        });
        let revocations = revocations::Revocations::load(config.revocations.as_deref())
            .map(|r| r.with_max(config.max_revocations))
            .map_err(|e| errors.push(error::chain(&e)))
            .ok();
        let delegation = delegation::Verifier::load(config.delegation.clone())
            .map_err(|es| errors.extend(es))
            .ok();
        // A broken shadow set is reported with everything else, as a broken main set is (a
        // missing directory is already among the config's errors).
        let shadow = match config.shadow_policy_options() {
            Some((dir, options)) if dir.is_dir() => PolicySet::load(&dir, &options)
                .map(|set| set.with_decision_cache(config.decision_cache_entries))
                .map_err(|es| {
                    errors.extend(
                        es.iter()
                            .map(|e| format!("shadow-policies: {}", error::chain(e))),
                    )
                })
                .ok(),
            _ => None,
        };
        let tls = match &config.spiffe_socket {
            Some(endpoint) if errors.is_empty() => {
                tls::workload::first(endpoint, config.spiffe_startup_timeout)
                    .and_then(|(served, ca)| {
                        TlsState::build(Arc::new(served), Arc::new(ca), 0)
                            .map_err(|e| error::chain(&e))
                    })
                    .map_err(|e| errors.push(format!("spiffe-socket: {e}")))
                    .ok()
            }
            _ => tls,
        };
        match (tls, policies, audit, revocations, delegation) {
            (Some(tls), Some(policies), Some(audit), Some(revocations), Some(delegation))
                if errors.is_empty() =>
            {
                let revocations = Arc::new(revocations);
                let delegation = Arc::new(delegation);
                let tls: TlsStore = Arc::new(ArcSwap::from_pointee(tls));
                let policies: PolicyStore = Arc::new(ArcSwap::from_pointee(policies));
                let metrics = Arc::new(metrics::Metrics::new());
                let shadow: Option<PolicyStore> =
                    shadow.map(|set| Arc::new(ArcSwap::from_pointee(set)));
                let shadow_source = config.shadow_policy_options().zip(shadow.clone()).map(
                    |((dir, options), store)| reload::ShadowSource {
                        dir,
                        options,
                        store,
                    },
                );
                let reloader = reload::Reloader::new(
                    &config,
                    policies.clone(),
                    tls.clone(),
                    metrics.clone(),
                    revocations.clone(),
                    delegation.clone(),
                    audit.0.clone(),
                );
                let reloader = Arc::new(reloader.with_shadow(shadow_source));
                metrics.revocations_in_force(revocations.len());
                Ok(App {
                    config,
                    tls,
                    policies,
                    reloader,
                    metrics,
                    health: Arc::default(),
                    audit,
                    revocations,
                    delegation,
                    health_listener: None,
                    shadow,
                })
            }
            _ => Err(StartupErrors(errors)),
        }
    }

    /// Forward to `authority` (used to point regate at the demo upstream once it is bound).
    pub fn set_upstream(&mut self, authority: http::uri::Authority) {
        self.config.upstream = Upstream::Url(authority);
    }

    pub fn policies(&self) -> &PolicyStore {
        &self.policies
    }

    pub fn tls(&self) -> &TlsStore {
        &self.tls
    }

    /// Reloads policies and certificates; [`App::serve`] runs it on change events.
    pub fn reloader(&self) -> Arc<reload::Reloader> {
        self.reloader.clone()
    }

    /// The admin listener's address from the config (`None`: no admin listener).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.config.admin
    }

    /// The read-only health listener's address from the config (`--health-listen`).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.config.health_listen
    }

    /// Serve /healthz, /readyz and /metrics alone on `listener` while serving.
    pub fn with_health_listener(mut self, listener: TcpListener) -> App {
        self.health_listener = Some(listener);
        self
    }

    /// Accept connections on `listener` (and serve the admin endpoints on `admin`) until
    /// `shutdown` completes; then report not-ready, let in-flight requests finish within
    /// `--shutdown-grace`, and flush the decision log.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Upstream::Url(authority) = self.config.upstream.clone() else {
            return Err(std::io::Error::other("the demo upstream was not started"));
        };
        let (audit, audit_writer) = self.audit;
        let (stopping, stop) = watch::channel(false);
        let identities = Arc::new(identities::Inventory::new(
            self.config.max_identities,
            self.metrics.identities(),
        ));
        let proxy = Arc::new(Proxy {
            policies: self.policies.clone(),
            tls: self.tls.clone(),
            upstream: proxy::forward::Upstream::new(
                authority,
                self.config.upstream_protocol,
                self.config.upstream_timeout,
            ),
            audit,
            metrics: self.metrics.clone(),
            trust_domains: self.config.trust_domains.clone(),
            context: policy::input::context_value(&self.config.context),
            rules: self.config.request_rules.clone(),
            evaluator: policy::Evaluator::new(
                self.config.policy_timeout,
                self.metrics.evaluations_running(),
            ),
            limits: proxy::Limits {
                upstream_total: Arc::new(Semaphore::new(self.config.max_upstream_requests)),
                upstream_per_connection: self.config.max_upstream_requests_per_connection,
            },
            changes: self.reloader.changes(),
            revocations: self.revocations.clone(),
            delegation: self.delegation.clone(),
            inspection: proxy::Inspection {
                limit: self.config.inspect_body_limit,
                budget: limits::BodyBudget::new(
                    self.config.inspect_body_budget,
                    self.config.inspect_body_budget_per_identity,
                    self.metrics.inspected_body_bytes(),
                ),
                timeout: self.config.inspect_body_timeout,
            },
            shutdown: stop.clone(),
            failure_log: limits::RateLimited::new(listener::LOG_EVERY),
            identities: identities.clone(),
            record_input: self.config.decision_log_input,
            redaction: self.config.redaction.clone(),
            shadow: self.shadow.clone().map(|store| {
                proxy::shadow::Shadow::new(store, self.config.policy_timeout, self.metrics.clone())
            }),
            mode: self.config.mode,
            replace_request_id: self.config.replace_request_id,
        });
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(listener::HEADER_READ_TIMEOUT.min(self.config.idle_timeout));
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(listener::MAX_CONCURRENT_STREAMS);
        let http = Arc::new(http);
        let reloading = tokio::spawn(
            self.reloader
                .clone()
                .run(self.config.watch, self.config.reload_interval),
        );
        // The agent pushes rotations; they are published like a file reload.
        let following = self.config.spiffe_socket.clone().map(|endpoint| {
            let reloader = self.reloader.clone();
            tokio::spawn(tls::workload::watch(endpoint, move |credentials| {
                reloader.apply_workload(credentials);
            }))
        });
        let admin_state = Arc::new(admin::AdminState {
            metrics: self.metrics.clone(),
            reloads: self.reloader.status.clone(),
            policies: self.policies.clone(),
            tls: self.tls.clone(),
            health: self.health.clone(),
            started: std::time::Instant::now(),
            revocations: self.revocations.clone(),
            audit: proxy.audit.clone(),
            spiffe_socket: self.config.spiffe_socket.clone(),
            identities,
            shadow: self.shadow.clone(),
            mode: self.config.mode,
            hosts: admin::AdminHosts::new(self.config.admin_hosts.clone()),
        });
        let admin_task = match admin {
            Some(admin) => {
                tracing::info!(admin = %admin.local_addr()?, "admin endpoints are serving");
                Some(tokio::spawn(admin::serve(admin, admin_state.clone())))
            }
            None => None,
        };
        let health_task = match self.health_listener {
            Some(health) => {
                tracing::info!(health = %health.local_addr()?, "health and metrics endpoints are serving");
                Some(tokio::spawn(admin::serve_health(health, admin_state)))
            }
            None => None,
        };
        // Every connection holds a sender; when the last is dropped, draining is done.
        let (drain, mut drained) = mpsc::channel::<()>(1);
        let limits = limits::ConnLimits::new(
            self.config.max_connections,
            self.config.max_connections_per_identity,
        );
        let accept_failed = limits::RateLimited::new(listener::LOG_EVERY);
        let refused = Arc::new(limits::RateLimited::new(listener::LOG_EVERY));
        self.health.set_serving();
        tracing::info!(
            max_connections = self.config.max_connections,
            per_identity = self.config.max_connections_per_identity,
            idle_timeout = ?self.config.idle_timeout,
            "connection limits"
        );
        tracing::info!(listen = %listener.local_addr()?, "regate is serving");

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, remote) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            if let Some(held_back) = accept_failed.check() {
                                tracing::warn!(error = %e, held_back, "accept failed");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // At the limit, close at once: the client learns now, not after a timeout,
                    // and the descriptor is back for the next one.
                    let Some(slot) = limits.admit() else {
                        self.metrics.connection_refused("max_connections");
                        if let Some(held_back) = refused.check() {
                            tracing::warn!(
                                client.addr = %remote,
                                held_back,
                                "connection refused: --max-connections are open"
                            );
                        }
                        continue;
                    };
                    let conn = listener::ConnTask {
                        metrics: self.metrics.clone(),
                        proxy: proxy.clone(),
                        tls: self.tls.clone(),
                        http: http.clone(),
                        handshake_timeout: self.config.handshake_timeout,
                        idle_timeout: self.config.idle_timeout,
                        limits: limits.clone(),
                        refused: refused.clone(),
                        stop: stop.clone(),
                    };
                    tokio::spawn(conn.run(tcp, remote, (slot, drain.clone())));
                }
                () = &mut shutdown => break,
            }
        }
        // Not ready from here on, so the load balancer stops sending; the admin listener
        // stays up to say so until the process exits.
        self.health.set_draining();
        drop(listener);
        reloading.abort();
        if let Some(task) = following {
            task.abort();
        }
        tracing::info!(
            open = limits.open(),
            grace = ?self.config.shutdown_grace,
            "shutting down: no new connections; draining in-flight requests"
        );
        let _ = stopping.send(true);
        drop(drain);
        if tokio::time::timeout(self.config.shutdown_grace, drained.recv())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing remaining connections");
        }
        // Records still waiting for the shadow set's answer are written before the log
        // closes; each evaluation is bounded by --policy-timeout.
        if let Some(shadow) = &proxy.shadow {
            if !shadow.drained(self.config.shutdown_grace).await {
                tracing::warn!("shadow evaluations still running at exit; their records are lost");
            }
        }
        // The last `Audit` sender goes with the proxy; then the writer drains and exits.
        drop(proxy);
        let flushed = tokio::task::spawn_blocking(move || audit_writer.finish())
            .await
            .map_err(std::io::Error::other);
        for task in [admin_task, health_task].into_iter().flatten() {
            task.abort();
        }
        flushed
    }
}
