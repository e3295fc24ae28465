//! Hot reload of policies and data, the served certificate and key, and the client CA
//! bundle, while regate serves.
//!
//! Triggers: a change event under a watched directory (debounced), the periodic re-read
//! (`--reload-interval`), and SIGHUP. Every trigger re-reads all three kinds; each kind is
//! hashed first and only rebuilt when its bytes changed. A new state is built and checked off
//! the request path (policies are compiled and smoke-evaluated), then published whole through
//! its `ArcSwap`. Anything that fails keeps the last good state, logs the error, and records
//! it in [`ReloadStatus`]. The shadow policy set (`--shadow-policies`) is reloaded the same
//! way into a store of its own; its failures never touch the main set.
//!
//! Directories are watched, never single files: Kubernetes ConfigMap and Secret volumes
//! update by swapping a `..data` symlink, which a watch on a file does not survive. The
//! parent of the policy directory is watched too, for tools that swap the directory itself
//! behind a symlink (git-sync). The periodic re-read catches whatever watching misses.
//!
//! With `--spiffe-socket`, the certificate and CA bundle are not files: the Workload API
//! pushes them ([`crate::tls::workload`]), and [`Reloader::apply_workload`] publishes them
//! through the same checks, status and metrics as a file reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{PolicySet, PolicyStore, Sources};
use crate::tls::{self, hash_all, ClientCa, ServedCert, TlsState, TlsStore};

/// Events arrive in bursts (an editor's save, a symlink swap); wait this long for quiet.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A directory that never goes quiet is reloaded at least this often.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// The last reload of one kind, for /status and metrics.
#[derive(Debug, Clone, Default)]
pub struct KindStatus {
    pub last_attempt: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    /// Set when the last attempt failed; cleared by the next success.
    pub last_error: Option<String>,
    pub successes: u64,
    pub failures: u64,
}

/// What the reloader has done, kind by kind. Side channel only: the request path never reads
/// it.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    pub policy: Mutex<KindStatus>,
    pub cert: Mutex<KindStatus>,
    pub ca: Mutex<KindStatus>,
    /// `--shadow-policies`; never attempted when there is none.
    pub shadow_policy: Mutex<KindStatus>,
}

/// What one reload attempt of one kind came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Reloaded,
    Failed,
}

/// Where everything is read from, and where new states are published.
pub struct Reloader {
    pub policies_dir: PathBuf,
    pub policy: crate::policy::Options,
    pub decision_cache_entries: usize,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// The certificate and CA bundle come from the SPIFFE Workload API, pushed to
    /// [`Reloader::apply_workload`]; the three paths above are empty and never read.
    pub workload_api: bool,
    pub policies: PolicyStore,
    pub tls: TlsStore,
    metrics: Arc<Metrics>,
    pub status: Arc<ReloadStatus>,
    /// Moves each time a new policy set or CA bundle is published, for whatever must judge
    /// itself again at once (tunnels) rather than on its next request.
    changes: tokio::sync::watch::Sender<u64>,
    /// Content already tried and refused, so a broken push is reported once, not every
    /// interval.
    refused: Mutex<Refused>,
    /// The kill switch, whose file is re-read like the others.
    revocations: Arc<crate::revocations::Revocations>,
    /// Delegation token issuers, whose JWKS files are re-read like the others.
    delegation: Arc<crate::delegation::Verifier>,
    /// Where a change the file makes to the revocations is told.
    revocation_changes: crate::revocations::record::Recorded,
    /// The shadow policy set, reloaded like the main one into a store of its own.
    shadow: Option<ShadowSource>,
    /// The main set comes from a bundle (`crate::bundle`), published through
    /// [`Reloader::publish_sources`]; there is no directory to read.
    pub main_from_bundle: bool,
    /// The last failure a bundle source reported, per set, so a server that stays down is
    /// logged once, not at every poll.
    source_errors: Mutex<[Option<String>; 2]>,
}

