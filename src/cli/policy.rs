//! `anchord policy explain` (why a device gets its answer: each rule tried, the first
//! condition that failed and what the device had, the reply as it goes on the wire) and
//! `anchord policy test` (the admin's expectations, case by case).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::{policy as files, PolicyPart};
use crate::logsafe::Escaped;
use crate::policy::cases::request_attribute;
use crate::policy::facts::CertFacts;
use crate::policy::rules::describe_failure;
use crate::policy::{
    evaluate, Decision, Facts, Policy, Posture, PostureAnswer, PostureFacts, ReplyAttribute,
    RequestFacts, RevocationFacts, RevocationOutcome, SourcePosture, Trace,
};
use crate::radius::packet::Attribute;
use crate::radius::{Code, ReplyBuilder, SharedSecret};
use crate::server::reply::{push_attributes, Hiding};

/// `anchord policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show which rule a device matches and why, and the reply it would get.
    Explain(Box<ExplainArgs>),
    /// Run policy expectations (default: every tests/*.toml in the policy folder).
    Test {
        /// Config file (its dictionary and `[policy]`).
        #[arg(long, default_value = "config/anchord.toml")]
        config: PathBuf,
        /// Case files; default: the policy folder's tests/*.toml.
        files: Vec<PathBuf>,
    },
}

/// `anchord policy explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Config file (its dictionary and `[policy]`).
    #[arg(long, default_value = "config/anchord.toml")]
    config: PathBuf,
    /// The device certificate (PEM; the chain may follow it).
    #[arg(long)]
    cert: PathBuf,
    /// A request attribute, `Name=value` by dictionary name (repeatable), e.g.
    /// `Called-Station-Id=aa-bb-cc-dd-ee-ff:Corp`.
    #[arg(long = "attr", value_name = "NAME=VALUE")]
    attrs: Vec<String>,
    /// The EAP identity (default: the certificate's CN or first SAN).
    #[arg(long)]
    identity: Option<String>,
    /// The `[[client]]` name the request comes from (default: the first in the config).
    #[arg(long)]
    client: Option<String>,
    /// Revocation outcome: good, soft_failed, not_checked, revoked, unknown, invalid.
    #[arg(long, default_value = "good")]
    revocation: String,
    /// TLS version: 1.2 or 1.3.
    #[arg(long, default_value = "1.3")]
    tls: String,
    /// Posture facts, JSON: `{"intune": {"compliant": true, "risk_score": 10}, "edr":
    /// "unavailable"}`.
    #[arg(long, conflicts_with = "live_posture")]
    posture: Option<PathBuf>,
    /// Ask the config's posture sources about the device now (what each answered is
    /// shown with the decision).
    #[arg(long)]
    live_posture: bool,
    /// The time to decide at (RFC 3339, e.g. 2026-12-02T09:30:00+01:00); default now.
    #[arg(long)]
    now: Option<String>,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// Runs a `policy` subcommand.
///
/// # Errors
/// A config, policy, certificate or argument that cannot be read.
pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Explain(args) => explain(&args),
        PolicyCommand::Test { config, files } => test(&config, &files),
    }
}

/// The config's policy part and its rules (compiled and linted; expectations not run).
fn load(config: &Path) -> anyhow::Result<(PolicyPart, Policy)> {
    let config = PolicyPart::load(config).map_err(|e| anyhow!("{e}"))?;
    let policy = match &config.policy {
        Some(s) => files::compile(s, &config.dictionary).map_err(|e| anyhow!("{e}"))?,
        None => Policy::builtin(config.vlan.clone(), config.dictionary.clone()),
    };
    Ok((config, policy))
}

