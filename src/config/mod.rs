//! Settings for `regate run`: the command-line flags merged over an optional YAML file
//! (`--config`), validated into one plain [`Config`].
//!
//! Every flag has a key of the same name (dashes become underscores) in the file, and the
//! flag wins. Validation collects every bad value before reporting, so an operator fixes a
//! broken deployment in one round. This module checks values and that files exist; whether a
//! certificate parses or a policy compiles is checked by the module that owns it, at startup.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::audit::DecisionLog;
use crate::units::{parse_duration, parse_size};

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
    #[arg(long, value_name = "URL", requires_all = ["delegation_audience", "delegation_jwks"])]
    pub delegation_issuer: Option<String>,
    /// An audience the token must name (repeatable).
    #[arg(long, value_name = "AUD")]
    pub delegation_audience: Vec<String>,
    /// The issuer's JWKS file, re-read when it changes.
    #[arg(long, value_name = "FILE")]
    pub delegation_jwks: Option<PathBuf>,
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
}

/// The `delegation:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegationFile {
    #[serde(default)]
    issuers: Vec<crate::delegation::IssuerConfig>,
    leeway: Option<String>,
    header: Option<String>,
    #[serde(default)]
    require_token: bool,
}

/// The YAML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    upstream: Option<String>,
    #[serde(default)]
    demo_upstream: bool,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    spiffe_socket: Option<String>,
    spiffe_startup_timeout: Option<String>,
    policies: Option<PathBuf>,
    query: Option<String>,
    #[serde(default, alias = "trust_domain")]
    trust_domains: Vec<String>,
    #[serde(default)]
    context: BTreeMap<String, String>,
    decision_log: Option<String>,
    #[serde(default)]
    decision_log_input: bool,
    decision_log_signing_key: Option<PathBuf>,
    #[serde(default)]
    redact_headers: Vec<String>,
    upstream_timeout: Option<String>,
    upstream_protocol: Option<String>,
    handshake_timeout: Option<String>,
    policy_timeout: Option<String>,
    reload_interval: Option<String>,
    watch: Option<bool>,
    admin: Option<String>,
    #[serde(default)]
    admin_allow_remote: bool,
    #[serde(default, alias = "admin_host")]
    admin_hosts: Vec<String>,
    health_listen: Option<String>,
    shutdown_grace: Option<String>,
    log_format: Option<String>,
    upgrade_protocols: Option<Vec<String>>,
    headers_with_underscores: Option<String>,
    #[serde(default)]
    keep_client_headers: Vec<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_identity: Option<usize>,
    max_upstream_requests: Option<usize>,
    max_upstream_requests_per_connection: Option<usize>,
    decision_cache_entries: Option<usize>,
    #[serde(default)]
    strict_builtin_errors: bool,
    revocations: Option<String>,
    max_revocations: Option<usize>,
    delegation: Option<DelegationFile>,
    inspect_body_limit: Option<String>,
    inspect_body_budget: Option<String>,
    inspect_body_budget_per_identity: Option<String>,
    inspect_body_timeout: Option<String>,
    max_identities: Option<usize>,
    shadow_policies: Option<PathBuf>,
    shadow_query: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    replace_request_id: bool,
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
    pub policies: PathBuf,
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
}

/// `--shadow-policies` and `--shadow-query`.
#[derive(Debug, Clone)]
pub struct Shadow {
    pub policies: PathBuf,
    pub query: String,
}

