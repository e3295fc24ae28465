//! Prometheus metrics (names and meanings in docs/metrics.md), encoded as OpenMetrics text
//! for the admin listener's `/metrics`.
//!
//! Labels stay bounded. regate's own deny reasons are a fixed set; reasons a policy invents
//! are kept as labels only up to [`MAX_POLICY_REASONS`] distinct values (short, plain
//! names), and everything past that is counted under `other`. No label carries an identity
//! or a path.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Distinct policy-chosen deny reasons that get their own label value.
pub const MAX_POLICY_REASONS: usize = 64;

/// Reasons regate itself gives; always their own label value.
const OWN_REASONS: &[&str] = &[
    "allowed",
    "denied",
    "policy_undefined",
    "policy_invalid_result",
    "policy_error",
    "policy_timeout",
    "untrusted_trust_domain",
    "untrusted_issuer",
    "certificate_expired",
    "invalid_path",
    "invalid_request",
    "invalid_header",
    "method_not_allowed",
    "upgrade_not_allowed",
    "unsupported_transfer_coding",
    "client_cancelled",
    "upstream_overloaded",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_error",
    "revoked",
    "batch_too_large",
    "batch_decisions_differ",
    "token_invalid",
    "token_expired",
    "token_not_yet_valid",
    "token_issuer",
    "token_audience",
    "token_not_bound",
    "token_binding",
    "token_scheme_unsupported",
    "token_in_query",
    "token_missing",
    "issuer_unavailable",
    "insufficient_scope",
    "resource_metadata",
    "mcp_header_mismatch",
    "origin_not_allowed",
    "tools_list_unfiltered",
    "ambiguous_body",
    "body_timeout",
    "body_unreadable",
    "body_budget_exhausted",
    "rate_limited",
    "budget_unavailable",
    "approval_required",
    "approval_invalid",
    "approval_expired",
    "approval_mismatch",
    "approval_used",
];

