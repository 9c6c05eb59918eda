//! `anchord demo`: a dev PKI, a server on loopback, every eapol-tests scenario run with
//! eapol_test, and a table of what the server decided.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Runtime;
use crate::posture::devmdm::{DevMdm, DEV_CLIENT_ID};
use crate::server::{AuditRecord, Server};

/// eapol_test scenarios, shipped in `eapol-tests/` and embedded here.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "tls12-ecdsa",
        include_str!("../../eapol-tests/tls12-ecdsa.conf"),
    ),
    (
        "tls12-rsa",
        include_str!("../../eapol-tests/tls12-rsa.conf"),
    ),
    (
        "tls13-ecdsa",
        include_str!("../../eapol-tests/tls13-ecdsa.conf"),
    ),
    (
        "fragment-200",
        include_str!("../../eapol-tests/fragment-200.conf"),
    ),
    ("expired", include_str!("../../eapol-tests/expired.conf")),
    (
        "wrong-eku",
        include_str!("../../eapol-tests/wrong-eku.conf"),
    ),
    (
        "unknown-ca",
        include_str!("../../eapol-tests/unknown-ca.conf"),
    ),
    (
        "policy-other-identity",
        include_str!("../../eapol-tests/policy-other-identity.conf"),
    ),
];

/// The shipped example policy (`policies/`), embedded: the demo serves with it.
const EXAMPLE_POLICY: &[(&str, &str)] = &[
    (
        "00-definitions.toml",
        include_str!("../../policies/00-definitions.toml"),
    ),
    (
        "50-rules.toml",
        include_str!("../../policies/50-rules.toml"),
    ),
    (
        "tests/example.toml",
        include_str!("../../policies/tests/example.toml"),
    ),
];

const DEMO_SECRET: &str = "demo-secret";

/// The `# expect: accept|reject` line of a scenario.
pub fn expectation(conf: &str) -> Option<&str> {
    conf.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .map(str::trim)
}

/// The `identity="..."` of a scenario.
pub fn identity(conf: &str) -> Option<&str> {
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("identity=\"")?.strip_suffix('"'))
}

/// The extra eapol_test flags on a scenario's `# args:` line.
pub fn extra_args(conf: &str) -> Vec<&str> {
    conf.lines()
        .find_map(|l| l.strip_prefix("# args: "))
        .map(|a| a.split_whitespace().collect())
        .unwrap_or_default()
}

/// What eapol_test reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EapolResult {
    /// It printed SUCCESS.
    pub success: bool,
    /// It printed "MPPE keys OK: 1  mismatch: 0".
    pub mppe_ok: bool,
}

/// Reads eapol_test's output.
pub fn parse_eapol_output(out: &str) -> EapolResult {
    EapolResult {
        success: out.lines().any(|l| l.trim() == "SUCCESS"),
        mppe_ok: out.contains("MPPE keys OK: 1  mismatch: 0"),
    }
}

/// Label of the demo's server token (the server's TLS key only).
pub const DEMO_TOKEN: &str = "anchord-demo";
/// Label of the demo's CA token (root and issuing CA keys; the server never logs into it).
pub const DEMO_CA_TOKEN: &str = "ca-anchord-demo";

/// The dev config the demo serves with: server key in files, or on the demo token.
pub fn demo_config(listen: &str, secret: &str, hsm: bool) -> String {
    let key = if hsm {
        format!(
            "[pki]\n# The server token: the server key only. The CA keys are on `{DEMO_CA_TOKEN}`,\n\
             # whose PIN ($ANCHORD_CA_PIN) the server never needs.\n\
             token = \"{DEMO_TOKEN}\"\n# PIN from $ANCHORD_HSM_PIN (demo.sh sets it)"
        )
    } else {
        "[tls]\ncertificate = \"server.pem\"\nprivate_key = \"server.key\"\nca = [\"root-ca.pem\"]"
            .to_owned()
    };
    format!(
        r#"# Written by `anchord demo`: dev PKI in this folder, loopback only.
[server]
listen = ["{listen}"]

{key}

# The example policy from the repository's policies/ (copied here by the demo).
[policy]
dir = "policies"

[[client]]
name = "demo-nas"
address = "127.0.0.1"
secret = "{secret}"
"#
    )
}

