//! The dynamic authorization client (RFC 5176): Disconnect-Requests and CoA-Requests to a
//! NAS's Dynamic Authorization Server for a live session, retransmitted with back-off, the
//! answer verified (Response Authenticator, Message-Authenticator).
//!
//! A request names the session only with what a NAS accepts for that (hostapd refuses
//! anything else with Error-Cause 401): User-Name, Calling-Station-Id, Acct-Session-Id,
//! NAS-IP-Address or NAS-IPv6-Address, NAS-Identifier; plus Event-Timestamp (hostapd
//! drops a request without one when it requires it, or outside its time window) and
//! Message-Authenticator (first). A CoA-Request adds the session's new authorization
//! attributes (RFC 5176 §3.1), never hidden ones (their hiding needs a Request
//! Authenticator that, in a CoA-Request, is computed over them).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::registry::LiveSession;
use crate::policy::ReplyAttribute;
use crate::radius::attr::AttrType;
use crate::radius::dictionary::Dictionary;
use crate::radius::packet::{verify_reply, Code};
use crate::radius::reply::ReplyBuilder;
use crate::radius::SharedSecret;

/// Event-Timestamp (55).
const EVENT_TIMESTAMP: u8 = 55;
/// Error-Cause (101).
const ERROR_CAUSE: u8 = 101;
/// Error-Cause "Session Context Not Found" (RFC 5176 §3.5).
pub const SESSION_NOT_FOUND: u32 = 503;
/// How long each try waits for the answer: the first, then doubled.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// Tries in all.
const TRIES: u32 = 3;

/// What the NAS answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Disconnect-ACK (the session is gone) or CoA-ACK (it has its new authorization).
    Ack,
    /// Disconnect-NAK or CoA-NAK, with its Error-Cause if any.
    Nak(Option<u32>),
    /// No verified answer after every try.
    NoAnswer,
}

impl Answer {
    /// For logs, audit records and metrics labels.
    pub fn label(&self) -> String {
        match self {
            Self::Ack => "ack".into(),
            Self::Nak(Some(c)) => format!("nak {c}"),
            Self::Nak(None) => "nak".into(),
            Self::NoAnswer => "no answer".into(),
        }
    }
}

/// What a request asks of the NAS.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    /// End the session (Disconnect-Request).
    Disconnect,
    /// Give the session these attributes (CoA-Request), encoded with the dictionary.
    Change(&'a [ReplyAttribute], &'a Dictionary),
}

impl Ask<'_> {
    /// The request, ACK and NAK codes.
    fn codes(self) -> (Code, Code, Code) {
        match self {
            Self::Disconnect => (
                Code::DisconnectRequest,
                Code::DisconnectAck,
                Code::DisconnectNak,
            ),
            Self::Change(..) => (Code::CoaRequest, Code::CoaAck, Code::CoaNak),
        }
    }
}

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// An attribute the dictionary does not know or cannot encode, or one too long.
    #[error("{0}")]
    Encode(String),
    /// An attribute the dictionary hides (`encrypt=`): not sent in a CoA-Request.
    #[error("`{0}` is a hidden attribute: not sent in a CoA-Request")]
    Hidden(String),
}