/// What a policy deny does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The deny is answered (403 or the policy's status).
    #[default]
    Enforce,
    /// The request is forwarded anyway and recorded with `would_deny`; regate's own refusals
    /// (TLS, trust domain, revocations, malformed requests, bad tokens) still refuse.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// Whatever the client spoke: HTTP/2 clients are forwarded over HTTP/2 (for gRPC).
    Auto,
}

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
        crate::policy::Options::from_flags(
            &self.query,
            self.policy_timeout,
            self.strict_builtin_errors,
        )
    }

    /// How the shadow policy set is loaded and asked: as the main set, with its own query.
    pub fn shadow_policy_options(&self) -> Option<(PathBuf, crate::policy::Options)> {
        self.shadow.as_ref().map(|shadow| {
            let mut options = self.policy_options();
            options.query = shadow.query.clone();
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
    /// problem in one run.
    pub fn check(args: RunArgs) -> Checked {
        let mut errors = Vec::new();
        let file = match &args.config {
            Some(path) => read_file_settings(path).unwrap_or_else(|e| {
                errors.push(e);
                FileSettings::default()
            }),
            None => FileSettings::default(),
        };
        // Relative paths in the file are relative to the file, as a reader of it expects.
        let base = args
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let delegation = delegation_settings(&args, file.delegation.as_ref(), &base, &mut errors);
        let from_file = |p: Option<PathBuf>| p.map(|p| base.join(p));

        let listen = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|_| errors.push(format!("listen: {listen:?} is not an IP:port address")))
            .ok();

        let upstream = if args.demo_upstream || (args.upstream.is_none() && file.demo_upstream) {
            Some(Upstream::Demo)
        } else {
            match args.upstream.or(file.upstream) {
                Some(u) => parse_upstream(&u).map_err(|e| errors.push(e)).ok(),
                None => {
                    errors.push("upstream: required (--upstream URL or --demo-upstream)".into());
                    None
                }
            }
        };

        let cert = args.cert.or(from_file(file.cert));
        let key = args.key.or(from_file(file.key));
        let client_ca = args.client_ca.or(from_file(file.client_ca));
        let named_files = cert.is_some() || key.is_some() || client_ca.is_some();
        // The environment variable is the SPIFFE convention for finding the agent; it only
        // speaks when the operator named no credentials at all, so a pod that sets it for
        // its application does not silently switch regate off its files.
        let spiffe_socket = args.spiffe_socket.or(file.spiffe_socket).or_else(|| {
            (!named_files)
                .then(|| std::env::var("SPIFFE_ENDPOINT_SOCKET").ok())
                .flatten()
                .filter(|s| !s.trim().is_empty())
        });
        let (cert, key, client_ca) = match &spiffe_socket {
            Some(socket) => {
                if named_files {
                    errors.push(
                        "spiffe-socket: cannot be combined with --cert, --key or --client-ca; \
                         the Workload API provides all three"
                            .into(),
                    );
                }
                if let Err(e) = crate::tls::workload::check_endpoint(socket) {
                    errors.push(format!("spiffe-socket: {e}"));
                }
                (None, None, None)
            }
            None => (
                required_file("cert", cert, &mut errors),
                required_file("key", key, &mut errors),
                required_file("client-ca", client_ca, &mut errors),
            ),
        };
        let policies = match args.policies.or(from_file(file.policies)) {
            None => {
                errors.push("policies: required (--policies DIR)".into());
                None
            }
            Some(p) if !p.is_dir() => {
                errors.push(format!("policies: {} is not a directory", p.display()));
                None
            }
            Some(p) => Some(p),
        };

        let query = args
            .query
            .or(file.query)
            .unwrap_or_else(|| DEFAULT_QUERY.to_string());
        if !valid_query(&query) {
            errors.push(format!(
                "query: {query:?} is not a rule path like data.package.rule"
            ));
        }

        let trust_domains = if args.trust_domains.is_empty() {
            file.trust_domains
        } else {
            args.trust_domains
        };
        for td in &trust_domains {
            if !crate::tls::identity::valid_trust_domain(td) {
                errors.push(format!(
                    "trust-domain: {td:?} is not a valid SPIFFE trust domain"
                ));
            }
        }

        let mut context = file.context;
        for kv in &args.context {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    context.insert(k.to_string(), v.to_string());
                }
                _ => errors.push(format!("context: {kv:?} is not KEY=VALUE")),
            }
        }

        let decision_log_file = file.decision_log.map(|p| match p.as_str() {
            "stdout" | "-" => p,
            _ => base.join(p).display().to_string(),
        });
        let decision_log = match args.decision_log.or(decision_log_file).as_deref() {
            None | Some("stdout") | Some("-") => DecisionLog::Stdout,
            Some(p) => {
                let path = PathBuf::from(p);
                let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
                if parent.is_some_and(|d| !d.is_dir()) {
                    errors.push(format!("decision-log: directory of {p} does not exist"));
                }
                DecisionLog::File(path)
            }
        };

        let mut redact_headers = args.redact_headers.clone();
        redact_headers.extend(file.redact_headers.iter().cloned());
        for name in &redact_headers {
            let plain = name.replace('*', "a");
            if http::HeaderName::from_bytes(plain.trim().as_bytes()).is_err() {
                errors.push(format!(
                    "redact-header: {name:?} is not a header name (or a pattern with *)"
                ));
            }
        }
        // The delegation token travels in its own header when one is set: it is a
        // credential like `authorization`.
        let delegation_header = delegation.header.as_ref().map(|h| h.as_str().to_string());
        let redaction = crate::audit::input::Recording::new(
            redact_headers
                .iter()
                .map(String::as_str)
                .chain(delegation_header.as_deref()),
        );
        let decision_log_input = args.decision_log_input || file.decision_log_input;
        let decision_log_signing_key = args
            .decision_log_signing_key
            .or(from_file(file.decision_log_signing_key));
        if let Some(path) = decision_log_signing_key.as_ref().filter(|p| !p.is_file()) {
            errors.push(format!(
                "decision-log-signing-key: {} does not exist",
                path.display()
            ));
        }

        let mut size = |name: &str, value: Option<String>, default: usize| match value {
            None => default,
            Some(text) => parse_size(&text).unwrap_or_else(|| {
                errors.push(format!(
                    "{name}: {text:?} is not a size like 1MiB, 64KiB or 4096"
                ));
                default
            }),
        };
        let inspect_body_limit = size(
            "inspect-body-limit",
            args.inspect_body_limit
                .clone()
                .or(file.inspect_body_limit.clone()),
            1 << 20,
        );
        // By default one caller may hold 16 bodies at the limit (at least 16 MiB), and all
        // callers 64 (at least 64 MiB): room for every honest tool call, far from the memory
        // of the host.
        let inspect_body_budget_per_identity = size(
            "inspect-body-budget-per-identity",
            args.inspect_body_budget_per_identity
                .clone()
                .or(file.inspect_body_budget_per_identity.clone()),
            inspect_body_limit.saturating_mul(16).max(16 << 20),
        );
        let inspect_body_budget = size(
            "inspect-body-budget",
            args.inspect_body_budget
                .clone()
                .or(file.inspect_body_budget.clone()),
            inspect_body_limit.saturating_mul(64).max(64 << 20),
        );
        // A body at the limit must fit one caller's share, or no inspected body ever could.
        if inspect_body_limit > 0
            && inspect_body_budget_per_identity.min(inspect_body_budget) <= inspect_body_limit
        {
            errors.push(format!(
                "inspect-body-budget-per-identity: {inspect_body_budget_per_identity} bytes \
                 (and inspect-body-budget: {inspect_body_budget}) must be over \
                 inspect-body-limit ({inspect_body_limit}), or a body at the limit never fits"
            ));
        }
        let revocations = args
            .revocations
            .or_else(|| file.revocations.map(|p| base.join(p)));
        if let Some(path) = &revocations {
            let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
            if parent.is_some_and(|d| !d.is_dir()) {
                errors.push(format!(
                    "revocations: directory of {} does not exist",
                    path.display()
                ));
            }
        }

        let mut duration = |name: &str, value: Option<String>, default: Duration| match value {
            None => default,
            Some(v) => parse_duration(&v).unwrap_or_else(|| {
                errors.push(format!(
                    "{name}: {v:?} is not a duration like 500ms, 10s or 1m"
                ));
                default
            }),
        };
        let upstream_timeout = duration(
            "upstream-timeout",
            args.upstream_timeout.or(file.upstream_timeout),
            Duration::from_secs(30),
        );
        let handshake_timeout = duration(
            "handshake-timeout",
            args.handshake_timeout.or(file.handshake_timeout),
            Duration::from_secs(10),
        );
        let policy_timeout = duration(
            "policy-timeout",
            args.policy_timeout.or(file.policy_timeout),
            Duration::from_millis(100),
        );
        let inspect_body_timeout = duration(
            "inspect-body-timeout",
            args.inspect_body_timeout.or(file.inspect_body_timeout),
            Duration::from_secs(10),
        );

        let reload_interval = duration(
            "reload-interval",
            args.reload_interval.or(file.reload_interval),
            Duration::from_secs(30),
        );
        let watch = args.watch.or(file.watch).unwrap_or(true);
        let shutdown_grace = duration(
            "shutdown-grace",
            args.shutdown_grace.or(file.shutdown_grace),
            Duration::from_secs(15),
        );
        let spiffe_startup_timeout = duration(
            "spiffe-startup-timeout",
            args.spiffe_startup_timeout.or(file.spiffe_startup_timeout),
            Duration::from_secs(30),
        );
        let idle_timeout = duration(
            "idle-timeout",
            args.idle_timeout.or(file.idle_timeout),
            Duration::from_secs(60),
        );

        let allow_remote = args.admin_allow_remote || file.admin_allow_remote;
        let admin = match args
            .admin
            .or(file.admin)
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string())
            .as_str()
        {
            "none" | "off" => None,
            a => match a.parse::<SocketAddr>() {
                Err(_) => {
                    errors.push(format!("admin: {a:?} is not an IP:port address or none"));
                    None
                }
                Ok(addr) if !addr.ip().to_canonical().is_loopback() && !allow_remote => {
                    errors.push(format!(
                        "admin: {addr} is not loopback; the admin endpoints are unauthenticated, \
                         so binding them elsewhere needs --admin-allow-remote"
                    ));
                    None
                }
                Ok(addr) => Some(addr),
            },
        };
        let admin_hosts = admin_hosts(
            if args.admin_hosts.is_empty() {
                file.admin_hosts
            } else {
                args.admin_hosts
            },
            &mut errors,
        );
        let health_listen = match args.health_listen.or(file.health_listen) {
            None => None,
            Some(a) if a == "none" || a == "off" => None,
            Some(a) => a
                .parse::<SocketAddr>()
                .map_err(|_| {
                    errors.push(format!(
                        "health-listen: {a:?} is not an IP:port address or none"
                    ))
                })
                .ok(),
        };
        let log_format = match args.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                errors.push(format!("log-format: {other:?} is not text or json"));
                LogFormat::Text
            }
        };

        let upstream_protocol = match args.upstream_protocol.or(file.upstream_protocol).as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") => UpstreamProtocol::Http2,
            Some("auto") => UpstreamProtocol::Auto,
            Some(other) => {
                errors.push(format!(
                    "upstream-protocol: {other:?} is not one of http1, http2, auto"
                ));
                UpstreamProtocol::Http1
            }
        };

        let request_rules = request_rules(
            args.upgrade_protocols,
            file.upgrade_protocols,
            args.headers_with_underscores
                .or(file.headers_with_underscores),
            if args.keep_client_headers.is_empty() {
                file.keep_client_headers
            } else {
                args.keep_client_headers
            },
            &mut errors,
        );
        if idle_timeout.is_zero() {
            errors.push("idle-timeout: must be more than 0".into());
        }
        let mut positive = |name: &str, value: Option<usize>, default: usize| match value {
            Some(0) => {
                errors.push(format!("{name}: must be at least 1"));
                default
            }
            Some(n) => n,
            None => default,
        };
        let max_connections = positive(
            "max-connections",
            args.max_connections.or(file.max_connections),
            default_max_connections(),
        );
        let max_upstream_requests = positive(
            "max-upstream-requests",
            args.max_upstream_requests.or(file.max_upstream_requests),
            1024,
        );
        let max_upstream_requests_per_connection = positive(
            "max-upstream-requests-per-connection",
            args.max_upstream_requests_per_connection
                .or(file.max_upstream_requests_per_connection),
            32,
        );
        let max_identities = positive(
            "max-identities",
            args.max_identities.or(file.max_identities),
            crate::identities::DEFAULT_MAX_IDENTITIES,
        );
        let max_revocations = positive(
            "max-revocations",
            args.max_revocations.or(file.max_revocations),
            crate::revocations::DEFAULT_MAX_REVOCATIONS,
        );
        let decision_cache_entries = args
            .decision_cache_entries
            .or(file.decision_cache_entries)
            .unwrap_or(10_000);
        let max_connections_per_identity = args
            .max_connections_per_identity
            .or(file.max_connections_per_identity)
            .unwrap_or(128);

        let shadow = shadow_settings(
            args.shadow_policies.or(from_file(file.shadow_policies)),
            args.shadow_query.or(file.shadow_query),
            (policies.as_deref(), &query),
            &mut errors,
        );
        let mode = match args.mode.or(file.mode).as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("audit") => Mode::Audit,
            Some(other) => {
                errors.push(format!("mode: {other:?} is not enforce or audit"));
                Mode::Enforce
            }
        };

        // Bad values get placeholders so the rest can still be checked; `errors` says which.
        let config = Config {
            listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            upstream: upstream.unwrap_or(Upstream::Demo),
            cert: cert.unwrap_or_default(),
            key: key.unwrap_or_default(),
            client_ca: client_ca.unwrap_or_default(),
            spiffe_socket,
            spiffe_startup_timeout,
            policies: policies.unwrap_or_default(),
            query,
            trust_domains,
            context,
            decision_log,
            decision_log_input,
            decision_log_signing_key,
            redaction,
            upstream_timeout,
            upstream_protocol,
            handshake_timeout,
            policy_timeout,
            reload_interval,
            watch,
            admin,
            admin_hosts,
            health_listen,
            shutdown_grace,
            log_format,
            request_rules,
            idle_timeout,
            max_connections,
            max_connections_per_identity,
            max_upstream_requests,
            max_upstream_requests_per_connection,
            decision_cache_entries,
            strict_builtin_errors: args.strict_builtin_errors || file.strict_builtin_errors,
            revocations,
            max_revocations,
            delegation,
            inspect_body_limit,
            inspect_body_budget,
            inspect_body_budget_per_identity,
            inspect_body_timeout,
            max_identities,
            shadow,
            mode,
            replace_request_id: args.replace_request_id || file.replace_request_id,
        };
        Checked { config, errors }
    }
}

