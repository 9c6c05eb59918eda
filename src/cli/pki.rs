//! `anchord pki`: the HSM-held CA (init, issue, status, rotate-server) and the file-based
//! dev PKI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use time::OffsetDateTime;

use crate::pki::ca::{ServerToken, TokenCa};
use crate::pki::hsm::{KeyAlgorithm, Pin, TokenRef};

/// Default PKCS#11 module: SoftHSM2 as Debian installs it.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Default label of the server token (what `[pki] token` defaults to).
pub const SERVER_TOKEN: &str = "anchord";
/// Default label of the CA token. Not `anchord-…`: OpenSC's `pkcs11-tool --token-label`
/// matches a prefix, so `--token-label anchord` would pick a CA token named `anchord-ca`.
pub const CA_TOKEN: &str = "ca-anchord";

/// The server token (the server's TLS key only), and where its PIN comes from: the same
/// token and PIN `[pki]` gives the server.
#[derive(Debug, Args)]
pub(super) struct ServerArgs {
    /// PKCS#11 module of the server token.
    #[arg(long, default_value = SOFTHSM_MODULE)]
    module: PathBuf,
    /// Server token label.
    #[arg(long, default_value = SERVER_TOKEN)]
    token: String,
    /// File holding the server token's user PIN.
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Environment variable holding the server token's user PIN (when no --pin-file).
    #[arg(long, default_value = "ANCHORD_HSM_PIN")]
    pin_env: String,
}

impl ServerArgs {
    fn token_ref(&self) -> TokenRef {
        TokenRef {
            module: self.module.clone(),
            label: self.token.clone(),
        }
    }

    fn server(&self) -> anyhow::Result<ServerToken> {
        let pin = read_pin(
            self.pin_file.as_ref(),
            &self.pin_env,
            "server token PIN",
            "--pin-file",
        )?;
        Ok(ServerToken {
            token: self.token_ref(),
            pin,
        })
    }
}

/// The CA token (root and issuing CA keys), and where its PIN comes from. The server never
/// needs this PIN.
#[derive(Debug, Args)]
pub(super) struct CaArgs {
    /// PKCS#11 module of the CA token.
    #[arg(long, default_value = SOFTHSM_MODULE)]
    ca_module: PathBuf,
    /// CA token label.
    #[arg(long, default_value = CA_TOKEN)]
    ca_token: String,
    /// File holding the CA token's user PIN.
    #[arg(long)]
    ca_pin_file: Option<PathBuf>,
    /// Environment variable holding the CA token's user PIN (when no --ca-pin-file).
    #[arg(long, default_value = "ANCHORD_CA_PIN")]
    ca_pin_env: String,
}

impl CaArgs {
    fn ca(&self) -> anyhow::Result<TokenCa> {
        let pin = read_pin(
            self.ca_pin_file.as_ref(),
            &self.ca_pin_env,
            "CA token PIN",
            "--ca-pin-file",
        )?;
        Ok(TokenCa {
            token: TokenRef {
                module: self.ca_module.clone(),
                label: self.ca_token.clone(),
            },
            pin,
        })
    }
}

fn read_pin(file: Option<&PathBuf>, env: &str, what: &str, flag: &str) -> anyhow::Result<Pin> {
    match file {
        Some(f) => {
            Ok(Pin::new(std::fs::read_to_string(f).with_context(|| {
                format!("reading {what} from {}", f.display())
            })?))
        }
        None => match std::env::var(env) {
            Ok(v) => Ok(Pin::new(v)),
            Err(_) => bail!("no {what}: give {flag} or set {env}"),
        },
    }
}

/// Key types for `pki init`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum KeyType {
    /// ECDSA P-256.
    EcdsaP256,
    /// RSA 2048.
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA 3072.
    #[value(name = "rsa-3072")]
    Rsa3072,
}

