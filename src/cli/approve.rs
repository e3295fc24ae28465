//! `regate approve`: sign an approval token for one action digest with a local Ed25519 key
//! (`approvals.local_key` of the regate that is to accept it), for a single host or a demo.
//! The token goes in `x-regate-approval` when the agent repeats its request.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::approvals::token::LocalSigner;
use crate::audit::signing::SigningKey;

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The Ed25519 private key (PKCS#8 PEM) regate trusts as `approvals.local_key`.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The action's digest, from the approval request (`sha256:…`).
    #[arg(long, value_name = "DIGEST")]
    digest: String,
    /// Who approves: the token's `sub`, shown to the policy as `input.approval.approver`.
    #[arg(long, value_name = "NAME")]
    approver: String,
    /// The approval request's id, when approving one.
    #[arg(long, value_name = "ID")]
    request: Option<String>,
    /// How long the token is good for [default: 15m].
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = duration)]
    ttl: Duration,
}

fn duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 15m"))
}

/// Run `regate approve`: the token on stdout; exit 2 on a key or digest regate cannot use.
pub fn run(args: ApproveArgs) -> ExitCode {
    let valid_digest = args
        .digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid_digest {
        eprintln!(
            "regate: approve: {:?} is not a digest like sha256:<64 hex digits>",
            args.digest
        );
        return ExitCode::from(2);
    }
    let key = match SigningKey::load(&args.key) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("regate: approve: {}", crate::error::chain(&e));
            return ExitCode::from(2);
        }
    };
    let now = crate::proxy::approval::unix_now();
    let token = LocalSigner::new(key).mint(
        &args.digest.to_ascii_lowercase(),
        &args.approver,
        args.request.as_deref(),
        args.ttl,
        now,
    );
    crate::cli::out::outln!("{token}");
    ExitCode::SUCCESS
}