/// The request for `session`, signed with `secret`, with this identifier and
/// Event-Timestamp (Unix seconds).
///
/// # Errors
/// An attribute that does not fit, is unknown, or is hidden.
pub fn request(
    ask: Ask<'_>,
    session: &LiveSession,
    identifier: u8,
    secret: &SharedSecret,
    now: i64,
) -> Result<Vec<u8>, RequestError> {
    let enc = |e: crate::radius::reply::EncodeError| RequestError::Encode(e.to_string());
    let mut b = ReplyBuilder::new(ask.codes().0, identifier);
    if let Some(u) = &session.user_name {
        b.push(AttrType::UserName, u.as_bytes()).map_err(enc)?;
    }
    if let Some(mac) = &session.station {
        b.push(AttrType::CallingStationId, mac.as_bytes())
            .map_err(enc)?;
    }
    b.push(
        AttrType::Other(super::accounting::ACCT_SESSION_ID),
        session.key.acct_session_id.as_bytes(),
    )
    .map_err(enc)?;
    match session
        .nas_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    {
        Some(IpAddr::V4(v4)) => {
            b.push(AttrType::NasIpAddress, &v4.octets()).map_err(enc)?;
        }
        Some(IpAddr::V6(v6)) => {
            b.push(
                AttrType::Other(super::accounting::NAS_IPV6_ADDRESS),
                &v6.octets(),
            )
            .map_err(enc)?;
        }
        None => {}
    }
    if let Some(id) = &session.nas_identifier {
        b.push(AttrType::NasIdentifier, id.as_bytes())
            .map_err(enc)?;
    }
    let ts = u32::try_from(now).unwrap_or(0).to_be_bytes();
    b.push(AttrType::Other(EVENT_TIMESTAMP), &ts).map_err(enc)?;
    if let Ask::Change(attrs, dictionary) = ask {
        for a in attrs {
            let (def, _) = dictionary
                .encode(&a.name, a.tag, &a.value)
                .map_err(RequestError::Encode)?;
            if def.encrypt != 0 {
                return Err(RequestError::Hidden(a.name.clone()));
            }
        }
        // Nothing is hidden, so the hiding keys are never used.
        let hiding = super::reply::Hiding {
            secret,
            authenticator: &[0; 16],
            salt: 0x8000,
        };
        super::reply::push_attributes(&mut b, attrs, dictionary, &hiding)
            .map_err(|e| RequestError::Encode(e.to_string()))?;
    }
    b.finish_signed_request(secret).map_err(enc)
}

/// Sends the request for `session` to the DAS at `to` and waits for its verified answer,
/// trying [`TRIES`] times (the same packet: RFC 5080 §2.2.1), each wait twice the one
/// before.
///
/// # Errors
/// The request could not be made (see [`request`]); nothing was sent.
pub async fn ask(
    what: Ask<'_>,
    session: &LiveSession,
    to: SocketAddr,
    secret: &SharedSecret,
) -> Result<Answer, RequestError> {
    let identifier: u8 = rand::random();
    let request = request(what, session, identifier, secret, crate::clock::unix_now())?;
    let (_, ack, nak) = what.codes();
    Ok(exchange(&request, ack, nak, to, secret).await)
}

