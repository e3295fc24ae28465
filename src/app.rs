//! [`App`]: everything `regate run` loads and checks ([`App::load`]), then serves
//! ([`App::serve`]): the request path built from the config, the side channels beside it
//! (reloads, the Workload API, the admin and health listeners, the trace exporter), the
//! accept loop, and the shutdown that drains connections and then the decision log and the
//! spans still queued.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::{self, Config, Upstream};
use crate::error;
use crate::policy::{self, PolicySet, PolicyStore};
use crate::proxy::{self, Proxy};
use crate::tls::{self, TlsState, TlsStore};
use crate::{
    admin, audit, delegation, identities, limits, listener, metrics, reload, revocations, telemetry,
};

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
    /// Keep remote issuers' keys current once serving; taken by [`App::serve`].
    fetchers: Vec<delegation::jwks::Fetcher>,
    /// regate as an OAuth protected resource (`oauth_resource:`).
    resource: Option<Arc<proxy::resource::ProtectedResource>>,
    /// Serves /healthz, /readyz and /metrics alone (`--health-listen`).
    health_listener: Option<TcpListener>,
    /// `--shadow-policies`, loaded; none without the flag.
    shadow: Option<PolicyStore>,
    /// Approval issuers, the local key and pending approval requests; none without
    /// `approvals:`.
    approvals: Option<Arc<crate::approvals::Approvals>>,
    /// Posts approval requests to `approvals.webhook` once serving; taken by [`App::serve`].
    webhook: Option<crate::approvals::webhook::Delivery>,
    /// The ETags of the bundles loaded at start (main, shadow), to poll from.
    etags: [Option<String>; 2],
    /// `--otlp-endpoint`'s exporter, built; none without the flag (tracing off).
    tracing: Option<telemetry::Exporter>,
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
        let mut etags = [None, None];
        let policies = if let Some(bundle) = &config.bundle {
            load_bundle(
                bundle,
                &config,
                &config.policy_options(),
                "bundle",
                &mut errors,
            )
            .map(|(set, etag)| {
                etags[0] = etag;
                set
            })
        } else if config.policies.is_dir() {
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
            .map(|r| match &config.revocations_feed {
                Some(feed) => r.with_feed(feed.max_age),
                None => r,
            })
            .map_err(|e| errors.push(error::chain(&e)))
            .ok();
        let metrics = Arc::new(metrics::Metrics::new());
        let (approvals, webhook) = match load_approvals(&config, &mut errors) {
            Some((approvals, webhook)) => (Some(approvals), webhook),
            None => (None, None),
        };
        let delegation = delegation::Verifier::load(config.delegation.clone())
            .map_err(|es| errors.extend(es))
            .ok();
        let fetchers = delegation.as_ref().and_then(|verifier| {
            let staleness = config.delegation.max_staleness;
            // The approval issuers' remote keys are fetched alike.
            let approval_issuers = approvals.iter().flat_map(|a| a.verifier.issuers());
            let issuers = verifier.issuers().iter().chain(approval_issuers);
            delegation::jwks::fetchers(issuers, staleness, &metrics)
                .map_err(|es| errors.extend(es))
                .ok()
        });
        let tracing = config.tracing.as_ref().and_then(|settings| {
            telemetry::Exporter::build(settings)
                .map_err(|e| errors.push(error::chain(&e)))
                .ok()
        });
        // A broken shadow set is reported with everything else, as a broken main set is (a
        // missing directory is already among the config's errors).
        let shadow_bundle = config.shadow.as_ref().and_then(|s| s.bundle.as_ref());
        let shadow = match (config.shadow_policy_options(), shadow_bundle) {
            (Some((_, options)), Some(bundle)) => {
                load_bundle(bundle, &config, &options, "shadow_bundle", &mut errors).map(
                    |(set, etag)| {
                        etags[1] = etag;
                        set
                    },
                )
            }
            (Some((dir, options)), None) if dir.is_dir() => PolicySet::load(&dir, &options)
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
        match (tls, policies, audit, revocations, delegation.zip(fetchers)) {
            (
                Some(tls),
                Some(policies),
                Some(audit),
                Some(revocations),
                Some((delegation, fetchers)),
            ) if errors.is_empty() => {
                let revocations = Arc::new(revocations);
                let resource = config.oauth_resource.clone().map(|settings| {
                    let header = delegation.token_header().cloned();
                    Arc::new(proxy::resource::ProtectedResource::new(settings, header))
                });
                let delegation = Arc::new(delegation);
                let tls: TlsStore = Arc::new(ArcSwap::from_pointee(tls));
                let policies: PolicyStore = Arc::new(ArcSwap::from_pointee(policies));
                let shadow: Option<PolicyStore> =
                    shadow.map(|set| Arc::new(ArcSwap::from_pointee(set)));
                let shadow_source = config.shadow_policy_options().zip(shadow.clone()).map(
                    |((dir, options), store)| reload::ShadowSource {
                        dir,
                        from_bundle: shadow_bundle.is_some(),
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
                    fetchers,
                    resource,
                    approvals,
                    webhook,
                    health_listener: None,
                    shadow,
                    etags,
                    tracing,
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
        mut self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Upstream::Url(authority) = self.config.upstream.clone() else {
            return Err(std::io::Error::other("the demo upstream was not started"));
        };
        let (stopping, stop) = watch::channel(false);
        let identities = Arc::new(identities::Inventory::new(
            self.config.max_identities,
            self.metrics.identities(),
        ));
        let (tracing, exporting) = self.start_tracing();
        let proxy = self.proxy(authority, stop.clone(), identities.clone(), tracing);
        let health = self.health_listener.take();
        let fetchers = std::mem::take(&mut self.fetchers);
        let webhook = self.webhook.take();
        let side = self.side_channels(&proxy, identities, admin, health, fetchers, webhook)?;
        // Every connection holds a sender; when the last is dropped, draining is done.
        let (drain, mut drained) = mpsc::channel::<()>(1);
        let limits = limits::ConnLimits::new(
            self.config.max_connections,
            self.config.max_connections_per_identity,
        );
        self.health.set_serving();
        tracing::info!(
            max_connections = self.config.max_connections,
            per_identity = self.config.max_connections_per_identity,
            idle_timeout = ?self.config.idle_timeout,
            "connection limits"
        );
        tracing::info!(listen = %listener.local_addr()?, "regate is serving");
        let accepting = Accepting {
            proxy: &proxy,
            http: Arc::new(self.http()),
            limits: &limits,
            stop,
            drain: &drain,
        };
        accepting.run(&self, &listener, shutdown).await;
        // Not ready from here on, so the load balancer stops sending; the admin listener
        // stays up to say so until the process exits.
        self.health.set_draining();
        drop(listener);
        side.stop_watching();
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
        // The last `Audit` sender goes with the proxy; then the writer drains and exits,
        // letting records wait for the shadow set's answer up to the grace (each shadow
        // evaluation is bounded by --policy-timeout).
        drop(proxy);
        let (_, audit_writer) = self.audit;
        let grace = self.config.shutdown_grace;
        // Spans still queued go out within the same grace as the records, beside them.
        let spans_flushed = async {
            if let Some(exporting) = exporting {
                exporting.finish(grace).await;
            }
        };
        let records_flushed =
            tokio::task::spawn_blocking(move || audit_writer.finish_within(grace));
        let ((), flushed) = tokio::join!(spans_flushed, records_flushed);
        side.stop_serving();
        flushed.map_err(std::io::Error::other)
    }

    /// The trace exporter, started on this runtime when `--otlp-endpoint` is set: the handle
    /// requests hand their spans to, and the task to flush at shutdown.
    fn start_tracing(&mut self) -> (telemetry::Tracing, Option<telemetry::Exporting>) {
        let (Some(exporter), Some(settings)) = (self.tracing.take(), &self.config.tracing) else {
            return (telemetry::Tracing::off(), None);
        };
        tracing::info!(
            endpoint = %settings.endpoint,
            sample_ratio = settings.sample_ratio,
            "exporting a span per request over OTLP"
        );
        let (handle, exporting) = exporter.start(self.metrics.clone());
        (handle, Some(exporting))
    }

    /// The request path, as the config says.
    fn proxy(
        &self,
        authority: http::uri::Authority,
        stop: watch::Receiver<bool>,
        identities: Arc<identities::Inventory>,
        tracing: telemetry::Tracing,
    ) -> Arc<Proxy> {
        let config = &self.config;
        let metrics = &self.metrics;
        let admission = proxy::Admission {
            rules: config.request_rules.clone(),
            delegation: self.delegation.clone(),
            challenge: self
                .resource
                .as_ref()
                .map(|r| r.challenge())
                .unwrap_or_default(),
            inspection: proxy::Inspection {
                limit: config.inspect_body_limit,
                budget: limits::BodyBudget::new(
                    config.inspect_body_budget,
                    config.inspect_body_budget_per_identity,
                    metrics.inspected_body_bytes(),
                ),
                timeout: config.inspect_body_timeout,
            },
            replace_request_id: config.replace_request_id,
            origins: config.mcp.allowed_origins.clone(),
            approvals: self.approvals.clone().map(|approvals| {
                Arc::new(proxy::approval::ApprovalStep {
                    approvals,
                    audit: self.audit.0.clone(),
                })
            }),
        };
        let decider = proxy::Decider {
            policies: self.policies.clone(),
            evaluator: policy::Evaluator::new(config.policy_timeout, metrics.evaluations_running()),
            shadow: self.shadow.clone().map(|store| {
                proxy::shadow::Shadow::new(store, config.policy_timeout, metrics.clone())
            }),
            mode: config.mode,
            metrics: metrics.clone(),
        };
        let store = match &config.budgets.redis {
            // Checked at config time; a URL that stopped parsing is as good as no store.
            Some(url) => crate::budgets::redis::Store::new(url, config.budgets.timeout)
                .map(crate::budgets::Store::Redis)
                .unwrap_or_else(|_| crate::budgets::Store::Memory(Default::default())),
            None => crate::budgets::Store::Memory(Default::default()),
        };
        let budgets = proxy::budget::Budgets {
            store,
            metrics: metrics.clone(),
        };
        let recorder = proxy::record::Recorder {
            audit: self.audit.0.clone(),
            metrics: metrics.clone(),
            record_input: config.decision_log_input,
            redaction: config.redaction.clone(),
            failure_log: Arc::new(limits::RateLimited::new(listener::LOG_EVERY)),
            tracing,
        };
        Arc::new(Proxy {
            admission,
            trust: Arc::new(proxy::trust::Trust {
                tls: self.tls.clone(),
                revocations: self.revocations.clone(),
            }),
            decider: Arc::new(decider),
            budgets,
            upstream: proxy::forward::Upstream::new(
                authority,
                config.upstream_protocol,
                config.upstream_timeout,
            ),
            limits: proxy::Limits {
                upstream_total: Arc::new(Semaphore::new(config.max_upstream_requests)),
                upstream_per_connection: config.max_upstream_requests_per_connection,
            },
            recorder,
            resource: self.resource.clone(),
            context: policy::input::context_value(&config.context),
            trust_domains: config.trust_domains.clone(),
            identities,
            changes: self.reloader.changes(),
            shutdown: stop,
        })
    }

    /// HTTP/1.1 and HTTP/2 as served to clients.
    fn http(&self) -> auto::Builder<TokioExecutor> {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(listener::HEADER_READ_TIMEOUT.min(self.config.idle_timeout));
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(listener::MAX_CONCURRENT_STREAMS);
        http
    }

    /// Start what runs beside the request path: reloads, the Workload API, the admin and
    /// health listeners.
    fn side_channels(
        &self,
        proxy: &Proxy,
        identities: Arc<identities::Inventory>,
        admin: Option<TcpListener>,
        health: Option<TcpListener>,
        fetchers: Vec<delegation::jwks::Fetcher>,
        webhook: Option<crate::approvals::webhook::Delivery>,
    ) -> std::io::Result<SideChannels> {
        let reloading = tokio::spawn(
            self.reloader
                .clone()
                .run(self.config.watch, self.config.reload_interval),
        );
        // Each remote issuer's keys, fetched now and kept current; until the first fetch
        // lands, /readyz says regate is not ready.
        let fetching = fetchers.into_iter().map(|f| tokio::spawn(f.run()));
        // Approval requests, posted to the webhook off the request path.
        let posting = webhook.map(|delivery| tokio::spawn(delivery.run()));
        let bundles = [
            (self.config.bundle.clone(), reload::Set::Main),
            (
                self.config.shadow.as_ref().and_then(|s| s.bundle.clone()),
                reload::Set::Shadow,
            ),
        ];
        let polling: Vec<_> = bundles
            .into_iter()
            .filter_map(|(settings, set)| {
                let etag = self.etags[set as usize].clone();
                let reloader = self.reloader.clone();
                settings.map(|s| tokio::spawn(crate::bundle::poll(s, set, reloader, etag)))
            })
            .collect();
        let feed = self.config.revocations_feed.clone().map(|settings| {
            let recorded = revocations::record::Recorded {
                audit: proxy.recorder.audit.clone(),
                metrics: self.metrics.clone(),
            };
            tokio::spawn(crate::bundle::feed::poll(
                settings,
                self.revocations.clone(),
                recorded,
            ))
        });
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
            audit: proxy.recorder.audit.clone(),
            revocation_changes: revocations::record::Recorded {
                audit: proxy.recorder.audit.clone(),
                metrics: self.metrics.clone(),
            },
            spiffe_socket: self.config.spiffe_socket.clone(),
            identities,
            shadow: self.shadow.clone(),
            mode: self.config.mode,
            hosts: admin::AdminHosts::new(self.config.admin_hosts.clone()),
            delegation: self.delegation.clone(),
            approvals: self.approvals.clone(),
        });
        let admin_task = match admin {
            Some(admin) => {
                tracing::info!(admin = %admin.local_addr()?, "admin endpoints are serving");
                Some(tokio::spawn(admin::serve(admin, admin_state.clone())))
            }
            None => None,
        };
        let health_task = match health {
            Some(health) => {
                tracing::info!(health = %health.local_addr()?, "health and metrics endpoints are serving");
                Some(tokio::spawn(admin::serve_health(health, admin_state)))
            }
            None => None,
        };
        Ok(SideChannels {
            watching: [Some(reloading), following, feed, posting]
                .into_iter()
                .flatten()
                .chain(fetching)
                .chain(polling)
                .collect(),
            serving: [admin_task, health_task].into_iter().flatten().collect(),
        })
    }
}

/// Approvals as the config names them: each issuer's key store (a JWKS file read now,
/// remote keys fetched once serving), the local key read, and the webhook's delivery task (not
/// yet started); problems added to `errors`. `None` without approvals.
fn load_approvals(
    config: &Config,
    errors: &mut Vec<String>,
) -> Option<(
    Arc<crate::approvals::Approvals>,
    Option<crate::approvals::webhook::Delivery>,
)> {
    use crate::approvals::token::{LocalSigner, Verifier};
    let settings = config.approvals.as_ref()?;
    let local = match &settings.local_key {
        Some(path) if path.is_file() => match audit::signing::SigningKey::load(path) {
            Ok(key) => Some(LocalSigner::new(key)),
            Err(e) => {
                errors.push(format!("approvals: local_key: {}", error::chain(&e)));
                None
            }
        },
        _ => None,
    };
    let verifier = Verifier::load(
        &settings.issuers,
        local.as_ref(),
        config.delegation.leeway,
        config.delegation.max_staleness,
    )
    .map_err(|es| errors.extend(es))
    .ok()?;
    let (webhook, delivery) = match &settings.webhook {
        None => (None, None),
        Some(url) => {
            let roots = match (&settings.webhook_ca, url.starts_with("https:")) {
                (Some(ca), _) => delegation::jwks::roots_from(ca).map(Some),
                (None, true) => delegation::jwks::system_roots().map(Some),
                (None, false) => Ok(None),
            };
            match roots {
                Ok(roots) => {
                    let client = delegation::jwks::fetch::Client::new(roots);
                    let (webhook, delivery) =
                        crate::approvals::webhook::webhook(url.clone(), client);
                    (Some(webhook), Some(delivery))
                }
                Err(e) => {
                    errors.push(format!("approvals: webhook: {e}"));
                    return None;
                }
            }
        }
    };
    let approvals = crate::approvals::Approvals {
        verifier,
        local,
        pending: Default::default(),
        webhook,
    };
    Some((Arc::new(approvals), delivery))
}

/// The policy set a bundle holds at start, compiled, and the ETag to poll from; every
/// problem added to `errors` under `name`.
fn load_bundle(
    bundle: &crate::bundle::BundleSettings,
    config: &Config,
    options: &policy::Options,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<(PolicySet, Option<String>)> {
    let start = crate::bundle::start(bundle)
        .map_err(|e| errors.push(format!("{name}: {e}")))
        .ok()?;
    tracing::info!(
        url = %bundle.url,
        revision = %start.sources.revision,
        from = start.from,
        "policy bundle loaded"
    );
    let crate::bundle::Start {
        sources,
        etag,
        downloaded,
        ..
    } = start;
    let compiled = PolicySet::compile(sources, options)
        .map_err(|es| errors.extend(es.iter().map(|e| format!("{name}: {}", error::chain(e)))))
        .ok()?;
    if let Some(bytes) = &downloaded {
        crate::bundle::keep_last_good(bundle, bytes, etag.as_deref().unwrap_or_default());
    }
    Some((
        compiled.with_decision_cache(config.decision_cache_entries),
        etag,
    ))
}

/// What runs beside the request path while regate serves.
struct SideChannels {
    /// Reloads, the Workload API, the JWKS fetchers: stopped when shutdown begins.
    watching: Vec<tokio::task::JoinHandle<()>>,
    /// The admin and health listeners: stopped last, so they say "draining" meanwhile.
    serving: Vec<tokio::task::JoinHandle<()>>,
}

impl SideChannels {
    fn stop_watching(&self) {
        for task in &self.watching {
            task.abort();
        }
    }

    fn stop_serving(&self) {
        for task in &self.serving {
            task.abort();
        }
    }
}

/// The accept loop's share of the serving state.
struct Accepting<'a> {
    proxy: &'a Arc<Proxy>,
    http: Arc<auto::Builder<TokioExecutor>>,
    limits: &'a Arc<limits::ConnLimits>,
    stop: watch::Receiver<bool>,
    /// Each connection holds a clone until it ends.
    drain: &'a mpsc::Sender<()>,
}

impl Accepting<'_> {
    /// Accept connections until `shutdown` completes, each served on a task of its own.
    async fn run(self, app: &App, listener: &TcpListener, shutdown: impl Future<Output = ()>) {
        let accept_failed = limits::RateLimited::new(listener::LOG_EVERY);
        let refused = Arc::new(limits::RateLimited::new(listener::LOG_EVERY));
        tokio::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        if let Some(held_back) = accept_failed.check() {
                            tracing::warn!(error = %e, held_back, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return,
            };
            // At the limit, close at once: the client learns now, not after a timeout, and
            // the descriptor is back for the next one.
            let Some(slot) = self.limits.admit() else {
                app.metrics.connection_refused("max_connections");
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
                metrics: app.metrics.clone(),
                proxy: self.proxy.clone(),
                tls: app.tls.clone(),
                http: self.http.clone(),
                handshake_timeout: app.config.handshake_timeout,
                idle_timeout: app.config.idle_timeout,
                limits: self.limits.clone(),
                refused: refused.clone(),
                stop: self.stop.clone(),
            };
            tokio::spawn(conn.run(tcp, remote, (slot, self.drain.clone())));
        }
    }
}