#[allow(
    clippy::print_stdout,
    reason = "policy test reports to the admin on stdout"
)]
fn test(config: &Path, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let (config, policy) = load(config)?;
    let cases = if paths.is_empty() {
        let Some(s) = &config.policy else {
            bail!("no [policy] in the config: nothing to test");
        };
        files::read_cases(&s.dir.join("tests"), &config.dictionary)
    } else {
        let mut list = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            list.push(crate::policy::PolicyFile {
                name: p.display().to_string(),
                text,
            });
        }
        files::parse_cases(&list, &config.dictionary)
    }
    .map_err(|e| anyhow!("{e}"))?;
    let failures = crate::policy::cases::run(&policy, &cases);
    for c in &cases {
        match failures.iter().find(|f| f.case == c.name && f.at == c.at) {
            Some(f) => println!("FAIL {}: {} ({})", c.name, f.message, c.at),
            None => println!("ok   {}", c.name),
        }
    }
    println!(
        "{} case(s), {} failed (policy {})",
        cases.len(),
        failures.len(),
        policy.version()
    );
    Ok(if failures.is_empty() && !cases.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let (config, policy) = load(&args.config)?;
    let chain = files::read_chain(&args.cert).map_err(|e| anyhow!(e))?;
    let cert = CertFacts::of(&chain);
    let now = match &args.now {
        Some(t) => t
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("--now {t:?}: an RFC 3339 time"))?
            .as_second(),
        None => crate::clock::unix_now(),
    };
    let mut encoded = Vec::new();
    for a in &args.attrs {
        let (name, value) = a
            .split_once('=')
            .ok_or_else(|| anyhow!("--attr {a:?}: expected Name=value"))?;
        encoded.push(
            request_attribute(&config.dictionary, name.trim(), value.trim())
                .map_err(|e| anyhow!("--attr {a:?}: {e}"))?,
        );
    }
    let attrs: Vec<Attribute<'_>> = encoded
        .iter()
        .map(|(ty, v)| Attribute { ty: *ty, value: v })
        .collect();
    let client = args
        .client
        .clone()
        .or_else(|| config.clients.first().cloned())
        .unwrap_or_else(|| "explain".into());
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| cert.identity().to_owned());
    let outcome = match args.revocation.as_str() {
        "good" => RevocationOutcome::Good,
        "not_checked" => RevocationOutcome::NotChecked,
        "soft_failed" => RevocationOutcome::SoftFailed {
            why: "given".into(),
        },
        "revoked" => RevocationOutcome::Revoked {
            at: now,
            reason: None,
            intermediate: false,
        },
        "unknown" => RevocationOutcome::Unknown {
            why: "given".into(),
        },
        "invalid" => RevocationOutcome::Invalid {
            why: "given".into(),
        },
        other => bail!(
            "--revocation {other:?}: good, soft_failed, not_checked, revoked, unknown or invalid"
        ),
    };
    let tls_version = match args.tls.as_str() {
        "1.2" => "1.2",
        "1.3" => "1.3",
        other => bail!("--tls {other:?}: 1.2 or 1.3"),
    };
    let first = RequestFacts::of(&attrs, &client, &config.dictionary, &identity);
    let posture = match &args.posture {
        Some(p) => posture_file(p)?,
        None if args.live_posture => {
            let lookups = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(super::posture::live(
                    &config,
                    &cert,
                    first.calling_station.as_deref(),
                ))?;
            crate::posture::Sources::facts(&lookups)
        }
        None => PostureFacts::default(),
    };
    let facts = Facts {
        now,
        first,
        last: RequestFacts::of(&attrs, &client, &config.dictionary, ""),
        cert,
        tls_version,
        revocation: RevocationFacts {
            detail: outcome.label().to_owned(),
            outcome,
            source: None,
        },
        posture,
    };
    let (decision, trace) = evaluate(&policy, &facts);
    let wire = wire(&policy, &decision);
    if args.json {
        print_json(&policy, &facts, &decision, &trace, &wire);
    } else {
        print_text(&policy, &facts, &decision, &trace, &wire);
    }
    Ok(ExitCode::SUCCESS)
}

/// A reply attribute as it goes on the wire: its bytes, or `None` for one hidden with
/// the client's secret (its bytes differ per reply).
struct Wire {
    attr: ReplyAttribute,
    bytes: Result<Option<Vec<u8>>, String>,
}

