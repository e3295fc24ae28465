//! `regate policy test | eval | check`: the policy author's tools, run in CI before a
//! policy reaches a pod. They load policies exactly as the proxy does (see [`super`]).

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {}

/// Run one `regate policy` subcommand; the exit code is the command's verdict.
pub fn run(command: PolicyCommand) -> ExitCode {
    match command {}
}
