//! The policy set: every `.rego` file and data file under `--policies`, compiled once, and
//! the one function that turns a Rego result into a [`Decision`].
//!
//! A [`PolicySet`] is immutable. It is built and smoke-evaluated off the request path, then
//! published whole through [`PolicyStore`]; each request loads the current one, so a new set
//! applies to the next request even on an open connection. Building the `input` document is
//! [`input`]'s job; what happens with a decision is the proxy's.

pub mod analysis;
pub mod cache;
pub mod evaluator;
pub mod input;
pub mod tools;

pub use evaluator::Evaluator;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use regorus::{Engine, Value};
use thiserror::Error;

/// The current [`PolicySet`], swapped whole on reload.
pub type PolicyStore = Arc<ArcSwap<PolicySet>>;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("policies: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policies: {dir} holds no .rego file")]
    Empty { dir: String },
    /// `file:line:col: message`, from [`summary`]; never the source text.
    #[error("policy: {0}")]
    Compile(String),
    #[error("data: {path}: {message}")]
    Data { path: String, message: String },
    #[error("data: {path} sets data.{key}, which another data file already set")]
    DataConflict { path: String, key: String },
    #[error("query: {query}: {message}")]
    Query { query: String, message: String },
    #[error("policy: {location}: calls {builtin}, which regorus does not implement")]
    UnsupportedBuiltin { location: String, builtin: String },
    #[error("policy: evaluating {query} on a sample request failed: {message}")]
    Smoke { query: String, message: String },
}

/// A compiled, checked policy set and the revision that names it in decision records.
pub struct PolicySet {
    /// Prepared once at load; cloned (cheaply: it shares the compiled rules) per evaluation.
    engine: Engine,
    /// `sha256:` + the first 16 hex digits of a hash over every loaded file's path and bytes.
    pub revision: Arc<str>,
    pub query: Arc<str>,
    /// Set once an evaluation of this set has taken longer than [`evaluator::SLOW`]; from then
    /// on the proxy evaluates it only on its evaluation threads.
    slow_seen: std::sync::atomic::AtomicBool,
    /// What the set can read from `input`, or why its answers cannot be kept.
    pub reads: analysis::Reads,
    /// Its answers, kept by what it reads ([`PolicySet::with_decision_cache`]).
    cache: Option<cache::DecisionCache>,
}

/// What the policy decided for one request, already checked for shape.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    /// The policy's `reason`, or regate's own (`allowed`, `denied`, `policy_undefined`, ...).
    pub reason: Cow<'static, str>,
    /// The deny status; 403 unless the policy gave `http_status`.
    pub status: StatusCode,
    /// The policy's own deny body.
    pub body: Option<Bytes>,
    /// On allow, added to the upstream request; on deny, added to the response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `response_headers_to_add`: added to the response on allow and deny.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// `request_headers_to_remove`: removed from the upstream request on allow.
    pub remove_headers: Vec<HeaderName>,
    /// `query_parameters_to_set`: (name, value) pairs replacing those names in the upstream
    /// request's query on allow; a name may repeat.
    pub query_set: Vec<(String, String)>,
    /// `query_parameters_to_remove`: names dropped from the upstream request's query on allow.
    pub query_remove: Vec<String>,
    /// Set when evaluation failed; for the diagnostic log only, never sent to the client.
    pub error: Option<String>,
    pub eval_ns: u64,
    /// Answered from the decision cache rather than by an evaluation.
    pub cached: bool,
}

impl Decision {
    /// A deny that regate makes itself, without (or instead of) the policy's answer.
    pub fn deny(reason: &'static str) -> Decision {
        Decision {
            allowed: false,
            reason: Cow::Borrowed(reason),
            status: StatusCode::FORBIDDEN,
            body: None,
            headers: Vec::new(),
            response_headers: Vec::new(),
            remove_headers: Vec::new(),
            query_set: Vec::new(),
            query_remove: Vec::new(),
            error: None,
            eval_ns: 0,
            cached: false,
        }
    }
}