/// Why handshakes fail, as `regate_tls_handshake_failures_total{reason}` names it.
pub const HANDSHAKE_FAILURES: &[&str] = &[
    "no_certificate",
    "certificate_expired",
    "unknown_issuer",
    "bad_certificate",
    "incompatible",
    "tls_error",
    "timeout",
    "eof",
    "io_error",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub decision: &'static str,
    pub reason: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub cert: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DisagreementLabels {
    pub main: &'static str,
    pub shadow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub issuer: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BoundedReasonLabels {
    pub reason: Cow<'static, str>,
}

pub struct Metrics {
    registry: Registry,
    requests: RequestMetrics,
    connections: ConnectionMetrics,
    reloads: ReloadMetrics,
    evaluation: EvaluationMetrics,
    revocations: RevocationMetrics,
    identities: IdentityMetrics,
    budgets: BudgetMetrics,
    policy_reasons: RwLock<HashSet<String>>,
    shadow: ShadowMetrics,
    jwks: JwksMetrics,
    mcp: McpMetrics,
    traces: TraceMetrics,
}

/// Requests by decision, their timings, and the upstream's failures.
struct RequestMetrics {
    count: Family<RequestLabels, Counter>,
    duration: Histogram,
    policy_duration: Histogram,
    upstream_duration: Histogram,
    upstream_errors: Family<KindLabels, Counter>,
}

impl RequestMetrics {
    fn register(registry: &mut Registry) -> RequestMetrics {
        let count = Family::<RequestLabels, Counter>::default();
        registry.register(
            "regate_requests",
            "Requests by decision (allow, deny, error) and bounded reason",
            count.clone(),
        );
        let duration = Histogram::new(latency_buckets());
        registry.register(
            "regate_request_duration_seconds",
            "Time from request head to response head, as seen by regate",
            duration.clone(),
        );
        let policy_duration = Histogram::new(latency_buckets());
        registry.register(
            "regate_policy_evaluation_duration_seconds",
            "Time to evaluate the policy for one request",
            policy_duration.clone(),
        );
        let upstream_duration = Histogram::new(latency_buckets());
        registry.register(
            "regate_upstream_duration_seconds",
            "Time from sending a request upstream to its response head",
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "regate_upstream_errors",
            "Requests the upstream failed, by kind (unreachable, timeout, error, overloaded)",
            upstream_errors.clone(),
        );
        for (decision, reason) in [("allow", "allowed"), ("deny", "denied")] {
            let _ = count.get_or_create(&RequestLabels {
                decision,
                reason: Cow::Borrowed(reason),
            });
        }
        for kind in ["unreachable", "timeout", "error", "overloaded"] {
            let _ = upstream_errors.get_or_create(&KindLabels { kind });
        }
        RequestMetrics {
            count,
            duration,
            policy_duration,
            upstream_duration,
            upstream_errors,
        }
    }
}

/// Client connections: handshakes, those open, those refused or closed idle; tunnels.
struct ConnectionMetrics {
    handshakes: Family<ResultLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    open: Gauge,
    refused: Family<ReasonLabels, Counter>,
    idle_closed: Counter,
    tunnels_open: Gauge,
    tunnels_closed: Family<ReasonLabels, Counter>,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> ConnectionMetrics {
        let handshakes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "regate_tls_handshakes",
            "TLS handshakes by result (success, failure)",
            handshakes.clone(),
        );
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "regate_tls_handshake_failures",
            "Failed TLS handshakes by bounded reason",
            handshake_failures.clone(),
        );
        let open = Gauge::default();
        registry.register(
            "regate_open_connections",
            "Client connections past the TLS handshake and not yet closed",
            open.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "regate_connections_refused",
            "Connections closed unserved: max_connections (--max-connections were open), \
             per_identity (the certificate held --max-connections-per-identity)",
            refused.clone(),
        );
        let idle_closed = Counter::default();
        registry.register(
            "regate_idle_connections_closed",
            "Client connections closed after --idle-timeout with no request in flight",
            idle_closed.clone(),
        );
        let tunnels_open = Gauge::default();
        registry.register(
            "regate_tunnels_open",
            "Upgraded connections (WebSocket and the like) open now",
            tunnels_open.clone(),
        );
        let tunnels_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "regate_tunnels_closed",
            "Upgraded connections closed, by reason",
            tunnels_closed.clone(),
        );
        for result in ["success", "failure"] {
            let _ = handshakes.get_or_create(&ResultLabels { result });
        }
        for reason in HANDSHAKE_FAILURES {
            let _ = handshake_failures.get_or_create(&ReasonLabels { reason });
        }
        for reason in CONNECTION_REFUSALS {
            let _ = refused.get_or_create(&ReasonLabels { reason });
        }
        for reason in TUNNEL_ENDS {
            let _ = tunnels_closed.get_or_create(&ReasonLabels { reason });
        }
        ConnectionMetrics {
            handshakes,
            handshake_failures,
            open,
            refused,
            idle_closed,
            tunnels_open,
            tunnels_closed,
        }
    }
}

/// Reloads, and what they loaded: the policy revision deciding now, certificate expiry.
struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    policy_info: Family<RevisionLabels, Gauge>,
    certificate_expiry: Family<CertLabels, Gauge>,
}

impl ReloadMetrics {
    fn register(registry: &mut Registry) -> ReloadMetrics {
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "regate_reloads",
            "Reloads that changed something, by kind (policy, cert, ca) and result",
            reloads.clone(),
        );
        let policy_info = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "regate_policy_info",
            "1 for the policy revision deciding requests now",
            policy_info.clone(),
        );
        let certificate_expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "regate_certificate_expiry_timestamp_seconds",
            "Unix time at which a certificate expires (server; client_ca: the earliest in the bundle)",
            certificate_expiry.clone(),
        );
        for result in ["success", "failure"] {
            for kind in ["policy", "cert", "ca", "shadow_policy"] {
                let _ = reloads.get_or_create(&ReloadLabels { kind, result });
            }
        }
        ReloadMetrics {
            reloads,
            policy_info,
            certificate_expiry,
        }
    }
}

/// What deciding costs: evaluations running, the decision cache, bodies held for the policy.
struct EvaluationMetrics {
    running: Gauge,
    inspected_body_bytes: Gauge,
    decision_cache: Family<ResultLabels, Counter>,
}

