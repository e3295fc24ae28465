//! regate: an mTLS sidecar proxy that authorizes every request with Rego.
//!
//! # Layout
//!
//! The request flows one way:
//!
//! ```text
//! listener -> TLS handshake (tls) -> identity, once per connection (tls::identity)
//!          -> per request: check target (proxy::path) -> clean headers (proxy::forward)
//!          -> build input (policy::input) -> decide (policy) -> record (audit)
//!          -> forward (proxy::forward) or deny (proxy::error)
//! ```
//!
//! - [`config`]: flags and YAML merged into one validated [`Config`].
//! - [`tls`]: the rustls server configuration; [`tls::identity`] parses peer certificates.
//! - [`policy`]: the compiled policy set behind an `ArcSwap`, and the decision contract.
//! - [`proxy`]: the per-request service; [`proxy::error`] is the only error-to-response map.
//! - [`audit`]: one decision record per request, on its own stream.
//! - [`reload`]: watches files and publishes new policy and TLS state; keeps the last good.
//! - [`metrics`], [`admin`]: Prometheus metrics and the admin listener (side channels that
//!   only read).
//! - [`demo`], [`devcerts`]: the built-in echo application and dev certificate generator.
//!
//! [`App::load`] reads everything and reports every problem at once; [`App::serve`] takes its
//! listener and a shutdown future, so tests run a real server on `127.0.0.1:0`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod config;
pub mod demo;
pub mod devcerts;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod request;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

pub use config::Config;
use config::Upstream;
use policy::{PolicySet, PolicyStore};
use proxy::{Connection, Proxy};
use tls::identity::PeerIdentity;
use tls::{TlsState, TlsStore};