/// Where the shadow policy set is read from and published to.
pub struct ShadowSource {
    /// Empty when the shadow set comes from a bundle.
    pub dir: PathBuf,
    /// The shadow set comes from a bundle, published through [`Reloader::publish_sources`].
    pub from_bundle: bool,
    pub options: crate::policy::Options,
    pub store: PolicyStore,
}

/// Which policy set a reload is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    Main,
    Shadow,
}

impl Set {
    /// As reload metrics and `/status` name it.
    fn kind(self) -> &'static str {
        match self {
            Set::Main => "policy",
            Set::Shadow => "shadow_policy",
        }
    }

    fn status(self, status: &ReloadStatus) -> &Mutex<KindStatus> {
        match self {
            Set::Main => &status.policy,
            Set::Shadow => &status.shadow_policy,
        }
    }
}

impl Refused {
    fn set(&mut self, set: Set) -> &mut Option<Arc<str>> {
        match set {
            Set::Main => &mut self.policy,
            Set::Shadow => &mut self.shadow,
        }
    }
}

#[derive(Default)]
struct Refused {
    policy: Option<Arc<str>>,
    shadow: Option<Arc<str>>,
    cert: Option<Vec<u8>>,
    ca: Option<Vec<u8>>,
}

impl Reloader {
    /// Reload what `config` names into `policies` and `tls`, reporting to `metrics`.
    pub fn new(
        config: &Config,
        policies: PolicyStore,
        tls: TlsStore,
        metrics: Arc<Metrics>,
        revocations: Arc<crate::revocations::Revocations>,
        delegation: Arc<crate::delegation::Verifier>,
        audit: crate::audit::Audit,
    ) -> Reloader {
        let reloader = Reloader {
            policies_dir: config.policies.clone(),
            policy: config.policy_options(),
            decision_cache_entries: config.decision_cache_entries,
            cert: config.cert.clone(),
            key: config.key.clone(),
            client_ca: config.client_ca.clone(),
            workload_api: config.spiffe_socket.is_some(),
            policies,
            tls,
            metrics: metrics.clone(),
            status: Arc::default(),
            changes: tokio::sync::watch::Sender::new(0),
            refused: Mutex::default(),
            revocations,
            delegation,
            revocation_changes: crate::revocations::record::Recorded { audit, metrics },
            shadow: None,
            main_from_bundle: config.bundle.is_some(),
            source_errors: Mutex::default(),
        };
        reloader.publish_gauges();
        reloader
    }

    /// Also reload the shadow policy set from `source.dir` into `source.store`.
    pub fn with_shadow(mut self, source: Option<ShadowSource>) -> Reloader {
        self.shadow = source;
        self
    }

    /// A receiver that sees every published policy set and CA bundle.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The gauges that describe what is loaded now.
    fn publish_gauges(&self) {
        self.metrics.policy_revision(&self.policies.load().revision);
        let tls = self.tls.load();
        self.metrics
            .certificate_expiry("server", tls.cert.local.not_after);
        self.metrics
            .certificate_expiry("client_ca", tls.ca.earliest_not_after);
    }

    /// Reload every kind; blocking (file reads, compiling), so run it off the runtime.
    pub fn reload_all(&self) -> [Outcome; 3] {
        self.reload_revocations();
        self.reload_jwks();
        self.reload_shadow_policies();
        let policies = self.reload_policies();
        if self.workload_api {
            return [policies, Outcome::Unchanged, Outcome::Unchanged];
        }
        [policies, self.reload_cert(), self.reload_ca()]
    }

    /// The certificate, key and CA files, unless the Workload API stands in for them.
    fn tls_files(&self) -> Vec<&PathBuf> {
        match self.workload_api {
            true => Vec::new(),
            false => vec![&self.cert, &self.key, &self.client_ca],
        }
    }

    pub fn reload_policies(&self) -> Outcome {
        if self.main_from_bundle {
            return Outcome::Unchanged;
        }
        self.reload_set(Set::Main, &self.policies_dir, &self.policy, &self.policies)
    }

