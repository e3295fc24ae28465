//! The steps of [`Config::check`]: the flags merged over the file one concern at a time
//! (listeners, upstream, credentials, policy, decision log, body inspection, connections,
//! revocations, delegation, request rules, shadow and mode, MCP, budgets, approvals and
//! tracing), every bad value added to one
//! list, so an operator fixes a broken deployment in one round.
//!
//! Each step takes its settings out of the flags and the file, so none is read twice, and
//! gives a bad value a placeholder, so the steps after it still run and report their own.
//! Reading the file is [`super::file`]'s; what a value means at run time is its owner's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    BundleFile, CredentialsFile, DelegationFile, FeedFile, FileSettings, OauthResourceFile,
};
use super::{
    Checked, Config, LogFormat, Mcp, Mode, RunArgs, Shadow, Upstream, UpstreamProtocol,
    DEFAULT_ADMIN, DEFAULT_LISTEN, DEFAULT_QUERY,
};
use crate::audit::DecisionLog;
use crate::units::{parse_duration, parse_size};

/// Merge the flags over the file's settings (empty without `--config`) and check them.
pub(super) fn merge(args: RunArgs, file: FileSettings) -> Checked {
    // Relative paths in the file are relative to the file, as a reader of it expects.
    let base = args
        .config
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut m = Merge {
        args,
        file,
        base,
        errors: Vec::new(),
    };
    let (delegation, oauth_resource) = m.delegation();
    let listeners = m.listeners();
    let upstream = m.upstream();
    let credentials = m.credentials();
    let policy = m.policy();
    let sections = Sections {
        log: m.decision_log(&delegation),
        body: m.body_inspection(),
        connections: m.connections(),
        revocations: m.revocations(),
        revocations_feed: m.revocations_feed(),
        request_rules: m.request_rules(),
        shadow: m.shadow(&policy),
        mode: m.mode(),
        mcp: m.mcp(),
        budgets: m.budgets(),
        approvals: m.approvals(),
        log_format: m.log_format(),
        tracing: m.tracing(),
        listeners,
        upstream,
        credentials,
        policy,
        delegation,
        oauth_resource,
    };
    Checked {
        config: sections.into_config(),
        errors: m.errors,
    }
}

/// The flag's value, else the file's, taken out of both so no later step reads it again.
macro_rules! take {
    ($merge:expr, $name:ident) => {
        $merge.args.$name.take().or($merge.file.$name.take())
    };
}

/// The flags and the file being merged, and every problem found so far.
struct Merge {
    args: RunArgs,
    file: FileSettings,
    /// The file's directory, which its relative paths are relative to.
    base: PathBuf,
    errors: Vec<String>,
}

/// `--listen`, `--admin` and its hosts, `--health-listen`.
struct Listeners {
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    admin_hosts: Vec<String>,
    health_listen: Option<SocketAddr>,
}

/// Where allowed requests go, and how.
struct UpstreamSettings {
    upstream: Option<Upstream>,
    protocol: UpstreamProtocol,
    timeout: Duration,
    max_requests: usize,
    max_requests_per_connection: usize,
    replace_request_id: bool,
}

/// regate's own certificate and the client CA, or the Workload API; who may call.
struct Credentials {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    spiffe_socket: Option<String>,
    spiffe_startup_timeout: Duration,
    trust_domains: Vec<String>,
    handshake_timeout: Duration,
}

/// The policy set, how it is asked, and how it is kept current.
struct PolicySettings {
    dir: Option<PathBuf>,
    bundle: Option<crate::bundle::BundleSettings>,
    query: String,
    context: BTreeMap<String, String>,
    timeout: Duration,
    reload_interval: Duration,
    watch: bool,
    decision_cache_entries: usize,
    strict_builtin_errors: bool,
}

/// Where decision records go and what they carry.
struct LogSettings {
    target: DecisionLog,
    input: bool,
    signing_key: Option<PathBuf>,
    redaction: crate::audit::input::Recording,
}

/// How much of request bodies is read for the policy, and held at once.
struct BodyInspection {
    limit: usize,
    budget: usize,
    budget_per_identity: usize,
    timeout: Duration,
}

/// How many client connections, for how long, and how many callers are remembered.
struct Connections {
    idle_timeout: Duration,
    max: usize,
    max_per_identity: usize,
    max_identities: usize,
    shutdown_grace: Duration,
}

/// Every section, checked; [`Sections::into_config`] lays them out as a [`Config`].
struct Sections {
    listeners: Listeners,
    upstream: UpstreamSettings,
    credentials: Credentials,
    policy: PolicySettings,
    log: LogSettings,
    body: BodyInspection,
    connections: Connections,
    /// The revocation file and the most revocations in force.
    revocations: (Option<PathBuf>, usize),
    revocations_feed: Option<crate::bundle::feed::FeedSettings>,
    delegation: crate::delegation::Settings,
    oauth_resource: Option<crate::proxy::resource::Settings>,
    request_rules: crate::request::Rules,
    shadow: Option<Shadow>,
    mode: Mode,
    mcp: Mcp,
    budgets: super::Budgets,
    approvals: Option<super::Approvals>,
    log_format: LogFormat,
    tracing: Option<crate::telemetry::Settings>,
}

