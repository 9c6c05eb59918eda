//! Micro-benchmarks of the hot sans-IO pieces: packet decode/encode, Message-Authenticator,
//! MPPE key encryption, one complete in-memory EAP-TLS handshake per TLS version (checked
//! before timing to end in EAP-Success with the version asked for and the device's MSK, and
//! checked to succeed on every timed run), and the crypto floor with the library anchord uses
//! (aws-lc-rs): the server's signature, the device chain verification as rustls's client
//! verifier does it, and the X25519 exchange, each alone.
//! Run with `cargo bench`; speed claims come from here and from bench/compare.sh, never
//! from timed tests.
#![allow(missing_docs, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use anchord::bench::peer::Peer;
use anchord::eap::{Action, EapPacket, Event, Outcome, Session, SessionConfig, Verdict};
use anchord::radius::crypto::{self, SharedSecret};
use anchord::radius::{AttrType, Code, ReplyBuilder, UnverifiedRequest};
use anchord::tls::{server_config, TlsVersion};
use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

fn secret() -> SharedSecret {
    SharedSecret::new(b"bench-secret".to_vec())
}

fn radius(c: &mut Criterion) {
    let mut b = ReplyBuilder::new(Code::AccessRequest, 1);
    b.push(AttrType::UserName, b"device-ecdsa").unwrap();
    b.push_eap(&[0x16; 1000]).unwrap();
    b.push(AttrType::State, &[7; 16]).unwrap();
    let request = b.finish_request(&secret(), &[9; 16]).unwrap();
    c.bench_function("access_request_parse_and_verify_1k", |bench| {
        bench.iter(|| {
            let req = UnverifiedRequest::parse(black_box(&request))
                .unwrap()
                .verify(&secret(), true)
                .unwrap();
            black_box(req.eap_message());
        })
    });
    c.bench_function("challenge_encode_and_sign_1k", |bench| {
        bench.iter(|| {
            let mut b = ReplyBuilder::new(Code::AccessChallenge, 1);
            b.push_eap(black_box(&[0x16; 1030])).unwrap();
            b.push(AttrType::State, &[7; 16]).unwrap();
            black_box(b.finish(&secret(), &[9; 16]).unwrap())
        })
    });
    c.bench_function("message_authenticator_1k", |bench| {
        bench.iter(|| {
            black_box(crypto::message_authenticator(
                &secret(),
                black_box(&request),
            ))
        })
    });
    c.bench_function("mppe_encrypt_32", |bench| {
        bench.iter(|| {
            black_box(crypto::mppe_encrypt(
                &secret(),
                &[1; 16],
                [0x80, 1],
                black_box(&[5; 32]),
            ))
        })
    });
}