impl EvaluationMetrics {
    fn register(registry: &mut Registry) -> EvaluationMetrics {
        let running = Gauge::default();
        registry.register(
            "regate_policy_evaluations_running",
            "Policy evaluations running now, on regate's evaluation threads",
            running.clone(),
        );
        let inspected_body_bytes = Gauge::default();
        registry.register(
            "regate_inspected_body_bytes",
            "Bytes of request bodies held now for the policy to read, out of \
             --inspect-body-budget",
            inspected_body_bytes.clone(),
        );
        let decision_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "regate_decision_cache",
            "Policy decisions asked of a policy set with a decision cache, by result (hit, miss)",
            decision_cache.clone(),
        );
        for result in ["hit", "miss"] {
            let _ = decision_cache.get_or_create(&ResultLabels { result });
        }
        EvaluationMetrics {
            running,
            inspected_body_bytes,
            decision_cache,
        }
    }
}

/// MCP `tools/list` results filtered with the tool-visibility query.
struct McpMetrics {
    hidden: Counter,
    lists: Family<ResultLabels, Counter>,
}

impl McpMetrics {
    fn register(registry: &mut Registry) -> McpMetrics {
        let hidden = Counter::default();
        registry.register(
            "regate_mcp_tools_hidden",
            "Tools removed from MCP tools/list results because the caller may not see them \
             (--mcp-tools-list-query)",
            hidden.clone(),
        );
        let lists = Family::<ResultLabels, Counter>::default();
        registry.register(
            "regate_mcp_tools_lists",
            "MCP tools/list results regate filtered, by result (filtered; refused: it could \
             not read one within --inspect-body-limit and answered an error instead)",
            lists.clone(),
        );
        for result in ["filtered", "refused"] {
            let _ = lists.get_or_create(&ResultLabels { result });
        }
        McpMetrics { hidden, lists }
    }
}

/// The kill switch: revocations in force, their changes, connections it closed.
struct RevocationMetrics {
    in_force: Gauge,
    changes: Family<ResultLabels, Counter>,
    connections_closed: Counter,
    feed_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    feed_fetches: Family<ResultLabels, Counter>,
    feed_in_force: Gauge,
}

impl RevocationMetrics {
    fn register(registry: &mut Registry) -> RevocationMetrics {
        let in_force = Gauge::default();
        registry.register(
            "regate_revocations",
            "Revocations (the kill switch) in force now",
            in_force.clone(),
        );
        let changes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "regate_revocation_changes",
            "Changes to the revocations, by result: added, removed (through the admin API), \
             reloaded (the file changed)",
            changes.clone(),
        );
        let connections_closed = Counter::default();
        registry.register(
            "regate_revoked_connections_closed",
            "Client connections closed because their identity was revoked",
            connections_closed.clone(),
        );
        for result in ["added", "removed", "reloaded", "feed_stale", "feed_fresh"] {
            let _ = changes.get_or_create(&ResultLabels { result });
        }
        let feed_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "regate_revocations_feed_age_seconds",
            "Seconds since the revocations feed last answered (a new list or unchanged); \
             its last good list stays in force meanwhile",
            feed_age.clone(),
        );
        let feed_fetches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "regate_revocations_feed_fetches",
            "Polls of the revocations feed, by result: updated, unchanged, failed",
            feed_fetches.clone(),
        );
        let feed_in_force = Gauge::default();
        registry.register(
            "regate_revocations_feed",
            "Revocations the feed holds now (in force besides the file's and the API's)",
            feed_in_force.clone(),
        );
        for result in ["updated", "unchanged", "failed"] {
            let _ = feed_fetches.get_or_create(&ResultLabels { result });
        }
        RevocationMetrics {
            in_force,
            changes,
            connections_closed,
            feed_age,
            feed_fetches,
            feed_in_force,
        }
    }
}

/// The identity inventory: its size, and the identities it dropped.
struct IdentityMetrics {
    held: Gauge,
    evicted: Counter,
}

