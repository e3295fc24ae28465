//! `regate policy test`: find every `test_*` rule in every package and evaluate each on its
//! own, on a fresh copy of an engine loaded as the proxy loads it.
//!
//! regorus leaves a failing test undefined, so it is missing from any "all results" view.
//! The tests are therefore listed from the parsed modules, not from evaluation results, and
//! a test that is not exactly `true` is a FAIL: it can never turn into a silent pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use regorus::unstable::{Parser, Rule, RuleHead};
use regorus::{Engine, Value};
use serde_json::json;

use crate::policy::{build_engine, compile_message, Sources};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy directories. Each is loaded on its own, as `regate run --policies DIR` loads
    /// it, so data files land at the same paths as in the proxy.
    #[arg(value_name = "DIR", default_value = "policies")]
    dirs: Vec<PathBuf>,
    /// Run only the tests whose full name (`data.<package>.<rule>`) matches this regex.
    #[arg(long, value_name = "REGEX")]
    run: Option<regex::Regex>,
    /// Show what each test print()ed.
    #[arg(short, long)]
    verbose: bool,
    /// Report the lines each file had evaluated, and those it did not.
    #[arg(long)]
    coverage: bool,
    /// Output: text for people, json or junit (XML) for CI systems.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The longest one test may evaluate; a test that runs longer is an ERROR.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = super::duration)]
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
}

/// One `test_*` rule, however many bodies define it.
struct TestCase {
    /// `regate.authz_test`
    package: String,
    /// `test_summarizer_reads_docs`
    name: String,
    /// The rule path as regorus evaluates it: `data.regate.authz_test.test_…`.
    path: String,
    /// The file and line of its first definition.
    file: String,
    line: u32,
    kind: Kind,
    /// A function of the policy's own that a `with` in the test replaces by its `data.` path.
    replaces: Option<String>,
}

/// What a test rule's head makes it, which decides what passing means (as in `opa test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `test_x if ...`: passes when it is `true`.
    Plain,
    /// `test_x contains v if ...`: a set, never `true`; `opa test` fails it.
    Set,
    /// `test_x[name] if ...`: one case per key, each of which must be `true`.
    Cases,
}

impl TestCase {
    fn full_name(&self) -> String {
        format!("data.{}.{}", self.package, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail(String),
    Error(String),
}

struct TestResult {
    case: TestCase,
    outcome: Outcome,
    elapsed: Duration,
    prints: Vec<String>,
}

/// Lines evaluated and not, per file, merged over every test.
#[derive(Default)]
struct Coverage {
    files: BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)>,
    /// Every Rego file loaded: regorus reports only files a test reached.
    loaded: BTreeSet<String>,
}

impl Coverage {
    fn add(&mut self, report: regorus::coverage::Report) {
        for file in report.files {
            let (covered, not_covered) = self.files.entry(file.path).or_default();
            covered.extend(file.covered);
            not_covered.extend(file.not_covered);
        }
    }

    /// Loaded files no test evaluated a line of.
    fn unreached(&self) -> impl Iterator<Item = &str> {
        self.loaded
            .iter()
            .filter(|f| !self.files.contains_key(*f))
            .map(String::as_str)
    }

    /// (path, covered, not covered): a line any test reached is covered.
    fn lines(&self) -> impl Iterator<Item = (&str, &BTreeSet<u32>, Vec<u32>)> {
        self.files.iter().map(|(path, (covered, not_covered))| {
            let missed = not_covered.difference(covered).copied().collect();
            (path.as_str(), covered, missed)
        })
    }
}

/// Everything one run produced, across directories.
#[derive(Default)]
struct Run {
    results: Vec<TestResult>,
    /// A directory that does not load runs no test; each of its problems is an error.
    load_errors: Vec<(String, String)>,
    coverage: Coverage,
}

impl Run {
    fn count(&self, want: fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| want(&r.outcome)).count()
    }
    fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Pass)
    }
    fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }
    fn errors(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Error(_))) + self.load_errors.len()
    }
    fn summary(&self) -> String {
        let errors = self.errors();
        format!(
            "{} passed, {} failed, {errors} error{}",
            self.passed(),
            self.failed(),
            if errors == 1 { "" } else { "s" }
        )
    }
}