fn handshake(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    anchord::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
    let p = dir.path();
    let chain: Vec<_> = CertificateDer::pem_file_iter(p.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(p.join("server.key")).unwrap();
    let root = CertificateDer::from_pem_file(p.join("root-ca.pem")).unwrap();
    let server = Arc::new(
        server_config(
            chain,
            key,
            std::slice::from_ref(&root),
            &[TlsVersion::V1_2, TlsVersion::V1_3],
        )
        .unwrap(),
    );
    let cfg = Arc::new(SessionConfig {
        tls: server,
        fragment_size: 1024,
        max_message: 65536,
        max_rounds: 100,
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let dev_chain: Vec<_> = CertificateDer::pem_file_iter(p.join("device-ecdsa.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let dev_key = PrivateKeyDer::from_pem_file(p.join("device-ecdsa.key")).unwrap();
    for (name, version) in [
        ("eap_tls12_handshake_in_memory", &rustls::version::TLS12),
        ("eap_tls13_handshake_in_memory", &rustls::version::TLS13),
    ] {
        let client = Arc::new(
            rustls::ClientConfig::builder_with_protocol_versions(&[version])
                .with_root_certificates(roots.clone())
                .with_client_auth_cert(dev_chain.clone(), dev_key.clone_key())
                .unwrap(),
        );
        // Once, untimed: the handshake succeeds, with this version and the device's keys.
        let (outcome, peer) = eap_tls(&cfg, &client);
        let Outcome::Success { keys, .. } = outcome else {
            panic!("{name}: the handshake did not succeed: {outcome:?}");
        };
        assert_eq!(peer.version(), Some(version.version), "{name}");
        assert_eq!(*keys.msk, *peer.keys().unwrap().msk, "{name}: MSK");
        c.bench_function(name, |bench| {
            bench.iter(|| {
                let (outcome, _) = eap_tls(&cfg, &client);
                assert!(matches!(outcome, Outcome::Success { .. }));
                black_box(outcome)
            })
        });
    }
}

/// One EAP-TLS conversation in memory, the checks allowing the device.
fn eap_tls(cfg: &Arc<SessionConfig>, client: &Arc<rustls::ClientConfig>) -> (Outcome, Peer) {
    let mut peer = Peer::new(
        client.clone(),
        "radius.anchord.test".try_into().unwrap(),
        1024,
    )
    .unwrap();
    let (mut s, mut action) = Session::start(cfg.clone(), 1, None).unwrap();
    loop {
        let req: EapPacket = match action {
            Action::Send(r) => r,
            Action::CheckPeer(_) => {
                action = s.handle(Event::Verdict(Verdict::Allow)).unwrap();
                continue;
            }
            Action::Finish(o) => return (o, peer),
        };
        let resp = peer.respond(&req).unwrap();
        action = s.handle(Event::Response(&resp)).unwrap();
    }
}

/// The operations an authentication cannot avoid, one by one, with aws-lc-rs as rustls
/// calls it. bench/compare.sh prints the same floor from `openssl speed`.
fn crypto_floor(c: &mut Criterion) {
    use aws_lc_rs::{agreement, rand::SystemRandom, signature};
    let dir = tempfile::tempdir().unwrap();
    anchord::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
    let der = |name: &str| {
        PrivateKeyDer::from_pem_file(dir.path().join(name))
            .unwrap()
            .secret_der()
            .to_vec()
    };
    let rng = SystemRandom::new();
    let msg = [7u8; 200];
    let rsa = signature::RsaKeyPair::from_pkcs8(&der("server-rsa.key")).unwrap();
    c.bench_function("floor_rsa2048_sign_pss_sha256", |bench| {
        let mut sig = vec![0; rsa.public_modulus_len()];
        bench.iter(|| {
            rsa.sign(&signature::RSA_PSS_SHA256, &rng, &msg, &mut sig)
                .unwrap();
        })
    });
    let ec = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &der("server.key"),
    )
    .unwrap();
    c.bench_function("floor_ecdsa_p256_sign", |bench| {
        bench.iter(|| black_box(ec.sign(&rng, &msg).unwrap()))
    });
    let sig = ec.sign(&rng, &msg).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        signature::KeyPair::public_key(&ec).as_ref().to_vec(),
    );
    c.bench_function("floor_ecdsa_p256_verify", |bench| {
        bench.iter(|| public.verify(&msg, sig.as_ref()).unwrap())
    });
    // The device chain (leaf, issuing CA) to the root, as rustls's client verifier checks it
    // in every handshake: signatures, names, dates, EKU.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.path().join("root-ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .unwrap();
    let chain: Vec<_> = CertificateDer::pem_file_iter(dir.path().join("device-ecdsa.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let (leaf, intermediates) = chain.split_first().unwrap();
    assert_eq!(intermediates.len(), 1, "leaf and issuing CA");
    let now = UnixTime::now();
    verifier
        .verify_client_cert(leaf, intermediates, now)
        .unwrap();
    c.bench_function("floor_device_chain_verify", |bench| {
        bench.iter(|| {
            black_box(
                verifier
                    .verify_client_cert(black_box(leaf), intermediates, now)
                    .unwrap(),
            )
        })
    });
    c.bench_function("floor_x25519_keygen_and_agree", |bench| {
        let peer = agreement::PrivateKey::generate(&agreement::X25519).unwrap();
        let peer_public = peer.compute_public_key().unwrap();
        bench.iter(|| {
            let mine = agreement::PrivateKey::generate(&agreement::X25519).unwrap();
            let public = mine.compute_public_key().unwrap();
            black_box(public.as_ref());
            agreement::agree(
                &mine,
                agreement::UnparsedPublicKey::new(&agreement::X25519, peer_public.as_ref()),
                (),
                |k| Ok(black_box(k.len())),
            )
            .unwrap()
        })
    });
}

/// One decision with the 50-rule policy of `bench/compare.sh policy` (49 rules failing on a
/// regex, the default last) against the built-in one, on the facts of a dev device.
fn policy(c: &mut Criterion) {
    use anchord::policy::facts::CertFacts;
    use anchord::policy::{
        evaluate, Decision, Facts, Policy, PolicyFile, PostureFacts, RequestFacts, RevocationFacts,
        RevocationOutcome,
    };
    use anchord::radius::dictionary::Dictionary;
    let dir = tempfile::tempdir().unwrap();
    anchord::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
    let chain: Vec<_> = CertificateDer::pem_file_iter(dir.path().join("device-ecdsa.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let facts = Facts {
        now: 1_800_000_000,
        cert: CertFacts::of(&chain),
        tls_version: "1.2",
        first: RequestFacts::default(),
        last: RequestFacts::default(),
        revocation: RevocationFacts {
            outcome: RevocationOutcome::Good,
            source: None,
            detail: "good".into(),
        },
        posture: PostureFacts::default(),
    };
    let mut text = String::new();
    for i in 0..49 {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nwhen = {{ cert.cn = {{ prefix = \"device\" }}, \
             tls_version = [\"1.2\", \"1.3\"], cert.san_dns = {{ regex = '^host-{i}\\.' }} }}\n\
             vlan = {}\nattributes = [\"Filter-Id = r{i}\"]\n\n",
            200 + i
        ));
    }
    text.push_str(
        "[[rule]]\nname = \"default\"\nvlan = 100\nattributes = [\"Session-Timeout = 3600\"]\n",
    );
    let dict = Arc::new(Dictionary::builtin().unwrap());
    let rules = Policy::compile(
        &[PolicyFile {
            name: "50.toml".into(),
            text,
        }],
        dict.clone(),
        jiff::tz::TimeZone::UTC,
    )
    .unwrap();
    let builtin = Policy::builtin(Some("100".into()), dict);
    for (name, p) in [
        ("policy_builtin", &builtin),
        ("policy_50_rules_last_matches", &rules),
    ] {
        let (d, _) = evaluate(p, &facts);
        assert_eq!(d.vlan(), Some("100"), "{name}: {d:?}");
        assert!(matches!(d, Decision::Accept { .. }));
        c.bench_function(name, |bench| {
            bench.iter(|| black_box(evaluate(p, black_box(&facts))))
        });
    }
}

criterion_group!(benches, radius, handshake, crypto_floor, policy);
criterion_main!(benches);
