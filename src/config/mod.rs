//! Settings for `regate run`: the command-line flags merged over an optional YAML file
//! (`--config`), validated into one plain [`Config`].
//!
//! Every flag has a key of the same name (dashes become underscores) in the file, and the
//! flag wins. Validation collects every bad value before reporting, so an operator fixes a
//! broken deployment in one round. This module checks values and that files exist; whether a
//! certificate parses or a policy compiles is checked by the module that owns it, at startup.
//!
//! `file` reads the YAML file; `merge` holds [`Config::check`]'s steps, one per concern.

mod file;
mod merge;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::audit::DecisionLog;
use file::FileSettings;

/// The flags of `regate run`. All optional here, so the YAML file can fill what is missing.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// YAML file with any of the settings below; flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept mTLS connections on [default: 0.0.0.0:8443].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The local application, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Serve a built-in echo application on loopback and forward to it (for trying regate out).
    #[arg(long, conflicts_with = "upstream")]
    pub demo_upstream: bool,
    /// PEM certificate chain regate presents, leaf first.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// PEM private key for --cert.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// PEM bundle of roots that client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Take regate's own SVID and the trust bundles from the SPIFFE Workload API at this
    /// address (`unix:///run/spire/sockets/agent.sock`) instead of --cert, --key and
    /// --client-ca; SPIFFE_ENDPOINT_SOCKET is used when none of the four is set.
    #[arg(long, value_name = "ADDR")]
    pub spiffe_socket: Option<String>,
    /// How long to wait at start for a first SVID from --spiffe-socket [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub spiffe_startup_timeout: Option<String>,
    /// Directory of .rego policies and .json/.yaml data files.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Take the policy set from an OPA bundle instead of --policies: a bundle server URL
    /// (`https://…/bundle.tar.gz`) or an OCI reference (`oci://registry/name:tag`), polled
    /// every 1 to 5 s; the `bundle:` section of --config sets the rest.
    #[arg(long, value_name = "URL", conflicts_with = "policies")]
    pub bundle: Option<String>,
    /// Poll this revocations feed (regate's revocations format, on any HTTP server, object
    /// store or OCI registry) every second; its revocations apply beside the file's and the
    /// API's. The `revocations_feed:` section of --config sets the rest.
    #[arg(long, value_name = "URL")]
    pub revocations_feed: Option<String>,
    /// The rule that decides [default: data.regate.authz.allow].
    #[arg(long, value_name = "QUERY")]
    pub query: Option<String>,
    /// Accept SPIFFE IDs only from this trust domain (repeatable).
    #[arg(long = "trust-domain", value_name = "TD")]
    pub trust_domains: Vec<String>,
    /// Static label exposed to policy as input.context.KEY (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Where decision records go: `stdout` or a file path [default: stdout].
    #[arg(long, value_name = "stdout|FILE")]
    pub decision_log: Option<String>,
    /// Decision records also carry the policy input (for `regate policy replay`), with
    /// credential headers digested and nothing of the body.
    #[arg(long)]
    pub decision_log_input: bool,
    /// Sign the decision log's checkpoints (at start, every minute the log moves, at exit)
    /// with this Ed25519 private key (PKCS#8 PEM), for `regate audit verify --public-key`.
    #[arg(long, value_name = "FILE")]
    pub decision_log_signing_key: Option<PathBuf>,
    /// A header (or `x-*-token` pattern) whose value a recorded input holds only as its
    /// SHA-256, in addition to authorization, cookie, proxy-authorization and x-*-token
    /// (repeatable).
    #[arg(long = "redact-header", value_name = "NAME")]
    pub redact_headers: Vec<String>,
    /// How long to wait for the upstream's response headers [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
    /// Protocol spoken to the upstream: http1, http2 (cleartext, prior knowledge) or auto
    /// (the client's own) [default: http1].
    #[arg(long, value_name = "PROTOCOL")]
    pub upstream_protocol: Option<String>,
    /// How long a client may take to finish the TLS handshake [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// Longest a single policy evaluation may run before it is a deny [default: 100ms].
    #[arg(long, value_name = "DURATION")]
    pub policy_timeout: Option<String>,
    /// Re-read policies, data, certificate and CA this often even without a change event;
    /// 0 turns the periodic re-read off [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub reload_interval: Option<String>,
    /// Watch the policy directory and certificate files for changes [default: true]. With
    /// false, reloads happen on SIGHUP and every --reload-interval only.
    #[arg(long, value_name = "true|false")]
    pub watch: Option<bool>,
    /// Admin listener for /metrics, /healthz, /readyz, /status, or `none`
    /// [default: 127.0.0.1:9901].
    #[arg(long, value_name = "ADDR|none")]
    pub admin: Option<String>,
    /// Allow --admin on a non-loopback address (it is unauthenticated).
    #[arg(long)]
    pub admin_allow_remote: bool,
    /// A name the admin listener answers to in `Host`, besides its own address and
    /// localhost (repeatable); any other is 421, against DNS rebinding.
    #[arg(long = "admin-host", value_name = "NAME")]
    pub admin_hosts: Vec<String>,
    /// A read-only listener for /healthz, /readyz and /metrics alone, safe to expose to
    /// kubelet probes and Prometheus [default: none].
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<String>,
    /// How long in-flight requests may finish after SIGTERM or SIGINT [default: 15s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Diagnostic log format on stderr: text or json [default: text].
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,
    /// A protocol an HTTP/1.1 client may upgrade to, or `none` (repeatable; replaces the
    /// file's list) [default: websocket]. h2c and h2 are never allowed.
    #[arg(long = "upgrade-protocol", value_name = "PROTOCOL")]
    pub upgrade_protocols: Vec<String>,
    /// Headers with `_` in their name: drop-colliding, reject-colliding, drop-all or
    /// reject-all [default: drop-colliding].
    #[arg(long, value_name = "MODE")]
    pub headers_with_underscores: Option<String>,
    /// Forward this client header that regate strips by default (`x-real-ip`, `forwarded`,
    /// ...) unchanged (repeatable).
    #[arg(long = "keep-client-header", value_name = "NAME")]
    pub keep_client_headers: Vec<String>,
    /// Close a client connection with no request in flight for this long [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Most client connections open at once, handshakes included [default: from the
    /// open-files limit, at most 16384].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most connections open at once with one client certificate; 0 for no limit
    /// [default: 128].
    #[arg(long, value_name = "N")]
    pub max_connections_per_identity: Option<usize>,
    /// Most requests in flight to the upstream at once; beyond, 503 [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_upstream_requests: Option<usize>,
    /// Most requests in flight to the upstream from one client connection; more wait for
    /// a slot, up to --upstream-timeout [default: 32].
    #[arg(long, value_name = "N")]
    pub max_upstream_requests_per_connection: Option<usize>,
    /// Policy answers kept, by what the policy reads, per policy revision; 0 turns the
    /// decision cache off [default: 10000].
    #[arg(long, value_name = "N")]
    pub decision_cache_entries: Option<usize>,
    /// A builtin that fails (a bad regex, `to_number("lots")`) fails the evaluation, a deny,
    /// instead of making its expression undefined as OPA and opa-envoy-plugin do by default.
    #[arg(long)]
    pub strict_builtin_errors: bool,
    /// Where revocations made through the admin API are kept across restarts (JSON, written
    /// atomically, re-read when it changes) [default: none, they last until exit].
    #[arg(long, value_name = "FILE")]
    pub revocations: Option<PathBuf>,
    /// Most revocations in force at once; past it, `POST /revocations` is 507
    /// [default: 100000].
    #[arg(long, value_name = "N")]
    pub max_revocations: Option<usize>,
    /// A delegation token issuer whose tokens (`Authorization: Bearer`) are verified before
    /// policy and shown to it as input.delegation; the `delegation:` section of --config
    /// takes several.
    #[arg(long, value_name = "URL")]
    pub delegation_issuer: Option<String>,
    /// An audience the token must name (repeatable).
    #[arg(long, value_name = "AUD")]
    pub delegation_audience: Vec<String>,
    /// The issuer's JWKS file, re-read when it changes.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["delegation_jwks_uri", "delegation_discovery"])]
    pub delegation_jwks: Option<PathBuf>,
    /// The issuer's JWKS URL (https; http on loopback only), fetched and kept current.
    #[arg(long, value_name = "URL", conflicts_with = "delegation_discovery")]
    pub delegation_jwks_uri: Option<String>,
    /// Find the issuer's JWKS URL in its OpenID Connect (or RFC 8414) metadata.
    #[arg(long)]
    pub delegation_discovery: bool,
    /// PEM roots the issuer's HTTPS certificate must chain to [default: the system's].
    #[arg(long, value_name = "FILE")]
    pub delegation_ca: Option<PathBuf>,
    /// How long after the last successful fetch a remote issuer's keys are still used while
    /// its provider fails; past it, its tokens are refused (issuer_unavailable) [default: 24h].
    #[arg(long, value_name = "DURATION")]
    pub jwks_max_staleness: Option<String>,
    /// An accepted algorithm (repeatable) [default: ES256, RS256].
    #[arg(long, value_name = "ALG")]
    pub delegation_algorithm: Vec<String>,
    /// Refuse tokens that are not bound to the client certificate (cnf.x5t#S256).
    #[arg(long)]
    pub delegation_require_binding: bool,
    /// Clock skew allowed on exp and nbf [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub delegation_leeway: Option<String>,
    /// The header holding the token alone, instead of `Authorization: Bearer`.
    #[arg(long, value_name = "NAME")]
    pub delegation_header: Option<String>,
    /// A request without a verified delegation token is refused (401), instead of reaching
    /// the policy without input.delegation.
    #[arg(long)]
    pub delegation_require_token: bool,
    /// JSON request bodies up to this size are read before the decision and shown to the
    /// policy (input.parsed_body, input.jsonrpc, input.mcp); 0 reads none [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    pub inspect_body_limit: Option<String>,
    /// Most bytes of request bodies held for the policy at once, by all requests; a body that
    /// does not fit is refused (503) [default: 64 × --inspect-body-limit, at least 64MiB].
    #[arg(long, value_name = "SIZE")]
    pub inspect_body_budget: Option<String>,
    /// Most of --inspect-body-budget one caller (SPIFFE ID, else certificate) may hold
    /// [default: 16 × --inspect-body-limit, at least 16MiB].
    #[arg(long, value_name = "SIZE")]
    pub inspect_body_budget_per_identity: Option<String>,
    /// How long a JSON body read for the policy may take to arrive; past it, 408
    /// [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub inspect_body_timeout: Option<String>,
    /// Workload identities the inventory (admin `GET /identities`) holds; past it, the least
    /// recently seen is dropped [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_identities: Option<usize>,
    /// A second policy directory, evaluated beside --policies on every decided request; it
    /// never changes a response, and its disagreements are recorded (`shadow`).
    #[arg(long, value_name = "DIR")]
    pub shadow_policies: Option<PathBuf>,
    /// The rule of --shadow-policies that decides [default: --query].
    #[arg(long, value_name = "QUERY")]
    pub shadow_query: Option<String>,
    /// enforce, or audit: forward what the policy denies and record it as `would_deny`
    /// [default: enforce].
    #[arg(long, value_name = "enforce|audit")]
    pub mode: Option<String>,
    /// Send the upstream regate's own `x-request-id` even when the client sent a well-formed
    /// one (by default the client's is forwarded unchanged).
    #[arg(long)]
    pub replace_request_id: bool,
    /// A browser origin (`https://app.example.org`) that may call; a request with any other
    /// `Origin` is refused (403), against DNS rebinding; one without `Origin` is not
    /// (repeatable; replaces the `mcp:` section's list) [default: no check].
    #[arg(long = "mcp-allowed-origin", value_name = "ORIGIN")]
    pub mcp_allowed_origins: Vec<String>,
    /// The rule asked once per tool of an MCP `tools/list` result, with `input.mcp.tool` set
    /// to the tool's name; tools for which it is not `true` are removed
    /// (`data.mcp.authz.tool_visible`) [default: results are not filtered].
    #[arg(long, value_name = "QUERY")]
    pub mcp_tools_list_query: Option<String>,
    /// Where the budgets policies attach (`rate_limits`) are kept: `memory` (this replica)
    /// or `redis://[user:password@]host:port[/db]` (shared by the fleet) [default: memory].
    #[arg(long, value_name = "memory|URL")]
    pub budget_store: Option<String>,
    /// How long a charge may wait for the budget store before the request is refused
    /// (`budget_unavailable`) [default: 50ms].
    #[arg(long, value_name = "DURATION")]
    pub budget_timeout: Option<String>,
    /// An Ed25519 private key (PKCS#8 PEM) that `regate approve` and the admin API sign
    /// approval tokens with; regate trusts the tokens it signs (issuer `regate:local`). The
    /// `approvals:` section of --config also takes issuers.
    #[arg(long, value_name = "FILE")]
    pub approval_local_key: Option<PathBuf>,
    /// Export a span per request to this OpenTelemetry collector, over OTLP/HTTP
    /// (`http://collector:4318`; spans are posted to its `/v1/traces`) [default: none,
    /// tracing off].
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// PEM roots an `https` --otlp-endpoint is verified against.
    #[arg(long, value_name = "FILE")]
    pub otlp_ca: Option<PathBuf>,
    /// Of the traces regate starts (the client sent no `traceparent`), the share exported,
    /// from 0 to 1; a client's own sampling decision is always followed [default: 1].
    #[arg(long, value_name = "RATIO")]
    pub trace_sample_ratio: Option<f64>,
}