impl IdentityMetrics {
    fn register(registry: &mut Registry) -> IdentityMetrics {
        let held = Gauge::default();
        registry.register(
            "regate_identities",
            "Workload identities held by the identity inventory (GET /identities)",
            held.clone(),
        );
        let evicted = Counter::default();
        registry.register(
            "regate_identities_evicted",
            "Identities dropped from the inventory to stay within --max-identities",
            evicted.clone(),
        );
        IdentityMetrics { held, evicted }
    }
}

/// Budgets a policy attaches (`rate_limits`), by the policy's `name` for each.
struct BudgetMetrics {
    charges: Family<BudgetLabels, Counter>,
    /// The names seen, at most [`MAX_BUDGET_NAMES`]; past it, `other`.
    names: RwLock<HashSet<String>>,
}

/// Most distinct budget names a metric carries.
const MAX_BUDGET_NAMES: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    name: String,
    /// `allowed`, `limited`, or `unavailable` (the store did not answer).
    result: &'static str,
}

impl BudgetMetrics {
    fn register(registry: &mut Registry) -> BudgetMetrics {
        let charges = Family::<BudgetLabels, Counter>::default();
        registry.register(
            "regate_budget_charges",
            "Charges of the budgets policies attach (rate_limits), by the policy's name for the \
             limit and the result (allowed, limited, unavailable)",
            charges.clone(),
        );
        BudgetMetrics {
            charges,
            names: RwLock::default(),
        }
    }

    /// `name` as a label: as it is among the first [`MAX_BUDGET_NAMES`], else `other`.
    fn label(&self, name: &str) -> String {
        if self.names.read().is_ok_and(|s| s.contains(name)) {
            return name.to_string();
        }
        let Ok(mut names) = self.names.write() else {
            return "other".into();
        };
        if names.contains(name) || names.len() < MAX_BUDGET_NAMES {
            names.insert(name.to_string());
            name.to_string()
        } else {
            "other".into()
        }
    }
}

/// The shadow policy set and audit mode (docs/metrics.md).
struct ShadowMetrics {
    disagreements: Family<DisagreementLabels, Counter>,
    duration: Histogram,
    running: Gauge,
    skipped: Counter,
    would_deny: Family<BoundedReasonLabels, Counter>,
}

impl ShadowMetrics {
    fn register(registry: &mut Registry) -> ShadowMetrics {
        let disagreements = Family::<DisagreementLabels, Counter>::default();
        registry.register(
            "regate_shadow_disagreements",
            "Requests the shadow policy set decided otherwise than the main set, by each one's \
             decision (allow, deny); main and shadow alike means the reasons differ",
            disagreements.clone(),
        );
        let duration = Histogram::new(latency_buckets());
        registry.register(
            "regate_shadow_evaluation_duration_seconds",
            "Time to decide one request with the shadow policy set, off the response's path",
            duration.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "regate_shadow_evaluations_running",
            "Shadow policy evaluations running now, on their own evaluation threads",
            running.clone(),
        );
        let skipped = Counter::default();
        registry.register(
            "regate_shadow_skipped",
            "Requests the shadow policy set was not asked about, because as many shadow \
             evaluations as allowed were already under way",
            skipped.clone(),
        );
        let would_deny = Family::<BoundedReasonLabels, Counter>::default();
        registry.register(
            "regate_would_deny",
            "Requests forwarded in --mode audit that the policy denied, by bounded reason",
            would_deny.clone(),
        );
        for main in ["allow", "deny"] {
            for shadow in ["allow", "deny"] {
                let _ = disagreements.get_or_create(&DisagreementLabels { main, shadow });
            }
        }
        ShadowMetrics {
            disagreements,
            duration,
            running,
            skipped,
            would_deny,
        }
    }
}

/// Remote issuers' key sets (docs/metrics.md). The issuer label is bounded by the config.
struct JwksMetrics {
    fetches: Family<FetchLabels, Counter>,
    keys: Family<IssuerLabels, Gauge>,
    age: Family<IssuerLabels, Gauge>,
}