impl Sections {
    /// Bad values get placeholders so the rest can still be checked; the errors say which.
    fn into_config(self) -> Config {
        let Sections {
            listeners,
            upstream,
            credentials,
            policy,
            log,
            body,
            connections,
            revocations,
            revocations_feed,
            delegation,
            oauth_resource,
            request_rules,
            shadow,
            mode,
            mcp,
            budgets,
            approvals,
            log_format,
            tracing,
        } = self;
        Config {
            listen: listeners
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8443))),
            upstream: upstream.upstream.unwrap_or(Upstream::Demo),
            cert: credentials.cert.unwrap_or_default(),
            key: credentials.key.unwrap_or_default(),
            client_ca: credentials.client_ca.unwrap_or_default(),
            spiffe_socket: credentials.spiffe_socket,
            spiffe_startup_timeout: credentials.spiffe_startup_timeout,
            policies: policy.dir.unwrap_or_default(),
            bundle: policy.bundle,
            revocations_feed,
            query: policy.query,
            trust_domains: credentials.trust_domains,
            context: policy.context,
            decision_log: log.target,
            decision_log_input: log.input,
            decision_log_signing_key: log.signing_key,
            redaction: log.redaction,
            upstream_timeout: upstream.timeout,
            upstream_protocol: upstream.protocol,
            handshake_timeout: credentials.handshake_timeout,
            policy_timeout: policy.timeout,
            reload_interval: policy.reload_interval,
            watch: policy.watch,
            admin: listeners.admin,
            admin_hosts: listeners.admin_hosts,
            health_listen: listeners.health_listen,
            shutdown_grace: connections.shutdown_grace,
            log_format,
            request_rules,
            idle_timeout: connections.idle_timeout,
            max_connections: connections.max,
            max_connections_per_identity: connections.max_per_identity,
            max_upstream_requests: upstream.max_requests,
            max_upstream_requests_per_connection: upstream.max_requests_per_connection,
            decision_cache_entries: policy.decision_cache_entries,
            strict_builtin_errors: policy.strict_builtin_errors,
            revocations: revocations.0,
            max_revocations: revocations.1,
            delegation,
            oauth_resource,
            inspect_body_limit: body.limit,
            inspect_body_budget: body.budget,
            inspect_body_budget_per_identity: body.budget_per_identity,
            inspect_body_timeout: body.timeout,
            max_identities: connections.max_identities,
            shadow,
            mode,
            replace_request_id: upstream.replace_request_id,
            mcp,
            budgets,
            approvals,
            tracing,
        }
    }
}

impl Merge {
    /// A path the file names, taken out of it and made relative to it.
    fn file_path(
        &mut self,
        take: impl FnOnce(&mut FileSettings) -> Option<PathBuf>,
    ) -> Option<PathBuf> {
        take(&mut self.file).map(|p| self.base.join(p))
    }

    /// The flag's list, else the file's: a list on the command line replaces the file's.
    fn list(
        &mut self,
        pick: impl Fn(&mut RunArgs) -> &mut Vec<String>,
        pick_file: impl Fn(&mut FileSettings) -> &mut Vec<String>,
    ) -> Vec<String> {
        match pick(&mut self.args).is_empty() {
            true => std::mem::take(pick_file(&mut self.file)),
            false => std::mem::take(pick(&mut self.args)),
        }
    }