/// Validated settings. Paths are checked to exist; their contents are not yet read.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: Upstream,
    /// Empty when the credentials come from the Workload API (`spiffe_socket`).
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// The SPIFFE Workload API endpoint regate takes its SVID and trust bundles from,
    /// instead of the three files.
    pub spiffe_socket: Option<String>,
    pub spiffe_startup_timeout: Duration,
    /// Empty when the policy set comes from a bundle.
    pub policies: PathBuf,
    /// The policy set comes from this OPA bundle instead of a directory.
    pub bundle: Option<crate::bundle::BundleSettings>,
    /// Revocations also come from this feed.
    pub revocations_feed: Option<crate::bundle::feed::FeedSettings>,
    pub query: String,
    pub trust_domains: Vec<String>,
    pub context: BTreeMap<String, String>,
    pub decision_log: DecisionLog,
    /// Decision records carry the policy input, as [`Config::redaction`] records it.
    pub decision_log_input: bool,
    /// The key the decision log's checkpoints are signed with; none: they are not signed.
    pub decision_log_signing_key: Option<PathBuf>,
    /// The credential headers (`--redact-header` and the defaults): digested in a recorded
    /// input, and kept out of stderr.
    pub redaction: crate::audit::input::Recording,
    pub upstream_timeout: Duration,
    pub upstream_protocol: UpstreamProtocol,
    pub handshake_timeout: Duration,
    pub policy_timeout: Duration,
    /// Zero: no periodic re-read.
    pub reload_interval: Duration,
    pub watch: bool,
    /// None: no admin listener.
    pub admin: Option<SocketAddr>,
    /// Names the admin listener answers to in `Host` besides its address and localhost:
    /// lowercase DNS names, and IP addresses as `IpAddr` displays them.
    pub admin_hosts: Vec<String>,
    /// None: no read-only health and metrics listener.
    pub health_listen: Option<SocketAddr>,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// What a request may carry: upgrades, underscore headers, client claims kept.
    pub request_rules: crate::request::Rules,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Zero: no per-identity limit.
    pub max_connections_per_identity: usize,
    pub max_upstream_requests: usize,
    pub max_upstream_requests_per_connection: usize,
    /// Zero: no decision cache.
    pub decision_cache_entries: usize,
    pub strict_builtin_errors: bool,
    /// The revocation file; none: revocations last until exit.
    pub revocations: Option<PathBuf>,
    /// Most revocations in force (at least 1).
    pub max_revocations: usize,
    /// Delegation token issuers; none: tokens are not verified, and the policy sees none.
    pub delegation: crate::delegation::Settings,
    /// regate as an OAuth protected resource (`oauth_resource:`); none: no metadata, and
    /// 401s without `resource_metadata`.
    pub oauth_resource: Option<crate::proxy::resource::Settings>,
    /// Bytes of a JSON body read for the policy; zero: none.
    pub inspect_body_limit: usize,
    /// Bytes of bodies held for the policy at once, in all and per identity.
    pub inspect_body_budget: usize,
    pub inspect_body_budget_per_identity: usize,
    /// How long a body read for the policy may take to arrive.
    pub inspect_body_timeout: Duration,
    /// Entries the identity inventory holds (at least 1).
    pub max_identities: usize,
    /// The shadow policy set and its query; none: no shadow evaluation.
    pub shadow: Option<Shadow>,
    pub mode: Mode,
    /// The upstream always gets regate's own `x-request-id`.
    pub replace_request_id: bool,
    /// MCP's Streamable HTTP: browser origins allowed, and the tool-visibility query.
    pub mcp: Mcp,
    /// Where budgets are kept, and how long a charge may wait.
    pub budgets: Budgets,
    /// Approval issuers and the local key; none: policies cannot ask for approvals.
    pub approvals: Option<Approvals>,
    /// Where spans go, and which; none: tracing is off.
    pub tracing: Option<crate::telemetry::Settings>,
}

