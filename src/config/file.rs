//! The YAML file `--config` names: the settings of `regate run`'s flags under the same
//! names (dashes become underscores), read strictly. A key regate does not know is refused,
//! not ignored, and named with the known key it most likely meant.
//!
//! Only reading lives here: merging the file under the flags and checking the values is
//! [`super::merge`]'s, and paths are made relative to the file there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The `delegation:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DelegationFile {
    #[serde(default)]
    pub(super) issuers: Vec<crate::delegation::IssuerConfig>,
    pub(super) leeway: Option<String>,
    pub(super) header: Option<String>,
    #[serde(default)]
    pub(super) require_token: bool,
    pub(super) jwks_max_staleness: Option<String>,
}

/// The `oauth_resource:` section: regate as the OAuth 2.1 resource server in front of an
/// MCP server (RFC 9728 metadata, RFC 8707 audiences).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OauthResourceFile {
    pub(super) resource: Option<String>,
    #[serde(default)]
    pub(super) authorization_servers: Vec<String>,
    #[serde(default)]
    pub(super) scopes_supported: Vec<String>,
    pub(super) require_token: Option<bool>,
    #[serde(default)]
    pub(super) forward_token: bool,
}

/// The `mcp:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct McpFile {
    #[serde(default)]
    pub(super) allowed_origins: Vec<String>,
    pub(super) tools_list_query: Option<String>,
}

/// The `approvals:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalsFile {
    /// Like `delegation.issuers` (no audiences: the digest claim binds the token).
    #[serde(default)]
    pub(super) issuers: Vec<crate::delegation::IssuerConfig>,
    pub(super) local_key: Option<PathBuf>,
    pub(super) webhook: Option<String>,
    pub(super) webhook_ca: Option<PathBuf>,
}

/// The `budgets:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BudgetsFile {
    pub(super) store: Option<String>,
    pub(super) timeout: Option<String>,
}

/// A `bundle:` (or `shadow_bundle:`) section: where an OPA bundle is polled from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BundleFile {
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) polling: PollingFile,
    #[serde(default)]
    pub(super) credentials: CredentialsFile,
    pub(super) verification: Option<VerificationFile>,
    pub(super) persist_dir: Option<PathBuf>,
}

/// `polling:` of a bundle, as OPA names it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PollingFile {
    pub(super) min_delay: Option<String>,
    pub(super) max_delay: Option<String>,
    pub(super) long_polling_timeout: Option<String>,
}

/// `credentials:` for a bundle server, registry or feed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialsFile {
    pub(super) bearer_token_file: Option<PathBuf>,
    pub(super) client_cert: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
    pub(super) ca_cert: Option<PathBuf>,
}

/// `verification:` of a bundle.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerificationFile {
    pub(super) public_key: Option<PathBuf>,
    pub(super) key_id: Option<String>,
    #[serde(default)]
    pub(super) scope: String,
}

/// `revocations_feed:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeedFile {
    pub(super) url: Option<String>,
    pub(super) polling: Option<String>,
    pub(super) long_polling_timeout: Option<String>,
    pub(super) max_age: Option<String>,
    #[serde(default)]
    pub(super) credentials: CredentialsFile,
}

/// The `tracing:` section of the YAML file: `--otlp-endpoint`, `--otlp-ca` and
/// `--trace-sample-ratio`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TracingFile {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_ca: Option<PathBuf>,
    pub(super) sample_ratio: Option<f64>,
}