    /// As [`Reloader::reload_policies`], for the shadow set.
    pub fn reload_shadow_policies(&self) -> Outcome {
        let Some(shadow) = self.shadow.as_ref().filter(|s| !s.from_bundle) else {
            return Outcome::Unchanged;
        };
        self.reload_set(Set::Shadow, &shadow.dir, &shadow.options, &shadow.store)
    }

    /// Publish policy sources that did not come from a directory (a bundle), through the
    /// same checks, status, metrics and last-good rule as a directory reload. With
    /// `refuse_sample_error`, a set whose sample evaluation fails is refused too, keeping the
    /// last good one: a fetched set replaces one that works, so a doubt is enough.
    pub fn publish_sources(
        &self,
        set: Set,
        sources: Sources,
        refuse_sample_error: bool,
    ) -> Outcome {
        let (options, store) = match (set, &self.shadow) {
            (Set::Main, _) => (&self.policy, &self.policies),
            (Set::Shadow, Some(shadow)) => (&shadow.options, &shadow.store),
            (Set::Shadow, None) => return Outcome::Unchanged,
        };
        self.source_errors()[set as usize] = None;
        self.apply(set, sources, options, store, refuse_sample_error)
    }

    /// Whether `set` is now the policy set of this content (a bundle refused, now or before,
    /// is not).
    pub fn holds(&self, set: Set, content_hash: &str) -> bool {
        let store = match (set, &self.shadow) {
            (Set::Main, _) => &self.policies,
            (Set::Shadow, Some(shadow)) => &shadow.store,
            (Set::Shadow, None) => return false,
        };
        &*store.load().content_hash == content_hash
    }

    /// A bundle source that could not be fetched or read: recorded as a failed reload of
    /// `set`, the last good set staying; logged when the failure is new.
    pub fn source_failed(&self, set: Set, url: &str, message: String) {
        let store = match (set, &self.shadow) {
            (Set::Shadow, Some(shadow)) => &shadow.store,
            _ => &self.policies,
        };
        let mut last = self.source_errors();
        if last[set as usize].as_deref() != Some(message.as_str()) {
            tracing::error!(
                set = set.kind(),
                url,
                kept = %store.load().revision,
                error = %message,
                "bundle update failed; the last good set of its kind stays",
            );
            last[set as usize] = Some(message.clone());
        }
        drop(last);
        self.record(set.kind(), Some(message));
    }

    fn source_errors(&self) -> std::sync::MutexGuard<'_, [Option<String>; 2]> {
        self.source_errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read one policy set, and compile and publish it if it changed. A set that fails keeps
    /// the last good one of its kind. Only a new main set moves `changes`: the shadow set
    /// decides nothing, so no tunnel has anything to judge again.
    fn reload_set(
        &self,
        set: Set,
        dir: &Path,
        options: &crate::policy::Options,
        store: &PolicyStore,
    ) -> Outcome {
        let sources = match Sources::read(dir) {
            Ok(s) => s,
            Err(errors) => return self.set_failed(set, store, None, &errors),
        };
        self.apply(set, sources, options, store, false)
    }

    /// Compile and publish `sources` as `set` unless they are what is loaded, or what was
    /// refused last.
    fn apply(
        &self,
        set: Set,
        sources: Sources,
        options: &crate::policy::Options,
        store: &PolicyStore,
        refuse_sample_error: bool,
    ) -> Outcome {
        let loaded = store.load_full();
        // Files can change under one commit (a hand edit in a checkout), and a commit can
        // leave the files as they were: either is a new set.
        if sources.content_hash == loaded.content_hash && sources.revision == loaded.revision {
            *self.refused().set(set) = None;
            return self.settled(set.status(&self.status), set.kind());
        }
        if self.refused().set(set).as_deref() == Some(&*sources.content_hash) {
            return Outcome::Unchanged;
        }
        let revision = sources.revision.clone();
        let content_hash = sources.content_hash.clone();
        let compiled = PolicySet::compile(sources, options).and_then(|c| match &c.sample_error {
            Some(e) if refuse_sample_error => Err(vec![crate::policy::PolicyError::Query {
                query: c.query.to_string(),
                message: format!("the sample evaluation failed: {e}"),
            }]),
            _ => Ok(c),
        });
        match compiled {
            Ok(compiled) => {
                // A new set starts with an empty cache: no answer outlives its policy.
                store.store(Arc::new(
                    compiled.with_decision_cache(self.decision_cache_entries),
                ));
                if set == Set::Main {
                    self.changes.send_modify(|n| *n += 1);
                }
                *self.refused().set(set) = None;
                tracing::info!(
                    set = set.kind(),
                    previous = %loaded.revision,
                    revision = %revision,
                    content_hash = %content_hash,
                    "policy reloaded",
                );
                self.record(set.kind(), None)
            }
            Err(errors) => self.set_failed(set, store, Some(content_hash), &errors),
        }
    }