    fn duration(&mut self, name: &str, value: Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => parse_duration(&v).unwrap_or_else(|| {
                self.errors.push(format!(
                    "{name}: {v:?} is not a duration like 500ms, 10s or 1m"
                ));
                default
            }),
        }
    }

    fn size(&mut self, name: &str, value: Option<String>, default: usize) -> usize {
        match value {
            None => default,
            Some(text) => parse_size(&text).unwrap_or_else(|| {
                self.errors.push(format!(
                    "{name}: {text:?} is not a size like 1MiB, 64KiB or 4096"
                ));
                default
            }),
        }
    }

    /// A count that must be at least 1.
    fn positive(&mut self, name: &str, value: Option<usize>, default: usize) -> usize {
        match value {
            Some(0) => {
                self.errors.push(format!("{name}: must be at least 1"));
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// An `IP:port`, or `none`/`off` where `none` is allowed.
    fn address(&mut self, name: &str, text: &str, none: bool) -> Option<SocketAddr> {
        if none && (text == "none" || text == "off") {
            return None;
        }
        let or_none = if none { " or none" } else { "" };
        text.parse::<SocketAddr>()
            .map_err(|_| {
                self.errors.push(format!(
                    "{name}: {text:?} is not an IP:port address{or_none}"
                ))
            })
            .ok()
    }

    /// `--listen`, `--admin` (loopback unless `--admin-allow-remote`), `--admin-host`,
    /// `--health-listen`.
    fn listeners(&mut self) -> Listeners {
        let listen = take!(self, listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen = self.address("listen", &listen, false);
        let allow_remote = self.args.admin_allow_remote || self.file.admin_allow_remote;
        let admin = take!(self, admin).unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        let admin = match self.address("admin", &admin, true) {
            Some(addr) if !addr.ip().to_canonical().is_loopback() && !allow_remote => {
                self.errors.push(format!(
                    "admin: {addr} is not loopback; the admin endpoints are unauthenticated, \
                     so binding them elsewhere needs --admin-allow-remote"
                ));
                None
            }
            admin => admin,
        };
        let hosts = self.list(|a| &mut a.admin_hosts, |f| &mut f.admin_hosts);
        let health_listen = take!(self, health_listen);
        Listeners {
            listen,
            admin,
            admin_hosts: admin_hosts(hosts, &mut self.errors),
            health_listen: health_listen.and_then(|a| self.address("health-listen", &a, true)),
        }
    }

    /// `--upstream` (or `--demo-upstream`), its protocol, timeout and request limits.
    fn upstream(&mut self) -> UpstreamSettings {
        let demo =
            self.args.demo_upstream || (self.args.upstream.is_none() && self.file.demo_upstream);
        let upstream = match take!(self, upstream) {
            _ if demo => Some(Upstream::Demo),
            Some(u) => parse_upstream(&u).map_err(|e| self.errors.push(e)).ok(),
            None => {
                self.errors
                    .push("upstream: required (--upstream URL or --demo-upstream)".into());
                None
            }
        };
        let protocol = match take!(self, upstream_protocol).as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") => UpstreamProtocol::Http2,
            Some("auto") => UpstreamProtocol::Auto,
            Some(other) => {
                self.errors.push(format!(
                    "upstream-protocol: {other:?} is not one of http1, http2, auto"
                ));
                UpstreamProtocol::Http1
            }
        };
        let timeout = take!(self, upstream_timeout);
        let max_requests = take!(self, max_upstream_requests);
        let max_per_connection = take!(self, max_upstream_requests_per_connection);
        UpstreamSettings {
            upstream,
            protocol,
            timeout: self.duration("upstream-timeout", timeout, Duration::from_secs(30)),
            max_requests: self.positive("max-upstream-requests", max_requests, 1024),
            max_requests_per_connection: self.positive(
                "max-upstream-requests-per-connection",
                max_per_connection,
                32,
            ),
            replace_request_id: self.args.replace_request_id || self.file.replace_request_id,
        }
    }

    /// `--cert`, `--key` and `--client-ca`, or `--spiffe-socket` instead; `--trust-domain`;
    /// the handshake and Workload API timeouts.
    fn credentials(&mut self) -> Credentials {
        let cert = self.args.cert.take().or(self.file_path(|f| f.cert.take()));
        let key = self.args.key.take().or(self.file_path(|f| f.key.take()));
        let client_ca = self.args.client_ca.take();
        let client_ca = client_ca.or(self.file_path(|f| f.client_ca.take()));
        let named_files = cert.is_some() || key.is_some() || client_ca.is_some();
        // The environment variable is the SPIFFE convention for finding the agent; it only
        // speaks when the operator named no credentials at all, so a pod that sets it for
        // its application does not silently switch regate off its files.
        let spiffe_socket = take!(self, spiffe_socket).or_else(|| {
            (!named_files)
                .then(|| std::env::var("SPIFFE_ENDPOINT_SOCKET").ok())
                .flatten()
                .filter(|s| !s.trim().is_empty())
        });
        let errors = &mut self.errors;
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
                required_file("cert", cert, errors),
                required_file("key", key, errors),
                required_file("client-ca", client_ca, errors),
            ),
        };
        let trust_domains = self.trust_domains();
        let startup = take!(self, spiffe_startup_timeout);
        let handshake = take!(self, handshake_timeout);
        Credentials {
            cert,
            key,
            client_ca,
            spiffe_socket,
            spiffe_startup_timeout: self.duration(
                "spiffe-startup-timeout",
                startup,
                Duration::from_secs(30),
            ),
            trust_domains,
            handshake_timeout: self.duration(
                "handshake-timeout",
                handshake,
                Duration::from_secs(10),
            ),
        }
    }

    /// `--trust-domain`: the SPIFFE trust domains callers may come from.
    fn trust_domains(&mut self) -> Vec<String> {
        let trust_domains = self.list(|a| &mut a.trust_domains, |f| &mut f.trust_domains);
        for td in &trust_domains {
            if !crate::tls::identity::valid_trust_domain(td) {
                self.errors.push(format!(
                    "trust-domain: {td:?} is not a valid SPIFFE trust domain"
                ));
            }
        }
        trust_domains
    }

    /// `--policies`, `--query`, `--context`, and how the set is evaluated and reloaded.
    fn policy(&mut self) -> PolicySettings {
        let dir = self.args.policies.take();
        let dir = dir.or(self.file_path(|f| f.policies.take()));
        let bundle = match (self.args.bundle.take(), self.file.bundle.take()) {
            (Some(url), file) => Some(BundleFile {
                url: Some(url),
                ..file.unwrap_or_default()
            }),
            (None, file) => file,
        };
        let bundle =
            bundle.and_then(|b| bundle_settings(b, "bundle", &self.base, &mut self.errors));
        let dir = match dir {
            None if bundle.is_some() => None,
            Some(_) if bundle.is_some() => {
                self.errors.push(
                    "policies: a policy set has one source; give --policies or a bundle, not both"
                        .into(),
                );
                None
            }
            None => {
                self.errors
                    .push("policies: required (--policies DIR, or a bundle)".into());
                None
            }
            Some(p) if !p.is_dir() => {
                self.errors
                    .push(format!("policies: {} is not a directory", p.display()));
                None
            }
            Some(p) => Some(p),
        };
        let query = take!(self, query).unwrap_or_else(|| DEFAULT_QUERY.to_string());
        if !valid_query(&query) {
            self.errors.push(format!(
                "query: {query:?} is not a rule path like data.package.rule"
            ));
        }
        let mut context = std::mem::take(&mut self.file.context);
        for kv in &self.args.context {
            match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    context.insert(k.to_string(), v.to_string());
                }
                _ => self
                    .errors
                    .push(format!("context: {kv:?} is not KEY=VALUE")),
            }
        }
        let timeout = take!(self, policy_timeout);
        let reload = take!(self, reload_interval);
        PolicySettings {
            dir,
            bundle,
            query,
            context,
            timeout: self.duration("policy-timeout", timeout, Duration::from_millis(100)),
            reload_interval: self.duration("reload-interval", reload, Duration::from_secs(30)),
            watch: take!(self, watch).unwrap_or(true),
            decision_cache_entries: take!(self, decision_cache_entries).unwrap_or(10_000),
            strict_builtin_errors: self.args.strict_builtin_errors
                || self.file.strict_builtin_errors,
        }
    }

    /// `--decision-log` and what its records carry: the input, redacted; a signing key.
    fn decision_log(&mut self, delegation: &crate::delegation::Settings) -> LogSettings {
        let from_file = self.file.decision_log.take().map(|p| match p.as_str() {
            "stdout" | "-" => p,
            _ => self.base.join(p).display().to_string(),
        });
        let target = match self.args.decision_log.take().or(from_file).as_deref() {
            None | Some("stdout") | Some("-") => DecisionLog::Stdout,
            Some(p) => {
                let path = PathBuf::from(p);
                let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
                if parent.is_some_and(|d| !d.is_dir()) {
                    self.errors
                        .push(format!("decision-log: directory of {p} does not exist"));
                }
                DecisionLog::File(path)
            }
        };
        let mut redact_headers = std::mem::take(&mut self.args.redact_headers);
        redact_headers.append(&mut self.file.redact_headers);
        for name in &redact_headers {
            let plain = name.replace('*', "a");
            if http::HeaderName::from_bytes(plain.trim().as_bytes()).is_err() {
                self.errors.push(format!(
                    "redact-header: {name:?} is not a header name (or a pattern with *)"
                ));
            }
        }
        // The delegation token travels in its own header when one is set: it is a
        // credential like `authorization`.
        let delegation_header = delegation.header.as_ref().map(|h| h.as_str());
        let redaction = crate::audit::input::Recording::new(
            redact_headers
                .iter()
                .map(String::as_str)
                .chain(delegation_header),
        );
        let signing_key = self.args.decision_log_signing_key.take();
        let signing_key = signing_key.or(self.file_path(|f| f.decision_log_signing_key.take()));
        if let Some(path) = signing_key.as_ref().filter(|p| !p.is_file()) {
            self.errors.push(format!(
                "decision-log-signing-key: {} does not exist",
                path.display()
            ));
        }
        LogSettings {
            target,
            input: self.args.decision_log_input || self.file.decision_log_input,
            signing_key,
            redaction,
        }
    }

    /// `--inspect-body-limit`, the budgets bodies are held within, and their timeout.
    fn body_inspection(&mut self) -> BodyInspection {
        let limit = take!(self, inspect_body_limit);
        let per_identity = take!(self, inspect_body_budget_per_identity);
        let budget = take!(self, inspect_body_budget);
        let timeout = take!(self, inspect_body_timeout);
        let limit = self.size("inspect-body-limit", limit, 1 << 20);
        // By default one caller may hold 16 bodies at the limit (at least 16 MiB), and all
        // callers 64 (at least 64 MiB): room for every honest tool call, far from the memory
        // of the host.
        let budget_per_identity = self.size(
            "inspect-body-budget-per-identity",
            per_identity,
            limit.saturating_mul(16).max(16 << 20),
        );
        let budget = self.size(
            "inspect-body-budget",
            budget,
            limit.saturating_mul(64).max(64 << 20),
        );
        // A body at the limit must fit one caller's share, or no inspected body ever could.
        if limit > 0 && budget_per_identity.min(budget) <= limit {
            self.errors.push(format!(
                "inspect-body-budget-per-identity: {budget_per_identity} bytes \
                 (and inspect-body-budget: {budget}) must be over \
                 inspect-body-limit ({limit}), or a body at the limit never fits"
            ));
        }
        BodyInspection {
            limit,
            budget,
            budget_per_identity,
            timeout: self.duration("inspect-body-timeout", timeout, Duration::from_secs(10)),
        }
    }

    /// How many client connections, in all and per certificate; how long an idle one stays
    /// open, and how long open ones may finish at shutdown; how many callers the inventory
    /// holds.
    fn connections(&mut self) -> Connections {
        let idle = take!(self, idle_timeout);
        let grace = take!(self, shutdown_grace);
        let max = take!(self, max_connections);
        let max_identities = take!(self, max_identities);
        let shutdown_grace = self.duration("shutdown-grace", grace, Duration::from_secs(15));
        let idle_timeout = self.duration("idle-timeout", idle, Duration::from_secs(60));
        if idle_timeout.is_zero() {
            self.errors.push("idle-timeout: must be more than 0".into());
        }
        Connections {
            idle_timeout,
            max: self.positive("max-connections", max, default_max_connections()),
            max_per_identity: take!(self, max_connections_per_identity).unwrap_or(128),
            max_identities: self.positive(
                "max-identities",
                max_identities,
                crate::identities::DEFAULT_MAX_IDENTITIES,
            ),
            shutdown_grace,
        }
    }

    /// `--revocations` (its directory must exist) and `--max-revocations`.
    fn revocations(&mut self) -> (Option<PathBuf>, usize) {
        let path = self.args.revocations.take();
        let path = path.or_else(|| self.file.revocations.take().map(|p| self.base.join(p)));
        if let Some(path) = &path {
            let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
            if parent.is_some_and(|d| !d.is_dir()) {
                self.errors.push(format!(
                    "revocations: directory of {} does not exist",
                    path.display()
                ));
            }
        }
        let max = take!(self, max_revocations);
        let max = self.positive(
            "max-revocations",
            max,
            crate::revocations::DEFAULT_MAX_REVOCATIONS,
        );
        (path, max)
    }

    /// The delegation token issuers, from the file's section and the flags; and
    /// `oauth_resource:`, which relies on them.
    fn delegation(
        &mut self,
    ) -> (
        crate::delegation::Settings,
        Option<crate::proxy::resource::Settings>,
    ) {
        let mut delegation = delegation_settings(
            &self.args,
            self.file.delegation.as_ref(),
            &self.base,
            &mut self.errors,
        );
        let resource = oauth_resource(
            self.file.oauth_resource.take(),
            &mut delegation,
            &mut self.errors,
        );
        if delegation.require_token && delegation.issuers.is_empty() {
            self.errors.push(
                "delegation: require_token is set, but no issuer is configured to verify a token"
                    .to_string(),
            );
        }
        (delegation, resource)
    }

    /// What a request may carry: upgrades, underscore headers, client claims kept.
    fn request_rules(&mut self) -> crate::request::Rules {
        let upgrades = std::mem::take(&mut self.args.upgrade_protocols);
        let file_upgrades = self.file.upgrade_protocols.take();
        let underscores = take!(self, headers_with_underscores);
        let keep = self.list(
            |a| &mut a.keep_client_headers,
            |f| &mut f.keep_client_headers,
        );
        request_rules(upgrades, file_upgrades, underscores, keep, &mut self.errors)
    }

    /// `--shadow-policies` (or `shadow_bundle:`) and `--shadow-query`, checked against the
    /// main set.
    fn shadow(&mut self, main: &PolicySettings) -> Option<Shadow> {
        let dir = self.args.shadow_policies.take();
        let dir = dir.or(self.file_path(|f| f.shadow_policies.take()));
        let query = take!(self, shadow_query);
        let bundle = self.file.shadow_bundle.take();
        let Some(bundle) = bundle else {
            return shadow_settings(
                dir,
                query,
                (main.dir.as_deref(), &main.query),
                &mut self.errors,
            );
        };
        if dir.is_some() {
            self.errors.push(
                "shadow-policies: the shadow set has one source; give --shadow-policies or \
                 shadow_bundle, not both"
                    .into(),
            );
        }
        let bundle = bundle_settings(bundle, "shadow_bundle", &self.base, &mut self.errors)?;
        let query = query.unwrap_or_else(|| main.query.clone());
        if !valid_query(&query) {
            self.errors.push(format!(
                "shadow-query: {query:?} is not a rule path like data.package.rule"
            ));
        }
        Some(Shadow {
            policies: PathBuf::new(),
            bundle: Some(bundle),
            query,
        })
    }

    /// `--revocations-feed` and the `revocations_feed:` section.
    fn revocations_feed(&mut self) -> Option<crate::bundle::feed::FeedSettings> {
        let file = self.file.revocations_feed.take();
        let feed = match (self.args.revocations_feed.take(), file) {
            (Some(url), file) => FeedFile {
                url: Some(url),
                ..file.unwrap_or_default()
            },
            (None, Some(file)) => file,
            (None, None) => return None,
        };
        let url = checked_url("revocations_feed", feed.url, &mut self.errors)?;
        let polling = self.duration(
            "revocations_feed.polling",
            feed.polling,
            Duration::from_secs(1),
        );
        if polling.is_zero() {
            self.errors
                .push("revocations_feed.polling: must be more than 0".into());
        }
        let long = feed.long_polling_timeout;
        let long = long.map(|t| {
            self.duration(
                "revocations_feed.long_polling_timeout",
                Some(t),
                Duration::ZERO,
            )
        });
        let max_age = self.duration("revocations_feed.max_age", feed.max_age, Duration::ZERO);
        let credentials = credentials(
            "revocations_feed",
            feed.credentials,
            &self.base,
            &mut self.errors,
        );
        Some(crate::bundle::feed::FeedSettings {
            url,
            polling,
            long_polling_timeout: long.filter(|t| !t.is_zero()),
            max_age,
            credentials,
        })
    }

    /// `--mode`: enforce or audit.
    fn mode(&mut self) -> Mode {
        match take!(self, mode).as_deref() {
            None | Some("enforce") => Mode::Enforce,
            Some("audit") => Mode::Audit,
            Some(other) => {
                self.errors
                    .push(format!("mode: {other:?} is not enforce or audit"));
                Mode::Enforce
            }
        }
    }

    /// MCP's Streamable HTTP: `--mcp-allowed-origin` (the flags' list replaces the file's)
    /// and `--mcp-tools-list-query`.
    fn mcp(&mut self) -> Mcp {
        let file = self.file.mcp.take().unwrap_or_default();
        let origins = match self.args.mcp_allowed_origins.is_empty() {
            true => file.allowed_origins,
            false => std::mem::take(&mut self.args.mcp_allowed_origins),
        };
        let allowed_origins = crate::request::mcp::Origins::new(&origins).unwrap_or_else(|es| {
            self.errors
                .extend(es.into_iter().map(|e| format!("mcp-allowed-origin: {e}")));
            Default::default()
        });
        let query = self
            .args
            .mcp_tools_list_query
            .take()
            .or(file.tools_list_query);
        if let Some(q) = query.as_deref().filter(|q| !valid_query(q)) {
            self.errors.push(format!(
                "mcp-tools-list-query: {q:?} is not a rule path like data.package.rule"
            ));
        }
        Mcp {
            allowed_origins,
            tools_list_query: query,
        }
    }

    /// `--budget-store` and `--budget-timeout`.
    fn budgets(&mut self) -> super::Budgets {
        let file = self.file.budgets.take().unwrap_or_default();
        let store = self.args.budget_store.take().or(file.store);
        let redis = match store.as_deref() {
            None | Some("memory") => None,
            Some(url) => match crate::budgets::redis::Store::new(url, Duration::ZERO) {
                Ok(_) => Some(url.to_string()),
                Err(e) => {
                    self.errors.push(format!(
                        "budget-store: {e}; use memory or redis://host:port/db"
                    ));
                    None
                }
            },
        };
        let timeout = match self.args.budget_timeout.take().or(file.timeout) {
            None => Duration::from_millis(50),
            Some(text) => match parse_duration(&text) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    self.errors.push(format!(
                        "budget-timeout: {text:?} is not a duration like 50ms"
                    ));
                    Duration::from_millis(50)
                }
            },
        };
        super::Budgets { redis, timeout }
    }

    /// The `approvals:` section and `--approval-local-key`, files relative to the file.
    fn approvals(&mut self) -> Option<super::Approvals> {
        let file = self.file.approvals.take();
        let flag_key = self.args.approval_local_key.take();
        if file.is_none() && flag_key.is_none() {
            return None;
        }
        let file = file.unwrap_or_default();
        let base = self.base.clone();
        let local_key = flag_key.or_else(|| file.local_key.map(|p| base.join(p)));
        let mut issuers: Vec<_> = file
            .issuers
            .into_iter()
            .map(|mut i| {
                i.jwks_file = i.jwks_file.map(|f| base.join(f));
                i.ca = i.ca.map(|f| base.join(f));
                i
            })
            .collect();
        issuers.retain(|issuer| {
            let mut problems = key_source_problems("approvals", issuer);
            if issuer.issuer == crate::approvals::token::LOCAL_ISSUER {
                problems.push(format!(
                    "approvals: issuer {}: the name is the local key's",
                    issuer.issuer
                ));
            }
            if !issuer.audiences.is_empty() || issuer.require_binding {
                problems.push(format!(
                    "approvals: issuer {}: audiences and require_binding are for delegation \
                     tokens; an approval is bound to its action by its digest",
                    issuer.issuer
                ));
            }
            let ok = problems.is_empty();
            self.errors.extend(problems);
            ok
        });
        if let Some(path) = local_key.as_ref().filter(|p| !p.is_file()) {
            self.errors.push(format!(
                "approvals: local_key {} does not exist",
                path.display()
            ));
        }
        if issuers.is_empty() && local_key.is_none() {
            self.errors.push(
                "approvals: no issuer and no local_key: no approval could ever be granted".into(),
            );
        }
        let webhook_ca = file.webhook_ca.map(|p| base.join(p));
        if let Some(url) = &file.webhook {
            if let Err(e) = crate::delegation::jwks::fetch::check_url(url) {
                self.errors.push(format!("approvals: webhook {e}"));
            }
        }
        match (&webhook_ca, &file.webhook) {
            (Some(ca), Some(_)) if !ca.is_file() => self.errors.push(format!(
                "approvals: webhook_ca {} does not exist",
                ca.display()
            )),
            (Some(_), None) => self
                .errors
                .push("approvals: webhook_ca without a webhook".into()),
            _ => {}
        }
        Some(super::Approvals {
            issuers,
            local_key,
            webhook: file.webhook,
            webhook_ca,
        })
    }

    /// `--otlp-endpoint`, `--otlp-ca` and `--trace-sample-ratio` (the file's `tracing:`
    /// section): where spans go, and which; none without an endpoint.
    fn tracing(&mut self) -> Option<crate::telemetry::Settings> {
        let mut file = self.file.tracing.take().unwrap_or_default();
        let endpoint = self.args.otlp_endpoint.take().or(file.otlp_endpoint.take());
        let ca = self.args.otlp_ca.take();
        let ca = ca.or_else(|| file.otlp_ca.take().map(|p| self.base.join(p)));
        let ratio = self.args.trace_sample_ratio.take().or(file.sample_ratio);
        tracing_settings(endpoint, ca, ratio, &mut self.errors)
    }

    /// `--log-format`: text or json.
    fn log_format(&mut self) -> LogFormat {
        match take!(self, log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.errors
                    .push(format!("log-format: {other:?} is not text or json"));
                LogFormat::Text
            }
        }
    }
}

