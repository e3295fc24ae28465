//! `regate policy replay`: evaluate a candidate policy set on the inputs recorded in decision
//! logs (`--decision-log-input`) and report every decision it would flip.
//!
//! The set is loaded as `regate run` loads it ([`PolicySet::load`]) and asked with
//! [`PolicySet::decide`], the proxy's own call. A recorded decision is the policy's: a record
//! of `--mode audit` that was forwarded but `would_deny` counts as a deny. Reasons regate
//! puts in place of the policy's after the decision (an upstream failure, a client gone) are
//! not compared. Nothing is skipped silently: records without input, event records and lines
//! that are not JSON are counted; a line that is not JSON is an error (exit 2), unless it is
//! the incomplete last line of a file (a regate stopped mid-write), which is counted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use regorus::Value;
use serde::Serialize;

use super::PolicyFlags;
use crate::audit::input::wildcard;
use crate::cli::out::outln;
use crate::policy::PolicySet;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Decision log files written with --decision-log-input (repeatable, or several after one
    /// --log).
    #[arg(long = "log", value_name = "FILE", required = true, num_args = 1..)]
    logs: Vec<PathBuf>,
    /// The candidate policy directory, as given to `regate run --policies`.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    #[command(flatten)]
    policy: PolicyFlags,
    /// A flip that is intended: `allow-to-deny` or `deny-to-allow`, optionally with
    /// `:METHOD PATH` (`*` matches any run of characters; the path without its query), e.g.
    /// 'allow-to-deny:GET /admin/*' (repeatable).
    #[arg(long = "expect", value_name = "KIND[:METHOD PATH]", value_parser = expectation)]
    expect: Vec<Expectation>,
    /// Examples shown per kind of flip.
    #[arg(long, value_name = "N", default_value_t = 5)]
    examples: usize,
    /// text for people, json for CI.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    AllowToDeny,
    DenyToAllow,
    ReasonChanged,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AllowToDeny => "allow-to-deny",
            Kind::DenyToAllow => "deny-to-allow",
            Kind::ReasonChanged => "reason-changed",
        }
    }
}

/// A flip stated as intended by `--expect`.
#[derive(Debug, Clone)]
struct Expectation {
    kind: Kind,
    /// Method and path patterns; none: every flip of the kind.
    request: Option<(String, String)>,
}

fn expectation(s: &str) -> Result<Expectation, String> {
    let (kind, request) = match s.split_once(':') {
        Some((kind, request)) => (kind, Some(request)),
        None => (s, None),
    };
    let kind = match kind.trim() {
        "allow-to-deny" => Kind::AllowToDeny,
        "deny-to-allow" => Kind::DenyToAllow,
        other => {
            return Err(format!(
                "{other:?} is not allow-to-deny or deny-to-allow (reason changes never fail)"
            ))
        }
    };
    let request = match request {
        None => None,
        Some(r) => {
            let (method, path) = r
                .trim()
                .split_once(' ')
                .ok_or_else(|| format!("{r:?} is not METHOD PATH, e.g. 'GET /admin/*'"))?;
            Some((method.trim().to_string(), path.trim().to_string()))
        }
    };
    Ok(Expectation { kind, request })
}

impl Expectation {
    fn accepts(&self, flip: &Flip) -> bool {
        self.kind == flip.kind
            && self.request.as_ref().is_none_or(|(method, path)| {
                let bare = flip.path.split('?').next().unwrap_or_default();
                wildcard(method, &flip.method) && wildcard(path, bare)
            })
    }
}

/// Reasons regate records in place of the policy's after it decided.
const AFTER_THE_POLICY: &[&str] = &[
    "client_cancelled",
    "upstream_overloaded",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_error",
    "invalid_request",
];

/// One flipped decision.
#[derive(Debug, Clone, Serialize)]
struct Flip {
    #[serde(skip)]
    kind: Kind,
    file: String,
    line: usize,
    request_id: Option<String>,
    spiffe_id: Option<String>,
    method: String,
    path: String,
    recorded_reason: String,
    replayed_reason: String,
    accepted: bool,
}

