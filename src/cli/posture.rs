//! `anchord posture lookup` (what each posture source answers about a device, and the
//! facts the policy would see) and `anchord posture dev-mdm` (the development MDM the demo
//! and the benchmark use).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;

use crate::config::PolicyPart;
use crate::logsafe::Escaped;
use crate::pki::facts::CertFacts;
use crate::posture::devmdm::DevMdm;
use crate::posture::{Lookup, Sources};
use crate::radius::attr::station_id;

/// `anchord posture ...`.
#[derive(Debug, Subcommand)]
pub enum PostureCommand {
    /// Ask every posture source about a device, as the server would (without its cache);
    /// with --cache, show instead what the running server's caches hold for it.
    Lookup {
        /// Config file (its `[[posture.source]]`).
        #[arg(long, default_value = "config/anchord.toml")]
        config: PathBuf,
        /// The device certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// The device's MAC (Calling-Station-Id), for sources keyed by it.
        #[arg(long)]
        calling_station: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Ask the running server (its `[admin]` listener, with `[admin] token_file`)
        /// what its caches hold for the device, instead of asking the sources.
        #[arg(long)]
        cache: bool,
        /// With --cache: the admin listener's address, if not the config's
        /// `[admin] listen`.
        #[arg(long, requires = "cache")]
        admin: Option<SocketAddr>,
    },
    /// Serve a development MDM (Graph-shaped device API with an OAuth2 token endpoint)
    /// with the devices in a JSON file. For demos and benchmarks only.
    DevMdm {
        /// JSON file: an array of device records (`id`, `serialNumber`,
        /// `complianceState`, ...); default: the dev PKI's devices, compliant.
        #[arg(long)]
        devices: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// OAuth2 client id (with --client-secret-file: device routes need a token).
        #[arg(long)]
        client_id: Option<String>,
        /// File holding the OAuth2 client secret.
        #[arg(long)]
        client_secret_file: Option<PathBuf>,
    },
}

/// Runs a `posture` subcommand.
///
/// # Errors
/// A config, certificate or device file that cannot be read; a listener that cannot bind.
pub async fn run(cmd: PostureCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PostureCommand::Lookup {
            config,
            cert,
            calling_station,
            json,
            cache: false,
            ..
        } => lookup(&config, &cert, calling_station.as_deref(), json).await,
        PostureCommand::Lookup {
            config,
            cert,
            calling_station,
            json,
            cache: true,
            admin,
        } => cached(&config, admin, &cert, calling_station.as_deref(), json).await,
        PostureCommand::DevMdm {
            devices,
            listen,
            client_id,
            client_secret_file,
        } => {
            dev_mdm(
                devices.as_deref(),
                listen,
                client_id,
                client_secret_file.as_deref(),
            )
            .await
        }
    }
}

/// The device certificate's facts from a PEM file.
///
/// # Errors
/// The file cannot be read or holds no certificate.
pub fn cert_facts(path: &Path) -> anyhow::Result<CertFacts> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate", path.display());
    }
    Ok(CertFacts::of(&chain))
}

/// Asks every source of the config at `config` about the device, each within its timeout.
///
/// # Errors
/// The config cannot be read, has no posture source, or a source cannot be built.
pub async fn live(
    part: &PolicyPart,
    cert: &CertFacts,
    calling_station: Option<&str>,
) -> anyhow::Result<Vec<(String, Lookup)>> {
    let Some(settings) = &part.posture else {
        bail!("no [[posture.source]] in the config");
    };
    let sources = Sources::build(settings).map_err(|e| anyhow!(e))?;
    let every = crate::policy::PostureReads {
        any: true,
        ..Default::default()
    };
    let station = calling_station.map(|s| station_id(s.as_bytes()));
    Ok(sources
        .lookup(
            &every,
            cert,
            station.as_deref(),
            crate::posture::Asker::Proven,
        )
        .await)
}

#[allow(
    clippy::print_stdout,
    reason = "posture lookup reports to the admin on stdout"
)]
async fn lookup(
    config: &Path,
    cert: &Path,
    calling_station: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let part = PolicyPart::load(config).map_err(|e| anyhow!("{e}"))?;
    let facts = cert_facts(cert)?;
    let lookups = live(&part, &facts, calling_station).await?;
    if as_json {
        let list: Vec<_> = lookups
            .iter()
            .map(|(name, l)| {
                json!({
                    "source": name,
                    "id": l.id.as_ref().map(|i| &i.id),
                    "id_from": l.id.as_ref().map(|i| i.from),
                    "served": l.served.label(),
                    "answer": l.answer.describe(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for (name, l) in &lookups {
            let id = l.id.as_ref().map_or_else(
                || "no id".to_owned(),
                |i| format!("{} from {}", Escaped(&i.id), i.from),
            );
            println!("{name}: device {id}; {}", l.served.label());
            println!("  {}", Escaped(&l.answer.describe()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(
    clippy::print_stdout,
    reason = "posture lookup reports to the admin on stdout"
)]
async fn cached(
    config: &Path,
    admin: Option<SocketAddr>,
    cert: &Path,
    calling_station: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let config = crate::config::Config::load(config).map_err(|e| anyhow!("{e}"))?;
    let (Some(addr), Some(token)) = (admin.or(config.admin), &config.admin_token) else {
        bail!("--cache asks the running server: the config needs [admin] with token_file");
    };
    let pem = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let mut req = crate::tls::http_client(std::time::Duration::from_secs(10))
        .build()?
        .post(format!("http://{addr}/v1/posture/cache"))
        .bearer_auth(token.expose())
        .body(pem);
    if let Some(station) = calling_station {
        req = req.header("X-Calling-Station-Id", station);
    }
    let text = super::ask_admin(req, addr).await?;
    if as_json {
        println!("{}", text.trim());
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    for s in &list {
        let name = s["source"].as_str().unwrap_or("?");
        let id = match (s["id"].as_str(), s["id_from"].as_str()) {
            (Some(id), Some(from)) => format!("{} from {from}", Escaped(id)),
            _ => "no id".into(),
        };
        let cached = &s["cached"];
        if cached.is_null() {
            println!("{name}: device {id}; not cached");
        } else {
            println!(
                "{name}: device {id}; cached, {} ({} s old)",
                cached["state"].as_str().unwrap_or("?"),
                cached["age_secs"]
            );
            println!("  {}", Escaped(cached["answer"].as_str().unwrap_or("")));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(
    clippy::print_stdout,
    reason = "the address is printed for the caller to point a source at"
)]
async fn dev_mdm(
    devices: Option<&Path>,
    listen: SocketAddr,
    client_id: Option<String>,
    secret_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let list: Vec<serde_json::Value> = match devices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: a JSON array of device records", path.display()))?
        }
        None => crate::posture::devmdm::dev_devices(),
    };
    let client = match (client_id, secret_file) {
        (Some(id), Some(f)) => {
            let secret = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            Some((id, secret.trim().to_owned()))
        }
        (None, None) => None,
        _ => bail!("--client-id and --client-secret-file go together"),
    };
    let mdm = DevMdm::new(list, client);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("dev MDM listening on http://{}", listener.local_addr()?);
    Arc::clone(&mdm).serve(listener).await?;
    Ok(ExitCode::SUCCESS)
}
