//! The admin listener (`--admin`, loopback by default): `/metrics`, `/healthz`, `/readyz`,
//! `/status`, `/identities`, and the kill switch `/revocations`, on plain HTTP/1.1, apart
//! from the mTLS listener; and the health listener (`--health-listen`), which serves
//! `/metrics`, `/healthz` and `/readyz` alone.
//!
//! It reads metrics, the reload status, the identity inventory and the current TLS and
//! policy state; the only thing it changes is the revocations (`POST /revocations`,
//! `DELETE /revocations/{id}`), through [`Revocations`], which the request path reads.
//! Nothing here is on the request path. The admin listener answers only requests that
//! name it in `Host` (`admin/host.rs`); the health listener answers any.

mod approvals;
mod host;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::net::TcpListener;

use crate::audit::Audit;
use crate::identities::Inventory;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;
use crate::reload::{KindStatus, ReloadStatus};
use crate::revocations::record::{Change, Recorded};
use crate::revocations::{RevocationError, Revocations};
use crate::tls::TlsStore;
pub use host::AdminHosts;

/// Whether regate should receive traffic: serving, and not draining.
#[derive(Debug, Default)]
pub struct Health {
    serving: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Certificates and policy are loaded before anything is served, so serving and not
    /// draining is ready.
    pub fn ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && !self.draining()
    }
}

/// What the admin endpoints read: values the request path and the reloader publish.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub reloads: Arc<ReloadStatus>,
    pub policies: PolicyStore,
    pub tls: TlsStore,
    pub health: Arc<Health>,
    pub started: Instant,
    pub revocations: Arc<Revocations>,
    /// The decision log, whose chain head `/status` shows.
    pub audit: Audit,
    /// Where revocation changes are told (the decision log and the metrics).
    pub revocation_changes: Recorded,
    /// The Workload API the certificate and bundles come from, if not files.
    pub spiffe_socket: Option<String>,
    /// What `GET /identities` lists, as the request path published it.
    pub identities: Arc<Inventory>,
    /// The shadow policy set, when there is one.
    pub shadow: Option<PolicyStore>,
    /// `--mode`, shown at the top level of `/status`.
    pub mode: crate::config::Mode,
    /// `--admin-host`: names the admin listener answers to besides its addresses.
    pub hosts: AdminHosts,
    /// The delegation issuers and their keys: not ready until every issuer has keys.
    pub delegation: Arc<crate::delegation::Verifier>,
    /// Approval requests waiting for a person, and the local key that approves them.
    pub approvals: Option<Arc<crate::approvals::Approvals>>,
}

impl AdminState {
    /// Ready: serving, not draining, every delegation issuer's keys fetched at least once,
    /// and a revocations feed's list received once. Keys gone stale later do not make regate unready: a provider's outage would
    /// otherwise take every replica out of the load balancer, including for requests that
    /// carry no token; those tokens are refused (`issuer_unavailable`) instead.
    fn ready(&self) -> Result<(), String> {
        match self.health.ready() {
            true => self
                .delegation
                .ready()
                .and_then(|()| self.revocations.feed_ready()),
            false => Err("not ready".into()),
        }
    }
}

/// The largest revocation request body read.
const MAX_BODY: usize = 16 * 1024;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy)]
enum Endpoints {
    /// Everything: the admin listener (`--admin`, loopback by default).
    All,
    /// `/healthz`, `/readyz` and `/metrics` alone, which change nothing and show no
    /// certificate, key or policy source (the metrics do carry deny reasons and the policy
    /// revision): `--health-listen`, for kubelet probes and Prometheus on the pod's address,
    /// while the kill switch and `/status` stay on loopback.
    Health,
}

/// Serve the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    accept(listener, state, Endpoints::All).await
}

/// Serve `/healthz`, `/readyz` and `/metrics` alone on `listener` until the task is dropped.
pub async fn serve_health(listener: TcpListener, state: Arc<AdminState>) {
    accept(listener, state, Endpoints::Health).await
}

/// The health listener faces the pod network: at most this many connections at once, each
/// closed after [`HEALTH_CONNECTION_LIFETIME`], so nobody there can hold its descriptors.
/// Probes and scrapes open a connection, or reuse one briefly; a refused one is retried.
const HEALTH_CONNECTIONS: usize = 64;
const HEALTH_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

