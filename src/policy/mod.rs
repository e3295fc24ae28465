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
pub mod git;
pub mod governance;
pub mod input;

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
    /// A symlink (in a git checkout, say) that would have the policy read a file it was not
    /// given: a private key, a token.
    #[error("policies: {path} leads outside the policy directory")]
    Outside { path: String },
    /// `file:line:col: message`, from [`summary`]; never the source text.
    #[error("policy: {0}")]
    Compile(String),
    #[error("data: {path}: {message}")]
    Data { path: String, message: String },
    #[error("data: {path} sets data.{key}, which another data file already set")]
    DataConflict { path: String, key: String },
    #[error("query: {query}: {message}")]
    Query { query: String, message: String },
    #[error("policy: {location}: calls {builtin}, which regate does not implement")]
    UnsupportedBuiltin { location: String, builtin: String },
}

/// How a policy set is asked: the same for the proxy and for the policy tools.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `data.` path whose value decides (`--query`): a rule, a package, or any document.
    pub query: String,
    /// Bounds each evaluation (`--policy-timeout`).
    pub timeout: Duration,
    /// A failing builtin fails the evaluation (a deny) instead of making its expression
    /// undefined, as OPA's non-strict default does (`--strict-builtin-errors`).
    pub strict_builtin_errors: bool,
    /// Evaluate the query once on a made-up request at load, to warn early.
    pub sample: bool,
    /// The rule asked once per tool of an MCP `tools/list` result, whether the caller may see
    /// it (`--mcp-tools-list-query`); none: results are not filtered.
    pub tools_list_query: Option<String>,
}

impl Options {
    /// OPA's defaults: non-strict builtin errors; and a sample evaluation.
    pub fn new(query: &str, timeout: Duration) -> Options {
        Options {
            query: query.to_string(),
            timeout,
            strict_builtin_errors: false,
            sample: true,
            tools_list_query: None,
        }
    }

    /// As `regate run` asks: its `--query`, `--policy-timeout` and `--strict-builtin-errors`,
    /// with a sample evaluation at load. The proxy's config and the policy tools both build
    /// their options here, so the two cannot ask differently.
    pub fn from_flags(query: &str, timeout: Duration, strict_builtin_errors: bool) -> Options {
        Options {
            strict_builtin_errors,
            ..Options::new(query, timeout)
        }
    }
}

/// A compiled, checked policy set and the revision that names it in decision records.
pub struct PolicySet {
    /// Prepared once at load; cloned (cheaply: it shares the compiled rules) per evaluation.
    engine: Engine,
    /// What decision records name the set by: `git:<commit>` for a git checkout (git-sync
    /// included), else the content hash.
    pub revision: Arc<str>,
    /// `sha256:` + the first 16 hex digits of a hash over every loaded file's path and bytes.
    pub content_hash: Arc<str>,
    pub query: Arc<str>,
    /// Set once an evaluation of this set has taken longer than [`evaluator::SLOW`]; from then
    /// on the proxy evaluates it only on its evaluation threads.
    slow_seen: std::sync::atomic::AtomicBool,
    /// What the set can read from `input`, or why its answers cannot be kept.
    pub reads: analysis::Reads,
    /// Its answers, kept by what it reads ([`PolicySet::with_decision_cache`]).
    cache: Option<cache::DecisionCache>,
    /// The rule regorus evaluates: the query itself when it names a rule regorus can
    /// evaluate directly, else a rule regate adds that holds the query's value.
    entry: String,
    /// Why evaluating the query on a made-up request failed, if it did. A warning, not a
    /// refusal: real requests carry what the sample lacks.
    pub sample_error: Option<String>,
    /// Whether a failing builtin fails the evaluation ([`Options::strict_builtin_errors`]).
    pub strict_builtin_errors: bool,
    /// The second question the set answers, when `--mcp-tools-list-query` names one.
    tools: Option<Visibility>,
}

/// The tool-visibility query ([`Options::tools_list_query`]): compiled with the set, with its
/// own analysis and decision cache, since it reads `input` otherwise than the main query.
struct Visibility {
    query: Arc<str>,
    /// The rule regorus evaluates (as [`PolicySet::entry`] is for the main query).
    entry: String,
    reads: analysis::Reads,
    cache: Option<cache::DecisionCache>,
}

