//! `anchord bench`: command-line front of the load generator in [`crate::bench`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::bench::accounting::AcctConfig;
use crate::bench::trust::RememberingVerifier;
use crate::bench::{BenchConfig, Mode};
use crate::radius::SharedSecret;

/// TLS versions the simulated devices offer.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum TlsChoice {
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    V12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    V13,
    /// Both; the server chooses.
    Any,
}

/// Options of `anchord bench`.
#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// RADIUS server address.
    #[arg(long, default_value = "127.0.0.1:1812")]
    server: SocketAddr,
    /// Shared secret (or --secret-file).
    #[arg(long, conflicts_with = "secret_file")]
    secret: Option<String>,
    /// File holding the shared secret.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Device certificate chain (PEM).
    #[arg(long, required_unless_present = "accounting")]
    cert: Option<PathBuf>,
    /// Device private key (PEM).
    #[arg(long, required_unless_present = "accounting")]
    key: Option<PathBuf>,
    /// CA that must have issued the server certificate (PEM).
    #[arg(long, required_unless_present = "accounting")]
    ca: Option<PathBuf>,
    /// Name the server certificate must carry.
    #[arg(long, default_value = "radius.anchord.test")]
    server_name: String,
    /// TLS version(s) to offer.
    #[arg(long, value_enum, default_value = "any")]
    tls: TlsChoice,
    /// Device-side EAP-TLS fragment size.
    #[arg(long, default_value_t = 1024)]
    fragment_size: usize,
    /// Framed-MTU to send (makes the server fragment smaller).
    #[arg(long)]
    framed_mtu: Option<u32>,
    /// Closed loop: devices in flight.
    #[arg(long, default_value_t = 8, conflicts_with_all = ["rate", "half_open"])]
    concurrency: usize,
    /// Open loop: authentications started per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: most authentications in flight.
    #[arg(long, default_value_t = 4096)]
    max_inflight: usize,
    /// Leave this many conversations half-open (stopped after the server's first flight).
    #[arg(long)]
    half_open: Option<usize>,
    /// With --rate or --concurrency: abandon every conversation after the server's first TLS
    /// flight, as a flood of unauthenticated devices would (a half-open conversation counts
    /// as completed).
    #[arg(long)]
    abandon: bool,
    /// Send from this local address (e.g. 127.0.0.2 to be a second NAS on loopback).
    #[arg(long)]
    bind: Option<std::net::IpAddr>,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Milliseconds before a retransmission.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Retransmissions before an authentication counts as timed out.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// VLAN every Access-Accept must carry.
    #[arg(long)]
    expect_vlan: Option<String>,
    /// EAP identity.
    #[arg(long, default_value = "bench-device")]
    identity: String,
    /// Also offer the post-quantum hybrid X25519MLKEM768 (rustls's default). Off by default
    /// so the simulated devices offer what 802.1X supplicants do today: X25519 and P-256.
    #[arg(long)]
    pq: bool,
    /// Verify the server's certificate chain in full on every authentication, as a device
    /// does. By default a chain is verified in full once and remembered for the run (the
    /// handshake signature is verified every time), so the load generator's one core goes to
    /// loading the server.
    #[arg(long)]
    verify_chain_every_time: bool,
    /// Accounting load instead (RFC 2866, to the accounting port): sessions of a Start,
    /// --interims Interim-Updates and a Stop; --concurrency / --rate count sessions.
    #[arg(long, conflicts_with_all = ["half_open", "abandon"])]
    accounting: bool,
    /// With --accounting: Interim-Updates per session.
    #[arg(long, default_value_t = 2)]
    interims: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[allow(clippy::print_stdout, reason = "the report is the command's output")]
pub(super) async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let secret = match (&a.secret, &a.secret_file) {
        (Some(s), None) => s.as_bytes().to_vec(),
        (None, Some(f)) => {
            let mut b = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                b.pop();
            }
            b
        }
        _ => bail!("give --secret or --secret-file"),
    };
    if a.accounting {
        return accounting(a, secret).await;
    }
    let (Some(cert), Some(key), Some(ca)) = (&a.cert, &a.key, &a.ca) else {
        bail!("give --cert, --key and --ca");
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .with_context(|| format!("reading {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let mut roots = RootCertStore::empty();
    for ca in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(ca?)?;
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match a.tls {
        TlsChoice::V12 => &[&rustls::version::TLS12],
        TlsChoice::V13 => &[&rustls::version::TLS13],
        TlsChoice::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if !a.pq {
        use rustls::crypto::aws_lc_rs::kx_group;
        provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1];
    }
    let provider = Arc::new(provider);
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = if a.verify_chain_every_time {
        builder.with_root_certificates(roots)
    } else {
        let full =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(RememberingVerifier::new(full)))
    };
    let mut tls = builder.with_client_auth_cert(chain, key)?;
    // Each authentication is a fresh device: no resumption.
    tls.resumption = rustls::client::Resumption::disabled();
    let mode = match (a.rate, a.half_open) {
        (Some(rate), None) => Mode::Open {
            rate,
            max_inflight: a.max_inflight,
        },
        (None, Some(count)) => Mode::HalfOpen { count },
        (None, None) => Mode::Closed {
            concurrency: a.concurrency,
        },
        (Some(_), Some(_)) => bail!("--rate and --half-open exclude each other"),
    };
    let cfg = BenchConfig {
        server: a.server,
        secret: SharedSecret::new(secret),
        tls: Arc::new(tls),
        server_name: ServerName::try_from(a.server_name.clone())?,
        fragment_size: a.fragment_size,
        identity: a.identity,
        timeout: Duration::from_millis(a.timeout_ms),
        retries: a.retries,
        expect_vlan: a.expect_vlan,
        mode,
        duration: Duration::from_secs_f64(a.duration.max(0.1)),
        framed_mtu: a.framed_mtu,
        progress: !a.quiet && !a.json,
        bind: a.bind,
        abandon: a.abandon,
    };
    let report = crate::bench::run(cfg).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if report.errors.is_empty() && report.completed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `anchord bench --accounting`.
#[allow(clippy::print_stdout, reason = "the report is the command's output")]
async fn accounting(a: BenchArgs, secret: Vec<u8>) -> anyhow::Result<ExitCode> {
    let mode = match a.rate {
        Some(rate) => Mode::Open {
            rate,
            max_inflight: a.max_inflight,
        },
        None => Mode::Closed {
            concurrency: a.concurrency,
        },
    };
    let cfg = AcctConfig {
        server: a.server,
        secret: SharedSecret::new(secret),
        interims: a.interims,
        user_name: a.identity,
        mode,
        duration: Duration::from_secs_f64(a.duration.max(0.1)),
        timeout: Duration::from_millis(a.timeout_ms),
        retries: a.retries,
        bind: a.bind,
        progress: !a.quiet && !a.json,
    };
    let report = crate::bench::accounting::run(cfg).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if report.errors.is_empty() && report.records > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