impl JwksMetrics {
    fn register(registry: &mut Registry) -> JwksMetrics {
        let fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "regate_jwks_fetches",
            "Fetches of a remote issuer's JWKS, by issuer and result (ok, unreachable, \
             tls_error, timeout, http_status, http_error, invalid, discovery_failed)",
            fetches.clone(),
        );
        let keys = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "regate_jwks_keys",
            "Keys in the issuer's last good JWKS",
            keys.clone(),
        );
        let age = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "regate_jwks_age_seconds",
            "Seconds since the issuer's keys were last fetched or read; past \
             --jwks-max-staleness, a remote issuer's tokens are refused (issuer_unavailable)",
            age.clone(),
        );
        JwksMetrics { fetches, keys, age }
    }
}

/// Spans on their way to the OpenTelemetry collector (`--otlp-endpoint`).
struct TraceMetrics {
    exported: Counter,
    dropped: Family<ReasonLabels, Counter>,
}

/// Why spans are dropped, as `regate_trace_spans_dropped_total{reason}` names it.
pub const TRACE_DROPS: &[&str] = &["queue_full", "export_failed", "shutdown"];

impl TraceMetrics {
    fn register(registry: &mut Registry) -> TraceMetrics {
        let exported = Counter::default();
        registry.register(
            "regate_trace_spans_exported",
            "Spans the OpenTelemetry collector accepted",
            exported.clone(),
        );
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "regate_trace_spans_dropped",
            "Sampled spans that never reached the collector: queue_full (the export queue was \
             full), export_failed (the collector refused or did not answer), shutdown",
            dropped.clone(),
        );
        for reason in TRACE_DROPS {
            let _ = dropped.get_or_create(&ReasonLabels { reason });
        }
        TraceMetrics { exported, dropped }
    }
}

/// Why a connection was closed before it could send a request.
pub const CONNECTION_REFUSALS: &[&str] = &["max_connections", "per_identity"];

/// How tunnels end, as `regate_tunnels_closed_total{reason}` names it.
pub const TUNNEL_ENDS: &[&str] = &[
    "closed",
    "error",
    "certificate_expired",
    "untrusted_issuer",
    "policy_denied",
    "revoked",
    "token_expired",
    "shutdown",
];