    /// `content_hash` names the files refused, so they are not tried again until they change.
    fn set_failed(
        &self,
        set: Set,
        store: &PolicyStore,
        content_hash: Option<Arc<str>>,
        errors: &[crate::policy::PolicyError],
    ) -> Outcome {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        tracing::error!(
            set = set.kind(),
            kept = %store.load().revision,
            error = %message,
            "policy reload failed; the last good set of its kind stays",
        );
        *self.refused().set(set) = content_hash;
        self.record(set.kind(), Some(message))
    }

    pub fn reload_cert(&self) -> Outcome {
        let current = self.tls.load_full();
        // Read once, hash, and parse those same bytes: unchanged files cost two reads and a
        // hash, and a refused push is remembered by exactly the bytes that were refused.
        let read =
            tls::read(&self.cert, "cert").and_then(|cert| Ok((cert, tls::read(&self.key, "key")?)));
        let hash = read.as_ref().ok().map(|(cert, key)| hash_all(&[cert, key]));
        if hash.as_ref() == Some(&current.cert.content_hash) {
            self.refused().cert = None;
            return self.settled(&self.status.cert, "cert");
        }
        if hash.is_some() && self.refused().cert == hash {
            return Outcome::Unchanged;
        }
        let served =
            read.and_then(|(cert, key)| ServedCert::parse(&self.cert, &cert, &self.key, &key));
        self.publish_cert(served, hash)
    }

    /// Serve a new certificate from the next handshake on, or keep the last good one.
    /// `refused` names the content to remember as refused when `served` is an error.
    fn publish_cert(
        &self,
        served: Result<ServedCert, tls::TlsError>,
        refused: Option<Vec<u8>>,
    ) -> Outcome {
        let current = self.tls.load_full();
        let built = served.and_then(|served| {
            TlsState::build(Arc::new(served), current.ca.clone(), current.ca_generation)
        });
        match built {
            Ok(state) => {
                tracing::info!(
                    previous.serial = %current.cert.local.serial,
                    serial = %state.cert.local.serial,
                    not_after = state.cert.local.not_after,
                    source = self.source(),
                    "served certificate reloaded; new handshakes use it",
                );
                self.tls.store(Arc::new(state));
                self.refused().cert = None;
                self.record("cert", None)
            }
            Err(e) => {
                let message = crate::error::chain(&e);
                tracing::error!(
                    kept.serial = %current.cert.local.serial,
                    error = %message,
                    source = self.source(),
                    "certificate reload failed; the last good certificate stays",
                );
                self.refused().cert = refused;
                self.record("cert", Some(message))
            }
        }
    }

    pub fn reload_ca(&self) -> Outcome {
        let current = self.tls.load_full();
        let read = tls::read(&self.client_ca, "client-ca");
        let hash = read.as_ref().ok().map(|ca| hash_all(&[ca]));
        if hash.as_ref() == Some(&current.ca.content_hash) {
            self.refused().ca = None;
            return self.settled(&self.status.ca, "ca");
        }
        if hash.is_some() && self.refused().ca == hash {
            return Outcome::Unchanged;
        }
        let ca = read.and_then(|ca| ClientCa::parse(&self.client_ca, &ca));
        self.publish_ca(ca, hash)
    }

