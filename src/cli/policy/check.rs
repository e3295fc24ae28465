//! `regate policy check`: load a policy directory exactly as `regate run` loads it at startup
//! and on every reload ([`PolicySet::compile`]), and print every problem that would refuse it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::PolicyFlags;
use crate::cli::out::outln;
use crate::policy::{build_engine, FileKind, PolicyError, PolicySet, Sources};

#[derive(Debug, Args)]
#[command(
    mut_arg("query", |a| a.help(
        "The rule that decides, as given to `regate run --query`. It must exist, and it is \
         evaluated once against a sample request, as at startup"
    )),
    mut_arg("policy_timeout", |a| a.help(
        "Bounds the sample evaluation, as `regate run --policy-timeout` does"
    ))
)]
pub struct CheckArgs {
    /// The policy directory, as given to `regate run --policies`.
    #[arg(value_name = "DIR", default_value = "policies")]
    dir: PathBuf,
    #[command(flatten)]
    policy: PolicyFlags,
    /// Compile only; name no query. For a directory of library packages, or of examples
    /// that no proxy queries directly.
    #[arg(long, conflicts_with = "query")]
    no_query: bool,
}

pub fn run(args: CheckArgs) -> ExitCode {
    let dir = args.dir.display().to_string();
    let outcome = Sources::read(&args.dir).and_then(|sources| {
        let rego = count(&sources, |k| k == FileKind::Rego);
        let data = count(&sources, |k| k != FileKind::Rego);
        let revision = sources.revision.clone();
        let mut warning = None;
        if args.no_query {
            let mut engine = build_engine(sources.files, args.policy.strict_builtin_errors)?;
            engine.set_execution_timer_config(crate::policy::execution_limit(
                args.policy.policy_timeout,
            ));
            prepare(&mut engine).map_err(|e| vec![e])?;
        } else {
            warning = PolicySet::compile(sources, &args.policy.options())?.sample_error;
        }
        Ok((rego, data, revision, warning))
    });
    match outcome {
        Ok((rego, data, revision, warning)) => {
            if let Some(message) = warning {
                outln!(
                    "warning: {} fails on a sample request (GET /, no query, no body): \
                     {message}; the proxy denies requests it fails on",
                    args.policy.query
                );
            }
            let query = match args.no_query {
                true => "no query".to_string(),
                false => format!("query {}", args.policy.query),
            };
            outln!("{dir}: ok: {rego} Rego files, {data} data files, {query}, revision {revision}");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                outln!("{e}");
            }
            let n = errors.len();
            outln!("{dir}: {n} problem{}", if n == 1 { "" } else { "s" });
            ExitCode::FAILURE
        }
    }
}

fn count(sources: &Sources, kind: impl Fn(FileKind) -> bool) -> usize {
    sources.files.iter().filter(|(f, _)| kind(f.kind)).count()
}

/// Analyse every module (imports, rule dependencies, recursion) as a first evaluation would,
/// without naming a rule. A query that needs no rule does exactly that much.
pub(super) fn prepare(engine: &mut regorus::Engine) -> Result<(), PolicyError> {
    engine
        .eval_query("true".into(), false)
        .map(drop)
        .map_err(|e| PolicyError::Compile(crate::policy::summary(&e.to_string())))
}