async fn accept(listener: TcpListener, state: Arc<AdminState>, endpoints: Endpoints) {
    let slots = Arc::new(tokio::sync::Semaphore::new(match endpoints {
        Endpoints::Health => HEALTH_CONNECTIONS,
        Endpoints::All => tokio::sync::Semaphore::MAX_PERMITS,
    }));
    let Ok(bound) = listener.local_addr() else {
        tracing::error!("the admin listener has no address; it serves nothing");
        return;
    };
    loop {
        let (tcp, client) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        // What the client reached: on 0.0.0.0, the address it named (the pod IP, say).
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let response = match (endpoints, req.uri().path()) {
                        (Endpoints::Health, _) => probes(&state, &req),
                        (Endpoints::All, _) if !state.hosts.named_by(&req, bound, local) => {
                            tracing::debug!(
                                host = ?req.headers().get(header::HOST),
                                client.addr = %client,
                                "admin request for another host refused"
                            );
                            problem(
                                StatusCode::MISDIRECTED_REQUEST,
                                "this admin listener answers only requests naming it in Host: \
                                 its address, localhost, or an --admin-host name",
                            )
                        }
                        (Endpoints::All, "/revocations") => revocations(&state, req, client).await,
                        (Endpoints::All, path)
                            if path == "/approvals" || path.starts_with("/approvals/") =>
                        {
                            approvals::handle(&state, req).await
                        }
                        (Endpoints::All, path) if path.starts_with("/revocations/") => {
                            revocations(&state, req, client).await
                        }
                        (Endpoints::All, _) => route(&state, &req),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service);
            match endpoints {
                Endpoints::Health => {
                    let _ = tokio::time::timeout(HEALTH_CONNECTION_LIFETIME, connection).await;
                }
                Endpoints::All => {
                    let _ = connection.await;
                }
            }
        });
    }
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/identities" => match limit(req.uri().query()) {
            Ok(limit) => json_response(StatusCode::OK, &json!(state.identities.listing(limit))),
            Err(detail) => problem(StatusCode::BAD_REQUEST, detail),
        },
        "/status" => {
            let mut r = text(StatusCode::OK, status(state).to_string());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        _ => probes(state, req),
    }
}