/// The `mcp:` section: `--mcp-allowed-origin` and `--mcp-tools-list-query`.
#[derive(Debug, Clone, Default)]
pub struct Mcp {
    /// Empty: `Origin` is not checked.
    pub allowed_origins: crate::request::mcp::Origins,
    /// None: `tools/list` results are not filtered.
    pub tools_list_query: Option<String>,
}

/// The `approvals:` section and `--approval-local-key`.
#[derive(Debug, Clone)]
pub struct Approvals {
    pub issuers: Vec<crate::delegation::IssuerConfig>,
    pub local_key: Option<PathBuf>,
    /// Where approval requests are posted, and the roots an `https` one is verified against
    /// (the system's without).
    pub webhook: Option<String>,
    pub webhook_ca: Option<PathBuf>,
}

/// `--budget-store` and `--budget-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    /// `None`: in memory; else a `redis://` URL.
    pub redis: Option<String>,
    pub timeout: Duration,
}

/// `--shadow-policies` (or `shadow_bundle:`) and `--shadow-query`.
#[derive(Debug, Clone)]
pub struct Shadow {
    /// Empty when the shadow set comes from a bundle.
    pub policies: PathBuf,
    pub bundle: Option<crate::bundle::BundleSettings>,
    pub query: String,
}

pub use crate::proxy::decision::Mode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `http://host:port` of the application.
    Url(http::uri::Authority),
    /// The built-in echo application; `main` starts it and replaces this with its address.
    Demo,
}