/// `--admin-host` names: a DNS name (letters, digits, `-`, `_`, `.`; compared without regard
/// to case) or an IP address (`[::1]` or `::1`), never with a port, which is not compared.
fn admin_hosts(names: Vec<String>, errors: &mut Vec<String>) -> Vec<String> {
    let mut hosts = Vec::new();
    for name in names {
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            hosts.push(ip.to_string());
        } else if !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            hosts.push(name.to_ascii_lowercase());
        } else {
            errors.push(format!(
                "admin-host: {name:?} is not a host name or an IP address (no port)"
            ));
        }
    }
    hosts
}

/// The shadow directory, checked like `--policies`, and its query (the main one unless given).
fn shadow_settings(
    dir: Option<PathBuf>,
    query: Option<String>,
    (main_policies, main_query): (Option<&Path>, &str),
    errors: &mut Vec<String>,
) -> Option<Shadow> {
    let Some(dir) = dir else {
        if query.is_some() {
            errors.push("shadow-query: needs --shadow-policies".into());
        }
        return None;
    };
    if !dir.is_dir() {
        errors.push(format!(
            "shadow-policies: {} is not a directory",
            dir.display()
        ));
    }
    // Nested, one set would load the other's files as its own.
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    if let (Some(shadow), Some(main)) = (real(&dir), main_policies.and_then(real)) {
        if shadow.starts_with(&main) || main.starts_with(&shadow) {
            errors.push(format!(
                "shadow-policies: {} and --policies must not be inside one another",
                dir.display()
            ));
        }
    }
    let query = query.unwrap_or_else(|| main_query.to_string());
    if !valid_query(&query) {
        errors.push(format!(
            "shadow-query: {query:?} is not a rule path like data.package.rule"
        ));
    }
    Some(Shadow {
        policies: dir,
        query,
    })
}