impl PolicySet {
    /// Read, compile and smoke-evaluate everything under `dir`. Nothing is published here.
    /// Every broken file is reported, not just the first. Each evaluation of the set is
    /// bounded by `timeout` (`--policy-timeout`).
    pub fn load(dir: &Path, query: &str, timeout: Duration) -> Result<PolicySet, Vec<PolicyError>> {
        PolicySet::compile(Sources::read(dir)?, query, timeout)
    }

    /// Compile and smoke-evaluate sources already read.
    pub fn compile(
        sources: Sources,
        query: &str,
        timeout: Duration,
    ) -> Result<PolicySet, Vec<PolicyError>> {
        let Sources { files, revision } = sources;
        let mut engine = build_engine(files)?;
        let fail = |e: PolicyError| vec![e];
        // A runaway evaluation is an error (a deny), not a stuck thread. Set on the engine,
        // so each clone carries it and sets with different limits can live side by side.
        engine.set_execution_timer_config(execution_limit(timeout));
        // Compiling prepares the engine (rule analysis, data, imports) once; every request
        // then evaluates on a cheap clone. Gathered, a policy's print() output stays in the
        // clone and never reaches stderr with request values in it.
        engine.set_gather_prints(true);
        engine.compile_with_entrypoint(&query.into()).map_err(|e| {
            fail(PolicyError::Query {
                query: query.to_string(),
                message: summary(&e.to_string()),
            })
        })?;
        let reads = analysis::reads(engine.get_modules(), query);
        let set = PolicySet {
            engine,
            revision,
            query: query.into(),
            slow_seen: Default::default(),
            reads,
            cache: None,
        };
        // The static check cannot see everything: evaluate once now, not first on a request.
        set.eval(input::sample()).map_err(|e| {
            fail(PolicyError::Smoke {
                query: query.to_string(),
                message: summary(&e.to_string()),
            })
        })?;
        Ok(set)
    }

    fn eval(&self, input: Value) -> anyhow::Result<Value> {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine.eval_rule(self.query.to_string())
    }

    /// Keep up to `entries` of this set's answers (0: none), when its analysis allows.
    pub fn with_decision_cache(mut self, entries: usize) -> PolicySet {
        if let analysis::Reads::Paths(paths) = &self.reads {
            self.cache = cache::DecisionCache::new(paths, entries);
        }
        self
    }

    /// The decision cache, when this set has one.
    pub fn cache(&self) -> Option<&cache::DecisionCache> {
        self.cache.as_ref()
    }