    /// Trust a new CA bundle from the next handshake on (and re-check open connections on
    /// their next request), or keep the last good one.
    fn publish_ca(&self, ca: Result<ClientCa, tls::TlsError>, refused: Option<Vec<u8>>) -> Outcome {
        let current = self.tls.load_full();
        let built = ca.and_then(|ca| {
            TlsState::build(
                current.cert.clone(),
                Arc::new(ca),
                current.ca_generation + 1,
            )
        });
        match built {
            Ok(state) => {
                tracing::info!(
                    fingerprints = ?state.ca.fingerprints,
                    trust_domains = ?state.ca.trust_domains,
                    source = self.source(),
                    "client CA bundle reloaded; connections re-verify on their next request",
                );
                self.tls.store(Arc::new(state));
                self.changes.send_modify(|n| *n += 1);
                self.refused().ca = None;
                self.record("ca", None)
            }
            Err(e) => {
                let message = crate::error::chain(&e);
                tracing::error!(
                    error = %message,
                    source = self.source(),
                    "client CA reload failed; the last good bundle stays",
                );
                self.refused().ca = refused;
                self.record("ca", Some(message))
            }
        }
    }

    /// Publish what the Workload API pushed, as a file reload would: each half only when it
    /// differs from what is served, each refused on its own if it does not check out.
    pub fn apply_workload(&self, credentials: tls::workload::Credentials) -> [Outcome; 2] {
        let current = self.tls.load_full();
        let cert = match credentials.served {
            Ok(s) if s.content_hash == current.cert.content_hash => {
                self.settled(&self.status.cert, "cert")
            }
            served => self.publish_cert(served, None),
        };
        let current = self.tls.load_full();
        let ca = match credentials.ca {
            Ok(c) if c.content_hash == current.ca.content_hash => {
                self.settled(&self.status.ca, "ca")
            }
            ca => self.publish_ca(ca, None),
        };
        [cert, ca]
    }