/// Which of its questions a set is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// The query that decides a request (`--query`).
    Decide,
    /// Whether one listed tool may be shown (`--mcp-tools-list-query`): only `true` shows it.
    ToolVisible,
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
    /// `required_scope`: on a deny, the scopes a token would need (a 403 `insufficient_scope`
    /// challenge, MCP's step-up).
    pub required_scope: Vec<String>,
    /// Set when evaluation failed; for the diagnostic log only, never sent to the client.
    pub error: Option<String>,
    pub eval_ns: u64,
    /// Answered from the decision cache rather than by an evaluation.
    pub cached: bool,
    /// On a deny, `approval`: the action may go ahead once a person approves it.
    pub approval: Option<governance::ApprovalAsk>,
    /// On an allow, `rate_limits`: the budgets the request is charged to.
    pub rate_limits: Vec<governance::RateLimit>,
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
            required_scope: Vec::new(),
            error: None,
            eval_ns: 0,
            cached: false,
            approval: None,
            rate_limits: Vec::new(),
        }
    }
}

impl PolicySet {
    /// Read, compile and sample-evaluate everything under `dir`. Nothing is published here.
    /// Every broken file is reported, not just the first.
    pub fn load(dir: &Path, options: &Options) -> Result<PolicySet, Vec<PolicyError>> {
        PolicySet::compile(Sources::read(dir)?, options)
    }

    /// Compile and sample-evaluate sources already read. Refused: what can never work (a
    /// parse error, a builtin regate lacks, a query that names nothing, or names a path below
    /// a rule that is only ever `true`, `false` or another constant). A sample evaluation
    /// that fails is only a warning, kept in [`PolicySet::sample_error`].
    pub fn compile(sources: Sources, options: &Options) -> Result<PolicySet, Vec<PolicyError>> {
        let Sources {
            files,
            revision,
            content_hash,
        } = sources;
        let query = options.query.as_str();
        let mut engine = build_engine(files, options.strict_builtin_errors)?;
        let fail = |e: PolicyError| vec![e];
        let query_error = |message: String| {
            fail(PolicyError::Query {
                query: query.to_string(),
                message,
            })
        };
        let direct = resolve_query(&mut engine, query).map_err(query_error)?;
        // Resolved before anything is compiled: an added rule must be in the engine first.
        let tools = match &options.tools_list_query {
            Some(q) => Some(tools_entry(&mut engine, q).map_err(|message| {
                fail(PolicyError::Query {
                    query: q.clone(),
                    message,
                })
            })?),
            None => None,
        };
        // A runaway evaluation is an error (a deny), not a stuck thread. Set on the engine,
        // so each clone carries it and sets with different limits can live side by side.
        engine.set_execution_timer_config(execution_limit(options.timeout));
        // Gathered, a policy's print() output stays in the clone and never reaches stderr
        // with request values in it.
        engine.set_gather_prints(true);
        // regorus evaluates a rule directly, but not a package, nor a document built only
        // from partial rules (`result["allowed"] := ...`), which OPA evaluates as any other.
        // For those, a rule of regate's own holds the query's value.
        let entry = if direct {
            engine
                .compile_with_entrypoint(&query.into())
                .map_err(|e| query_error(summary(&e.to_string())))?;
            query.to_string()
        } else {
            add_query_rule(&mut engine, query).map_err(query_error)?;
            engine
                .compile_with_entrypoint(&QUERY_RULE.into())
                .map_err(|e| query_error(summary(&e.to_string())))?;
            QUERY_RULE.to_string()
        };
        if let Some(tools_rule) = &tools {
            engine
                .compile_with_entrypoint(&tools_rule.as_str().into())
                .map_err(|e| {
                    fail(PolicyError::Query {
                        query: options.tools_list_query.clone().unwrap_or_default(),
                        message: summary(&e.to_string()),
                    })
                })?;
        }
        let reads = analysis::reads(engine.get_modules(), &entry);
        let tools = tools.map(|tools_rule| Visibility {
            query: options
                .tools_list_query
                .as_deref()
                .unwrap_or_default()
                .into(),
            reads: analysis::reads(engine.get_modules(), &tools_rule),
            entry: tools_rule,
            cache: None,
        });
        let mut set = PolicySet {
            engine,
            revision,
            content_hash,
            query: query.into(),
            slow_seen: Default::default(),
            reads,
            cache: None,
            entry,
            sample_error: None,
            strict_builtin_errors: options.strict_builtin_errors,
            tools,
        };
        // The static checks cannot see everything: evaluate once now, and say so if that
        // fails, rather than first on a request.
        if let Some(Err(e)) = options.sample.then(|| set.eval(input::sample())) {
            let message = summary(&e.to_string());
            tracing::warn!(
                query = %set.query,
                revision = %set.revision,
                error = %message,
                "the policy failed on a sample request; requests it fails on are denied"
            );
            set.sample_error = Some(message);
        }
        Ok(set)
    }