pub fn run(args: TestArgs) -> ExitCode {
    let mut run = Run::default();
    for dir in &args.dirs {
        let name = dir.display().to_string();
        match load(dir, args.timeout) {
            Ok(engine) => run_dir(&name, &engine, &args, &mut run),
            Err(errors) => run
                .load_errors
                .extend(errors.into_iter().map(|e| (name.clone(), e))),
        }
    }
    let out = match args.format {
        Format::Text => text(&run, &args),
        Format::Json => json_report(&run, &args),
        Format::Junit => junit(&run),
    };
    crate::cli::out::text(&out);
    if run.results.is_empty() && run.load_errors.is_empty() {
        // A CI step that ran nothing must not look green.
        eprintln!("regate: policy test: no test_* rule found (or none matched --run)");
        return ExitCode::FAILURE;
    }
    match run.failed() + run.errors() {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// The directory's engine, loaded through the proxy's own path and analysed once, so each
/// test's copy starts prepared and a broken module is reported once, not once per test.
fn load(dir: &std::path::Path, timeout: std::time::Duration) -> Result<Engine, Vec<String>> {
    let strings = |es: Vec<crate::policy::PolicyError>| -> Vec<String> {
        es.iter().map(|e| e.to_string()).collect()
    };
    let sources = Sources::read(dir).map_err(strings)?;
    let mut engine = build_engine(sources.files, false).map_err(strings)?;
    engine.set_execution_timer_config(crate::policy::execution_limit(timeout));
    engine.set_gather_prints(true);
    super::check::prepare(&mut engine).map_err(|e| vec![e.to_string()])?;
    Ok(engine)
}

fn run_dir(dir: &str, engine: &Engine, args: &TestArgs, run: &mut Run) {
    let mut engine = engine.clone();
    let cases = match discover(&mut engine) {
        Ok(cases) => cases,
        Err(e) => {
            run.load_errors.push((dir.to_string(), e));
            return;
        }
    };
    if args.coverage {
        for source in engine.get_policies().unwrap_or_default() {
            run.coverage.loaded.insert(source.get_path().clone());
        }
    }
    for case in cases {
        if let Some(filter) = &args.run {
            if !filter.is_match(&case.full_name()) {
                continue;
            }
        }
        // A copy per test: no cached rule value, print() or coverage leaks between tests.
        let mut test_engine = engine.clone();
        if args.coverage {
            test_engine.set_enable_coverage(true);
        }
        let start = Instant::now();
        let result = match case.kind {
            Kind::Plain => test_engine.eval_rule(case.path.clone()),
            // regorus evaluates a rule built from reference heads only as a query.
            Kind::Set | Kind::Cases => query_value(&mut test_engine, &case.path),
        };
        let elapsed = start.elapsed();
        let outcome = match (case.kind, result) {
            (_, Err(e)) => Outcome::Error(compile_message(&e.to_string())),
            (Kind::Set, Ok(_)) => Outcome::Fail(
                "a `contains` test is a set, never true: opa test fails it too; write `test_x if`"
                    .into(),
            ),
            (Kind::Cases, Ok(Value::Undefined)) => {
                Outcome::Fail("undefined: no case was defined".into())
            }
            (Kind::Cases, Ok(value)) => match failing_cases(&value, "") {
                failing if failing.is_empty() => Outcome::Pass,
                failing => Outcome::Fail(format!("cases not true: {}", failing.join(", "))),
            },
            (Kind::Plain, Ok(value)) => plain_outcome(value),
        };
        let outcome = match (&case.replaces, outcome) {
            (Some(function), Outcome::Fail(_) | Outcome::Error(_)) => Outcome::Fail(format!(
                "the test replaces {function} with `with`; regate's Rego engine applies such a \
                 replacement only to calls spelt exactly `{function}(...)`, so calls spelt \
                 otherwise ran the real function (opa test replaces every call); replace it by \
                 the name the policy calls it by, or mock its inputs instead"
            )),
            (_, outcome) => outcome,
        };
        if args.coverage {
            if let Ok(report) = test_engine.get_coverage_report() {
                run.coverage.add(report);
            }
        }
        run.results.push(TestResult {
            case,
            outcome,
            elapsed,
            prints: test_engine.take_prints().unwrap_or_default(),
        });
    }
}

fn plain_outcome(value: Value) -> Outcome {
    match value {
        Value::Bool(true) => Outcome::Pass,
        Value::Undefined => {
            Outcome::Fail("undefined: an expression in its body was false or undefined".into())
        }
        other => Outcome::Fail(format!(
            "the result is {}, not true",
            other.to_json_str().unwrap_or_default()
        )),
    }
}

/// The value of a `data.` path through a query; undefined when it has none.
fn query_value(engine: &mut Engine, path: &str) -> anyhow::Result<Value> {
    let results = engine.eval_query(path.to_string(), false)?;
    Ok(results
        .result
        .first()
        .and_then(|r| r.expressions.first())
        .map(|e| e.value.clone())
        .unwrap_or(Value::Undefined))
}

/// The keys (nested keys joined by `.`) of a `test_x[name]` value that are not `true`.
fn failing_cases(value: &Value, prefix: &str) -> Vec<String> {
    let Value::Object(cases) = value else {
        return vec![prefix.to_string()];
    };
    let mut failing = Vec::new();
    for (key, v) in cases.iter() {
        let name = match key {
            Value::String(s) => s.to_string(),
            other => other.to_json_str().unwrap_or_default(),
        };
        let name = match prefix.is_empty() {
            true => name,
            false => format!("{prefix}.{name}"),
        };
        match v {
            Value::Bool(true) => {}
            Value::Object(_) => failing.extend(failing_cases(v, &name)),
            _ => failing.push(name),
        }
    }
    failing
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// Every `test_*` rule with no arguments, in file and line order, once per package and name
/// (a test may have several bodies; any one that holds makes it pass, as in OPA).
fn discover(engine: &mut Engine) -> Result<Vec<TestCase>, String> {
    let packages = engine
        .get_policy_package_components()
        .map_err(|e| e.to_string())?;
    let functions = crate::policy::analysis::user_functions(engine.get_modules());
    let mut seen = BTreeSet::new();
    let mut cases = Vec::new();
    // Both lists are the engine's modules in the order they were added.
    for (module, package) in engine.get_modules().iter().zip(packages) {
        for rule in &module.policy {
            let (refr, set, bodies) = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Compr { refr, .. },
                    bodies,
                    ..
                } => (refr, false, Some(bodies)),
                Rule::Spec {
                    head: RuleHead::Set { refr, .. },
                    bodies,
                    ..
                } => (refr, true, Some(bodies)),
                Rule::Default { refr, args, .. } if args.is_empty() => (refr, false, None),
                _ => continue,
            };
            let parts = Parser::get_path_ref_components(refr).map_err(|e| e.to_string())?;
            let Some(name) = parts.first() else { continue };
            let name = name.text();
            if !name.starts_with("test_") {
                continue;
            }
            let kind = match (set, parts.len()) {
                (true, _) => Kind::Set,
                (false, 1) => Kind::Plain,
                (false, _) => Kind::Cases,
            };
            let replaces = bodies
                .into_iter()
                .flatten()
                .flat_map(|body| body.query.stmts.iter())
                .flat_map(|stmt| stmt.with_mods.iter())
                .filter_map(|with| crate::policy::analysis::dotted(&with.refr))
                .find(|target| {
                    let last = target.rsplit('.').next().unwrap_or(target);
                    target.contains('.') && functions.contains(last)
                });
            let package_path = package.components.join(".");
            if !seen.insert((package_path.clone(), name.to_string())) {
                continue;
            }
            cases.push(TestCase {
                path: rule_path(&package.components, name),
                package: package_path,
                name: name.to_string(),
                file: package.source_file.clone(),
                line: refr.span().line,
                kind,
                replaces,
            });
        }
    }
    Ok(cases)
}

/// `data.a.b.rule`, with brackets for a package component that is not an identifier.
fn rule_path(package: &[String], rule: &str) -> String {
    let mut path = String::from("data");
    for part in package {
        let ident = part
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ident {
            path.push('.');
            path.push_str(part);
        } else {
            let quoted = serde_json::to_string(part).unwrap_or_default();
            let _ = write!(path, "[{quoted}]");
        }
    }
    path.push('.');
    path.push_str(rule);
    path
}

fn micros(d: Duration) -> String {
    match d.as_micros() {
        us if us < 10_000 => format!("{us}µs"),
        us => format!("{:.1}ms", us as f64 / 1000.0),
    }
}

fn text(run: &Run, args: &TestArgs) -> String {
    let mut out = String::new();
    for (dir, e) in &run.load_errors {
        let _ = writeln!(out, "ERROR {dir}: {e}");
    }
    for r in &run.results {
        let (word, detail) = match &r.outcome {
            Outcome::Pass => ("PASS ", None),
            Outcome::Fail(why) => ("FAIL ", Some(why)),
            Outcome::Error(why) => ("ERROR", Some(why)),
        };
        let _ = writeln!(out, "{word} {} ({})", r.case.full_name(), micros(r.elapsed));
        if let Some(why) = detail {
            let _ = writeln!(
                out,
                "      {}:{}: {}",
                r.case.file,
                r.case.line,
                first_line(why)
            );
            // regorus' full message (the source excerpt, a dependency chain) under -v.
            if args.verbose {
                for line in why.lines().skip(1) {
                    let _ = writeln!(out, "        {line}");
                }
            }
        }
        if args.verbose {
            for line in &r.prints {
                let _ = writeln!(out, "      print: {line}");
            }
        }
    }
    if args.coverage {
        let _ = writeln!(out, "coverage:");
        for (path, covered, missed) in run.coverage.lines() {
            let total = covered.len() + missed.len();
            let percent = percent(covered.len(), total);
            let _ = write!(
                out,
                "  {path}: {}/{total} lines ({percent:.1}%)",
                covered.len()
            );
            match missed.is_empty() {
                true => out.push('\n'),
                false => {
                    let _ = writeln!(out, ", not covered: {}", ranges(&missed));
                }
            }
        }
        for path in run.coverage.unreached() {
            let _ = writeln!(out, "  {path}: not reached by the tests run");
        }
    }
    let _ = writeln!(out, "{}", run.summary());
    out
}

fn percent(part: usize, total: usize) -> f64 {
    match total {
        0 => 100.0,
        t => part as f64 * 100.0 / t as f64,
    }
}

/// `3, 7-9, 12`
fn ranges(lines: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = lines[i];
        let mut end = start;
        while i + 1 < lines.len() && lines[i + 1] == end + 1 {
            i += 1;
            end = lines[i];
        }
        parts.push(match start == end {
            true => start.to_string(),
            false => format!("{start}-{end}"),
        });
        i += 1;
    }
    parts.join(", ")
}