    /// Where the certificate and the CA bundle come from, for log lines.
    fn source(&self) -> &'static str {
        match self.workload_api {
            true => "workload_api",
            false => "files",
        }
    }

    /// Re-read the revocation file. A file that does not parse keeps what is in force: an
    /// edit that breaks it never lifts a revocation.
    pub fn reload_revocations(&self) {
        match self.revocations.reload() {
            Ok(Some(crate::revocations::Change::Reloaded(in_force))) => {
                tracing::info!(in_force, "revocations reloaded from the file");
                self.revocation_changes
                    .changed(crate::revocations::record::Change::Reloaded, in_force);
            }
            Ok(_) => {}
            // Not an error at every reload: the revocations module said it once.
            Err(crate::revocations::RevocationError::Missing { .. }) => {}
            Err(e) => tracing::error!(
                error = %crate::error::chain(&e),
                "revocation file reload failed; the revocations in force stay"
            ),
        }
    }

    /// Write the revocation journal into the revocation file, so the file shows what is in
    /// force.
    pub fn fold_revocations(&self) {
        if let Err(e) = self.revocations.fold_journal() {
            tracing::warn!(
                error = %crate::error::chain(&e),
                "the revocation journal could not be written into the file; both stay"
            );
        }
    }

    /// Re-read the delegation issuers' JWKS files; a file that does not parse keeps that
    /// issuer's last good keys.
    pub fn reload_jwks(&self) {
        match self.delegation.reload() {
            Ok(true) => tracing::info!("delegation JWKS reloaded; new tokens verify against it"),
            Ok(false) => {}
            Err(errors) => {
                for e in errors {
                    tracing::error!(error = %e, "JWKS reload failed; the last good keys stay");
                }
            }
        }
    }

    fn refused(&self) -> std::sync::MutexGuard<'_, Refused> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The directories to watch: the policy tree (recursively), its parent, and the
    /// directories holding the certificate, key and CA bundle.
    fn watch_targets(&self) -> Vec<(PathBuf, RecursiveMode)> {
        let policies = absolute(&self.policies_dir);
        let mut flat = BTreeSet::new();
        let revocations = self.revocations.file().map(Path::to_path_buf);
        let jwks = self.delegation.files();
        for file in self
            .tls_files()
            .into_iter()
            .chain(revocations.as_ref())
            .chain(jwks.iter())
        {
            if let Some(dir) = absolute(file).parent() {
                flat.insert(dir.to_path_buf());
            }
        }
        // A bundle has no directory to watch.
        let policies = (!self.main_from_bundle).then_some(policies);
        if let Some(parent) = policies.as_ref().and_then(|p| p.parent()) {
            flat.insert(parent.to_path_buf());
        }
        // A link further up (git-sync's `--link`, with the policies in a subdirectory of the
        // repository) is swapped in its own directory.
        for link in policies.iter().flat_map(|p| symlinked_ancestors(p)) {
            if let Some(parent) = link.parent() {
                flat.insert(parent.to_path_buf());
            }
        }
        let shadow = self.shadow.as_ref().filter(|s| !s.from_bundle);
        let shadow_dir = shadow.map(|s| absolute(&s.dir));
        for link in shadow_dir.iter().flat_map(|d| symlinked_ancestors(d)) {
            if let Some(parent) = link.parent() {
                flat.insert(parent.to_path_buf());
            }
        }
        let mut targets: Vec<_> = policies
            .into_iter()
            .map(|p| (p, RecursiveMode::Recursive))
            .collect();
        if let Some(shadow) = shadow {
            let dir = absolute(&shadow.dir);
            if let Some(parent) = dir.parent() {
                flat.insert(parent.to_path_buf());
            }
            targets.push((dir, RecursiveMode::Recursive));
        }
        targets.extend(flat.into_iter().map(|d| (d, RecursiveMode::NonRecursive)));
        targets
    }

    /// Reload on change events, every `interval` (unless zero) and on SIGHUP, until the task
    /// is dropped.
    pub async fn run(self: Arc<Self>, watch: bool, interval: Duration) {
        let changed = Arc::new(Notify::new());
        // The watcher lives as long as this task; dropping it stops the watching thread.
        let _watcher = if watch {
            self.start_watcher(changed.clone())
        } else {
            None
        };
        let mut hangup = hangup_signal();
        let mut ticker = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval(interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        if let Some(t) = ticker.as_mut() {
            t.tick().await; // the first tick is immediate
        }
        // Whatever changed between the startup load and the watch being in place.
        let mut why = "start";
        loop {
            tracing::debug!(trigger = why, "re-reading policies and certificates");
            let this = self.clone();
            // Not on a change event: folding rewrites the revocation file, whose event would
            // fold again while changes keep coming.
            let fold = matches!(why, "interval" | "SIGHUP");
            if let Err(e) = tokio::task::spawn_blocking(move || {
                this.reload_all();
                if fold {
                    this.fold_revocations();
                }
            })
            .await
            {
                tracing::error!(error = %e, "reload task failed");
            }
            why = tokio::select! {
                () = changed.notified() => {
                    // Coalesce the burst: reload once things have been quiet for DEBOUNCE,
                    // or after MAX_DEBOUNCE however busy the directory is.
                    let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
                    while tokio::time::Instant::now() < give_up
                        && tokio::time::timeout(DEBOUNCE, changed.notified()).await.is_ok()
                    {}
                    "change"
                }
                _ = async { match ticker.as_mut() {
                    Some(t) => t.tick().await,
                    None => std::future::pending().await,
                } } => "interval",
                _ = async { match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                } } => "SIGHUP",
            };
        }
    }

    fn start_watcher(&self, changed: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
        let policies_dir = (!self.main_from_bundle).then(|| absolute(&self.policies_dir));
        let shadow = self.shadow.as_ref().filter(|s| !s.from_bundle);
        let relevant = Relevant {
            links: policies_dir
                .iter()
                .flat_map(|p| symlinked_ancestors(p))
                .chain(
                    shadow
                        .iter()
                        .flat_map(|s| symlinked_ancestors(&absolute(&s.dir))),
                )
                .collect(),
            policies_dir,
            shadow_dir: shadow.map(|s| absolute(&s.dir)),
            files: self
                .tls_files()
                .into_iter()
                .map(|f| absolute(f))
                .chain(self.revocations.file().map(absolute))
                .chain(self.delegation.files().iter().map(|f| absolute(f)))
                .collect(),
        };
        let handler = move |event: notify::Result<notify::Event>| match event {
            // Reads fire events too (regate's own reloads among them); only a change counts.
            Ok(e) if e.kind.is_access() => {}
            Ok(e) if e.paths.iter().any(|p| relevant.matches(p)) => {
                tracing::trace!(kind = ?e.kind, paths = ?e.paths, "file event");
                changed.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "file watch error"),
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch files; relying on --reload-interval and SIGHUP");
                return None;
            }
        };
        for (dir, mode) in self.watch_targets() {
            if let Err(e) = watcher.watch(&dir, mode) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory");
            }
        }
        Some(watcher)
    }
}

