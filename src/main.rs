//! The `regate` command: argument parsing, logging setup, exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use regate::config::{Config, RunArgs, Upstream};
use regate::App;
use tokio::net::TcpListener;

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
    Policy(regate::policy::tools::PolicyCommand),
    /// Write a DEV ONLY CA, server certificate and client SVIDs into a directory.
    DevCerts {
        #[arg(long, value_name = "DIR", default_value = "certs-dev")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    // Two providers end up compiled in through dependencies; rustls must be told which.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::DevCerts { out } => match regate::devcerts::generate(&out) {
            Ok(()) => {
                eprintln!("wrote DEV ONLY certificates to {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("regate: dev-certs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(*args),
        Command::Policy(command) => regate::policy::tools::run(command),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let checked = Config::check(args);
    let demo = checked.config.upstream == Upstream::Demo;
    let listen = checked.config.listen;
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
        if demo {
            let demo = TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the demo upstream")?;
            let addr = demo.local_addr()?;
            tracing::info!(%addr, "demo upstream is serving (echoes what regate forwards)");
            tokio::spawn(regate::demo::serve(demo));
            app.set_upstream(addr.to_string().parse()?);
        }
        app.serve(listener, shutdown_signal()).await?;
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