/// The YAML file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSettings {
    pub(super) listen: Option<String>,
    pub(super) upstream: Option<String>,
    #[serde(default)]
    pub(super) demo_upstream: bool,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) spiffe_socket: Option<String>,
    pub(super) spiffe_startup_timeout: Option<String>,
    pub(super) policies: Option<PathBuf>,
    pub(super) bundle: Option<BundleFile>,
    pub(super) shadow_bundle: Option<BundleFile>,
    pub(super) revocations_feed: Option<FeedFile>,
    pub(super) query: Option<String>,
    #[serde(default, alias = "trust_domain")]
    pub(super) trust_domains: Vec<String>,
    #[serde(default)]
    pub(super) context: BTreeMap<String, String>,
    pub(super) decision_log: Option<String>,
    #[serde(default)]
    pub(super) decision_log_input: bool,
    pub(super) decision_log_signing_key: Option<PathBuf>,
    #[serde(default)]
    pub(super) redact_headers: Vec<String>,
    pub(super) upstream_timeout: Option<String>,
    pub(super) upstream_protocol: Option<String>,
    pub(super) handshake_timeout: Option<String>,
    pub(super) policy_timeout: Option<String>,
    pub(super) reload_interval: Option<String>,
    pub(super) watch: Option<bool>,
    pub(super) admin: Option<String>,
    #[serde(default)]
    pub(super) admin_allow_remote: bool,
    #[serde(default, alias = "admin_host")]
    pub(super) admin_hosts: Vec<String>,
    pub(super) health_listen: Option<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) upgrade_protocols: Option<Vec<String>>,
    pub(super) headers_with_underscores: Option<String>,
    #[serde(default)]
    pub(super) keep_client_headers: Vec<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_identity: Option<usize>,
    pub(super) max_upstream_requests: Option<usize>,
    pub(super) max_upstream_requests_per_connection: Option<usize>,
    pub(super) decision_cache_entries: Option<usize>,
    #[serde(default)]
    pub(super) strict_builtin_errors: bool,
    pub(super) revocations: Option<String>,
    pub(super) max_revocations: Option<usize>,
    pub(super) delegation: Option<DelegationFile>,
    pub(super) oauth_resource: Option<OauthResourceFile>,
    pub(super) inspect_body_limit: Option<String>,
    pub(super) inspect_body_budget: Option<String>,
    pub(super) inspect_body_budget_per_identity: Option<String>,
    pub(super) inspect_body_timeout: Option<String>,
    pub(super) max_identities: Option<usize>,
    pub(super) shadow_policies: Option<PathBuf>,
    pub(super) shadow_query: Option<String>,
    pub(super) mode: Option<String>,
    #[serde(default)]
    pub(super) replace_request_id: bool,
    pub(super) mcp: Option<McpFile>,
    pub(super) budgets: Option<BudgetsFile>,
    pub(super) approvals: Option<ApprovalsFile>,
    pub(super) tracing: Option<TracingFile>,
}

/// The settings in the file at `path`, or why it cannot be read as settings.
pub(super) fn read(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config: cannot read {}: {e}", path.display()))?;
    yaml_serde::from_str(&text)
        .map_err(|e| format!("config: {}: {}", path.display(), suggest(&e.to_string())))
}

/// serde's message for an unknown key lists every key it expected, some fifty at the top
/// level. When one of them is a likely misspelling of the unknown key, the message names
/// that one instead; otherwise it stays as it is.
fn suggest(message: &str) -> String {
    const UNKNOWN: &str = "unknown field `";
    let Some(start) = message.find(UNKNOWN) else {
        return message.to_string();
    };
    let (before, after) = message.split_at(start);
    let after = &after[UNKNOWN.len()..];
    let Some((unknown, rest)) = after.split_once('`') else {
        return message.to_string();
    };
    // The known keys are the words in backquotes; what follows the last is the location.
    let Some((expected, location)) = rest.rsplit_once('`') else {
        return message.to_string();
    };
    let known = expected.split('`').skip(1).step_by(2);
    match closest(unknown, known) {
        Some(key) => format!("{before}unknown field `{unknown}`{location}; did you mean `{key}`?"),
        None => message.to_string(),
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to be a
/// misspelling of it: at most one edit in three letters.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = word.chars().count().div_ceil(3).max(1);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Insertions, deletions, substitutions and swaps of two neighbours that turn `a` into `b`
/// (optimal string alignment distance).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the table: two back (for swaps), the last, and this one.
    let mut two_back: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(two_back[j - 2] + 1);
            }
        }
        two_back = std::mem::replace(&mut last, row);
    }
    last[b.len()]
}