/// Latency buckets in seconds, from 25 µs to 10 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered by group, each series that exists from the start at 0.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        // Series that exist from the start read 0 instead of missing, so rates and alerts
        // work before the first event of each kind: each group creates its own.
        Metrics {
            requests: RequestMetrics::register(&mut registry),
            connections: ConnectionMetrics::register(&mut registry),
            reloads: ReloadMetrics::register(&mut registry),
            evaluation: EvaluationMetrics::register(&mut registry),
            revocations: RevocationMetrics::register(&mut registry),
            identities: IdentityMetrics::register(&mut registry),
            budgets: BudgetMetrics::register(&mut registry),
            shadow: ShadowMetrics::register(&mut registry),
            jwks: JwksMetrics::register(&mut registry),
            mcp: McpMetrics::register(&mut registry),
            traces: TraceMetrics::register(&mut registry),
            policy_reasons: RwLock::default(),
            registry,
        }
    }

    /// A shadow decision that differs from the main one (in `allowed`, or only in `reason`).
    pub fn shadow_disagreement(&self, main_allowed: bool, shadow_allowed: bool) {
        let word = |allowed: bool| if allowed { "allow" } else { "deny" };
        self.shadow
            .disagreements
            .get_or_create(&DisagreementLabels {
                main: word(main_allowed),
                shadow: word(shadow_allowed),
            })
            .inc();
    }

    /// One shadow decision's time, from its start to its answer.
    pub fn shadow_evaluated(&self, duration: Duration) {
        self.shadow.duration.observe(duration.as_secs_f64());
    }

    /// A request the shadow set was not asked about: too many evaluations under way.
    pub fn shadow_skipped(&self) {
        self.shadow.skipped.inc();
    }

    /// The gauge of bytes held by body inspection, for the budget to keep.
    pub fn inspected_body_bytes(&self) -> Gauge {
        self.evaluation.inspected_body_bytes.clone()
    }

    /// The gauge of running shadow evaluations, for the shadow's evaluator to keep.
    pub fn shadow_evaluations_running(&self) -> Gauge {
        self.shadow.running.clone()
    }

    /// A request forwarded in audit mode that the policy denied for `reason`.
    pub fn would_deny(&self, reason: &str) {
        let reason = self.reason_label(reason);
        self.shadow
            .would_deny
            .get_or_create(&BoundedReasonLabels { reason })
            .inc();
    }

    /// One request's outcome. `decision` is allow, deny or error (regate could not serve an
    /// allowed request).
    pub fn request(&self, decision: &'static str, reason: &str, duration: Duration, eval_ns: u64) {
        let labels = RequestLabels {
            decision,
            reason: self.reason_label(reason),
        };
        self.requests.count.get_or_create(&labels).inc();
        self.requests.duration.observe(duration.as_secs_f64());
        if eval_ns > 0 {
            self.requests.policy_duration.observe(eval_ns as f64 / 1e9);
        }
    }

    pub fn upstream(&self, duration: Duration) {
        self.requests
            .upstream_duration
            .observe(duration.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.requests
            .upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub fn handshake_ok(&self) {
        self.connections
            .handshakes
            .get_or_create(&ResultLabels { result: "success" })
            .inc();
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.connections
            .handshakes
            .get_or_create(&ResultLabels { result: "failure" })
            .inc();
        self.connections
            .handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Count a connection open until the returned guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.connections.open.inc();
        ConnectionGuard(self.connections.open.clone())
    }

    pub fn connection_refused(&self, reason: &'static str) {
        self.connections
            .refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn idle_closed(&self) {
        self.connections.idle_closed.inc();
    }

    /// A change to the revocations (`added`, `removed`, `reloaded`), and how many are in force.
    pub fn revocations(&self, in_force: usize, change: &'static str) {
        self.revocations.in_force.set(in_force as i64);
        self.revocations
            .changes
            .get_or_create(&ResultLabels { result: change })
            .inc();
    }

    /// The current count, without a change (at startup).
    pub fn revocations_in_force(&self, in_force: usize) {
        self.revocations.in_force.set(in_force as i64);
    }

    /// One poll of the revocations feed (`updated`, `unchanged`, `failed`), the feed's age
    /// and how many revocations it holds.
    pub fn revocations_feed(&self, result: &'static str, age: Duration, held: usize) {
        self.revocations
            .feed_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
        self.revocations.feed_age.set(age.as_secs_f64());
        self.revocations.feed_in_force.set(held as i64);
    }

    pub fn revoked_connection_closed(&self) {
        self.revocations.connections_closed.inc();
    }

    /// Count a tunnel open until the returned guard is dropped.
    pub fn tunnel(&self) -> ConnectionGuard {
        self.connections.tunnels_open.inc();
        ConnectionGuard(self.connections.tunnels_open.clone())
    }

    pub fn tunnel_closed(&self, reason: &'static str) {
        self.connections
            .tunnels_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A decision asked of a set with a cache: answered from it or not.
    pub fn decision_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.evaluation
            .decision_cache
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A `tools/list` result filtered, hiding `hidden` tools; or refused, not passed on.
    pub fn tools_list(&self, filtered: bool, hidden: u64) {
        let result = if filtered { "filtered" } else { "refused" };
        self.mcp.lists.get_or_create(&ResultLabels { result }).inc();
        self.mcp.hidden.inc_by(hidden);
    }

    /// The identity inventory's size gauge and eviction counter, for the inventory to keep.
    pub fn identities(&self) -> (Gauge, Counter) {
        (
            self.identities.held.clone(),
            self.identities.evicted.clone(),
        )
    }

    /// The gauge of running evaluations, for the evaluator to keep.
    pub fn evaluations_running(&self) -> Gauge {
        self.evaluation.running.clone()
    }

    pub fn open_connections(&self) -> i64 {
        self.connections.open.get()
    }

    pub fn reload(&self, kind: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .reloads
            .get_or_create(&ReloadLabels { kind, result })
            .inc();
    }

    /// Publish the revision now deciding; the previous one's series goes away.
    pub fn policy_revision(&self, revision: &str) {
        self.reloads.policy_info.clear();
        self.reloads
            .policy_info
            .get_or_create(&RevisionLabels {
                revision: revision.to_string(),
            })
            .set(1);
    }

    pub fn certificate_expiry(&self, cert: &'static str, unix_seconds: i64) {
        self.reloads
            .certificate_expiry
            .get_or_create(&CertLabels { cert })
            .set(unix_seconds);
    }

    /// The series of a remote issuer, at 0 before its first fetch.
    pub fn jwks_issuer(&self, issuer: &str) {
        let issuer = issuer.to_string();
        let _ = self.jwks.fetches.get_or_create(&FetchLabels {
            issuer: issuer.clone(),
            result: "ok",
        });
        let _ = self.jwks.keys.get_or_create(&IssuerLabels { issuer });
    }

    /// A fetch of `issuer`'s JWKS ended with `result`.
    pub fn jwks_fetch(&self, issuer: &str, result: &'static str) {
        self.jwks
            .fetches
            .get_or_create(&FetchLabels {
                issuer: issuer.to_string(),
                result,
            })
            .inc();
    }

    /// `issuer`'s last good JWKS holds `count` keys.
    pub fn jwks_keys(&self, issuer: &str, count: usize) {
        self.jwks
            .keys
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_string(),
            })
            .set(count as i64);
    }

    /// `issuer`'s keys were last fetched (or read) this long ago; set before each scrape.
    pub fn jwks_age(&self, issuer: &str, age: Duration) {
        self.jwks
            .age
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_string(),
            })
            .set(age.as_secs() as i64);
    }

    /// Spans the collector accepted.
    pub fn trace_spans_exported(&self, spans: u64) {
        self.traces.exported.inc_by(spans);
    }

    /// Spans dropped on their way out, by one of [`TRACE_DROPS`].
    pub fn trace_spans_dropped(&self, reason: &'static str, spans: u64) {
        self.traces
            .dropped
            .get_or_create(&ReasonLabels { reason })
            .inc_by(spans);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// One budget charged: `result` is `allowed`, `limited` or `unavailable`.
    pub fn budget(&self, name: &str, result: &'static str) {
        let name = self.budgets.label(name);
        self.budgets
            .charges
            .get_or_create(&BudgetLabels { name, result })
            .inc();
    }

    /// A bounded label for `reason`: regate's own reasons as they are; a policy's reasons
    /// while fewer than [`MAX_POLICY_REASONS`] distinct ones have been seen and the reason is
    /// a short plain name; `other` past that.
    fn reason_label(&self, reason: &str) -> Cow<'static, str> {
        if let Some(own) = OWN_REASONS.iter().find(|r| **r == reason) {
            return Cow::Borrowed(own);
        }
        let plain = reason.len() <= 48
            && reason
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
        if !plain {
            return Cow::Borrowed("other");
        }
        let known = |set: &HashSet<String>| set.contains(reason);
        if self.policy_reasons.read().is_ok_and(|s| known(&s)) {
            return Cow::Owned(reason.to_string());
        }
        let Ok(mut set) = self.policy_reasons.write() else {
            return Cow::Borrowed("other");
        };
        if known(&set) || set.len() < MAX_POLICY_REASONS {
            set.insert(reason.to_string());
            Cow::Owned(reason.to_string())
        } else {
            Cow::Borrowed("other")
        }
    }
}

/// Decrements an open-connections (or open-tunnels) gauge when the connection ends.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reasons_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_POLICY_REASONS + 10) {
            m.request("deny", &format!("reason_{i}"), Duration::ZERO, 0);
        }
        m.request(
            "deny",
            "has spaces and a very long explanation",
            Duration::ZERO,
            0,
        );
        m.request("deny", "untrusted_issuer", Duration::ZERO, 0);
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("regate_requests_total{"))
            .count();
        // The first MAX_POLICY_REASONS policy reasons, `other`, regate's own reason, and
        // the allowed/denied series that exist from the start.
        assert_eq!(series, MAX_POLICY_REASONS + 4, "{text}");
        assert!(text.contains(r#"reason="other""#));
        assert!(text.contains(r#"reason="untrusted_issuer""#));
    }
}