/// The endpoints both listeners serve.
fn probes(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            jwks_ages(state);
            let mut r = text(StatusCode::OK, state.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.health.draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => match state.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /revocations`, `POST /revocations`, `DELETE /revocations/{id}`.
async fn revocations(
    state: &AdminState,
    req: Request<Incoming>,
    client: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    let id = path.strip_prefix("/revocations/");
    // A browser on this host must not be able to revoke or lift: browsers send `Origin` with
    // every cross-site (and DNS-rebound) POST and DELETE; curl and operators' tools do not.
    let changes = matches!(*req.method(), Method::POST | Method::DELETE);
    if changes && req.headers().contains_key(header::ORIGIN) {
        return problem(
            StatusCode::FORBIDDEN,
            "revocations are not changed from a browser (the request has an Origin)",
        );
    }
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if *req.method() == Method::POST && !json && req.headers().contains_key(header::CONTENT_TYPE) {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the revocation as application/json",
        );
    }
    match (req.method().clone(), id) {
        (Method::GET | Method::HEAD, None) => json_response(
            StatusCode::OK,
            &json!({"revocations": state.revocations.list()}),
        ),
        (Method::POST, None) => {
            let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return problem(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("the body is over {MAX_BODY} bytes"),
                    )
                }
            };
            match state.revocations.add(&body) {
                Ok((revocation, added)) => {
                    let in_force = state.revocations.len();
                    if added {
                        state.revocation_changes.changed(
                            Change::Added {
                                revocation: &revocation,
                                client: client.to_string(),
                            },
                            in_force,
                        );
                        tracing::warn!(
                            id = %revocation.id,
                            target = ?revocation.target,
                            reason = %revocation.reason,
                            "revocation added; matching requests are denied and connections closed"
                        );
                    }
                    let status = if added {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    json_response(status, &json!(revocation))
                }
                Err(RevocationError::Invalid(message)) => {
                    problem(StatusCode::BAD_REQUEST, &message)
                }
                Err(e @ RevocationError::Full { .. }) => {
                    tracing::warn!(error = %e, "revocation refused");
                    problem(
                        StatusCode::INSUFFICIENT_STORAGE,
                        &format!(
                            "{e}; nothing changed: lift revocations no longer needed \
                             (DELETE /revocations/{{id}}) or raise --max-revocations"
                        ),
                    )
                }
                Err(e) => {
                    tracing::error!(error = %crate::error::chain(&e), "revocation not kept");
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the revocation could not be written to the revocation file; nothing changed",
                    )
                }
            }
        }
        (Method::DELETE, Some(id)) => match state.revocations.remove(id) {
            Ok(Some(revocation)) => {
                let in_force = state.revocations.len();
                state.revocation_changes.changed(
                    Change::Removed {
                        revocation: &revocation,
                        client: client.to_string(),
                    },
                    in_force,
                );
                tracing::warn!(id = %revocation.id, "revocation removed");
                json_response(StatusCode::OK, &json!(revocation))
            }
            Ok(None) => problem(StatusCode::NOT_FOUND, "no revocation has this id"),
            Err(e) => {
                tracing::error!(error = %crate::error::chain(&e), "revocation removal not kept");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the revocation file could not be written; nothing changed",
                )
            }
        },
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or POST /revocations, DELETE /revocations/{id}\n",
        ),
    }
}

/// `?limit=N` of `GET /identities`: at most N entries, the most recently seen.
fn limit(query: Option<&str>) -> Result<Option<usize>, &'static str> {
    let mut limit = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("limit", n)) => match n.parse::<usize>() {
                Ok(n) => limit = Some(n),
                Err(_) => return Err("limit must be a whole number"),
            },
            _ => return Err("the only parameter is limit"),
        }
    }
    Ok(limit)
}

pub(super) fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut r = text(status, format!("{value}\n"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "status": status.as_u16(),
        "title": status.canonical_reason().unwrap_or_default(),
        "detail": detail,
    });
    let mut r = json_response(status, &body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn rfc3339(t: Option<SystemTime>) -> serde_json::Value {
    t.and_then(|t| OffsetDateTime::from(t).format(&Rfc3339).ok())
        .map_or(serde_json::Value::Null, serde_json::Value::from)
}

fn unix_rfc3339(unix: i64) -> serde_json::Value {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(serde_json::Value::Null, serde_json::Value::from)
}

fn kind(status: &std::sync::Mutex<KindStatus>) -> serde_json::Value {
    let s = status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    json!({
        "last_attempt": rfc3339(s.last_attempt),
        "last_success": rfc3339(s.last_success),
        "last_result": match (&s.last_attempt, &s.last_error) {
            (None, _) => "none",
            (Some(_), None) => "success",
            (Some(_), Some(_)) => "failure",
        },
        "last_error": s.last_error,
        "successes": s.successes,
        "failures": s.failures,
    })
}

/// Whether the set's answers are kept, by what, and how often they served.
fn decision_cache(policy: &crate::policy::PolicySet) -> serde_json::Value {
    use crate::policy::analysis::Reads;
    let keys = match &policy.reads {
        Reads::Paths(paths) => paths
            .iter()
            .map(|p| crate::policy::analysis::display(p))
            .collect::<Vec<_>>(),
        Reads::Uncacheable(_) => Vec::new(),
    };
    match (policy.cache(), &policy.reads) {
        (Some(cache), _) => json!({
            "enabled": true,
            "keys": keys,
            "entries": cache.entries(),
            "hits": cache.hits(),
            "misses": cache.misses(),
        }),
        (None, Reads::Uncacheable(why)) => json!({"enabled": false, "reason": why}),
        (None, Reads::Paths(_)) => {
            json!({"enabled": false, "reason": "--decision-cache-entries is 0"})
        }
    }
}

/// The head of the decision log's hash chain: a copy off the log, to anchor it.
fn decision_log(state: &AdminState) -> serde_json::Value {
    let (seq, chain_head) = state.audit.chain_head();
    json!({"seq": seq, "chain_head": chain_head})
}

/// The shadow set, in `/status`: what is compared, and how its reloads went.
fn shadow_policy(shadow: &crate::policy::PolicySet) -> serde_json::Value {
    json!({
        "revision": &*shadow.revision,
        "query": &*shadow.query,
        "decision_cache": decision_cache(shadow),
        "sample_evaluation_error": shadow.sample_error.as_deref(),
    })
}

/// Each delegation issuer in `/status`: where its keys come from, which key ids it holds,
/// when they were last fetched (or read), and the last fetch's error.
fn issuers(verifier: &crate::delegation::Verifier) -> serde_json::Value {
    use crate::delegation::KeySource;
    let now = SystemTime::now();
    let list: Vec<_> = verifier
        .issuers()
        .iter()
        .map(|issuer| {
            let keys = issuer.store.current();
            let fetched = issuer.store.status();
            let (source, file) = match &issuer.source {
                KeySource::File(path) => ("jwks_file", Some(path.display().to_string())),
                KeySource::Uri(_) => ("jwks_uri", None),
                KeySource::Discovery => ("discovery", None),
            };
            json!({
                "issuer": issuer.config.issuer,
                "source": source,
                "jwks_file": file,
                "jwks_uri": fetched.jwks_uri,
                "key_ids": keys.as_ref().map(|k| k.kids.clone()).unwrap_or_default(),
                "keys_fetched_at": rfc3339(keys.as_ref().map(|k| k.fetched_at)),
                "keys_age_seconds": keys.as_ref().map(|k| {
                    now.duration_since(k.fetched_at).unwrap_or_default().as_secs()
                }),
                "usable": issuer.store.usable(now).is_some(),
                "last_fetch": rfc3339(fetched.last_attempt),
                "last_success": rfc3339(fetched.last_success),
                "last_error": fetched.last_error,
            })
        })
        .collect();
    json!(list)
}

/// The age of each issuer's keys, set just before the metrics are encoded.
fn jwks_ages(state: &AdminState) {
    let now = SystemTime::now();
    for issuer in state.delegation.issuers() {
        if let Some(keys) = issuer.store.current() {
            let age = now.duration_since(keys.fetched_at).unwrap_or_default();
            state.metrics.jwks_age(&issuer.config.issuer, age);
        }
    }
}

fn status(state: &AdminState) -> serde_json::Value {
    let policy = state.policies.load();
    let tls = state.tls.load();
    let local = &tls.cert.local;
    json!({
        // In audit mode nothing the policy denies is refused: worth seeing first.
        "mode": state.mode.as_str(),
        "shadow_policy": state.shadow.as_ref().map(|store| shadow_policy(&store.load())),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "ready": state.ready().is_ok(),
        "draining": state.health.draining(),
        "open_connections": state.metrics.open_connections(),
        "policy": {
            "revision": &*policy.revision,
            "content_hash": &*policy.content_hash,
            "query": &*policy.query,
            // Once true, this revision is evaluated only on the evaluation threads.
            "slow_evaluation_seen": policy.slow_seen(),
            "decision_cache": decision_cache(&policy),
            // Set when the query failed on a made-up request at load: requests that fail
            // the same way are denied, so this is worth a look, not a refusal.
            "sample_evaluation_error": policy.sample_error.as_deref(),
            "strict_builtin_errors": policy.strict_builtin_errors,
        },
        "certificate": {
            "source": match &state.spiffe_socket {
                Some(_) => "workload_api",
                None => "files",
            },
            "spiffe_socket": state.spiffe_socket,
            "serial": local.serial,
            "not_after": unix_rfc3339(local.not_after),
            "spiffe_id": local.spiffe_id.as_ref().map(|s| s.id.as_str()),
        },
        "client_ca": {
            "fingerprints_sha256": tls.ca.fingerprints,
            // Workload API bundles, each trusted only for its own trust domain.
            "trust_domains": tls.ca.trust_domains,
            "earliest_not_after": unix_rfc3339(tls.ca.earliest_not_after),
            "generation": tls.ca_generation,
        },
        "decision_log": decision_log(state),
        "delegation": {"issuers": issuers(&state.delegation)},
        "revocations": {
            "in_force": state.revocations.len(),
            "max": state.revocations.max(),
            "file": state.revocations.file().map(|p| p.display().to_string()),
            // The feed's revocations apply besides these; its age is how long since it last
            // answered (its last good list stays in force meanwhile).
            "feed": state.revocations.feed_age().map(|age| json!({
                "in_force": state.revocations.feed_len(),
                "age_seconds": age.as_secs_f64(),
                "stale": state.revocations.feed_stale(),
            })),
        },
        "reloads": {
            "policy": kind(&state.reloads.policy),
            "cert": kind(&state.reloads.cert),
            "ca": kind(&state.reloads.ca),
            "shadow_policy": kind(&state.reloads.shadow_policy),
        },
    })
}
