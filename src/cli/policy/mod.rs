//! `regate policy test | eval | check`: the policy author's tools, run in CI before a
//! policy reaches a pod. They load policies exactly as the proxy does (see [`super`]):
//! the same files, the same Rego v1/v0 rules, the same data paths and the same refusal of
//! builtins regorus lacks. What they print is theirs; what a policy means is the proxy's.
//!
//! - [`check`]: what `regate run` would say about a policy directory at startup.
//! - [`test`]: every `test_*` rule, each evaluated on its own.
//! - [`eval`]: the decision for one input, or for a request described on the command line.
//! - [`replay`]: the decisions a candidate set would flip, on inputs recorded in decision logs.

mod check;
mod eval;
mod replay;
mod test;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::policy::Options;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run every test_* rule in every package, each on its own; exit 1 on any failure.
    Test(test::TestArgs),
    /// Print the decision the proxy would make for an input, or a request described by flags.
    Eval(Box<eval::EvalArgs>),
    /// Load a policy directory as `regate run` would; report every problem; exit 1 if any.
    Check(check::CheckArgs),
    /// Re-evaluate the inputs recorded in decision logs against a candidate policy set and
    /// report every flipped decision; exit 1 on a flip no --expect accepts.
    Replay(Box<replay::ReplayArgs>),
}

/// Run one `regate policy` subcommand; the exit code is the command's verdict.
pub fn run(command: PolicyCommand) -> ExitCode {
    super::out::verdict(match command {
        PolicyCommand::Test(args) => test::run(args),
        PolicyCommand::Eval(args) => eval::run(*args),
        PolicyCommand::Check(args) => check::run(args),
        PolicyCommand::Replay(args) => replay::run(*args),
    })
}

/// How a tool asks its policy set, as `regate run` asks: the flags `eval`, `check` and
/// `replay` share with it, flattened into each (a tool whose help says more of a flag
/// rewords it with `mut_arg`; the names and defaults are these). `--policies` is not here:
/// `check` takes its directory as an argument, as `test` does.
#[derive(Debug, Args)]
pub struct PolicyFlags {
    /// The rule that decides, as given to `regate run --query`.
    #[arg(long, value_name = "QUERY", default_value = crate::config::DEFAULT_QUERY)]
    pub query: String,
    /// Bounds each evaluation, as `regate run --policy-timeout` does.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = duration)]
    pub policy_timeout: Duration,
    /// As `regate run --strict-builtin-errors`.
    #[arg(long)]
    pub strict_builtin_errors: bool,
}

impl PolicyFlags {
    /// The options the flags name, as `regate run` builds them from its own.
    pub fn options(&self) -> Options {
        Options::from_flags(&self.query, self.policy_timeout, self.strict_builtin_errors)
    }
}

/// A clap value parser for `500ms`, `10s`, `5m`, `1h`: the durations `regate run` accepts.
fn duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 500ms, 10s or 1m"))
}