/// The tracing settings, checked: an endpoint that is an `http` or `https` URL (`https`
/// with the roots to verify it), without credentials in it; a ratio from 0 to 1; and nothing
/// of it set without an endpoint, where it would do nothing.
fn tracing_settings(
    endpoint: Option<String>,
    ca: Option<PathBuf>,
    ratio: Option<f64>,
    errors: &mut Vec<String>,
) -> Option<crate::telemetry::Settings> {
    if let Some(r) = ratio.filter(|r| !(0.0..=1.0).contains(r)) {
        errors.push(format!("trace-sample-ratio: {r} is not between 0 and 1"));
    }
    let Some(endpoint) = endpoint else {
        if ca.is_some() || ratio.is_some() {
            errors.push(
                "otlp-endpoint: tracing settings are given, but no endpoint to send spans to"
                    .to_string(),
            );
        }
        return None;
    };
    let endpoint = match traces_url(&endpoint) {
        Ok(url) => url,
        Err(why) => {
            errors.push(format!("otlp-endpoint: {endpoint:?} {why}"));
            return None;
        }
    };
    match (&ca, endpoint.scheme_str()) {
        (Some(ca), _) if !ca.is_file() => {
            errors.push(format!("otlp-ca: {} does not exist", ca.display()));
        }
        (None, Some("https")) => errors.push(
            "otlp-ca: an https otlp-endpoint needs the roots to verify the collector with"
                .to_string(),
        ),
        _ => {}
    }
    Some(crate::telemetry::Settings {
        endpoint,
        ca,
        sample_ratio: ratio.unwrap_or(crate::telemetry::DEFAULT_SAMPLE_RATIO),
    })
}