pub use crate::proxy::forward::UpstreamProtocol;

/// A merged config and every problem found in it. When `errors` is not empty, the config
/// holds placeholders and must not be served.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    pub errors: Vec<String>,
}

/// Every bad setting found, one message each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
pub const DEFAULT_QUERY: &str = "data.regate.authz.allow";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

impl Config {
    /// How the policy set is loaded and asked.
    pub fn policy_options(&self) -> crate::policy::Options {
        crate::policy::Options {
            tools_list_query: self.mcp.tools_list_query.clone(),
            ..crate::policy::Options::from_flags(
                &self.query,
                self.policy_timeout,
                self.strict_builtin_errors,
            )
        }
    }

    /// How the shadow policy set is loaded and asked: as the main set, with its own query.
    pub fn shadow_policy_options(&self) -> Option<(PathBuf, crate::policy::Options)> {
        self.shadow.as_ref().map(|shadow| {
            let mut options = self.policy_options();
            options.query = shadow.query.clone();
            // The shadow set only decides, beside; results are filtered by the main set.
            options.tools_list_query = None;
            (shadow.policies.clone(), options)
        })
    }

    /// Merge the flags over the file named by `--config`, and validate the result.
    pub fn from_args(args: RunArgs) -> Result<Config, ConfigErrors> {
        let checked = Config::check(args);
        match checked.errors.is_empty() {
            true => Ok(checked.config),
            false => Err(ConfigErrors(checked.errors)),
        }
    }

    /// Like [`Config::from_args`], but always returns a config (with placeholders for bad
    /// values), so startup can go on to check the files that do exist and report every
    /// problem in one run. A file that cannot be read as settings is the only problem
    /// reported: what the other checks would say of the flags alone is beside the point.
    pub fn check(args: RunArgs) -> Checked {
        match args.config.as_deref().map(file::read).transpose() {
            Ok(file) => merge::merge(args, file.unwrap_or_default()),
            // Without the file, every setting it holds would be reported missing, and none of
            // those reports would be true: the one problem is the file.
            Err(e) => Checked {
                config: merge::merge(args, FileSettings::default()).config,
                errors: vec![e],
            },
        }
    }
}

#[cfg(test)]
mod tests;