/// The delegation issuers from the file and the flags, with paths made relative to the file.
fn delegation_settings(
    args: &RunArgs,
    file: Option<&DelegationFile>,
    base: &Path,
    errors: &mut Vec<String>,
) -> crate::delegation::Settings {
    let mut issuers: Vec<crate::delegation::IssuerConfig> = file
        .map(|f| f.issuers.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut i| {
            i.jwks_file = base.join(&i.jwks_file);
            i
        })
        .collect();
    if let (Some(issuer), Some(jwks)) = (&args.delegation_issuer, &args.delegation_jwks) {
        issuers.push(crate::delegation::IssuerConfig {
            issuer: issuer.clone(),
            audiences: args.delegation_audience.clone(),
            jwks_file: jwks.clone(),
            algorithms: match args.delegation_algorithm.is_empty() {
                true => vec!["ES256".into(), "RS256".into()],
                false => args.delegation_algorithm.clone(),
            },
            require_binding: args.delegation_require_binding,
        });
    }
    for issuer in &issuers {
        if !issuer.jwks_file.is_file() {
            errors.push(format!(
                "delegation: issuer {}: JWKS file {} does not exist",
                issuer.issuer,
                issuer.jwks_file.display()
            ));
        }
    }
    let leeway_text = args
        .delegation_leeway
        .clone()
        .or_else(|| file.and_then(|f| f.leeway.clone()));
    let leeway = match leeway_text {
        None => Duration::from_secs(30),
        Some(t) => parse_duration(&t).unwrap_or_else(|| {
            errors.push(format!(
                "delegation-leeway: {t:?} is not a duration like 30s"
            ));
            Duration::from_secs(30)
        }),
    };
    let header_text = args
        .delegation_header
        .clone()
        .or_else(|| file.and_then(|f| f.header.clone()));
    let header = header_text.and_then(|h| match http::HeaderName::from_bytes(h.as_bytes()) {
        Ok(name) if name == http::header::AUTHORIZATION => None,
        Ok(name) => Some(name),
        Err(_) => {
            errors.push(format!("delegation-header: {h:?} is not a header name"));
            None
        }
    });
    let require_token = args.delegation_require_token || file.is_some_and(|f| f.require_token);
    if require_token && issuers.is_empty() {
        errors.push(
            "delegation: require_token is set, but no issuer is configured to verify a token"
                .to_string(),
        );
    }
    crate::delegation::Settings {
        issuers,
        leeway,
        header,
        require_token,
    }
}

