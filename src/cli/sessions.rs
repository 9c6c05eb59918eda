//! `anchord sessions list`: the running server's live sessions (from accounting), asked
//! over its admin listener with the `[admin] token_file` token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::Subcommand;

use crate::logsafe::Escaped;

/// `anchord sessions ...`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// The live sessions the running server knows from accounting, with the certificate,
    /// rule and VLAN of the authentication each belongs to.
    List {
        /// Config file (its `[admin]` listener and token).
        #[arg(long, default_value = "config/anchord.toml")]
        config: PathBuf,
        /// Only this device: its certificate serial (hex), EAP identity or User-Name.
        #[arg(long)]
        device: Option<String>,
        /// Only this MAC (Calling-Station-Id, any common notation).
        #[arg(long)]
        mac: Option<String>,
        /// The admin listener's address, if not the config's `[admin] listen`.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disconnect the live sessions of a device or a MAC: a Disconnect-Request (RFC 5176)
    /// to each session's NAS (`dynamic_authorization` on its [[client]]); the device
    /// re-authenticates and gets a new decision.
    Disconnect {
        /// Config file (its `[admin]` listener and token).
        #[arg(long, default_value = "config/anchord.toml")]
        config: PathBuf,
        /// This device: its certificate serial (hex), EAP identity or User-Name.
        #[arg(long, required_unless_present = "mac")]
        device: Option<String>,
        /// This MAC (Calling-Station-Id, any common notation).
        #[arg(long)]
        mac: Option<String>,
        /// The admin listener's address, if not the config's `[admin] listen`.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Print the server's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `sessions` subcommand.
///
/// # Errors
/// A config without an admin token, or a server that cannot be asked.
pub async fn run(cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionsCommand::List {
            config,
            device,
            mac,
            admin,
            json,
        } => list(&config, device.as_deref(), mac.as_deref(), admin, json).await,
        SessionsCommand::Disconnect {
            config,
            device,
            mac,
            admin,
            json,
        } => disconnect(&config, device.as_deref(), mac.as_deref(), admin, json).await,
    }
}

/// Asks the running server's `/v1/sessions{path}` about `device` and `mac` (GET, or POST
/// for a command); its JSON text.
async fn ask(
    config: &Path,
    path: &str,
    device: Option<&str>,
    mac: Option<&str>,
    admin: Option<SocketAddr>,
) -> anyhow::Result<String> {
    let config = crate::config::Config::load(config).map_err(|e| anyhow!("{e}"))?;
    let (Some(addr), Some(token)) = (admin.or(config.admin), &config.admin_token) else {
        bail!("sessions asks the running server: the config needs [admin] with token_file");
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(d) = device {
        query.append_pair("device", d);
    }
    if let Some(m) = mac {
        query.append_pair("mac", m);
    }
    let url = format!("http://{addr}/v1/sessions{path}?{}", query.finish());
    // Each Disconnect-Request takes up to 7 s (three tries) and they run at once.
    let client = crate::tls::http_client(std::time::Duration::from_secs(30)).build()?;
    let req = if path.is_empty() {
        client.get(url)
    } else {
        client.post(url)
    };
    super::ask_admin(req.bearer_auth(token.expose()), addr).await
}

/// [`ask`]'s answer: printed as it is with `--json` (then `None`), else parsed.
#[allow(
    clippy::print_stdout,
    reason = "sessions commands report to the admin on stdout"
)]
async fn answer(
    config: &Path,
    path: &str,
    device: Option<&str>,
    mac: Option<&str>,
    admin: Option<SocketAddr>,
    as_json: bool,
) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    let text = ask(config, path, device, mac, admin).await?;
    if as_json {
        println!("{}", text.trim());
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&text)?))
}

#[allow(
    clippy::print_stdout,
    reason = "sessions disconnect reports to the admin on stdout"
)]
async fn disconnect(
    config: &Path,
    device: Option<&str>,
    mac: Option<&str>,
    admin: Option<SocketAddr>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let Some(done) = answer(config, "/disconnect", device, mac, admin, as_json).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    if done.is_empty() {
        println!("no live session matched");
    }
    for d in &done {
        println!(
            "{} session {} ({}): {}",
            Escaped(d["nas"].as_str().unwrap_or("?")),
            Escaped(d["session_id"].as_str().unwrap_or("?")),
            Escaped(d["station"].as_str().unwrap_or("-")),
            Escaped(d["answer"].as_str().unwrap_or("?")),
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(
    clippy::print_stdout,
    reason = "sessions list reports to the admin on stdout"
)]
async fn list(
    config: &Path,
    device: Option<&str>,
    mac: Option<&str>,
    admin: Option<SocketAddr>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let Some(list) = answer(config, "", device, mac, admin, as_json).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    if list.is_empty() {
        println!("no live sessions");
        return Ok(ExitCode::SUCCESS);
    }
    let text_of = |v: &serde_json::Value| Escaped(v.as_str().unwrap_or("-")).to_string();
    println!(
        "{:<12} {:<18} {:<17} {:<20} {:<6} {:<16} certificate",
        "nas", "acct-session-id", "mac", "identity", "vlan", "rule"
    );
    for s in &list {
        let cert = &s["cert"];
        let cert = if cert.is_null() {
            "(not joined: no Class of this server)".to_owned()
        } else {
            format!(
                "{} serial {}",
                text_of(&cert["subject"]),
                text_of(&cert["serial"])
            )
        };
        let identity = if s["identity"].is_null() {
            &s["user_name"]
        } else {
            &s["identity"]
        };
        println!(
            "{:<12} {:<18} {:<17} {:<20} {:<6} {:<16} {cert}",
            text_of(&s["nas"]),
            text_of(&s["acct_session_id"]),
            text_of(&s["station"]),
            text_of(identity),
            text_of(&s["vlan"]),
            text_of(&s["rule"]),
        );
    }
    Ok(ExitCode::SUCCESS)
}