/// The OTLP/HTTP traces URL of an endpoint: as given when it ends in `/v1/traces`, else
/// with `/v1/traces` added to its path (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
pub(super) fn traces_url(endpoint: &str) -> Result<http::Uri, &'static str> {
    let uri: http::Uri = endpoint.parse().map_err(|_| "is not a URL")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("is not an http or https URL");
    }
    let authority = uri.authority().ok_or("names no host")?;
    if authority.as_str().contains('@') {
        return Err("carries credentials; give them in OTEL_EXPORTER_OTLP_HEADERS instead");
    }
    if uri.query().is_some() {
        return Err("has a query, which OTLP endpoints do not take");
    }
    let path = uri.path().trim_end_matches('/');
    let path = match path.ends_with("/v1/traces") {
        true => path.to_string(),
        false => format!("{path}/v1/traces"),
    };
    http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("http"))
        .authority(authority.as_str())
        .path_and_query(path)
        .build()
        .map_err(|_| "is not a URL")
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

/// A `bundle:` section checked: its URL, polling, credentials, verification key and
/// persistence directory, each file relative to the config file.
fn bundle_settings(
    file: BundleFile,
    name: &str,
    base: &Path,
    errors: &mut Vec<String>,
) -> Option<crate::bundle::BundleSettings> {
    let url = checked_url(name, file.url, errors);
    let mut duration = |key: &str, value: Option<String>, default: Duration| match value {
        None => default,
        Some(v) => parse_duration(&v).unwrap_or_else(|| {
            errors.push(format!(
                "{name}.polling.{key}: {v:?} is not a duration like 500ms, 10s or 1m"
            ));
            default
        }),
    };
    let min_delay = duration("min_delay", file.polling.min_delay, Duration::from_secs(1));
    let max_delay = duration("max_delay", file.polling.max_delay, Duration::from_secs(5));
    let long = file
        .polling
        .long_polling_timeout
        .map(|t| duration("long_polling_timeout", Some(t), Duration::ZERO));
    if min_delay.is_zero() || max_delay < min_delay {
        errors.push(format!(
            "{name}.polling: min_delay must be more than 0 and at most max_delay"
        ));
    }
    let credentials = credentials(name, file.credentials, base, errors);
    let verification = file.verification.map(|v| {
        let public_key = v.public_key.map(|p| base.join(p));
        match &public_key {
            None => errors.push(format!("{name}.verification.public_key: required")),
            Some(p) if !p.is_file() => errors.push(format!(
                "{name}.verification.public_key: {} does not exist",
                p.display()
            )),
            Some(_) => {}
        }
        if v.key_id.as_deref().is_none_or(str::is_empty) {
            errors.push(format!("{name}.verification.key_id: required"));
        }
        crate::bundle::VerificationSettings {
            public_key: public_key.unwrap_or_default(),
            key_id: v.key_id.unwrap_or_default(),
            scope: v.scope,
        }
    });
    let persist_dir = file.persist_dir.map(|p| base.join(p));
    if let Some(parent) = persist_dir.as_deref().and_then(Path::parent) {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            errors.push(format!(
                "{name}.persist_dir: the directory above {} does not exist",
                persist_dir.as_deref().unwrap_or(parent).display()
            ));
        }
    }
    Some(crate::bundle::BundleSettings {
        url: url?,
        min_delay,
        max_delay,
        long_polling_timeout: long.filter(|t| !t.is_zero()),
        credentials,
        verification,
        persist_dir,
    })
}