    fn eval(&self, input: Value) -> anyhow::Result<Value> {
        self.eval_entry(&self.entry, input)
    }

    fn eval_entry(&self, entry: &str, input: Value) -> anyhow::Result<Value> {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine.eval_rule(entry.to_string())
    }

    /// The query's value for one input, as OPA would print it; for `regate policy eval --raw`.
    pub fn value(&self, input: Value) -> anyhow::Result<Value> {
        self.eval(input)
    }

    /// Keep up to `entries` of this set's answers (0: none), when its analysis allows; as
    /// many again for the tool-visibility query, apart.
    pub fn with_decision_cache(mut self, entries: usize) -> PolicySet {
        if let analysis::Reads::Paths(paths) = &self.reads {
            self.cache = cache::DecisionCache::new(paths, entries);
        }
        if let Some(tools) = &mut self.tools {
            if let analysis::Reads::Paths(paths) = &tools.reads {
                tools.cache = cache::DecisionCache::new(paths, entries);
            }
        }
        self
    }

    /// The decision cache, when this set has one.
    pub fn cache(&self) -> Option<&cache::DecisionCache> {
        self.cache.as_ref()
    }

    /// The decision cache of `question`'s answers, when the set has one.
    pub fn cache_of(&self, question: Question) -> Option<&cache::DecisionCache> {
        match question {
            Question::Decide => self.cache.as_ref(),
            Question::ToolVisible => self.tools.as_ref().and_then(|t| t.cache.as_ref()),
        }
    }

    /// The tool-visibility query, when the set was compiled with one.
    pub fn tools_list_query(&self) -> Option<&Arc<str>> {
        self.tools.as_ref().map(|t| &t.query)
    }