impl Reloader {
    /// The files hold what is loaded now. A failure recorded for other content (a broken push
    /// since put back) no longer describes anything: clear it, so `/status` does not go on
    /// reporting it.
    fn settled(&self, status: &Mutex<KindStatus>, kind: &'static str) -> Outcome {
        let mut s = status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if s.last_error.take().is_some() {
            tracing::info!(
                kind,
                "files are back to what is loaded; the earlier reload failure is cleared"
            );
        }
        Outcome::Unchanged
    }

    /// Note a reload that changed something (or tried to) in the status and metrics.
    fn record(&self, kind: &'static str, error: Option<String>) -> Outcome {
        let status = match kind {
            "policy" => &self.status.policy,
            "cert" => &self.status.cert,
            "shadow_policy" => &self.status.shadow_policy,
            _ => &self.status.ca,
        };
        self.metrics.reload(kind, error.is_none());
        if error.is_none() {
            self.publish_gauges();
        }
        let mut s = status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = SystemTime::now();
        s.last_attempt = Some(now);
        match error {
            None => {
                s.last_success = Some(now);
                s.last_error = None;
                s.successes += 1;
                Outcome::Reloaded
            }
            Some(e) => {
                s.last_error = Some(e);
                s.failures += 1;
                Outcome::Failed
            }
        }
    }
}

/// Which event paths can change what regate loaded. The watched directories hold other
/// files too (the decision log may sit beside the policy directory); events for those are
/// ignored, or a busy neighbour would keep the debounce from ever settling.
struct Relevant {
    /// `None` when the main set comes from a bundle.
    policies_dir: Option<PathBuf>,
    /// Symlinks above the policy directories: replacing one replaces the policies.
    links: Vec<PathBuf>,
    shadow_dir: Option<PathBuf>,
    /// The certificate, key and CA bundle files.
    files: Vec<PathBuf>,
}

impl Relevant {
    fn matches(&self, path: &Path) -> bool {
        if self
            .policies_dir
            .as_ref()
            .is_some_and(|d| path.starts_with(d))
            || self.links.iter().any(|l| path == l)
        {
            return true;
        }
        if self
            .shadow_dir
            .as_ref()
            .is_some_and(|d| path.starts_with(d))
        {
            return true;
        }
        self.files.iter().any(|file| {
            path == file
                // A Kubernetes volume swaps `..data` in the file's directory.
                || (path.parent() == file.parent()
                    && path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("..")))
        })
    }
}

/// The symlinks among `path`'s ancestors (not `path` itself, whose parent is watched anyway).
fn symlinked_ancestors(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .skip(1)
        .filter(|a| std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()))
        .map(Path::to_path_buf)
        .collect()
}

/// Absolute without resolving symlinks: event paths are the watched path plus a name, and
/// a symlinked policy directory must be matched by the name it is configured under.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
        .ok()
}