/// A fetcher's URL: `http://`, `https://` or `oci://`.
fn checked_url(name: &str, url: Option<String>, errors: &mut Vec<String>) -> Option<String> {
    match url {
        None => {
            errors.push(format!("{name}.url: required"));
            None
        }
        Some(u)
            if u.starts_with("oci://")
                || u.parse::<http::Uri>().is_ok_and(|uri| {
                    matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
                }) =>
        {
            Some(u)
        }
        Some(u) => {
            errors.push(format!(
                "{name}.url: {u:?} is not an http://, https:// or oci:// URL"
            ));
            None
        }
    }
}

/// `credentials:`, each file relative to the config file and required to exist.
fn credentials(
    name: &str,
    file: CredentialsFile,
    base: &Path,
    errors: &mut Vec<String>,
) -> crate::bundle::http::Credentials {
    let mut path = |key: &str, p: Option<PathBuf>| {
        let p = p.map(|p| base.join(p));
        if let Some(missing) = p.as_ref().filter(|p| !p.is_file()) {
            errors.push(format!(
                "{name}.credentials.{key}: {} does not exist",
                missing.display()
            ));
        }
        p
    };
    let credentials = crate::bundle::http::Credentials {
        bearer_token_file: path("bearer_token_file", file.bearer_token_file),
        client_cert: path("client_cert", file.client_cert),
        client_key: path("client_key", file.client_key),
        ca_cert: path("ca_cert", file.ca_cert),
    };
    if credentials.client_cert.is_some() != credentials.client_key.is_some() {
        errors.push(format!(
            "{name}.credentials: client_cert and client_key go together"
        ));
    }
    credentials
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
        bundle: None,
        query,
    })
}