/// Sends `request` until a verified `ack` or `nak` with its identifier comes back.
async fn exchange(
    request: &[u8],
    ack: Code,
    nak: Code,
    to: SocketAddr,
    secret: &SharedSecret,
) -> Answer {
    let Some((identifier, auth)) = request
        .get(4..20)
        .and_then(|a| <[u8; 16]>::try_from(a).ok())
        .zip(request.get(1).copied())
        .map(|(a, id)| (id, a))
    else {
        return Answer::NoAnswer;
    };
    let local: SocketAddr = if to.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let Ok(sock) = UdpSocket::bind(local).await else {
        return Answer::NoAnswer;
    };
    // Connected: datagrams from anyone but the DAS are not read.
    if sock.connect(to).await.is_err() {
        return Answer::NoAnswer;
    }
    let mut wait = FIRST_WAIT;
    let mut buf = vec![0u8; crate::radius::MAX_PACKET];
    for _ in 0..TRIES {
        if sock.send(request).await.is_err() {
            return Answer::NoAnswer;
        }
        let deadline = tokio::time::Instant::now() + wait;
        // Answers that do not verify (or to another identifier) are ignored, not ends; so is
        // an ICMP error (anyone can send one): the try still waits its time out.
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => {
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Err(_) => break,
            };
            let Ok((code, id, attrs)) =
                verify_reply(buf.get(..n).unwrap_or_default(), &auth, secret)
            else {
                continue;
            };
            if id != identifier {
                continue;
            }
            let cause = attrs
                .iter()
                .find(|a| a.ty == AttrType::Other(ERROR_CAUSE))
                .and_then(|a| a.value.try_into().ok().map(u32::from_be_bytes));
            if code == ack {
                return Answer::Ack;
            }
            if code == nak {
                return Answer::Nak(cause);
            }
        }
        wait *= 2;
    }
    Answer::NoAnswer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::crypto;
    use crate::radius::packet::parse_attributes;
    use crate::server::registry::SessionKey;
    use crate::server::reply::tests::attr;

    fn session() -> LiveSession {
        LiveSession {
            key: SessionKey {
                nas: "ap".into(),
                acct_session_id: "0123456789ABCDEF".into(),
                auth: None,
            },
            auth: None,
            user_name: Some("device-ecdsa".into()),
            station: Some("02-00-00-00-00-01".into()),
            nas_addr: [127, 0, 0, 1].into(),
            nas_ip: Some("127.0.0.1".into()),
            nas_identifier: Some("ap1".into()),
            started: 1,
            updated: 1,
            event_time: 1,
            generation: 0,
        }
    }

    #[test]
    fn a_disconnect_request_carries_only_what_identifies_the_session_and_is_signed() {
        let secret = SharedSecret::new(b"das-secret".to_vec());
        let p = request(Ask::Disconnect, &session(), 9, &secret, 1_800_000_000).unwrap();
        assert_eq!(p[0], 40);
        assert_eq!(p[1], 9);
        let attrs = parse_attributes(&p[20..]).unwrap();
        let types: Vec<u8> = attrs.iter().map(|a| a.ty.code()).collect();
        // Message-Authenticator first; nothing a DAS would refuse (no Proxy-State, no State).
        assert_eq!(types, vec![80, 1, 31, 44, 4, 32, 55]);
        // The Request Authenticator: MD5 over the packet with that field zero, then the
        // secret (checked with the md-5 crate directly).
        use md5::{Digest, Md5};
        let mut zeroed = p.clone();
        zeroed[4..20].fill(0);
        let mut h = Md5::new();
        h.update(&zeroed);
        h.update(b"das-secret");
        assert_eq!(&h.finalize()[..], &p[4..20]);
        // The Message-Authenticator: HMAC-MD5 with that field and its own value zero.
        let mut for_ma = zeroed.clone();
        for_ma[22..38].fill(0);
        assert_eq!(
            &crypto::message_authenticator(&secret, &for_ma)[..],
            &p[22..38]
        );
    }

    /// A DAS on loopback answering with `code` (and `cause`), after ignoring `drop_first`
    /// requests; the requests it saw.
    async fn das(
        code: u8,
        cause: Option<u32>,
        drop_first: usize,
        secret: &'static [u8],
    ) -> (SocketAddr, tokio::task::JoinHandle<usize>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut seen = 0;
            loop {
                let Ok(Ok((n, from))) =
                    tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf)).await
                else {
                    return seen;
                };
                seen += 1;
                if seen <= drop_first {
                    continue;
                }
                let req = &buf[..n];
                // A forged answer first (wrong secret): must be ignored.
                let mut bad = ReplyBuilder::new(Code::from_number(code), req[1]);
                bad.push(AttrType::Other(ERROR_CAUSE), &1u32.to_be_bytes())
                    .unwrap();
                let auth: [u8; 16] = req[4..20].try_into().unwrap();
                let forged = bad
                    .finish(&SharedSecret::new(b"wrong".to_vec()), &auth)
                    .unwrap();
                sock.send_to(&forged, from).await.unwrap();
                let mut b = ReplyBuilder::new(Code::from_number(code), req[1]);
                if let Some(c) = cause {
                    b.push(AttrType::Other(ERROR_CAUSE), &c.to_be_bytes())
                        .unwrap();
                }
                let reply = b
                    .finish(&SharedSecret::new(secret.to_vec()), &auth)
                    .unwrap();
                sock.send_to(&reply, from).await.unwrap();
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_icmp_error_does_not_spend_the_tries_at_once() {
        let secret = SharedSecret::new(b"das-secret".to_vec());
        // Nobody listens yet: the first try gets "port unreachable".
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let sock = UdpSocket::bind(to).await.unwrap();
            let mut buf = [0u8; 4096];
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let req = &buf[..n];
            let auth: [u8; 16] = req[4..20].try_into().unwrap();
            let ack = ReplyBuilder::new(Code::DisconnectAck, req[1])
                .finish(&SharedSecret::new(b"das-secret".to_vec()), &auth)
                .unwrap();
            sock.send_to(&ack, from).await.unwrap();
        });
        assert_eq!(
            ask(Ask::Disconnect, &session(), to, &secret).await.unwrap(),
            Answer::Ack
        );
        late.await.unwrap();
    }

    #[tokio::test]
    async fn the_answer_is_the_verified_one_and_a_lost_request_is_sent_again() {
        let secret = SharedSecret::new(b"das-secret".to_vec());
        // The first request is lost: the Ack answers the retransmission.
        let (addr, _) = das(41, None, 1, b"das-secret").await;
        assert_eq!(
            ask(Ask::Disconnect, &session(), addr, &secret)
                .await
                .unwrap(),
            Answer::Ack
        );
        let (addr, _) = das(42, Some(SESSION_NOT_FOUND), 0, b"das-secret").await;
        assert_eq!(
            ask(Ask::Disconnect, &session(), addr, &secret)
                .await
                .unwrap(),
            Answer::Nak(Some(SESSION_NOT_FOUND))
        );
        // A DAS with another secret: its answers never verify.
        let (addr, _) = das(41, None, 0, b"other").await;
        assert_eq!(
            ask(Ask::Disconnect, &session(), addr, &secret)
                .await
                .unwrap(),
            Answer::NoAnswer
        );
    }

    #[test]
    fn a_coa_request_carries_the_session_and_its_new_authorization_never_a_hidden_one() {
        let secret = SharedSecret::new(b"das-secret".to_vec());
        let dict = Dictionary::builtin().unwrap();
        let vlan = [
            attr("Tunnel-Type", Some(0), "VLAN"),
            attr("Tunnel-Medium-Type", Some(0), "IEEE-802"),
            attr("Tunnel-Private-Group-Id", Some(0), "999"),
        ];
        let p = request(
            Ask::Change(&vlan, &dict),
            &session(),
            7,
            &secret,
            1_800_000_000,
        )
        .unwrap();
        assert_eq!(p[0], 43, "CoA-Request");
        let attrs = parse_attributes(&p[20..]).unwrap();
        let types: Vec<u8> = attrs.iter().map(|a| a.ty.code()).collect();
        assert_eq!(types, vec![80, 1, 31, 44, 4, 32, 55, 64, 65, 81]);
        assert_eq!(attrs[9].value, b"\0999", "tag 0, then the VLAN");
        // Signed as a Disconnect-Request is (RFC 5176 §3.4).
        let mut zeroed = p.clone();
        zeroed[4..20].fill(0);
        assert_eq!(
            &crypto::request_authenticator(&secret, &zeroed)[..],
            &p[4..20]
        );
        let hidden = [attr("Tunnel-Password", Some(1), "x")];
        assert!(matches!(
            request(Ask::Change(&hidden, &dict), &session(), 7, &secret, 0),
            Err(RequestError::Hidden(_))
        ));
        let unknown = [attr("No-Such-Attribute", None, "x")];
        assert!(matches!(
            request(Ask::Change(&unknown, &dict), &session(), 7, &secret, 0),
            Err(RequestError::Encode(_))
        ));
    }

    #[tokio::test]
    async fn a_coa_is_answered_by_a_coa_ack_or_nak() {
        let secret = SharedSecret::new(b"das-secret".to_vec());
        let dict = Dictionary::builtin().unwrap();
        let vlan = [attr("Tunnel-Private-Group-Id", Some(0), "999")];
        let (addr, _) = das(44, None, 0, b"das-secret").await;
        assert_eq!(
            ask(Ask::Change(&vlan, &dict), &session(), addr, &secret)
                .await
                .unwrap(),
            Answer::Ack
        );
        let (addr, _) = das(45, Some(402), 0, b"das-secret").await;
        assert_eq!(
            ask(Ask::Change(&vlan, &dict), &session(), addr, &secret)
                .await
                .unwrap(),
            Answer::Nak(Some(402))
        );
    }
}
