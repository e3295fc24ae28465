//! The `regate` command: argument parsing, logging setup, exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use regate::config::{Config, LogFormat, RunArgs, Upstream};
use regate::App;
use tokio::net::TcpListener;

/// glibc's allocator was a sixth of regate's CPU under load (BENCHMARKS.md); mimalloc's
/// per-thread free lists serve the request path's many small, short-lived allocations
/// faster. Without transparent huge pages, so idle memory stays small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "regate",
    version,
    about = "mTLS sidecar proxy that authorizes every request with Rego"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Terminate mTLS, decide every request with Rego, forward or deny.
    Run(Box<RunArgs>),
    /// Test, evaluate and check policies, as the proxy would load them.
    #[command(subcommand)]
    Policy(regate::cli::policy::PolicyCommand),
    /// Check the decision log's hash chain.
    #[command(subcommand)]
    Audit(regate::cli::audit::AuditCommand),
    /// Sign an approval token for one action digest with a local key (a single host or a
    /// demo; regate trusts the key as approvals.local_key).
    Approve(regate::cli::approve::ApproveArgs),
    /// Write a DEV ONLY CA, server certificate, client SVIDs and decision log signing key
    /// into a directory.
    DevCerts {
        #[arg(long, value_name = "DIR", default_value = "certs-dev")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    // Before any thread: the environment must not change what a decision costs.
    regate::policy::keep_error_backtraces_off();
    // Two providers end up compiled in through dependencies; rustls must be told which.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::DevCerts { out } => match regate::cli::devcerts::generate(&out) {
            Ok(()) => {
                eprintln!("wrote DEV ONLY certificates and keys to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("regate: dev-certs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(*args),
        Command::Approve(args) => regate::cli::approve::run(args),
        Command::Policy(command) => regate::cli::policy::run(command),
        Command::Audit(command) => regate::cli::audit::run(command),
    }
}

/// Diagnostics go to stderr, as text or JSON, filtered by `RUST_LOG` (default `info`).
/// Decision records are not diagnostics: they have their own stream (see `regate::audit`).
///
/// Field values can come from clients (a certificate subject, a policy's error message that
/// quotes input): in text, every control character in a value is escaped, so no client can
/// end a line and forge the next one. JSON escapes them itself. rustls logs a warning for
/// things any client can make it see (an IP address as SNI, a renegotiation attempt), once
/// per handshake: unless `RUST_LOG` names rustls, only its errors are kept.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::field::MakeExt;
    use tracing_subscriber::fmt::format::debug_fn;
    use tracing_subscriber::EnvFilter;
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if v.contains("rustls") => v,
        Ok(v) if !v.trim().is_empty() => format!("{v},rustls=error"),
        _ => "info,rustls=error".to_string(),
    };
    let filter =
        EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info,rustls=error"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .fmt_fields(
                debug_fn(|w, field, value| {
                    let value = escape_controls(&format!("{value:?}"));
                    match field.name() {
                        "message" => w.write_str(&value),
                        name => write!(w, "{name}={value}"),
                    }
                })
                .delimited(" "),
            )
            .init(),
    }
}

/// `\n`, `\u{1b}` and the like in place of control characters.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Go and most servers do this at start: the soft limit on open files is often 1024 while
/// the hard limit is far higher, and every connection is a descriptor.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            limit.current = Some(maximum);
            let _ = setrlimit(Resource::Nofile, limit);
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    raise_open_files_limit();
    let checked = Config::check(args);
    init_logging(checked.config.log_format);
    let demo = checked.config.upstream == Upstream::Demo;
    let listen = checked.config.listen;
    if checked.config.admin.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!("the admin endpoints are unauthenticated and bound beyond loopback");
    }
    if checked.config.mode == regate::config::Mode::Audit {
        tracing::warn!(
            "--mode audit: requests the policy denies are forwarded and only recorded \
             (would_deny); TLS, trust domains, revocations and request checks still refuse"
        );
    }
    // Everything is checked before anything is bound: a bad setting leaves nothing listening.
    let mut app = match App::load_checked(checked) {
        Ok(app) => app,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("regate: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(regate::worker_threads())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("regate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serve = async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let admin = match app.admin_addr() {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--admin)"))?,
            ),
            None => None,
        };
        if let Some(addr) = app.health_addr() {
            let health = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--health-listen)"))?;
            app = app.with_health_listener(health);
        }
        if demo {
            let demo = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the demo upstream")?;
            let addr = demo.local_addr()?;
            tracing::info!(%addr, "demo upstream is serving (echoes what regate forwards)");
            tokio::spawn(regate::demo::serve(demo));
            app.set_upstream(addr.to_string().parse()?);
        }
        app.serve(listener, admin, shutdown_signal()).await?;
        anyhow::Ok(())
    };
    match runtime.block_on(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, so regate drains. A second signal ends the
/// process at once, as an operator pressing Ctrl-C twice expects.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT; stop regate with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested; a second signal exits at once");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(1);
    });
}