/// The upgrade allowlist, the underscore mode and the kept client claims, checked.
fn request_rules(
    flags: Vec<String>,
    file: Option<Vec<String>>,
    underscores: Option<String>,
    keep: Vec<String>,
    errors: &mut Vec<String>,
) -> crate::request::Rules {
    use crate::request::{headers, upgrade, Rules, UnderscoreHeaders};
    let mut rules = Rules::default();
    let listed = if flags.is_empty() { file } else { Some(flags) };
    if let Some(list) = listed {
        rules.upgrade_protocols = Vec::new();
        for p in list {
            let p = p.trim().to_ascii_lowercase();
            let name = p.split('/').next().unwrap_or_default();
            let token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            };
            if p == "none" {
                continue;
            }
            if upgrade::NEVER.contains(&name) {
                errors.push(format!(
                    "upgrade-protocol: {p:?} is never allowed: after the switch, HTTP/2 \
                     requests would bypass the policy"
                ));
            } else if !p.split('/').all(token) || p.matches('/').count() > 1 {
                errors.push(format!("upgrade-protocol: {p:?} is not a protocol name"));
            } else {
                rules.upgrade_protocols.push(p);
            }
        }
    }
    match underscores.as_deref().map(UnderscoreHeaders::parse) {
        None => {}
        Some(Some(mode)) => rules.underscore_headers = mode,
        Some(None) => errors.push(format!(
            "headers-with-underscores: {:?} is not one of drop-colliding, reject-colliding, \
             drop-all, reject-all",
            underscores.unwrap_or_default()
        )),
    }
    for name in keep {
        let name = name.trim().to_ascii_lowercase();
        if headers::CLIENT_CLAIMS.contains(&name.as_str()) {
            rules.keep_client_headers.push(name);
        } else {
            errors.push(format!(
                "keep-client-header: {name:?} is not one of the client headers regate strips ({})",
                headers::CLIENT_CLAIMS.join(", ")
            ));
        }
    }
    rules
}