#[allow(clippy::print_stdout, reason = "the demo's table is for a person")]
pub(super) async fn run(dir: &Path, eapol_test: &Path, hsm: bool) -> anyhow::Result<ExitCode> {
    let now = time::OffsetDateTime::now_utc();
    crate::pki::dev::generate(dir, now).context("making the dev PKI")?;
    let server_keys = if hsm {
        let d = dir.to_path_buf();
        tokio::task::spawn_blocking(move || hsm_pki(&d, now)).await??
    } else {
        Vec::new()
    };
    for (name, text) in EXAMPLE_POLICY {
        let path = dir.join("policies").join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    // The example policy asks the MDM about Staff laptops: a dev MDM on loopback plays it.
    let mdm = DevMdm::new(
        crate::posture::devmdm::dev_devices(),
        Some((DEV_CLIENT_ID.to_owned(), DEMO_MDM_SECRET.to_owned())),
    );
    let mdm_addr = mdm.spawn("127.0.0.1:0".parse()?).await?;
    let secret_file = dir.join("mdm-client.secret");
    write_secret(&secret_file, DEMO_MDM_SECRET)?;
    let hook_secret = format!("{:032x}", rand::random::<u128>());
    let hook_file = dir.join("mdm-webhook.secret");
    write_secret(&hook_file, &hook_secret)?;
    let admin = crate::admin::bind("127.0.0.1:0".parse()?).await?;
    let admin_addr = admin.local_addr()?;
    let cfg_path = dir.join("anchord.toml");
    let text = format!(
        "{}{}
[posture.source.webhook]
hmac_secret_file = \"{}\"
",
        demo_config("127.0.0.1:0", DEMO_SECRET, hsm),
        crate::posture::devmdm::source_toml("mdm", mdm_addr, &secret_file),
        hook_file.display()
    );
    std::fs::write(&cfg_path, text)?;
    let (config, runtime) = Runtime::load(&cfg_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::bind(Arc::new(config), Arc::new(runtime), Some(tx))?;
    tokio::spawn(crate::admin::serve(
        admin,
        server.shared(),
        CancellationToken::new(),
    ));
    let Some(addr) = server.local_addrs().into_iter().next() else {
        bail!("no socket bound")
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(shutdown.clone()));
    println!(
        "anchord demo: server on {addr}, dev PKI in {}",
        dir.display()
    );
    println!(
        "posture: a dev MDM (Graph-shaped, OAuth2) on {mdm_addr}; the example policy asks it \
         about Staff laptops"
    );
    if hsm {
        println!(
            "CA token: `{DEMO_CA_TOKEN}` (root and issuing CA keys; devices issued from it; \
             its PIN is not in the server's config)"
        );
        println!(
            "server token: `{DEMO_TOKEN}` (server key only: private keys seen with the server's \
             PIN: {}; read-only sessions)",
            server_keys.join(", ")
        );
        println!(
            "both PKCS#11 tokens in SoftHSM2 ($SOFTHSM2_CONF); keys sensitive, never \
             extractable, sign only, allowed mechanisms set"
        );
    }
    println!();
    println!(
        "{:<22} {:<18} {:<8} {:<8} {:<4} {:<5} {:<5} {:<20} REASON",
        "SCENARIO", "DEVICE", "EXPECT", "RESULT", "TLS", "VLAN", "MPPE", "RULE"
    );
    let mut all_as_expected = true;
    let mut runs: Vec<(&str, &str, Option<&str>)> =
        SCENARIOS.iter().map(|(n, c)| (*n, *c, None)).collect();
    // Then the MDM says the Staff laptop turned non-compliant, by a signed webhook event:
    // its next authentication lands in quarantine though its certificate is still good.
    runs.push(("posture-noncompliant", TLS13_ECDSA, Some("999")));
    for (name, conf, want_vlan) in runs {
        if name == "posture-noncompliant" {
            push_noncompliant(&mdm, admin_addr, &hook_secret).await?;
        }
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf)?;
        let mut cmd = tokio::process::Command::new(eapol_test);
        cmd.current_dir(dir)
            .args(["-c", &format!("{name}.conf"), "-a", &addr.ip().to_string()])
            .args([
                "-p",
                &addr.port().to_string(),
                "-s",
                DEMO_SECRET,
                "-t",
                "15",
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd.args(extra_args(conf));
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running {}", eapol_test.display()))?;
        let eapol = parse_eapol_output(&String::from_utf8_lossy(&out.stdout));
        // The server queues its record before it sends the final answer, so once eapol_test
        // has that answer the record is already here: no waiting. A run that never got one
        // has no record, and the row says so.
        let mut record = None;
        while let Ok(r) = rx.try_recv() {
            record = Some(r);
        }
        let expect = expectation(conf).unwrap_or("?");
        let result = if eapol.success { "accept" } else { "reject" };
        let ok = result == expect
            && (!eapol.success || eapol.mppe_ok)
            && record.as_ref().is_some_and(|r| {
                r.outcome == result && want_vlan.is_none_or(|v| r.vlan.as_deref() == Some(v))
            });
        all_as_expected &= ok;
        let r = record.unwrap_or_else(|| empty_record(addr));
        println!(
            "{:<22} {:<18} {:<8} {:<8} {:<4} {:<5} {:<5} {:<20} {}{}",
            name,
            identity(conf).unwrap_or("?"),
            expect,
            result,
            if r.tls_version.is_empty() {
                "-"
            } else {
                r.tls_version
            },
            r.vlan.as_deref().unwrap_or("-"),
            if eapol.success {
                if eapol.mppe_ok {
                    "ok"
                } else {
                    "BAD"
                }
            } else {
                "-"
            },
            r.policy.as_ref().map_or("-", |p| p.rule.as_str()),
            r.reason,
            if ok { "" } else { "   <-- not as expected" }
        );
    }
    shutdown.cancel();
    let _ = task.await;
    println!();
    if all_as_expected {
        println!("every device got the expected answer");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("some devices did not get the expected answer (run with --debug for details)");
        Ok(ExitCode::FAILURE)
    }
}

/// The dev MDM's OAuth2 client secret in the demo.
const DEMO_MDM_SECRET: &str = "demo-mdm-secret";

/// The Staff laptop's TLS 1.3 scenario, run again once its posture changed.
const TLS13_ECDSA: &str = include_str!("../../eapol-tests/tls13-ecdsa.conf");

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("{text}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Marks the Staff laptop non-compliant at the dev MDM and pushes the change to the server
/// as the MDM would: a signed event to the admin listener's webhook.
#[allow(clippy::print_stdout, reason = "the demo's table is for a person")]
async fn push_noncompliant(
    mdm: &DevMdm,
    admin: std::net::SocketAddr,
    secret: &str,
) -> anyhow::Result<()> {
    use crate::pki::dev::STAFF_INTUNE_ID;
    let mut record = serde_json::Value::Null;
    mdm.set(|k| {
        for d in &mut k.devices {
            if d["id"] == STAFF_INTUNE_ID {
                d["complianceState"] = "noncompliant".into();
                record = d.clone();
            }
        }
    });
    let body = serde_json::json!({ "device": STAFF_INTUNE_ID, "record": record }).to_string();
    let ts = crate::clock::unix_now().to_string();
    let sig = crate::posture::webhook::sign(secret, &ts, body.as_bytes());
    let resp = crate::tls::http_client(std::time::Duration::from_secs(10))
        .build()?
        .post(format!("http://{admin}/v1/posture/events/mdm"))
        .header("X-Anchord-Timestamp", ts)
        .header("X-Anchord-Signature", sig)
        .body(body)
        .send()
        .await?;
    println!(
        "{:<22} the MDM marks the Staff laptop non-compliant: signed event -> HTTP {}",
        "(posture webhook)",
        resp.status().as_u16()
    );
    Ok(())
}

/// Builds the CA on a fresh SoftHSM2 CA token and the server key on a server token, and
/// issues the demo devices from the CA; the "unknown CA" device stays from the file PKI, whose
/// CA is not on the token. Returns the private key labels the server's login sees.
fn hsm_pki(dir: &Path, now: time::OffsetDateTime) -> anyhow::Result<Vec<String>> {
    use crate::pki::ca::{DeviceSpec, ServerToken, TokenCa};
    use crate::pki::hsm::{KeyAlgorithm, Pin, TokenRef};
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        bail!("--hsm needs a SoftHSM2 token folder: run ./demo.sh, or set SOFTHSM2_CONF");
    }
    let pin = |var: &str| {
        std::env::var(var)
            .map(Pin::new)
            .with_context(|| format!("--hsm needs {var}"))
    };
    let ca = TokenCa {
        token: TokenRef {
            module: super::pki::SOFTHSM_MODULE.into(),
            label: DEMO_CA_TOKEN.into(),
        },
        pin: pin("ANCHORD_CA_PIN")?,
    };
    let server = ServerToken {
        token: TokenRef {
            module: super::pki::SOFTHSM_MODULE.into(),
            label: DEMO_TOKEN.into(),
        },
        pin: pin("ANCHORD_HSM_PIN")?,
    };
    ca.init(
        &server,
        &pin("ANCHORD_HSM_SO_PIN")?,
        KeyAlgorithm::EcdsaP256,
        "radius.anchord.test",
        now,
    )?;
    // The departments the example policy tells apart, as in the file PKI (pki::dev).
    let devices = [
        (
            "device-ecdsa",
            Some("Staff"),
            KeyAlgorithm::EcdsaP256,
            365,
            false,
        ),
        (
            "device-rsa",
            Some("IoT"),
            KeyAlgorithm::Rsa(2048),
            365,
            false,
        ),
        ("device-expired", None, KeyAlgorithm::EcdsaP256, -1, false),
        ("device-wrong-eku", None, KeyAlgorithm::EcdsaP256, 365, true),
    ];
    for (name, ou, key, days, server_auth_only) in devices {
        let sans: Vec<String> = crate::pki::dev::intune_id(name)
            .map(|id| format!("IntuneDeviceId://{id}"))
            .into_iter()
            .collect();
        let spec = DeviceSpec {
            name,
            sans: &sans,
            ou,
            days,
            ocsp_url: None,
            key,
            server_auth_only,
            csr_pem: None,
        };
        ca.issue(&spec, dir, now)?;
    }
    crate::pki::ca::export_ca(&server.token, dir)?;
    Ok(server.keys()?.into_iter().map(|k| k.label).collect())
}

fn empty_record(addr: std::net::SocketAddr) -> AuditRecord {
    AuditRecord {
        outcome: "none",
        reason: "no answer recorded".into(),
        nas: String::new(),
        nas_addr: addr,
        identity: String::new(),
        cert_subject: String::new(),
        cert_serial: String::new(),
        cert_issuer: String::new(),
        tls_version: "",
        rounds: 0,
        duration_ms: 0,
        vlan: None,
        revocation: "-".into(),
        posture: "-".into(),
        policy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_states_its_expectation_and_identity() {
        for (name, conf) in SCENARIOS {
            assert!(
                matches!(expectation(conf), Some("accept" | "reject")),
                "{name}"
            );
            assert!(identity(conf).is_some(), "{name}");
            assert_eq!(
                extra_args(conf).is_empty(),
                *name != "fragment-200",
                "{name}"
            );
        }
    }

    #[test]
    fn parses_eapol_test_verdicts() {
        let ok = parse_eapol_output("...\nMPPE keys OK: 1  mismatch: 0\nSUCCESS\n");
        assert_eq!(
            ok,
            EapolResult {
                success: true,
                mppe_ok: true
            }
        );
        let bad = parse_eapol_output("MPPE keys OK: 0  mismatch: 1\nFAILURE\n");
        assert_eq!(
            bad,
            EapolResult {
                success: false,
                mppe_ok: false
            }
        );
    }
}
