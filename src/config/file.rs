//! The YAML file `--config` names: the settings of `regate run`'s flags under the same
//! names (dashes become underscores), read strictly: a key regate does not know is refused,
//! not ignored.
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
}

/// The settings in the file at `path`, or why it cannot be read as settings.
pub(super) fn read(path: &Path) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("config: cannot read {}: {e}", path.display()))?;
    yaml_serde::from_str(&text).map_err(|e| format!("config: {}: {e}", path.display()))
}
