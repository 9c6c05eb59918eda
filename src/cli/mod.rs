//! The `anchord` command line: `serve`, `check`, `demo`, `pki`, `policy`, `posture`, `bench`.

mod bench;
pub mod demo;
pub mod pki;
pub mod policy;
pub mod posture;
pub mod sessions;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{Config, Runtime};
use crate::server::audit::{Audit, AuditLayer};
use crate::server::Server;

/// anchord: EAP-TLS RADIUS server.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log every packet's summary (like `radiusd -X`); RUST_LOG overrides.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Config file.
        #[arg(long, default_value = "config/anchord.toml")]
        config: PathBuf,
    },
    /// Validate a config file (and the certificates it names); exit 1 on any error.
    Check {
        /// Config file.
        #[arg(long, default_value = "config/anchord.toml")]
        config: PathBuf,
    },
    /// Certificates and keys.
    #[command(subcommand)]
    Pki(Box<pki::PkiCommand>),
    /// Admin policies: explain a decision, run expectations.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Posture sources: ask them about a device; serve a development MDM.
    #[command(subcommand)]
    Posture(posture::PostureCommand),
    /// Live sessions (from accounting) of the running server.
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// Load generator: complete EAP-TLS authentications against a RADIUS server.
    Bench(Box<bench::BenchArgs>),
    /// Make a dev PKI, start a server, authenticate the demo devices with eapol_test.
    Demo {
        /// Folder for the dev PKI and configs.
        #[arg(long, default_value = "demo-out")]
        dir: PathBuf,
        /// The eapol_test binary.
        #[arg(long, default_value = "eapol_test")]
        eapol_test: PathBuf,
        /// Keep the CA keys and the server key on two SoftHSM2 tokens ($SOFTHSM2_CONF; PINs
        /// from $ANCHORD_CA_PIN for the CA token, $ANCHORD_HSM_PIN for the server token and
        /// $ANCHORD_HSM_SO_PIN). demo.sh sets all four.
        #[arg(long)]
        hsm: bool,
    },
}

/// Sends an admin command to the running server's admin listener at `addr`; the answer's
/// text, or an error naming the status the server gave.
pub(crate) async fn ask_admin(
    req: reqwest::RequestBuilder,
    addr: std::net::SocketAddr,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let resp = req
        .send()
        .await
        .with_context(|| format!("asking the server's admin listener at {addr}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("the server answered {status}: {}", text.trim());
    }
    Ok(text)
}

/// Parses the command line and runs it.
///
/// # Errors
/// Whatever the subcommand reports.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The demo's table is for a person: its server logs only errors unless --debug.
    let default = match (&cli.command, cli.debug) {
        (_, true) => "anchord=debug,info",
        (Command::Demo { .. }, false) => "error",
        _ => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The log (filtered by level) and the audit trail (every `target: "audit"` event, into
    // the `[audit]` sink once `serve` installs one), each with its own filter.
    let audit_only = tracing_subscriber::filter::filter_fn(|m| m.target() == "audit");
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(filter),
        )
        .with(AuditLayer.with_filter(audit_only))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match cli.command {
        Command::Serve { config } => rt.block_on(serve(config)),
        Command::Check { config } => check(&config),
        Command::Demo {
            dir,
            eapol_test,
            hsm,
        } => rt.block_on(demo::run(&dir, &eapol_test, hsm)),
        Command::Bench(args) => rt.block_on(bench::run(*args)),
        Command::Pki(cmd) => pki::run(*cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Posture(cmd) => rt.block_on(posture::run(cmd)),
        Command::Sessions(cmd) => rt.block_on(sessions::run(cmd)),
    };
    // A blocking call stuck on a hung token (a reload, a signature past its deadline) must
    // not keep the process from exiting.
    rt.shutdown_timeout(EXIT_GRACE);
    result
}

/// How long the exit waits for blocking work still running.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

async fn serve(path: PathBuf) -> anyhow::Result<ExitCode> {
    let (config, runtime) = Runtime::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = match config.admin {
        Some(addr) => Some(crate::admin::bind(addr).await?),
        None => None,
    };
    if let Some(sink) = &config.audit {
        crate::server::audit::install(Audit::start(sink)?);
    }
    let server =
        Server::bind(Arc::new(config), Arc::new(runtime), None).context("binding sockets")?;
    let shared = server.shared();
    // SIGHUP: logrotate moved the audit file, so write to a new one. A task of its own, so
    // a reload stuck on a hung token never holds it up.
    let mut rotated = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while rotated.recv().await.is_some() {
            if let Some(audit) = crate::server::audit::current() {
                audit.reopen();
            }
        }
    });
    // SIGHUP: reload the configuration.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let reloads = shared.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            crate::server::reload_logged(reloads.clone(), "SIGHUP").await;
        }
    });
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        stop.cancel();
    });
    // Policy and dictionary files changed on disk: reload (while `[policy] watch` is on;
    // the watcher reads the setting from the configuration in force at each look).
    tokio::spawn(crate::server::watch::run(shared.clone(), shutdown.clone()));
    if let Some(listener) = admin {
        let (shared, stop) = (server.shared(), shutdown.clone());
        tokio::spawn(async move {
            // A failed admin listener is logged; RADIUS service goes on without it.
            let _ = crate::admin::serve(listener, shared, stop).await;
        });
    }
    let served = server.serve(shutdown).await;
    // Whatever ended the server, what the audit queue holds is written before the exit.
    crate::server::audit::close();
    served?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[allow(clippy::print_stdout, reason = "check reports to the admin on stdout")]
fn check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let (config, warnings) = Config::load_reporting(path);
    // A file without errors is then opened as `serve` would (the token, the checker), so
    // a token that refuses the PIN or holds the wrong keys is reported here too.
    let config = config.and_then(|c| Runtime::build(&c, None).map(|r| (c, r)));
    for w in &warnings {
        println!("warning: {w}");
    }
    match config {
        Ok((c, runtime)) => {
            println!(
                "{}: OK ({} client(s), listen {})",
                path.display(),
                c.clients.len(),
                c.listen
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            match &c.policy {
                Some(s) => println!(
                    "{}: OK (policy {}, {} rule(s), expectations in tests/ passed)",
                    s.dir.display(),
                    runtime.policy.version(),
                    runtime.policy.rules().len()
                ),
                None => println!("no [policy]: every device gets [authorization] vlan"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            println!("{} error(s)", errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