fn json_report(run: &Run, args: &TestArgs) -> String {
    let tests: Vec<_> = run
        .results
        .iter()
        .map(|r| {
            let (result, detail) = match &r.outcome {
                Outcome::Pass => ("pass", None),
                Outcome::Fail(m) => ("fail", Some(m)),
                Outcome::Error(m) => ("error", Some(m)),
            };
            let message = detail.map(|m| first_line(m));
            json!({
                "package": r.case.package,
                "name": r.case.name,
                "file": r.case.file,
                "line": r.case.line,
                "result": result,
                "message": message,
                "detail": detail,
                "duration_ns": r.elapsed.as_nanos() as u64,
                "prints": r.prints,
            })
        })
        .collect();
    let load_errors: Vec<_> = run
        .load_errors
        .iter()
        .map(|(dir, message)| json!({"dir": dir, "message": message}))
        .collect();
    let mut doc = json!({
        "summary": {
            "passed": run.passed(),
            "failed": run.failed(),
            "errors": run.errors(),
        },
        "load_errors": load_errors,
        "tests": tests,
    });
    if args.coverage {
        let files: Vec<_> = run
            .coverage
            .lines()
            .map(|(path, covered, missed)| {
                json!({
                    "path": path,
                    "covered": covered,
                    "not_covered": missed,
                    "percent": percent(covered.len(), covered.len() + missed.len()),
                })
            })
            .collect();
        let unreached: Vec<_> = run.coverage.unreached().collect();
        doc["coverage"] = json!({ "files": files, "unreached": unreached });
    }
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

/// JUnit XML as Jenkins, GitLab and GitHub test reporters read it: a suite per package.
fn junit(run: &Run) -> String {
    let mut suites: BTreeMap<&str, Vec<&TestResult>> = BTreeMap::new();
    for r in &run.results {
        suites.entry(&r.case.package).or_default().push(r);
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"regate policy test\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
        run.results.len() + run.load_errors.len(),
        run.failed(),
        run.errors()
    );
    if !run.load_errors.is_empty() {
        let _ = writeln!(
            out,
            "  <testsuite name=\"load\" tests=\"{n}\" failures=\"0\" errors=\"{n}\">",
            n = run.load_errors.len()
        );
        for (dir, message) in &run.load_errors {
            let _ = writeln!(
                out,
                "    <testcase classname=\"load\" name=\"{}\"><error message=\"{}\"/></testcase>",
                xml(dir),
                xml(message)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    for (package, results) in suites {
        let failures = results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
            .count();
        let errors = results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Error(_)))
            .count();
        let time: f64 = results.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.6}\">",
            xml(package),
            results.len()
        );
        for r in results {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" line=\"{}\" time=\"{:.6}\">",
                xml(package),
                xml(&r.case.name),
                xml(&r.case.file),
                r.case.line,
                r.elapsed.as_secs_f64()
            );
            match &r.outcome {
                Outcome::Pass => {}
                Outcome::Fail(m) => {
                    let _ = write!(out, "<failure message=\"{}\"/>", xml(m));
                }
                Outcome::Error(m) => {
                    let _ = write!(
                        out,
                        "<error message=\"{}\">{}</error>",
                        xml(&first_line(m)),
                        xml(m)
                    );
                }
            }
            if !r.prints.is_empty() {
                let _ = write!(
                    out,
                    "<system-out>{}</system-out>",
                    xml(&r.prints.join("\n"))
                );
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escape for XML text and attribute values; drop characters XML 1.0 cannot carry.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ranges_are_compact() {
        assert_eq!(ranges(&[3, 7, 8, 9, 12]), "3, 7-9, 12");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn rule_paths_quote_what_is_not_an_identifier() {
        assert_eq!(
            rule_path(&["a".into(), "b_c".into()], "test_x"),
            "data.a.b_c.test_x"
        );
        assert_eq!(
            rule_path(&["a".into(), "1.0".into()], "test_x"),
            "data.a[\"1.0\"].test_x"
        );
    }

    #[test]
    fn xml_escapes_markup() {
        assert_eq!(xml("a<b & \"c\"\n"), "a&lt;b &amp; &quot;c&quot;&#10;");
    }
}
