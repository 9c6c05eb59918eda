//! Micro-benchmarks of the hot sans-IO pieces: packet decode/encode, Message-Authenticator,
//! MPPE key encryption, and one complete in-memory EAP-TLS handshake per TLS version.
//! Run with `cargo bench`; speed claims come from here and from bench/compare.sh, never
//! from timed tests.
#![allow(missing_docs, clippy::unwrap_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use anchord::bench::peer::Peer;
use anchord::eap::{Action, EapPacket, Event, Session, SessionConfig, Verdict};
use anchord::radius::crypto::{self, SharedSecret};
use anchord::radius::{AttrType, Code, ReplyBuilder, UnverifiedRequest};
use anchord::tls::{server_config, TlsVersion};
use criterion::{criterion_group, criterion_main, Criterion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
        c.bench_function(name, |bench| {
            bench.iter(|| {
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
                        Action::Finish(o) => break black_box(o),
                    };
                    let resp = peer.respond(&req).unwrap();
                    action = s.handle(Event::Response(&resp)).unwrap();
                }
            })
        });
    }
}

criterion_group!(benches, radius, handshake);
criterion_main!(benches);