/// The delegation token issuers from the file and the flags, with paths made relative to the
/// file. Each names exactly one key source: a JWKS file that exists, a JWKS URL, or
/// discovery; URLs are https (http on loopback only). An issuer that does not is reported
/// and left out.
fn delegation_issuers(
    args: &RunArgs,
    file: Option<&DelegationFile>,
    base: &Path,
    errors: &mut Vec<String>,
) -> Vec<crate::delegation::IssuerConfig> {
    let mut issuers: Vec<crate::delegation::IssuerConfig> = file
        .map(|f| f.issuers.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut i| {
            i.jwks_file = i.jwks_file.map(|f| base.join(f));
            i.ca = i.ca.map(|f| base.join(f));
            i
        })
        .collect();
    if let Some(issuer) = &args.delegation_issuer {
        issuers.push(crate::delegation::IssuerConfig {
            issuer: issuer.clone(),
            audiences: args.delegation_audience.clone(),
            jwks_file: args.delegation_jwks.clone(),
            jwks_uri: args.delegation_jwks_uri.clone(),
            discovery: args.delegation_discovery,
            ca: args.delegation_ca.clone(),
            algorithms: match args.delegation_algorithm.is_empty() {
                true => vec!["ES256".into(), "RS256".into()],
                false => args.delegation_algorithm.clone(),
            },
            require_binding: args.delegation_require_binding,
        });
    }
    issuers.retain(|issuer| {
        let problems = key_source_problems("delegation", issuer);
        let ok = problems.is_empty();
        errors.extend(problems);
        ok
    });
    issuers
}