fn wire(policy: &Policy, decision: &Decision) -> Vec<Wire> {
    let Decision::Accept { reply } = decision else {
        return Vec::new();
    };
    let secret = SharedSecret::new(b"explain".to_vec());
    let authenticator = [0u8; 16];
    let hiding = Hiding {
        secret: &secret,
        authenticator: &authenticator,
        salt: 0x8000,
    };
    reply
        .iter()
        .map(|a| {
            let hidden = policy
                .dictionary()
                .by_name(&a.name)
                .is_some_and(|d| d.encrypt != 0);
            let mut b = ReplyBuilder::new(Code::AccessAccept, 0);
            let bytes = push_attributes(
                &mut b,
                std::slice::from_ref(a),
                policy.dictionary(),
                &hiding,
            )
            .map_err(|e| e.to_string())
            .and_then(|()| {
                b.finish_request(&secret, &authenticator)
                    .map_err(|e| e.to_string())
            })
            // After the header (20) and the Message-Authenticator every reply starts with (18).
            .map(|p| (!hidden).then(|| p.get(38..).unwrap_or_default().to_vec()));
            Wire {
                attr: a.clone(),
                bytes,
            }
        })
        .collect()
}

fn posture_file(path: &Path) -> anyhow::Result<PostureFacts> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let serde_json::Value::Object(sources) = v else {
        bail!("{}: a JSON object of sources", path.display());
    };
    let mut out = PostureFacts::default();
    for (source, facts) in sources {
        let answer = match facts {
            serde_json::Value::String(s) if s == "unknown_device" => {
                PostureAnswer::UnknownDevice("given as unknown_device".into())
            }
            serde_json::Value::String(s) => PostureAnswer::Unavailable(s),
            serde_json::Value::Object(f) => {
                let mut p = Posture::default();
                for (k, v) in f {
                    match (k.as_str(), v) {
                        ("compliant", serde_json::Value::Bool(b)) => p.compliant = Some(b),
                        ("managed", serde_json::Value::Bool(b)) => p.managed = Some(b),
                        ("risk_score", serde_json::Value::Number(n)) => p.risk_score = n.as_f64(),
                        ("os", serde_json::Value::String(s)) => p.os = Some(s),
                        ("os_version", serde_json::Value::String(s)) => p.os_version = Some(s),
                        ("last_seen", serde_json::Value::Number(n)) => p.last_seen = n.as_i64(),
                        (k, serde_json::Value::String(s)) => p.extra.push((k.to_owned(), s)),
                        (k, v) => bail!("{}: {source}.{k}: unexpected value {v}", path.display()),
                    }
                }
                PostureAnswer::Known(p)
            }
            other => bail!(
                "{}: {source}: an object of facts or a string saying why unavailable, not {other}",
                path.display()
            ),
        };
        out.sources.push(SourcePosture { source, answer });
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn attr_text(a: &ReplyAttribute) -> String {
    match a.tag {
        Some(t) => format!("{}:{t} = {}", a.name, a.value),
        None => format!("{} = {}", a.name, a.value),
    }
}

#[allow(clippy::print_stdout, reason = "explain is for the admin, on stdout")]
fn print_text(policy: &Policy, facts: &Facts, decision: &Decision, trace: &Trace, wire: &[Wire]) {
    let c = &facts.cert;
    println!(
        "policy {} ({} rule(s), time zone {})",
        policy.version(),
        policy.rules().len(),
        policy.zone().iana_name().unwrap_or("UTC")
    );
    // What a device or NAS supplied is escaped: a certificate cannot drive the terminal.
    println!(
        "device: {} (serial {}, issuer {})",
        Escaped(&c.subject),
        Escaped(&c.serial),
        Escaped(&c.issuer)
    );
    println!(
        "request: client {}, identity {:?}{}{}",
        Escaped(&facts.first.client),
        facts.first.eap_identity,
        facts
            .first
            .ssid
            .as_ref()
            .map(|s| format!(", ssid {s:?}"))
            .unwrap_or_default(),
        facts
            .first
            .calling_station
            .as_ref()
            .map(|s| format!(", station {}", Escaped(s)))
            .unwrap_or_default()
    );
    if !facts.posture.sources.is_empty() {
        println!("posture: {}", Escaped(&facts.posture.describe()));
    }
    for check in &trace.checks {
        println!("check: {}", Escaped(check));
    }
    println!();
    for &(i, failed) in &trace.tried {
        if let Some(rule) = policy.rules().get(i) {
            println!("  no     {} ({})", rule.name, rule.at);
            println!(
                "         {}",
                Escaped(&describe_failure(rule, failed, facts, policy.zone()))
            );
        }
    }
    match &trace.at {
        Some(at) => println!("  MATCH  {} ({})", trace.rule, at),
        None => println!("  decided by: {}", trace.rule),
    }
    println!();
    match decision {
        Decision::Accept { .. } => {
            println!(
                "Access-Accept{}{}",
                decision
                    .vlan()
                    .map(|v| format!(", VLAN {v}"))
                    .unwrap_or_default(),
                trace
                    .preset
                    .as_ref()
                    .map(|p| format!(", preset {p}"))
                    .unwrap_or_default()
            );
            println!(
                "reply attributes (the server adds User-Name, MS-MPPE-Send/Recv-Key, \
                 EAP-Message, Message-Authenticator):"
            );
            for w in wire {
                match &w.bytes {
                    Ok(Some(b)) => println!("  {:<40} {}", attr_text(&w.attr), hex(b)),
                    Ok(None) => println!(
                        "  {:<40} (hidden with the client's secret)",
                        attr_text(&w.attr)
                    ),
                    Err(e) => println!("  {:<40} CANNOT BE ENCODED: {e}", attr_text(&w.attr)),
                }
            }
        }
        Decision::Reject { reason, rule } => {
            println!("Access-Reject, reason {reason} (rule {rule})");
        }
    }
}

#[allow(
    clippy::print_stdout,
    reason = "explain --json is for scripts, on stdout"
)]
fn print_json(policy: &Policy, facts: &Facts, decision: &Decision, trace: &Trace, wire: &[Wire]) {
    let tried: Vec<_> = trace
        .tried
        .iter()
        .filter_map(|&(i, failed)| {
            let rule = policy.rules().get(i)?;
            let c = rule.conditions.get(failed)?;
            Some(json!({
                "rule": rule.name,
                "at": rule.at.to_string(),
                "failed": {
                    "condition": c.text,
                    "at": c.at.to_string(),
                    "device_has": c.field.describe(facts, policy.zone()),
                },
            }))
        })
        .collect();
    let (outcome, reason) = match decision {
        Decision::Accept { .. } => ("accept", None),
        Decision::Reject { reason, .. } => ("reject", Some(reason.to_string())),
    };
    let reply: Vec<_> = wire
        .iter()
        .map(|w| {
            json!({
                "name": w.attr.name,
                "tag": w.attr.tag,
                "value": w.attr.value,
                "wire": w.bytes.as_ref().ok().and_then(|b| b.as_ref().map(|b| hex(b).replace(' ', ""))),
                "hidden": matches!(w.bytes, Ok(None)),
                "error": w.bytes.as_ref().err(),
            })
        })
        .collect();
    let out = json!({
        "policy": policy.version(),
        "outcome": outcome,
        "reason": reason,
        "rule": trace.rule,
        "at": trace.at.as_ref().map(ToString::to_string),
        "preset": trace.preset,
        "vlan": decision.vlan(),
        "checks": trace.checks,
        "tried": tried,
        "reply": reply,
        "posture": facts
            .posture
            .sources
            .iter()
            .map(|s| json!({"source": s.source, "answer": s.answer.describe()}))
            .collect::<Vec<_>>(),
    });
    println!("{out}");
}