    /// Whether an evaluation of this set has ever been slow (see [`Evaluator`]).
    pub fn slow_seen(&self) -> bool {
        self.slow_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Evaluate the query for one request. Never fails: every failure is a deny.
    pub fn decide(&self, input: Value) -> Decision {
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        let result = self.eval(input);
        let eval_ns = start.elapsed().as_nanos() as u64;
        // CPU time, not wall time: a thread the scheduler set aside mid-evaluation on a busy
        // machine has not evaluated slowly.
        if thread_cpu_ns().saturating_sub(cpu_start) > evaluator::SLOW.as_nanos() as u64 {
            self.slow_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut decision = match result {
            Ok(value) => interpret(&value),
            Err(e) => {
                let message = summary(&e.to_string());
                // regorus' own wording for its execution timer.
                let reason = if message.contains("exceeded time limit") {
                    "policy_timeout"
                } else {
                    "policy_error"
                };
                Decision {
                    error: Some(message),
                    ..Decision::deny(reason)
                }
            }
        };
        decision.eval_ns = eval_ns;
        decision
    }
}

/// CPU time this thread has used, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// regorus' execution timer for `limit`, checked every hundred steps.
pub fn execution_limit(limit: Duration) -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig {
        limit,
        check_interval: std::num::NonZeroU32::MIN.saturating_add(99),
    }
}

/// Every Rego file parsed and checked for unsupported builtins, every data file merged at its
/// directory, all in one engine, not yet prepared for any query. The proxy and the policy
/// tools load through here, so a policy behaves the same in `regate policy test` as in a pod.
fn build_engine(files: Vec<(PolicyFile, String)>) -> Result<Engine, Vec<PolicyError>> {
    let mut engine = Engine::new();
    let mut data = Value::new_object();
    let mut errors = Vec::new();
    for (file, text) in files {
        let name = file.path.display().to_string();
        let loaded = match file.kind {
            FileKind::Rego => check_builtins(&name, &text)
                .and_then(|()| add_rego(&mut engine, name.clone(), text)),
            FileKind::Json | FileKind::Yaml => if file.kind == FileKind::Json {
                Value::from_json_str(&text)
            } else {
                Value::from_yaml_str(&text)
            }
            .map_err(|e| PolicyError::Data {
                path: name.clone(),
                message: e.to_string(),
            })
            .and_then(|value| merge_at(&mut data, &file.data_path, value, &name)),
        };
        if let Err(e) = loaded {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    engine
        .add_data(data)
        .map_err(|e| vec![PolicyError::Compile(summary(&e.to_string()))])?;
    Ok(engine)
}

/// Builtins regorus does not implement, or implements only as a stub that returns
/// undefined. A call to one is refused at load, naming the file and line, rather than
/// denying every request that reaches it.
const UNSUPPORTED_BUILTINS: &[&str] = &[
    "io.jwt.",
    "crypto.",
    "http.send",
    "net.lookup_ip_addr",
    "rego.parse_module",
    "rego.metadata.",
    "providers.aws.",
    "graphql.",
];

/// Find calls to [`UNSUPPORTED_BUILTINS`] in Rego source, skipping comments and strings.
pub fn unsupported_calls(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = strip_comment_and_strings(line);
        for prefix in UNSUPPORTED_BUILTINS {
            let mut from = 0;
            while let Some(at) = code[from..].find(prefix) {
                let start = from + at;
                from = start + prefix.len();
                let before = code[..start].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let name: String = code[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                    .collect();
                if code[start + name.len()..].trim_start().starts_with('(') {
                    found.push((i + 1, name));
                }
            }
        }
    }
    found
}

/// The line with `# comments` removed and string contents blanked.
fn strip_comment_and_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                    continue;
                }
                out.push(' ');
            }
            None if c == '#' => break,
            None => {
                if c == '"' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

fn check_builtins(name: &str, text: &str) -> Result<(), PolicyError> {
    match unsupported_calls(text).into_iter().next() {
        None => Ok(()),
        Some((line, builtin)) => Err(PolicyError::UnsupportedBuiltin {
            location: format!("{name}:{line}"),
            builtin,
        }),
    }
}

/// Every policy and data file under a directory, read, with the revision their bytes make.
/// Reading is cheap next to compiling, so a reload reads first and compiles only when the
/// revision changed.
pub struct Sources {
    files: Vec<(PolicyFile, String)>,
    pub revision: Arc<str>,
}

impl Sources {
    pub fn read(dir: &Path) -> Result<Sources, Vec<PolicyError>> {
        let listed = collect_files(dir).map_err(|e| vec![e])?;
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut files = Vec::with_capacity(listed.len());
        let mut errors = Vec::new();
        for file in listed {
            let name = file.path.display().to_string();
            let bytes = match std::fs::read(&file.path) {
                Ok(b) => b,
                Err(source) => {
                    errors.push(PolicyError::Read { path: name, source });
                    continue;
                }
            };
            // Path and length delimit each file, so moving bytes between files changes the hash.
            hasher.update(file.rel.as_bytes());
            hasher.update(&[0]);
            hasher.update(&(bytes.len() as u64).to_be_bytes());
            hasher.update(&bytes);
            match String::from_utf8(bytes) {
                Ok(text) => files.push((file, text)),
                Err(_) => errors.push(PolicyError::Data {
                    path: name,
                    message: "not UTF-8".into(),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let revision = format!(
            "sha256:{}",
            &crate::tls::identity::hex(hasher.finish().as_ref())[..16]
        );
        Ok(Sources {
            files,
            revision: revision.into(),
        })
    }
}

/// Policies may be Rego v1 (the default) or v0, as opa-envoy-plugin policies often are.
/// A file that does not parse as v1 is tried as v0, unless it plainly is v1 (it imports
/// `rego.v1`, or uses `if` without the v0 future import), so that a broken v1 file gets the
/// v1 error rather than a confusing v0 one.
fn add_rego(engine: &mut Engine, name: String, text: String) -> Result<(), PolicyError> {
    engine.set_rego_v0(false);
    let v1_error = match engine.add_policy(name.clone(), text.clone()) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let uses_if = text.lines().any(|line| {
        strip_comment_and_strings(line)
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|w| w == "if")
    });
    let plainly_v1 =
        text.contains("import rego.v1") || (uses_if && !text.contains("future.keywords"));
    if !plainly_v1 {
        engine.set_rego_v0(true);
        let v0 = engine.add_policy(name, text);
        engine.set_rego_v0(false);
        if v0.is_ok() {
            return Ok(());
        }
    }
    Err(PolicyError::Compile(summary(&v1_error.to_string())))
}

/// regorus' message as regate logs it, reports in `/status` and prints at startup:
/// `file:line:col: message`. regorus adds an excerpt of the source line, which can hold
/// anything a policy author wrote, secrets included; it is left out, and the location says
/// where to look.
pub fn summary(raw: &str) -> String {
    located(raw).unwrap_or_else(|| {
        raw.lines()
            .filter(|l| !is_excerpt_line(l))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// regorus reports `--> file:line:col`, a source excerpt, then `error: message`: as
/// `file:line:col: message`, when the message has both.
fn located(raw: &str) -> Option<String> {
    let location = raw
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))?;
    let message = raw
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("error: "))?;
    Some(format!("{}: {}", location.trim(), message.trim()))
}

/// `  |`, `5 | source`, `  | ^^^`: the lines of an excerpt.
fn is_excerpt_line(line: &str) -> bool {
    match line.split_once('|') {
        Some((gutter, _)) => gutter.trim().bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// For the authoring tools (`regate policy test`): `file:line:col: message` first, where a
/// reader (and an editor) looks for it, then regorus' whole message with its excerpt: a policy
/// author running the tool on their own files wants to see the line.
fn compile_message(raw: &str) -> String {
    match located(raw) {
        Some(first) => format!("{first}\n{}", raw.trim_matches('\n')),
        None => raw.trim().to_string(),
    }
}

/// Turn the query's value into a decision. Only `true`, or an object whose `allowed` (or
/// `allow`) is `true`, allows; anything malformed is a deny, however permissive it looks.
fn interpret(value: &Value) -> Decision {
    match value {
        Value::Bool(true) => Decision {
            allowed: true,
            ..Decision::deny("allowed")
        },
        Value::Bool(false) => Decision::deny("denied"),
        Value::Undefined => Decision::deny("policy_undefined"),
        Value::Object(_) => interpret_object(value).unwrap_or_else(|e| Decision {
            error: Some(e),
            ..Decision::deny("policy_invalid_result")
        }),
        other => Decision {
            error: Some(format!(
                "the result is {}, not a boolean or a decision object",
                other.to_json_str().unwrap_or_default()
            )),
            ..Decision::deny("policy_invalid_result")
        },
    }
}

fn interpret_object(value: &Value) -> Result<Decision, String> {
    let field = |name: &str| match &value[name] {
        Value::Undefined => None,
        v => Some(v),
    };
    let allowed = match field("allowed").or_else(|| field("allow")) {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`allowed` is not a boolean".into()),
        None => return Err("the result object has no `allowed`".into()),
    };
    let reason = match field("reason") {
        None => Cow::Borrowed(if allowed { "allowed" } else { "denied" }),
        Some(Value::String(s)) => Cow::Owned(s.to_string()),
        Some(_) => return Err("`reason` is not a string".into()),
    };
    let status = match field("http_status") {
        None => StatusCode::FORBIDDEN,
        Some(v) => v
            .as_u16()
            .ok()
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or("`http_status` is not a status code from 200 to 599")?,
    };
    // A deny answered 200 would read as success to the client, and a 1xx would leave it
    // waiting for a response that never comes. Redirects (a 302 to a login page) are a
    // common deny in opa-envoy-plugin policies and stay allowed.
    if !allowed && status.as_u16() < 300 {
        return Err(format!(
            "`http_status` {} on a deny: a deny must be 300 or more",
            status.as_u16()
        ));
    }
    let body = match field("body") {
        None => None,
        Some(Value::String(s)) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Some(other) => Some(Bytes::from(other.to_json_str().map_err(|e| e.to_string())?)),
    };
    let headers = match field("headers") {
        None => Vec::new(),
        Some(v) => header_list(v, "headers")?,
    };
    let response_headers = match field("response_headers_to_add") {
        None => Vec::new(),
        Some(v) => header_list(v, "response_headers_to_add")?,
    };
    let remove_headers = match field("request_headers_to_remove") {
        None => Vec::new(),
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| match n {
                Value::String(s) => HeaderName::from_bytes(s.as_bytes()).ok(),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "`request_headers_to_remove` holds an invalid header name".to_string())
            .and_then(|names| {
                names
                    .iter()
                    .try_for_each(|n| not_framing(n, "request_headers_to_remove"))
                    .map(|()| names)
            })?,
        Some(_) => return Err("`request_headers_to_remove` is not an array".into()),
    };
    let query_set = match field("query_parameters_to_set") {
        None => Vec::new(),
        Some(v) => string_pairs(v, "query_parameters_to_set")?,
    };
    let query_remove = match field("query_parameters_to_remove") {
        None => Vec::new(),
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| n.as_string().map(|s| s.to_string()).ok())
            .collect::<Option<Vec<_>>>()
            .ok_or("`query_parameters_to_remove` holds a non-string")?,
        Some(_) => return Err("`query_parameters_to_remove` is not an array".into()),
    };
    Ok(Decision {
        allowed,
        reason,
        status,
        body,
        headers,
        response_headers,
        remove_headers,
        query_set,
        query_remove,
        error: None,
        eval_ns: 0,
        cached: false,
    })
}

/// `{"name": "value"}` or `{"name": ["v1", "v2"]}` as (name, value) pairs.
fn string_pairs(value: &Value, what: &str) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = value else {
        return Err(format!("`{what}` is not an object"));
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map.iter() {
        let name = k
            .as_string()
            .map_err(|_| format!("`{what}` has a non-string name"))?;
        let values = match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            v => vec![v],
        };
        for v in values {
            let v = v
                .as_string()
                .map_err(|_| format!("`{what}.{name}` is not a string"))?;
            out.push((name.to_string(), v.to_string()));
        }
    }
    Ok(out)
}

/// `{"name": "value"}` or `{"name": ["v1", "v2"]}`, as opa-envoy-plugin accepts.
fn header_list(value: &Value, what: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let Value::Object(map) = value else {
        return Err(format!("`{what}` is not an object"));
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map.iter() {
        let name = match k {
            Value::String(s) => HeaderName::from_bytes(s.as_bytes()).ok(),
            _ => None,
        }
        .ok_or_else(|| format!("`{what}` has an invalid header name"))?;
        not_framing(&name, what)?;
        let mut push = |v: &Value| match v {
            Value::String(s) => HeaderValue::from_str(s)
                .map(|hv| out.push((name.clone(), hv)))
                .map_err(|_| format!("`{what}.{name}` is not a valid header value")),
            _ => Err(format!("`{what}.{name}` is not a string")),
        };
        match v {
            Value::Array(values) => values.iter().try_for_each(&mut push)?,
            v => push(v)?,
        }
    }
    Ok(out)
}

/// A policy may not set or remove the headers that frame a message or belong to one hop:
/// a `content-length` beside a deny body splits the response in two for a keep-alive client,
/// a `transfer-encoding` leaves it with none, a `connection` or `upgrade` speaks for regate's
/// own connections. Such a result is `policy_invalid_result`.
fn not_framing(name: &HeaderName, what: &str) -> Result<(), String> {
    match crate::request::headers::FRAMING_AND_HOP_BY_HOP.contains(&name.as_str()) {
        true => Err(format!("`{what}` names {name}, which only regate sets")),
        false => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Rego,
    Json,
    Yaml,
}

struct PolicyFile {
    path: PathBuf,
    /// Relative to the policies directory, `/`-separated: part of the revision hash.
    rel: String,
    kind: FileKind,
    /// Where a data file's content lands under `data`: its directory, as in OPA bundles.
    data_path: Vec<String>,
}

/// Every policy and data file below `dir`, sorted, so the revision is stable. Names starting
/// with `.` are skipped: that leaves out `.git`, and the `..data`/`..2024_…` directories of a
/// Kubernetes volume, whose files are reached through the visible symlinks instead.
fn collect_files(dir: &Path) -> Result<Vec<PolicyFile>, PolicyError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), Vec::<String>::new())];
    while let Some((current, data_path)) = stack.pop() {
        let read_err = |source| PolicyError::Read {
            path: current.display().to_string(),
            source,
        };
        for entry in std::fs::read_dir(&current).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Follow symlinks: ConfigMap files are symlinks into `..data`.
            let meta = std::fs::metadata(&path).map_err(|source| PolicyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            if meta.is_dir() {
                let mut sub = data_path.clone();
                sub.push(name);
                stack.push((path, sub));
                continue;
            }
            let kind = match path.extension().and_then(|e| e.to_str()) {
                Some("rego") => FileKind::Rego,
                Some("json") => FileKind::Json,
                Some("yaml" | "yml") => FileKind::Yaml,
                _ => continue,
            };
            let mut rel = data_path.join("/");
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(&name);
            out.push(PolicyFile {
                path,
                rel,
                kind,
                data_path: data_path.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    if !out.iter().any(|f| f.kind == FileKind::Rego) {
        return Err(PolicyError::Empty {
            dir: dir.display().to_string(),
        });
    }
    Ok(out)
}

/// Merge `value` into `data` at `path`, deep-merging objects. Two files setting the same
/// non-object key is an error, as in OPA, rather than a silent last-writer-wins.
fn merge_at(
    data: &mut Value,
    path: &[String],
    value: Value,
    file: &str,
) -> Result<(), PolicyError> {
    let mut value = value;
    for key in path.iter().rev() {
        let mut wrap = BTreeMap::new();
        wrap.insert(Value::from(key.as_str()), value);
        value = Value::from(wrap);
    }
    merge(data, value, &mut Vec::new(), file)
}

fn merge(
    into: &mut Value,
    from: Value,
    at: &mut Vec<String>,
    file: &str,
) -> Result<(), PolicyError> {
    let conflict = |at: &Vec<String>| match at.is_empty() {
        true => PolicyError::Data {
            path: file.to_string(),
            message: "a data file must hold an object (it is merged into data at its directory)"
                .into(),
        },
        false => PolicyError::DataConflict {
            path: file.to_string(),
            key: at.join("."),
        },
    };
    let (Value::Object(_), Value::Object(from_map)) = (&*into, &from) else {
        return Err(conflict(at));
    };
    let from_map = from_map.clone();
    let into_map = into.as_object_mut().map_err(|_| conflict(at))?;
    for (k, v) in from_map.iter() {
        at.push(k.as_string().map(|s| s.to_string()).unwrap_or_default());
        match into_map.get_mut(k) {
            None => {
                into_map.insert(k.clone(), v.clone());
            }
            Some(existing) => merge(existing, v.clone(), at, file)?,
        }
        at.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