/// What is wrong with an issuer's key source, each problem once.
fn key_source_problems(section: &str, issuer: &crate::delegation::IssuerConfig) -> Vec<String> {
    use crate::delegation::jwks::fetch::check_url;
    use crate::delegation::KeySource;
    let name = &issuer.issuer;
    let mut problems = Vec::new();
    match issuer.source() {
        None => problems.push(format!(
            "{section}: issuer {name}: name exactly one of jwks_file, jwks_uri and discovery: true"
        )),
        Some(KeySource::File(path)) if !path.is_file() => problems.push(format!(
            "{section}: issuer {name}: JWKS file {} does not exist",
            path.display()
        )),
        Some(KeySource::File(_)) => {}
        Some(KeySource::Uri(uri)) => {
            if let Err(e) = check_url(&uri) {
                problems.push(format!("{section}: issuer {name}: jwks_uri {e}"));
            }
        }
        Some(KeySource::Discovery) => {
            if let Err(e) = check_url(name) {
                problems.push(format!("{section}: issuer {name}: discovery: {e}"));
            }
        }
    }
    match &issuer.ca {
        Some(ca) if !ca.is_file() => problems.push(format!(
            "{section}: issuer {name}: ca {} does not exist",
            ca.display()
        )),
        Some(_) if issuer.jwks_file.is_some() => problems.push(format!(
            "{section}: issuer {name}: ca is for fetching keys; a jwks_file is not fetched"
        )),
        _ => {}
    }
    problems
}

/// A duration setting of the delegation section: the flag's, else the file's, else
/// `default`.
fn delegation_duration(
    name: &str,
    flag: Option<&String>,
    file: Option<&String>,
    default: Duration,
    errors: &mut Vec<String>,
) -> Duration {
    match flag.or(file) {
        None => default,
        Some(t) => parse_duration(t).unwrap_or_else(|| {
            errors.push(format!("{name}: {t:?} is not a duration like 30s"));
            default
        }),
    }
}

/// The delegation settings from the file's section and the flags: issuers, leeway, header.
fn delegation_settings(
    args: &RunArgs,
    file: Option<&DelegationFile>,
    base: &Path,
    errors: &mut Vec<String>,
) -> crate::delegation::Settings {
    let issuers = delegation_issuers(args, file, base, errors);
    let leeway = delegation_duration(
        "delegation-leeway",
        args.delegation_leeway.as_ref(),
        file.and_then(|f| f.leeway.as_ref()),
        Duration::from_secs(30),
        errors,
    );
    let max_staleness = delegation_duration(
        "jwks-max-staleness",
        args.jwks_max_staleness.as_ref(),
        file.and_then(|f| f.jwks_max_staleness.as_ref()),
        crate::delegation::DEFAULT_MAX_STALENESS,
        errors,
    );
    if max_staleness < Duration::from_secs(2) {
        errors.push(format!(
            "jwks-max-staleness: {max_staleness:?} leaves no time to fetch the keys again; \
             give at least 2s"
        ));
    }
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
    crate::delegation::Settings {
        issuers,
        leeway,
        header,
        require_token,
        required_audience: None,
        max_staleness,
    }
}

/// `oauth_resource:`, checked against the delegation issuers it relies on; the delegation
/// settings then require its audience in every token (RFC 8707), and a token on every
/// request if `require_token`. An issuer without audiences takes the resource as its one.
fn oauth_resource(
    file: Option<OauthResourceFile>,
    delegation: &mut crate::delegation::Settings,
    errors: &mut Vec<String>,
) -> Option<crate::proxy::resource::Settings> {
    let file = file?;
    let Some(resource) = file.resource else {
        errors.push("oauth_resource: resource is missing (the MCP server's canonical URI)".into());
        return None;
    };
    if let Err(e) = crate::proxy::resource::check_resource(&resource) {
        errors.push(format!("oauth_resource: resource {e}"));
    }
    if delegation.issuers.is_empty() {
        errors.push(
            "oauth_resource: needs a delegation issuer to verify the tokens it asks for".into(),
        );
    }
    let issuers: Vec<String> = delegation
        .issuers
        .iter()
        .map(|i| i.issuer.clone())
        .collect();
    let authorization_servers = match file.authorization_servers.is_empty() {
        true => issuers.clone(),
        false => file.authorization_servers,
    };
    for server in authorization_servers
        .iter()
        .filter(|s| !issuers.contains(s))
    {
        errors.push(format!(
            "oauth_resource: authorization server {server} is not a delegation issuer; \
             regate could not verify the tokens it issues"
        ));
    }
    for scope in &file.scopes_supported {
        if !crate::proxy::resource::is_scope_token(scope) {
            errors.push(format!(
                "oauth_resource: scope {scope:?} is not a scope token (RFC 6749 §3.3)"
            ));
        }
    }
    let require_token = file.require_token.unwrap_or(true);
    for issuer in delegation.issuers.iter_mut() {
        if issuer.audiences.is_empty() {
            issuer.audiences.push(resource.clone());
        }
    }
    delegation.required_audience = Some(resource.clone());
    delegation.require_token |= require_token;
    Some(crate::proxy::resource::Settings {
        resource,
        authorization_servers,
        scopes_supported: file.scopes_supported,
        forward_token: file.forward_token,
    })
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
pub(super) fn parse_upstream(u: &str) -> Result<Upstream, String> {
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