/// Two descriptors per client connection (its socket, and its share of upstream sockets),
/// leaving room for the listeners, the logs and the policy files; at most 16384.
fn default_max_connections() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let usable = limit.saturating_sub(64) / 2;
    usize::try_from(usable.clamp(16, 16_384)).unwrap_or(16_384)
}

fn read_file_settings(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config: cannot read {}: {e}", path.display()))?;
    yaml_serde::from_str(&text).map_err(|e| format!("config: {}: {e}", path.display()))
}

fn required_file(name: &str, path: Option<PathBuf>, errors: &mut Vec<String>) -> Option<PathBuf> {
    match path {
        None => {
            errors.push(format!("{name}: required (--{name} FILE)"));
            None
        }
        Some(p) if !p.is_file() => {
            errors.push(format!("{name}: {} does not exist", p.display()));
            None
        }
        Some(p) => Some(p),
    }
}

/// The upstream is a plain-HTTP local application: `http://host:port`, nothing after it.
/// A path prefix is refused rather than prepended, so the path a policy sees is exactly the
/// path the application receives.
fn parse_upstream(u: &str) -> Result<Upstream, String> {
    let uri: http::Uri = u
        .parse()
        .map_err(|_| format!("upstream: {u:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("upstream: {u:?} must start with http://"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "upstream: {u:?} must not have a path or query; regate forwards the request's own"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("upstream: {u:?} has no host"))?;
    if authority.port_u16().is_none() {
        return Err(format!("upstream: {u:?} needs an explicit port"));
    }
    Ok(Upstream::Url(authority))
}

fn valid_query(q: &str) -> bool {
    let mut parts = q.split('.');
    parts.next() == Some("data")
        && q.split('.').count() >= 2
        && parts.all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests;