    /// Whether an evaluation of this set has ever been slow (see [`Evaluator`]).
    pub fn slow_seen(&self) -> bool {
        self.slow_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Evaluate the query for one request. Never fails: every failure is a deny.
    pub fn decide(&self, input: Value) -> Decision {
        self.answer(Question::Decide, input)
    }

    /// Ask `question` about one input. Never fails: every failure is a deny (for
    /// [`Question::ToolVisible`], a hidden tool), and so is a set without the question.
    pub fn answer(&self, question: Question, input: Value) -> Decision {
        let (entry, read): (&str, fn(&Value) -> Decision) = match (question, &self.tools) {
            (Question::Decide, _) => (&self.entry, interpret),
            (Question::ToolVisible, Some(tools)) => (&tools.entry, interpret_visibility),
            (Question::ToolVisible, None) => return Decision::deny("policy_undefined"),
        };
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        let result = self.eval_entry(entry, input);
        let eval_ns = start.elapsed().as_nanos() as u64;
        // CPU time, not wall time: a thread the scheduler set aside mid-evaluation on a busy
        // machine has not evaluated slowly.
        if thread_cpu_ns().saturating_sub(cpu_start) > evaluator::SLOW.as_nanos() as u64 {
            self.slow_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut decision = match result {
            Ok(value) => read(&value),
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

/// Keep the environment from changing what an evaluation costs. regorus makes `anyhow`
/// errors during ordinary evaluation (a lookup that fails, a builtin's error caught by the
/// policy), and with `RUST_BACKTRACE=1` in the environment (common in containers) every one
/// of them captures a backtrace: a fifth of the throughput of a realistic policy. Setting
/// `RUST_LIB_BACKTRACE=0`, unless the operator set it, turns off backtraces of errors only: a
/// panic still prints one under `RUST_BACKTRACE`. Call it first thing in `main`, before any
/// thread starts and before any error is made (std reads the variable once).
pub fn keep_error_backtraces_off() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
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

/// Every Rego file parsed, every data file merged at its directory, all in one engine with
/// regate's builtins, not yet prepared for any query; a call to a function that exists
/// nowhere is refused here, by file and line, rather than denying every request that reaches
/// it. The proxy and the policy tools load through here, so a policy behaves the same in
/// `regate policy test` as in a pod.
pub(crate) fn build_engine(
    files: Vec<(PolicyFile, String)>,
    strict_builtin_errors: bool,
) -> Result<Engine, Vec<PolicyError>> {
    let mut engine = Engine::new();
    // regorus refuses lines over 1024 columns and files over 20,000 lines; OPA has no such
    // limit, and a PEM certificate or a JWKS inlined as one string runs past it. Policies are
    // operator configuration, so the bounds are only against the absurd.
    engine.set_policy_length_config(regorus::PolicyLengthConfig {
        max_col: std::num::NonZeroU32::MIN.saturating_add(1 << 20),
        max_file_bytes: std::num::NonZeroUsize::MIN.saturating_add(16 << 20),
        max_lines: std::num::NonZeroUsize::MIN.saturating_add(1_000_000),
    });
    engine.set_strict_builtin_errors(strict_builtin_errors);
    let mut data = Value::new_object();
    let mut errors = Vec::new();
    for (file, text) in files {
        let name = file.path.display().to_string();
        let loaded = match file.kind {
            // The package regate adds to evaluate a query: a module of the same name could
            // define its answer.
            FileKind::Rego if declares_package(&text, QUERY_PACKAGE) => Err(PolicyError::Compile(
                format!("{name}: the package {QUERY_PACKAGE} is regate's own"),
            )),
            FileKind::Rego => add_rego(&mut engine, name.clone(), text),
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
    let called = analysis::called(engine.get_modules());
    if let Err(e) = crate::builtins::register(&mut engine, strict_builtin_errors, |name| {
        called.contains(name)
    }) {
        errors.push(PolicyError::Compile(e.to_string()));
    }
    // With a Rego file unparsed, its functions would look missing: then only calls spelt as
    // builtins (`http.send`), not as functions a policy could define (`f`, `data.lib.f`).
    let unparsed = errors.iter().any(|e| matches!(e, PolicyError::Compile(_)));
    errors.extend(
        analysis::unknown_calls(engine.get_modules())
            .into_iter()
            .filter(|(_, name)| !unparsed || (name.contains('.') && !name.starts_with("data.")))
            .map(|(location, builtin)| PolicyError::UnsupportedBuiltin { location, builtin }),
    );
    if !errors.is_empty() {
        return Err(errors);
    }
    engine
        .add_data(data)
        .map_err(|e| vec![PolicyError::Compile(summary(&e.to_string()))])?;
    Ok(engine)
}

/// The rule regate adds when regorus cannot evaluate the query as it stands, and its package.
const QUERY_RULE: &str = "data.regate_query__.value";
const QUERY_PACKAGE: &str = "regate_query__";
/// The rule regate adds for a tool-visibility query regorus cannot evaluate as it stands.
const TOOLS_RULE: &str = "data.regate_query__.tool_visible";

/// Whether a Rego file's `package` line names `package` or a package inside it.
fn declares_package(text: &str, package: &str) -> bool {
    text.lines().any(|line| {
        let code = strip_comment_and_strings(line);
        let mut words = code.split_whitespace();
        words.next() == Some("package")
            && words.next().is_some_and(|p| {
                let p = p.strip_prefix("data.").unwrap_or(p);
                p == package
                    || p.starts_with(&format!("{package}."))
                    || p.starts_with(&format!("{package}["))
            })
    })
}

fn add_query_rule(engine: &mut Engine, query: &str) -> Result<(), String> {
    add_rule(engine, "(--query)", "value", query)
}

/// A rule `name := query` in regate's own package, for a query regorus cannot evaluate as it
/// stands.
fn add_rule(engine: &mut Engine, file: &str, name: &str, query: &str) -> Result<(), String> {
    engine.set_rego_v0(false);
    engine
        .add_policy(
            file.into(),
            format!("package {QUERY_PACKAGE}\n\n{name} := {query}\n"),
        )
        .map(|_| ())
        .map_err(|e| summary(&e.to_string()))
}

/// The rule regorus evaluates for the tool-visibility query: the query itself when it names a
/// rule regorus can evaluate directly, else one regate adds, as for `--query`.
fn tools_entry(engine: &mut Engine, query: &str) -> Result<String, String> {
    if resolve_query(engine, query)? {
        return Ok(query.to_string());
    }
    add_rule(engine, "(--mcp-tools-list-query)", "tool_visible", query)?;
    Ok(TOOLS_RULE.to_string())
}

/// `data.envoy.authz.result` as `["envoy", "authz", "result"]`; also `data.x["a-b"]`.
/// Anything else is refused: the query is spliced into a rule, so it must be a plain path.
fn query_path(query: &str) -> Result<Vec<String>, String> {
    let bad = || format!("{query:?} is not a path like data.envoy.authz.allow");
    let rest = query.strip_prefix("data").ok_or_else(bad)?;
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if rest.is_empty() {
        return Err(format!(
            "{query:?} names all of data; name a rule or a package"
        ));
    }
    let mut path = Vec::new();
    let mut rest = rest;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if !ident(name) {
                return Err(bad());
            }
            path.push(name.to_string());
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix("[\"") {
            let end = after.find("\"]").ok_or_else(bad)?;
            let key = &after[..end];
            if key.is_empty() || key.contains(['"', '\\']) {
                return Err(bad());
            }
            path.push(key.to_string());
            rest = &after[end + 2..];
        } else {
            return Err(bad());
        }
    }
    Ok(path)
}

/// Whether `path` names a document in `data`.
fn in_data(data: &Value, path: &[String]) -> bool {
    let mut at = data;
    for key in path {
        match &at[key.as_str()] {
            Value::Undefined => return false,
            next => at = next,
        }
    }
    true
}

/// Whether regorus can evaluate `query` directly: it names one rule, package then name,
/// every definition of which has a plain head. Refused: a query that names nothing in the
/// set, or a path below a rule that nothing can lie below.
fn resolve_query(engine: &mut Engine, query: &str) -> Result<bool, String> {
    let path = query_path(query)?;
    // The rules that define the path, the paths inside it, or a document it is inside.
    let heads = analysis::rule_heads(engine.get_modules());
    let defining: Vec<_> = heads
        .iter()
        .filter(|h| h.path.starts_with(&path) || path.starts_with(&h.path))
        .collect();
    if defining.is_empty() && !in_data(&engine.get_data(), &path) {
        return Err("names no rule, package or data document in the policy set".into());
    }
    if let Some(rule) = leaf_above(&heads, &path) {
        return Err(format!(
            "names a path below data.{}, a rule whose value (true, a number, a string or \
             null) has nothing below it: every request would be denied as policy_undefined",
            rule.join(".")
        ));
    }
    Ok(!defining.is_empty() && defining.iter().all(|h| h.plain && h.path == path))
}

/// The rule above `path` that nothing can lie below, if the query names a path inside one
/// (`data.regate.authz.allow.x` when `allow` is `true` or `false`): every definition of it
/// is a leaf, and no rule defines anything below it.
fn leaf_above<'a>(heads: &'a [analysis::RuleHeadPath], path: &[String]) -> Option<&'a [String]> {
    heads
        .iter()
        .map(|h| h.path.as_slice())
        .filter(|above| above.len() < path.len() && path.starts_with(above))
        .find(|above| {
            heads
                .iter()
                .filter(|h| h.path.starts_with(above))
                .all(|h| h.leaf && h.path.len() == above.len())
        })
}

/// Every policy and data file under a directory, read, with the revision their bytes make.
/// Reading is cheap next to compiling, so a reload reads first and compiles only when the
/// revision changed.
pub struct Sources {
    pub(crate) files: Vec<(PolicyFile, String)>,
    /// `git:<commit>` when the directory is a git checkout ([`git::commit`]), else
    /// [`Sources::content_hash`].
    pub revision: Arc<str>,
    /// `sha256:` + the first 16 hex digits of a hash over every file's path and bytes: what
    /// a reload compares, since files can change under one commit.
    pub content_hash: Arc<str>,
}

impl Sources {
    pub fn read(dir: &Path) -> Result<Sources, Vec<PolicyError>> {
        // A sync tool can swap the directory while it is read (git-sync's link): read again
        // until the files and the commit named come from one and the same checkout.
        let mut attempts = 0;
        loop {
            let before = std::fs::canonicalize(dir).ok();
            let sources = Sources::read_once(dir)?;
            attempts += 1;
            if attempts >= 3 || std::fs::canonicalize(dir).ok() == before {
                return Ok(sources);
            }
        }
    }

    fn read_once(dir: &Path) -> Result<Sources, Vec<PolicyError>> {
        let listed = collect_files(dir).map_err(|e| vec![e])?;
        let mut read = Vec::with_capacity(listed.len());
        let mut errors = Vec::new();
        for file in listed {
            match std::fs::read(&file.path) {
                Ok(bytes) => read.push((file, bytes)),
                Err(source) => errors.push(PolicyError::Read {
                    path: file.path.display().to_string(),
                    source,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let commit = git::commit(dir).map(|commit| format!("git:{commit}"));
        Sources::from_read(read, |_| commit)
    }

    /// Files that are not on disk (an OPA bundle's), each as its `/`-separated path in the
    /// set and its bytes: `.rego` files are policies, `.json` and `.yaml` files data merged at
    /// their directory. `revision` names the set from its content hash (a bundle's manifest
    /// revision, say); `None` names it by the hash itself. A directory, a git checkout and a
    /// bundle all come through here, so they load, hash and compile alike.
    pub fn from_files(
        files: Vec<(String, Vec<u8>)>,
        revision: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Sources, Vec<PolicyError>> {
        let mut listed = Vec::with_capacity(files.len());
        for (rel, bytes) in files {
            let rel = rel.trim_start_matches('/').to_string();
            let kind = match rel.rsplit_once('.').map(|(_, ext)| ext) {
                Some("rego") => FileKind::Rego,
                Some("json") => FileKind::Json,
                Some("yaml" | "yml") => FileKind::Yaml,
                _ => continue,
            };
            let mut data_path: Vec<String> = rel.split('/').map(str::to_string).collect();
            data_path.pop();
            let file = PolicyFile {
                path: PathBuf::from(&rel),
                rel,
                kind,
                data_path,
            };
            listed.push((file, bytes));
        }
        listed.sort_by(|a, b| a.0.rel.cmp(&b.0.rel));
        if !listed.iter().any(|(f, _)| f.kind == FileKind::Rego) {
            return Err(vec![PolicyError::Empty {
                dir: "the bundle".into(),
            }]);
        }
        Sources::from_read(listed, revision)
    }

    /// Hash and decode files already read; `revision` is given the content hash.
    fn from_read(
        read: Vec<(PolicyFile, Vec<u8>)>,
        revision: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Sources, Vec<PolicyError>> {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut files = Vec::with_capacity(read.len());
        let mut errors = Vec::new();
        for (file, bytes) in read {
            // Path and length delimit each file, so moving bytes between files changes the hash.
            hasher.update(file.rel.as_bytes());
            hasher.update(&[0]);
            hasher.update(&(bytes.len() as u64).to_be_bytes());
            hasher.update(&bytes);
            match String::from_utf8(bytes) {
                Ok(text) => files.push((file, text)),
                Err(_) => errors.push(PolicyError::Data {
                    path: file.path.display().to_string(),
                    message: "not UTF-8".into(),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let content_hash: Arc<str> = format!(
            "sha256:{}",
            &crate::tls::identity::hex(hasher.finish().as_ref())[..16]
        )
        .into();
        let revision = match revision(&content_hash) {
            Some(revision) => revision.into(),
            None => content_hash.clone(),
        };
        Ok(Sources {
            files,
            revision,
            content_hash,
        })
    }
}

/// Policies may be Rego v1 (the default) or v0, as opa-envoy-plugin policies often are.
/// A file that does not parse as v1 is tried as v0, unless it plainly is v1 (it imports
/// `rego.v1`, or uses `if` without the v0 future import). A broken file gets the error of the
/// version it is written in: a plainly v1 file its v1 error, any other its v0 error, since
/// the v1 parser's complaint about a v0 file is only that it is v0.
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
        return match v0 {
            Ok(_) => Ok(()),
            Err(v0_error) => Err(PolicyError::Compile(summary(&v0_error.to_string()))),
        };
    }
    Err(PolicyError::Compile(summary(&v1_error.to_string())))
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
pub(crate) fn compile_message(raw: &str) -> String {
    match located(raw) {
        Some(first) => format!("{first}\n{}", raw.trim_matches('\n')),
        None => raw.trim().to_string(),
    }
}

/// Turn the query's value into a decision. Only `true`, or an object whose `allowed` is
/// `true`, allows; anything malformed is a deny, however permissive it looks. As in
/// opa-envoy-plugin, `allow` is not `allowed`: a package queried whole whose `allow` rule
/// holds is not a decision to allow.
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

/// Whether a listed tool is shown: only when the tool-visibility query is `true`. Anything
/// else, a decision object included, hides it.
fn interpret_visibility(value: &Value) -> Decision {
    match value {
        Value::Bool(true) => Decision {
            allowed: true,
            ..Decision::deny("tool_visible")
        },
        Value::Bool(false) => Decision::deny("tool_hidden"),
        Value::Undefined => Decision::deny("policy_undefined"),
        other => Decision {
            error: Some(format!(
                "the tool-visibility result is {}, not a boolean",
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
    let allowed = match field("allowed") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`allowed` is not a boolean".into()),
        None => return Err("the result object has no `allowed`".into()),
    };
    let required_scope = required_scope(field("required_scope"), allowed)?;
    let reason = match field("reason") {
        None if !required_scope.is_empty() => Cow::Borrowed("insufficient_scope"),
        None => Cow::Borrowed(if allowed { "allowed" } else { "denied" }),
        Some(Value::String(s)) => Cow::Owned(s.to_string()),
        Some(_) => return Err("`reason` is not a string".into()),
    };
    let headers = |name| field(name).map_or(Ok(Vec::new()), |v| header_list(v, name));
    let status = http_status(field("http_status"), allowed)?;
    if !required_scope.is_empty() && status != StatusCode::FORBIDDEN {
        return Err("`required_scope` asks for a 403; `http_status` says otherwise".into());
    }
    Ok(Decision {
        allowed,
        reason,
        status,
        body: deny_body(field("body"))?,
        headers: headers("headers")?,
        response_headers: headers("response_headers_to_add")?,
        remove_headers: headers_to_remove(field("request_headers_to_remove"))?,
        query_set: field("query_parameters_to_set").map_or(Ok(Vec::new()), |v| {
            string_pairs(v, "query_parameters_to_set")
        })?,
        query_remove: query_to_remove(field("query_parameters_to_remove"))?,
        required_scope,
        error: None,
        eval_ns: 0,
        cached: false,
        // An approval is asked on a deny: on an allow it would let through what the author
        // meant to hold, so it is a malformed answer (a deny). Budgets are charged on an
        // allow; on a deny there is nothing to charge.
        approval: match (allowed, governance::approval(field("approval"))?) {
            (true, Some(_)) => return Err("`approval` on an allow".into()),
            (_, ask) => ask,
        },
        rate_limits: match allowed {
            true => governance::rate_limits(field("rate_limits"))?,
            false => Vec::new(),
        },
    })
}

/// `http_status`: 403 by default, else a status from 200 to 599. A deny answered 200 would
/// read as success to the client, and a 1xx would leave it waiting for a response that never
/// comes. Redirects (a 302 to a login page) are a common deny in opa-envoy-plugin policies
/// and stay allowed.
fn http_status(value: Option<&Value>, allowed: bool) -> Result<StatusCode, String> {
    let status = match value {
        None => StatusCode::FORBIDDEN,
        Some(v) => v
            .as_u16()
            .ok()
            .filter(|s| (200..=599).contains(s))
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or("`http_status` is not a status code from 200 to 599")?,
    };
    if !allowed && status.as_u16() < 300 {
        return Err(format!(
            "`http_status` {} on a deny: a deny must be 300 or more",
            status.as_u16()
        ));
    }
    Ok(status)
}

/// `required_scope`: a scope token, or a list of them, on a deny only (an allow that asks for
/// more scope says two things at once). Each must be a scope token (RFC 6749 §3.3), so the
/// challenge carries it as it is.
fn required_scope(value: Option<&Value>, allowed: bool) -> Result<Vec<String>, String> {
    let scopes: Vec<&Value> = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
    };
    if allowed {
        return Err("`required_scope` on an allow; asking for more scope is a deny".into());
    }
    let scopes = scopes
        .into_iter()
        .map(|s| match s {
            Value::String(s) if is_scope_token(s) => Ok(s.to_string()),
            _ => Err("`required_scope` holds something other than a scope token".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    match scopes.is_empty() {
        true => Err("`required_scope` is an empty list".into()),
        false => Ok(scopes),
    }
}

/// A scope token (RFC 6749 §3.3: `NQCHAR`s, no space, quote or backslash), so it can go into
/// a quoted `scope="…"` of a challenge as it is.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
}

/// `body`: a string as it is, anything else as JSON.
fn deny_body(value: Option<&Value>) -> Result<Option<Bytes>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(Bytes::copy_from_slice(s.as_bytes()))),
        Some(other) => Ok(Some(Bytes::from(
            other.to_json_str().map_err(|e| e.to_string())?,
        ))),
    }
}

/// `request_headers_to_remove`: header names, none of them one that frames the request.
fn headers_to_remove(value: Option<&Value>) -> Result<Vec<HeaderName>, String> {
    match value {
        None => Ok(Vec::new()),
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
            }),
        Some(_) => Err("`request_headers_to_remove` is not an array".into()),
    }
}

/// `query_parameters_to_remove`: names.
fn query_to_remove(value: Option<&Value>) -> Result<Vec<String>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| n.as_string().map(|s| s.to_string()).ok())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "`query_parameters_to_remove` holds a non-string".to_string()),
        Some(_) => Err("`query_parameters_to_remove` is not an array".into()),
    }
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
pub(crate) enum FileKind {
    Rego,
    Json,
    Yaml,
}

pub(crate) struct PolicyFile {
    path: PathBuf,
    /// Relative to the policies directory, `/`-separated: part of the revision hash.
    rel: String,
    pub(crate) kind: FileKind,
    /// Where a data file's content lands under `data`: its directory, as in OPA bundles.
    data_path: Vec<String>,
}

/// Every policy and data file below `dir`, sorted, so the revision is stable. Names starting
/// with `.` are skipped: that leaves out `.git`, and the `..data`/`..2024_…` directories of a
/// Kubernetes volume, whose files are reached through the visible symlinks instead.
///
/// Symlinks are followed (a ConfigMap's files are symlinks into `..data`), but only within
/// the directory's real path: one that leads outside it is an error, and a directory reached
/// twice (a symlink loop) is read once.
fn collect_files(dir: &Path) -> Result<Vec<PolicyFile>, PolicyError> {
    let root = std::fs::canonicalize(dir).map_err(|source| PolicyError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut seen = std::collections::HashSet::from([root.clone()]);
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
            let kind = match path.extension().and_then(|e| e.to_str()) {
                _ if meta.is_dir() => None,
                Some("rego") => Some(FileKind::Rego),
                Some("json") => Some(FileKind::Json),
                Some("yaml" | "yml") => Some(FileKind::Yaml),
                _ => continue,
            };
            let real = std::fs::canonicalize(&path).map_err(|source| PolicyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            if !real.starts_with(&root) {
                return Err(PolicyError::Outside {
                    path: path.display().to_string(),
                });
            }
            let Some(kind) = kind else {
                if seen.insert(real) {
                    let mut sub = data_path.clone();
                    sub.push(name);
                    stack.push((path, sub));
                }
                continue;
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