#[derive(Debug, Subcommand)]
pub(super) enum PkiCommand {
    /// Create the CA token and the server token if absent; build root CA and issuing CA on
    /// the CA token and the server key (with its chain and the trust anchor) on the server
    /// token.
    Init {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        server: ServerArgs,
        /// File holding the security officer PIN (used only to create the tokens).
        #[arg(long)]
        so_pin_file: Option<PathBuf>,
        /// Environment variable holding the SO PIN (when no --so-pin-file).
        #[arg(long, default_value = "ANCHORD_HSM_SO_PIN")]
        so_pin_env: String,
        /// Key algorithm for all three keys.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key_type: KeyType,
        /// Name in the server certificate.
        #[arg(long, default_value = "radius.anchord.test")]
        server_name: String,
    },
    /// Issue a device certificate from the issuing CA key on the CA token.
    Issue {
        #[command(flatten)]
        ca: CaArgs,
        /// Device name (CN and first SAN).
        #[arg(long)]
        device: String,
        /// More DNS SANs.
        #[arg(long)]
        san: Vec<String>,
        /// Subject OU (e.g. the department a policy rule matches with `cert.ou`).
        #[arg(long)]
        ou: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// OCSP responder URL for the AIA extension.
        #[arg(long)]
        ocsp_url: Option<String>,
        /// The device's own certificate request (PEM); without it a key is made here and
        /// written next to the certificate (dev/demo).
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Folder for <device>.pem and <device>.key.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// List the keys and certificates on the CA token and on the server token (each whose
    /// PIN is given) with their protection and expiry; warn past 2/3 of a lifetime.
    Status {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// New server key on the server token, with a certificate from the CA token; a running
    /// server switches to it. With an SO PIN, a server token that does not exist is created.
    RotateServer {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        server: ServerArgs,
        /// File holding the SO PIN, to create the server token if it does not exist.
        #[arg(long)]
        so_pin_file: Option<PathBuf>,
        /// Environment variable holding that SO PIN (when no --so-pin-file; optional).
        #[arg(long, default_value = "ANCHORD_HSM_SO_PIN")]
        so_pin_env: String,
        /// Name in the server certificate.
        #[arg(long, default_value = "radius.anchord.test")]
        server_name: String,
    },
    /// Write the CA certificates (root-ca.pem, issuing-ca.pem) from the server token's public
    /// objects to a folder, for supplicants that must verify the server. Needs no PIN.
    ExportCa {
        #[command(flatten)]
        server: ServerArgs,
        /// Folder to write to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Write a development PKI (root and issuing CA, ECDSA and RSA server certs, demo
    /// devices) as PEM files. Not for production.
    Dev {
        /// Folder to write to.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[allow(
    clippy::print_stdout,
    reason = "pki commands report to the admin on stdout"
)]
pub(super) fn run(cmd: PkiCommand) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        PkiCommand::Init {
            ca,
            server,
            so_pin_file,
            so_pin_env,
            key_type,
            server_name,
        } => {
            let ca = ca.ca()?;
            let server = server.server()?;
            let so = read_pin(so_pin_file.as_ref(), &so_pin_env, "SO PIN", "--so-pin-file")?;
            let alg = match key_type {
                KeyType::EcdsaP256 => KeyAlgorithm::EcdsaP256,
                KeyType::Rsa2048 => KeyAlgorithm::Rsa(2048),
                KeyType::Rsa3072 => KeyAlgorithm::Rsa(3072),
            };
            let report = ca.init(&server, &so, alg, &server_name, now)?;
            for (created, label) in [
                (report.ca_token_created, &ca.token.label),
                (report.server_token_created, &server.token.label),
            ] {
                if created {
                    println!("created token `{label}`");
                }
            }
            println!(
                "made on CA token `{}` (keys sensitive, non-extractable, sign only): {}",
                ca.token.label,
                report.ca_keys.join(", ")
            );
            println!(
                "made on server token `{}` (server key only; CA certificates as public objects): {}",
                server.token.label, report.server_key
            );
            println!(
                "[pki] names the server token `{}` and its PIN; the CA token's PIN stays with the CA",
                server.token.label
            );
        }
        PkiCommand::Issue {
            ca,
            device,
            san,
            ou,
            days,
            ocsp_url,
            csr,
            out,
        } => {
            let csr_pem = csr
                .as_ref()
                .map(|p| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                })
                .transpose()?;
            let spec = crate::pki::ca::DeviceSpec {
                name: &device,
                sans: &san,
                ou: ou.as_deref(),
                days,
                ocsp_url: ocsp_url.as_deref(),
                key: KeyAlgorithm::EcdsaP256,
                server_auth_only: false,
                csr_pem: csr_pem.as_deref(),
            };
            let (cert, key) = ca.ca()?.issue(&spec, &out, now)?;
            if csr_pem.is_some() {
                println!("issued {} for the key in the request", cert.display());
            } else {
                println!("issued {} (key {})", cert.display(), key.display());
            }
        }
        PkiCommand::Status { ca, server } => {
            // Each token whose PIN is at hand: the CA's custodian may not hold the server's
            // PIN, nor the server's operator the CA's.
            let ca = ca.ca();
            let server = server.server();
            let mut shown = 0;
            if let Ok(ca) = &ca {
                println!("CA token `{}`", ca.token.label);
                print_keys(&ca.keys()?);
                print_certs(&ca.status(now)?);
                shown += 1;
            }
            if let Ok(server) = &server {
                if shown > 0 {
                    println!();
                }
                println!("server token `{}`", server.token.label);
                print_keys(&server.keys()?);
                print_certs(&server.status(now)?);
                shown += 1;
            }
            if shown == 0 {
                let (Err(ca), Err(server)) = (ca, server) else {
                    bail!("no token to show");
                };
                bail!("{ca}; {server}");
            }
        }
        PkiCommand::RotateServer {
            ca,
            server,
            so_pin_file,
            so_pin_env,
            server_name,
        } => {
            let so = match &so_pin_file {
                Some(_) => Some(read_pin(
                    so_pin_file.as_ref(),
                    &so_pin_env,
                    "SO PIN",
                    "--so-pin-file",
                )?),
                None => std::env::var(&so_pin_env).ok().map(Pin::new),
            };
            let server = server.server()?;
            let label = ca
                .ca()?
                .rotate_server(&server, so.as_ref(), &server_name, now)?;
            println!("new server key and certificate `{label}` on server token `{}`; running servers switch to it within their rotation check interval", server.token.label);
        }
        PkiCommand::ExportCa { server, out } => {
            for path in crate::pki::ca::export_ca(&server.token_ref(), &out)? {
                println!("wrote {}", path.display());
            }
        }
        PkiCommand::Dev { dir } => {
            crate::pki::dev::generate(&dir, now)?;
            println!("dev PKI written to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(
    clippy::print_stdout,
    reason = "pki commands report to the admin on stdout"
)]
fn print_keys(keys: &[crate::pki::hsm::KeyProtection]) {
    println!(
        "{:<22} {:<10} {:<12} {:<11} {:<21} ALLOWED MECHANISMS",
        "KEY", "SENSITIVE", "EXTRACTABLE", "USES", "VALUE"
    );
    for k in keys {
        println!(
            "{:<22} {:<10} {:<12} {:<11} {:<21} {}",
            k.label,
            if k.sensitive { "yes" } else { "NO" },
            if k.extractable || !k.never_extractable {
                "YES"
            } else {
                "never"
            },
            if k.other_uses {
                "SIGN+OTHER"
            } else {
                "sign only"
            },
            if k.value_readable {
                "READABLE"
            } else {
                "refused by the token"
            },
            if k.allowed.is_empty() {
                "ANY".to_owned()
            } else {
                k.allowed.join(",")
            }
        );
    }
}

#[allow(
    clippy::print_stdout,
    reason = "pki commands report to the admin on stdout"
)]
fn print_certs(certs: &[crate::pki::ca::CertStatus]) {
    println!("{:<22} {:<22} {:<6} SUBJECT", "LABEL", "NOT AFTER", "USED");
    for c in certs {
        let warn = if c.in_renewal_window() {
            "  <-- renew: past 2/3 of its lifetime"
        } else {
            ""
        };
        println!(
            "{:<22} {:<22} {:>5.0}% {}{warn}",
            c.label,
            c.not_after.date().to_string() + " " + &c.not_after.time().to_string(),
            c.used * 100.0,
            c.subject
        );
    }
}