#[derive(Debug, Default, Serialize)]
struct KindReport {
    count: usize,
    accepted: usize,
    examples: Vec<Flip>,
}

/// What `replay` found, as `--format json` prints it.
#[derive(Debug, Default, Serialize)]
struct Report {
    policy_revision: String,
    query: String,
    lines: usize,
    replayed: usize,
    unchanged: usize,
    /// Decision records without `input`: refused before the policy, or written without
    /// --decision-log-input.
    without_input: usize,
    /// Records refused after the policy ran, for a reason of regate's own (a cancelled
    /// batch, a query rewrite that is no URI): what the policy decided is not in the record.
    not_decided_by_policy: usize,
    /// Event records, by `event`.
    events: BTreeMap<String, usize>,
    /// Incomplete last lines of files (a regate stopped while writing).
    incomplete: usize,
    allow_to_deny: KindReport,
    deny_to_allow: KindReport,
    reason_changed: KindReport,
    /// allow-to-deny and deny-to-allow flips that no --expect accepts: the exit status.
    unexpected: usize,
    warnings: Vec<String>,
}

/// 0: no unexpected flip; 1: unexpected flips; 2: the logs or the policies cannot be read.
pub fn run(args: ReplayArgs) -> ExitCode {
    let set = match PolicySet::load(&args.policies, &args.policy.options()) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors {
                eprintln!("regate: policy replay: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let mut report = Report {
        policy_revision: set.revision.to_string(),
        query: set.query.to_string(),
        warnings: body_readers(&set),
        ..Report::default()
    };
    let mut errors = Vec::new();
    for path in &args.logs {
        let name = path.display().to_string();
        let text = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("regate: policy replay: cannot read {name}: {e}");
                return ExitCode::from(2);
            }
        };
        let ends_whole = text.ends_with(b"\n");
        let lines: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let count = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            let at = (name.as_str(), i + 1);
            let record: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(_) if i + 1 == count && !ends_whole => {
                    report.incomplete += 1;
                    report.lines += 1;
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{}:{}: not a JSON record: {e}", at.0, at.1));
                    continue;
                }
            };
            report.lines += 1;
            replay_one(&set, &record, at, &args, &mut report);
        }
    }
    report.unexpected = [&report.allow_to_deny, &report.deny_to_allow]
        .iter()
        .map(|k| k.count - k.accepted)
        .sum();
    match args.format {
        Format::Json => match serde_json::to_string_pretty(&report) {
            Ok(text) => outln!("{text}"),
            Err(e) => errors.push(e.to_string()),
        },
        Format::Text => print_text(&report, args.examples),
    }
    for w in &report.warnings {
        eprintln!("regate: policy replay: warning: {w}");
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("regate: policy replay: {e}");
        }
        return ExitCode::from(2);
    }
    match report.unexpected {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// Replay one record, and count it.
fn replay_one(
    set: &PolicySet,
    record: &serde_json::Value,
    at: (&str, usize),
    args: &ReplayArgs,
    report: &mut Report,
) {
    if let Some(event) = record["event"].as_str() {
        *report.events.entry(event.to_string()).or_default() += 1;
        return;
    }
    let Some(input) = record.get("input") else {
        report.without_input += 1;
        return;
    };
    let recorded_allowed =
        record["allowed"].as_bool() == Some(true) && record["would_deny"].as_bool() != Some(true);
    let recorded_reason = record["reason"].as_str().unwrap_or_default();
    if !recorded_allowed && AFTER_THE_POLICY.contains(&recorded_reason) {
        report.not_decided_by_policy += 1;
        return;
    }
    report.replayed += 1;
    let decision = set.decide(Value::from(input.clone()));
    let kind = match (recorded_allowed, decision.allowed) {
        (true, false) => Some(Kind::AllowToDeny),
        (false, true) => Some(Kind::DenyToAllow),
        _ if !AFTER_THE_POLICY.contains(&recorded_reason)
            && decision.reason.as_ref() != recorded_reason =>
        {
            Some(Kind::ReasonChanged)
        }
        _ => None,
    };
    let Some(kind) = kind else {
        report.unchanged += 1;
        return;
    };
    let text = |field: &str| record[field].as_str().map(str::to_string);
    let mut flip = Flip {
        kind,
        file: at.0.to_string(),
        line: at.1,
        request_id: text("request_id"),
        spiffe_id: text("spiffe_id"),
        method: text("method").unwrap_or_default(),
        path: text("path").unwrap_or_default(),
        recorded_reason: recorded_reason.to_string(),
        replayed_reason: decision.reason.to_string(),
        accepted: false,
    };
    flip.accepted = kind != Kind::ReasonChanged && args.expect.iter().any(|e| e.accepts(&flip));
    let into = match kind {
        Kind::AllowToDeny => &mut report.allow_to_deny,
        Kind::DenyToAllow => &mut report.deny_to_allow,
        Kind::ReasonChanged => &mut report.reason_changed,
    };
    into.count += 1;
    into.accepted += usize::from(flip.accepted);
    // Unexpected flips are the ones worth showing: they take the place of expected ones.
    if into.examples.len() < args.examples {
        into.examples.push(flip);
    } else if !flip.accepted {
        if let Some(slot) = into.examples.iter_mut().find(|f| f.accepted) {
            *slot = flip;
        }
    }
}

/// A recorded input holds nothing of the body: a candidate that reads it is replayed on
/// inputs without it.
fn body_readers(set: &PolicySet) -> Vec<String> {
    use crate::policy::analysis::{display, Reads, Step};
    let Reads::Paths(paths) = &set.reads else {
        return Vec::new();
    };
    let key = |p: &[Step], i: usize| match p.get(i) {
        Some(Step::Key(k)) => k.as_str().to_string(),
        _ => String::new(),
    };
    paths
        .iter()
        .filter(|p| {
            let (a, b, c, d) = (key(p, 0), key(p, 1), key(p, 2), key(p, 3));
            a == "parsed_body"
                || (a == "jsonrpc" && b == "params")
                || (a == "mcp" && (b == "arguments" || b == "params"))
                || (a == "attributes" && b == "request" && c == "http" && d == "body")
        })
        .map(|p| {
            format!(
                "the policy reads {}, which recorded inputs do not hold; decisions that \
                 depend on it may flip",
                display(p)
            )
        })
        .collect()
}

fn print_text(report: &Report, examples: usize) {
    outln!(
        "replayed {} records against {} ({})",
        report.replayed,
        report.policy_revision,
        report.query
    );
    let events: Vec<String> = report
        .events
        .iter()
        .map(|(e, n)| format!("{e} {n}"))
        .collect();
    outln!(
        "not replayed: {} without input, {} refused after the policy, {} events{}{}",
        report.without_input,
        report.not_decided_by_policy,
        report.events.values().sum::<usize>(),
        match events.is_empty() {
            true => String::new(),
            false => format!(" ({})", events.join(", ")),
        },
        match report.incomplete {
            0 => String::new(),
            n => format!(", {n} incomplete last lines"),
        }
    );
    for (kind, k) in [
        (Kind::AllowToDeny, &report.allow_to_deny),
        (Kind::DenyToAllow, &report.deny_to_allow),
        (Kind::ReasonChanged, &report.reason_changed),
    ] {
        let accepted = match kind {
            Kind::ReasonChanged => String::new(),
            _ => format!(" ({} expected)", k.accepted),
        };
        outln!("{}: {}{accepted}", kind.name(), k.count);
        for f in k.examples.iter().take(examples) {
            outln!(
                "  {} {} {}: {} -> {}{}  [{}:{}]",
                f.spiffe_id.as_deref().unwrap_or("(no SPIFFE ID)"),
                f.method,
                f.path,
                f.recorded_reason,
                f.replayed_reason,
                if f.accepted { ", expected" } else { "" },
                f.file,
                f.line
            );
        }
    }
    match report.unexpected {
        0 => outln!("no unexpected flips"),
        n => outln!("{n} unexpected flips"),
    }
}