/// Everything loaded and checked, not yet listening.
pub struct App {
    config: Config,
    tls: TlsStore,
    policies: PolicyStore,
    reloader: Arc<reload::Reloader>,
    metrics: Arc<metrics::Metrics>,
    health: Arc<admin::Health>,
    audit: (audit::Audit, audit::AuditWriter),
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
        let tls = if tls_files.iter().all(|p| p.is_file()) {
            TlsState::load(&config.cert, &config.key, &config.client_ca)
                .map_err(|es| errors.extend(es.iter().map(|e| error_chain(e))))
                .ok()
        } else {
            None
        };
        // Bounds every evaluation; a runaway policy is an error (a deny), not a stuck worker.
        regorus::utils::limits::set_fallback_execution_timer_config(Some(
            regorus::utils::limits::ExecutionTimerConfig {
                limit: config.policy_timeout,
                check_interval: std::num::NonZeroU32::MIN.saturating_add(99),
            },
        ));
        let policies = if config.policies.is_dir() {
            PolicySet::load(&config.policies, &config.query)
                .map_err(|es| errors.extend(es.iter().map(|e| error_chain(e))))
                .ok()
        } else {
            None
        };
        let audit = audit::Audit::start(&config.decision_log)
            .map_err(|e| errors.push(format!("decision-log: cannot open it: {e}")))
            .ok();
        match (tls, policies, audit) {
            (Some(tls), Some(policies), Some(audit)) if errors.is_empty() => {
                let tls: TlsStore = Arc::new(ArcSwap::from_pointee(tls));
                let policies: PolicyStore = Arc::new(ArcSwap::from_pointee(policies));
                let metrics = Arc::new(metrics::Metrics::new());
                let reloader = Arc::new(reload::Reloader::new(
                    &config,
                    policies.clone(),
                    tls.clone(),
                    metrics.clone(),
                ));
                Ok(App {
                    config,
                    tls,
                    policies,
                    reloader,
                    metrics,
                    health: Arc::default(),
                    audit,
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
            shutdown: stop.clone(),
        });
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT.min(self.config.idle_timeout));
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
        let http = Arc::new(http);
        let reloading = tokio::spawn(
            self.reloader
                .clone()
                .run(self.config.watch, self.config.reload_interval),
        );
        let admin_task = match admin {
            Some(admin) => {
                tracing::info!(admin = %admin.local_addr()?, "admin endpoints are serving");
                let state = Arc::new(admin::AdminState {
                    metrics: self.metrics.clone(),
                    reloads: self.reloader.status.clone(),
                    policies: self.policies.clone(),
                    tls: self.tls.clone(),
                    health: self.health.clone(),
                    started: std::time::Instant::now(),
                });
                Some(tokio::spawn(admin::serve(admin, state)))
            }
            None => None,
        };
        // Every connection holds a sender; when the last is dropped, draining is done.
        let (drain, mut drained) = mpsc::channel::<()>(1);
        let limits = limits::ConnLimits::new(
            self.config.max_connections,
            self.config.max_connections_per_identity,
        );
        let accept_failed = limits::RateLimited::new(LOG_EVERY);
        let refused = Arc::new(limits::RateLimited::new(LOG_EVERY));
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
                    let conn = ConnTask {
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
        // The last `Audit` sender goes with the proxy; then the writer drains and exits.
        drop(proxy);
        let flushed = tokio::task::spawn_blocking(move || audit_writer.finish())
            .await
            .map_err(std::io::Error::other);
        if let Some(task) = admin_task {
            task.abort();
        }
        flushed
    }
}

/// HTTP/1.1 request heads must arrive within this (or `--idle-timeout`, if shorter).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams one HTTP/2 connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// After asking an idle connection to close (HTTP/2: GOAWAY), how long before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Log lines a client can trigger at will are written at most this often.
const LOG_EVERY: Duration = Duration::from_secs(1);

struct ConnTask {
    metrics: Arc<metrics::Metrics>,
    proxy: Arc<Proxy>,
    tls: TlsStore,
    http: Arc<auto::Builder<TokioExecutor>>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    limits: Arc<limits::ConnLimits>,
    refused: Arc<limits::RateLimited>,
    stop: watch::Receiver<bool>,
}

impl ConnTask {
    /// One client connection, from TCP accept to close. `held` lives as long as the
    /// connection: its place under `--max-connections`, and the shutdown drain.
    async fn run(self, tcp: TcpStream, remote: SocketAddr, held: (limits::Slot, mpsc::Sender<()>)) {
        let _ = tcp.set_nodelay(true);
        let local_addr = match tcp.local_addr() {
            Ok(a) => a,
            Err(_) => return,
        };
        // Load the TLS state per handshake: a reload applies to the next connection.
        let state = self.tls.load_full();
        let acceptor = TlsAcceptor::from(state.server_config.clone());
        let stream = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = handshake_failure(&e);
                self.metrics.handshake_failed(reason);
                tracing::info!(client.addr = %remote, reason, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                self.metrics.handshake_failed("timeout");
                tracing::info!(client.addr = %remote, "TLS handshake timed out");
                return;
            }
        };
        self.metrics.handshake_ok();
        let (_, session) = stream.get_ref();
        // rustls verified the chain; without a certificate the handshake could not finish.
        let Some(chain) = session.peer_certificates().map(<[_]>::to_vec) else {
            return;
        };
        let Some(leaf) = chain.first() else {
            return;
        };
        let peer = match PeerIdentity::from_der(leaf) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(client.addr = %remote, error = %e, "peer certificate unreadable");
                return;
            }
        };
        // One certificate cannot hold every connection: a client the policy denies outright
        // could otherwise sit on silent connections until nobody else gets one.
        let Some(identity_slot) = self.limits.admit_identity(&peer.fingerprint_sha256) else {
            self.metrics.connection_refused("per_identity");
            if let Some(held_back) = self.refused.check() {
                tracing::warn!(
                    client.addr = %remote,
                    peer.serial = %peer.serial,
                    held_back,
                    "connection refused: the certificate holds --max-connections-per-identity"
                );
            }
            return;
        };
        let open = self.metrics.connection();
        let conn = Arc::new(Connection::new(
            &self.proxy,
            chain,
            peer,
            &state,
            remote,
            local_addr,
            Box::new((held, identity_slot, open)),
        ));
        drop(state);
        let span = tracing::info_span!(
            "conn",
            peer.id = %conn.peer.spiffe_id.as_ref().map_or(conn.peer.subject.as_str(), |s| s.id.as_str()),
            client.addr = %remote,
        );
        let proxy = self.proxy.clone();
        let conn_span = span.clone();
        let served = conn.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let conn = served.clone();
            // HTTP/2 streams run as tasks of their own: name the connection as parent. At debug
            // level, so the default (info) pays nothing per request; the info-level events a
            // request logs carry request.id themselves.
            let span = tracing::debug_span!(parent: &conn_span, "request", request.id = tracing::field::Empty);
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(&conn, req).await) }
                .instrument(span)
        });
        let serving = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        self.close_when_done(serving, &conn).instrument(span).await;
    }

    /// Serve the connection until it ends, asking it to close once it has been idle for
    /// `--idle-timeout` (from the handshake on, so a client that never sends a byte is
    /// closed too) or when shutdown begins. A connection asked to close for idleness that has
    /// not closed after [`CLOSE_GRACE`] is dropped.
    async fn close_when_done<C>(mut self, serving: C, conn: &Connection)
    where
        C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Graceful,
    {
        tokio::pin!(serving);
        let mut closing: Option<tokio::time::Instant> = None;
        let mut draining = *self.stop.borrow();
        if draining {
            serving.as_mut().graceful();
        }
        loop {
            let idle =
                tokio::time::Instant::from_std(conn.activity.idle_deadline(self.idle_timeout));
            tokio::select! {
                result = serving.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(idle), if closing.is_none() && !draining => {
                    if conn.activity.idle_for(self.idle_timeout) {
                        tracing::debug!("closing an idle connection");
                        self.metrics.idle_closed();
                        serving.as_mut().graceful();
                        closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                }
                () = sleep_until_some(closing) => return,
                () = proxy::tunnel::stopped(&mut self.stop), if !draining => {
                    draining = true;
                    serving.as_mut().graceful();
                }
            }
        }
    }
}

/// A served connection that can be asked to finish what it is doing and close.
trait Graceful {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> Graceful for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A bounded name for why a handshake failed, for metrics.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "certificate_expired",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown_issuer",
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::NoApplicationProtocol | Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "tls_error",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "eof",
        None => "io_error",
    }
}

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
