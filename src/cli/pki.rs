//! `anchord pki`: the HSM-held CA (init, issue, status, rotate-server) and the file-based
//! dev PKI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use time::OffsetDateTime;

use crate::pki::ca::TokenCa;
use crate::pki::hsm::{KeyAlgorithm, Pin, TokenRef};

/// Default PKCS#11 module: SoftHSM2 as Debian installs it.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Which token, and where its PIN comes from.
#[derive(Debug, Args)]
pub(super) struct TokenArgs {
    /// PKCS#11 module.
    #[arg(long, default_value = SOFTHSM_MODULE)]
    module: PathBuf,
    /// Token label.
    #[arg(long, default_value = "anchord")]
    token: String,
    /// File holding the user PIN.
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN (when no --pin-file).
    #[arg(long, default_value = "ANCHORD_HSM_PIN")]
    pin_env: String,
}

impl TokenArgs {
    fn ca(&self) -> anyhow::Result<TokenCa> {
        let pin = read_pin(self.pin_file.as_ref(), &self.pin_env, "user PIN")?;
        Ok(TokenCa {
            token: TokenRef {
                module: self.module.clone(),
                label: self.token.clone(),
            },
            pin,
        })
    }
}

fn read_pin(file: Option<&PathBuf>, env: &str, what: &str) -> anyhow::Result<Pin> {
    match file {
        Some(f) => {
            Ok(Pin::new(std::fs::read_to_string(f).with_context(|| {
                format!("reading {what} from {}", f.display())
            })?))
        }
        None => match std::env::var(env) {
            Ok(v) => Ok(Pin::new(v)),
            Err(_) => bail!("no {what}: give a --*pin-file or set {env}"),
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
    /// Create the token if absent and build root CA, issuing CA and server key in it.
    Init {
        #[command(flatten)]
        token: TokenArgs,
        /// File holding the security officer PIN (used only to create the token).
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
    /// Issue a device certificate from the issuing CA key on the token.
    Issue {
        #[command(flatten)]
        token: TokenArgs,
        /// Device name (CN and first SAN).
        #[arg(long)]
        device: String,
        /// More DNS SANs.
        #[arg(long)]
        san: Vec<String>,
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
    /// List the certificates on the token with their expiry; warn past 2/3 of a lifetime.
    Status {
        #[command(flatten)]
        token: TokenArgs,
    },
    /// New server key and certificate on the token; a running server switches to them.
    RotateServer {
        #[command(flatten)]
        token: TokenArgs,
        /// Name in the server certificate.
        #[arg(long, default_value = "radius.anchord.test")]
        server_name: String,
    },
    /// Write the CA certificates on the token (root-ca.pem, issuing-ca.pem) to a folder, for
    /// supplicants that must verify the server.
    ExportCa {
        #[command(flatten)]
        token: TokenArgs,
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
            token,
            so_pin_file,
            so_pin_env,
            key_type,
            server_name,
        } => {
            let ca = token.ca()?;
            let so = read_pin(so_pin_file.as_ref(), &so_pin_env, "SO PIN")?;
            let alg = match key_type {
                KeyType::EcdsaP256 => KeyAlgorithm::EcdsaP256,
                KeyType::Rsa2048 => KeyAlgorithm::Rsa(2048),
                KeyType::Rsa3072 => KeyAlgorithm::Rsa(3072),
            };
            let report = ca.init(&so, alg, &server_name, now)?;
            if report.token_created {
                println!("created token `{}`", ca.token.label);
            }
            println!(
                "made on token `{}` (keys sensitive, non-extractable, sign only): {}",
                ca.token.label,
                report.labels.join(", ")
            );
        }
        PkiCommand::Issue {
            token,
            device,
            san,
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
                days,
                ocsp_url: ocsp_url.as_deref(),
                key: KeyAlgorithm::EcdsaP256,
                server_auth_only: false,
                csr_pem: csr_pem.as_deref(),
            };
            let (cert, key) = token.ca()?.issue(&spec, &out, now)?;
            if csr_pem.is_some() {
                println!("issued {} for the key in the request", cert.display());
            } else {
                println!("issued {} (key {})", cert.display(), key.display());
            }
        }
        PkiCommand::Status { token } => {
            let ca = token.ca()?;
            println!(
                "{:<22} {:<10} {:<12} {:<11} VALUE",
                "KEY", "SENSITIVE", "EXTRACTABLE", "USES"
            );
            for k in ca.keys()? {
                println!(
                    "{:<22} {:<10} {:<12} {:<11} {}",
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
                    }
                );
            }
            println!();
            println!("{:<22} {:<22} {:<6} SUBJECT", "LABEL", "NOT AFTER", "USED");
            for c in ca.status(now)? {
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
        PkiCommand::RotateServer { token, server_name } => {
            let label = token.ca()?.rotate_server(&server_name, now)?;
            println!("new server key and certificate `{label}`; running servers switch to it within their rotation check interval");
        }
        PkiCommand::ExportCa { token, out } => {
            for path in token.ca()?.export_ca(&out)? {
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
