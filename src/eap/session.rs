//! The EAP-TLS conversation with one device (RFC 3748, RFC 5216, RFC 9190).
//!
//! ```text
//! Identity ──▶ Start(S) ──▶ ExpectTls ◀──────────────┐
//!                              │ data (M: ACK, more) │ server flight sent
//!                              ▼                     │
//!                  handshaking? ── yes ─▶ ExpectFragmentAck ─┘
//!                              │ no
//!                              ▼
//!                        ExpectVerdict ── Deny ─▶ Failure
//!                              │ Allow (TLS 1.3: protected success byte 0x00)
//!                              ▼
//!                   ExpectFragmentAck … ExpectFinalAck ── ACK ─▶ Success + MSK/EMSK
//! ```
//!
//! The revocation, posture and policy checks run between `ExpectVerdict` and the final flight:
//! for TLS 1.3 the success byte, for TLS 1.2 the server's ChangeCipherSpec/Finished are only
//! released after `Verdict::Allow`, so a peer is never told it succeeded before every check
//! has passed (RFC 9190 §2.5).

use std::fmt;
use std::io::Write;
use std::mem;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ProtocolVersion, ServerConfig, ServerConnection};
use zeroize::Zeroizing;

use super::packet::{EapCode, EapError, EapPacket, TYPE_NAK, TYPE_TLS};
use super::tls::{self, TlsFrame, FLAG_M, FLAG_S};

/// EAP header (4) + Type (1) + Flags (1) + TLS Message Length (4).
pub const EAP_TLS_OVERHEAD: usize = 10;
/// Smallest fragment we agree to send, whatever Framed-MTU says.
pub const MIN_FRAGMENT: usize = 64;

/// Settings shared by every session.
#[derive(Debug)]
pub struct SessionConfig {
    /// rustls settings: certificates, client verifier, versions.
    pub tls: Arc<ServerConfig>,
    /// Most TLS bytes in one EAP-TLS request.
    pub fragment_size: usize,
    /// Cap on one reassembled TLS message from the peer (RFC 5216 §3.1 lets it be large).
    pub max_message: usize,
    /// Cap on requests sent in one conversation.
    pub max_rounds: u32,
}

/// What the server feeds in.
#[derive(Debug)]
pub enum Event<'a> {
    /// An EAP packet from the peer.
    Response(&'a EapPacket),
    /// The outcome of the post-handshake checks asked for with [`Action::CheckPeer`].
    Verdict(Verdict),
}

/// Why an authentication failed: a stable label, or a reason an admin's policy gave.
pub type Reason = std::borrow::Cow<'static, str>;

/// Outcome of revocation, posture and policy checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the device on.
    Allow,
    /// Refuse, with its reason.
    Deny(Reason),
}

/// What the server must do next.
#[derive(Debug)]
pub enum Action {
    /// Send this EAP-Request in an Access-Challenge.
    Send(EapPacket),
    /// Run the checks on the authenticated peer, then feed back [`Event::Verdict`].
    CheckPeer(PeerInfo),
    /// The conversation is over.
    Finish(Outcome),
}

/// End of a conversation.
#[derive(Debug)]
pub enum Outcome {
    /// EAP-Success: send it in an Access-Accept with keys derived from `keys`.
    Success {
        /// The EAP-Success packet.
        eap: EapPacket,
        /// MSK and EMSK.
        keys: Keys,
    },
    /// EAP-Failure: send it in an Access-Reject.
    Failure {
        /// The EAP-Failure packet.
        eap: EapPacket,
        /// Why.
        reason: Reason,
    },
}

/// The authenticated peer, handed to the checks.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Client certificate chain as the device sent it, end entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The path the verifier checked: the device's certificate, each CA whose key verified
    /// the one below it, the trust anchor. Revocation runs on this, never on `chain`.
    pub path: crate::tls::VerifiedChain,
    /// "1.2" or "1.3".
    pub tls_version: &'static str,
    /// Negotiated cipher suite name.
    pub cipher_suite: &'static str,
}

/// EAP keying material (RFC 5247): MSK and EMSK, 64 bytes each. Never printed.
pub struct Keys {
    /// Master Session Key.
    pub msk: Zeroizing<[u8; 64]>,
    /// Extended Master Session Key.
    pub emsk: Zeroizing<[u8; 64]>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Derives MSK/EMSK from a finished connection: RFC 5216 §2.3 for TLS 1.2 (label
/// "client EAP encryption", no context), RFC 9190 §2.3 for TLS 1.3 (label
/// "EXPORTER_EAP_TLS_Key_Material", context 0x0D). The full 128 bytes are always exported
/// and split, since a TLS 1.3 export depends on the requested length.
///
/// # Errors
/// No negotiated version, or the exporter refuses.
pub fn derive_keys(
    version: Option<ProtocolVersion>,
    export: impl FnOnce(&mut [u8], &[u8], Option<&[u8]>) -> Result<(), rustls::Error>,
) -> Result<Keys, EapError> {
    let (label, context): (&[u8], Option<&[u8]>) = match version {
        Some(ProtocolVersion::TLSv1_3) => (b"EXPORTER_EAP_TLS_Key_Material", Some(&[TYPE_TLS])),
        Some(ProtocolVersion::TLSv1_2) => (b"client EAP encryption", None),
        _ => {
            return Err(EapError::Tls {
                reason: "tls_error",
                detail: "no TLS version".into(),
            })
        }
    };
    let mut block = Zeroizing::new([0u8; 128]);
    export(&mut block[..], label, context).map_err(|e| EapError::Tls {
        reason: "tls_error",
        detail: e.to_string(),
    })?;
    let (msk, emsk) = block.split_at(64);
    let mut keys = Keys {
        msk: Zeroizing::new([0; 64]),
        emsk: Zeroizing::new([0; 64]),
    };
    keys.msk.copy_from_slice(msk);
    keys.emsk.copy_from_slice(emsk);
    Ok(keys)
}

/// Labels a rustls error for logs, counters and the Reject reason.
pub fn tls_reason(e: &rustls::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "certificate_expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "certificate_not_yet_valid"
        }
        E::InvalidCertificate(C::UnknownIssuer) => "unknown_ca",
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => "wrong_eku",
        E::InvalidCertificate(C::Revoked) => "revoked",
        E::InvalidCertificate(C::BadSignature) => "bad_certificate_signature",
        E::InvalidCertificate(_) => "bad_certificate",
        E::NoCertificatesPresented => "no_client_certificate",
        E::PeerIncompatible(_) => "tls_incompatible",
        E::AlertReceived(_) => "peer_alert",
        // The server key's token could not sign (tls::hsm_key): fail closed, say why.
        E::Other(o) if o.0.downcast_ref::<crate::pki::hsm::HsmError>().is_some() => {
            "hsm_unavailable"
        }
        _ => "tls_error",
    }
}

fn tls_error(e: &rustls::Error) -> EapError {
    EapError::Tls {
        reason: tls_reason(e),
        detail: e.to_string(),
    }
}

/// What comes after an outbound flight has been fully sent.
#[derive(Debug)]
enum Then {
    /// The peer answers with more TLS data.
    AwaitTls,
    /// The peer acknowledges; then EAP-Success.
    Finish(Keys),
}

struct Inbound {
    /// None until the peer's first TLS message (its ClientHello) is complete: a conversation
    /// that never gets that far costs no TLS state.
    conn: Option<ServerConnection>,
    /// Bytes held until the ClientHello is complete; once a handshake is under way each
    /// fragment goes to rustls as it arrives instead.
    buf: Vec<u8>,
    /// Bytes of this EAP-TLS message received so far.
    received: usize,
    total: Option<usize>,
}

struct Outbound {
    conn: ServerConnection,
    data: Vec<u8>,
    offset: usize,
    then: Then,
}

struct Established {
    conn: ServerConnection,
    pending: Vec<u8>,
    keys: Keys,
}

/// Session state; each variant is named after what it waits for and holds only what is
/// valid there.
enum State {
    ExpectTls(Box<Inbound>),
    ExpectFragmentAck(Box<Outbound>),
    ExpectVerdict(Box<Established>),
    ExpectFinalAck(Box<Keys>),
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::ExpectTls(_) => "ExpectTls",
            Self::ExpectFragmentAck(_) => "ExpectFragmentAck",
            Self::ExpectVerdict(_) => "ExpectVerdict",
            Self::ExpectFinalAck(_) => "ExpectFinalAck",
            Self::Done => "Done",
        }
    }
}

/// One EAP-TLS conversation.
pub struct Session {
    cfg: Arc<SessionConfig>,
    state: State,
    fragment_size: usize,
    /// Identifier of the outstanding request.
    identifier: u8,
    rounds: u32,
    tls_version: Option<&'static str>,
    /// TLS flights the server has started sending.
    flights: u8,
    /// The certificate path the verifier checked, once it has (a device may spread its
    /// flight over several EAP-TLS messages).
    verified: Option<crate::tls::VerifiedChain>,
    /// The same path, once, as soon as it is known: see [`Session::take_early_peer`].
    early: Option<crate::tls::VerifiedChain>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("state", &self.state.name())
            .field("identifier", &self.identifier)
            .field("rounds", &self.rounds)
            .finish()
    }
}

impl Session {
    /// Starts EAP-TLS after an EAP-Response/Identity: returns the session and the
    /// EAP-TLS Start request. `framed_mtu` (RADIUS Framed-MTU) may lower the fragment size.
    ///
    /// # Errors
    /// rustls refuses the configuration.
    pub fn start(
        cfg: Arc<SessionConfig>,
        first_identifier: u8,
        framed_mtu: Option<u32>,
    ) -> Result<(Self, Action), EapError> {
        let mut fragment_size = cfg.fragment_size;
        if let Some(mtu) = framed_mtu.and_then(|m| usize::try_from(m).ok()) {
            fragment_size = fragment_size.min(mtu.saturating_sub(EAP_TLS_OVERHEAD));
        }
        let fragment_size = fragment_size.max(MIN_FRAGMENT);
        let mut s = Self {
            cfg,
            state: State::ExpectTls(Box::new(Inbound {
                conn: None,
                buf: Vec::new(),
                received: 0,
                total: None,
            })),
            fragment_size,
            identifier: first_identifier.wrapping_sub(1),
            rounds: 0,
            tls_version: None,
            flights: 0,
            verified: None,
            early: None,
        };
        let start = s.request(tls::encode(FLAG_S, None, &[]))?;
        Ok((s, Action::Send(start)))
    }

    /// Identifier of the outstanding request.
    pub fn identifier(&self) -> u8 {
        self.identifier
    }

    /// Requests sent so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// True until the server's first TLS flight is out: only the step that answers the
    /// ClientHello signs with the server key (ServerKeyExchange in TLS 1.2, CertificateVerify
    /// in TLS 1.3), so only then may a step block on an HSM.
    /// After a TLS 1.3 HelloRetryRequest, the second ClientHello's answer signs instead.
    pub fn may_sign(&self) -> bool {
        let State::ExpectTls(inbound) = &self.state else {
            return false;
        };
        let Some(conn) = &inbound.conn else {
            // The ClientHello is yet to come (or complete): its answer will sign.
            return true;
        };
        let retried =
            conn.handshake_kind() == Some(rustls::HandshakeKind::FullWithHelloRetryRequest);
        conn.is_handshaking() && (self.flights == 0 || (retried && self.flights == 1))
    }

    /// The device's verified certificate path, the first time it is asked for after the
    /// verifier accepted it, which may be rounds before the device's flight is complete (its
    /// Certificate arrives first): checks that take time (revocation) can start then,
    /// while the handshake goes on. A second output of a step, like quinn's `poll_*`.
    pub fn take_early_peer(&mut self) -> Option<crate::tls::VerifiedChain> {
        self.early.take()
    }

    /// Negotiated TLS version, once known.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls_version
    }

    /// The EAP-Failure to send when [`Session::handle`] fails with a non-discard error.
    pub fn failure(&self) -> EapPacket {
        EapPacket::outcome(EapCode::Failure, self.identifier)
    }

    /// Advances the conversation by one event.
    ///
    /// # Errors
    /// [`EapError::is_discard`] errors leave the session unchanged (drop the packet); any
    /// other error ends it: answer with [`Session::failure`].
    pub fn handle(&mut self, event: Event<'_>) -> Result<Action, EapError> {
        if let Event::Response(p) = &event {
            if p.code != EapCode::Response {
                return Err(EapError::NotResponse);
            }
            if p.identifier != self.identifier {
                return Err(EapError::UnexpectedIdentifier {
                    expected: self.identifier,
                    got: p.identifier,
                });
            }
        }
        let state = mem::replace(&mut self.state, State::Done);
        let name = state.name();
        match (state, event) {
            (State::ExpectTls(inbound), Event::Response(p)) => self.on_tls(inbound, p),
            (State::ExpectFragmentAck(out), Event::Response(p)) => {
                let frame = self.tls_frame(p)?;
                if !frame.is_ack() {
                    return Err(EapError::Framing("expected a fragment ACK"));
                }
                self.send_next(out)
            }
            (State::ExpectVerdict(est), Event::Verdict(v)) => self.on_verdict(est, v),
            (State::ExpectFinalAck(keys), Event::Response(p)) => {
                let frame = self.tls_frame(p)?;
                if !frame.is_ack() {
                    return Err(EapError::Tls {
                        reason: "peer_alert",
                        detail: "peer sent TLS data instead of the final acknowledgement".into(),
                    });
                }
                let eap = EapPacket::outcome(EapCode::Success, self.identifier);
                Ok(Action::Finish(Outcome::Success { eap, keys: *keys }))
            }
            _ => Err(EapError::UnexpectedEvent(name)),
        }
    }

    fn tls_frame<'p>(&self, p: &'p EapPacket) -> Result<TlsFrame<'p>, EapError> {
        match p.ty {
            Some(TYPE_TLS) => TlsFrame::decode(&p.data),
            Some(TYPE_NAK) => Err(EapError::Nak),
            Some(other) => Err(EapError::UnexpectedType(other)),
            None => Err(EapError::MissingType),
        }
    }

    /// Hands TLS bytes from the peer to rustls; keeps the certificate path the verifier
    /// checked, if it did.
    fn feed(&mut self, conn: &mut ServerConnection, mut rd: &[u8]) -> Result<(), EapError> {
        // The verifier leaves the path it verifies on this thread (tls::verifier); nothing
        // from another connection may be mistaken for this one's.
        crate::tls::verifier::forget_verified();
        while !rd.is_empty() {
            let n = conn.read_tls(&mut rd).map_err(|e| EapError::Tls {
                reason: "tls_error",
                detail: e.to_string(),
            })?;
            conn.process_new_packets().map_err(|e| tls_error(&e))?;
            if n == 0 {
                return Err(EapError::Tls {
                    reason: "tls_error",
                    detail: "TLS input stalled".into(),
                });
            }
        }
        if let Some(path) = crate::tls::verifier::take_verified() {
            if self.verified.is_none() {
                self.early = Some(path.clone());
            }
            self.verified = Some(path);
        }
        Ok(())
    }

    fn request(&mut self, type_data: Vec<u8>) -> Result<EapPacket, EapError> {
        self.rounds += 1;
        if self.rounds > self.cfg.max_rounds {
            return Err(EapError::TooManyRounds);
        }
        self.identifier = self.identifier.wrapping_add(1);
        Ok(EapPacket::request(self.identifier, TYPE_TLS, type_data))
    }

    fn on_tls(&mut self, mut inbound: Box<Inbound>, p: &EapPacket) -> Result<Action, EapError> {
        if p.ty == Some(TYPE_NAK) && inbound.buf.is_empty() && self.rounds == 1 {
            // A Nak to our Start. We only offer EAP-TLS: if the peer lists it, start over.
            if p.data.contains(&TYPE_TLS) {
                self.state = State::ExpectTls(inbound);
                return Ok(Action::Send(self.request(tls::encode(
                    FLAG_S,
                    None,
                    &[],
                ))?));
            }
            return Err(EapError::Nak);
        }
        let frame = self.tls_frame(p)?;
        if frame.flags & FLAG_S != 0 {
            return Err(EapError::Framing("S flag from peer"));
        }
        if frame.data.is_empty() {
            return Err(EapError::Framing(
                "empty response where TLS data was expected",
            ));
        }
        if inbound.received == 0 {
            if let Some(total) = frame.total {
                let total = usize::try_from(total).unwrap_or(usize::MAX);
                if total > self.cfg.max_message {
                    return Err(EapError::TooLarge(total));
                }
                inbound.total = Some(total);
            }
        }
        inbound.received += frame.data.len();
        let cap = inbound.total.unwrap_or(self.cfg.max_message);
        if inbound.received > cap {
            return Err(EapError::TooLarge(inbound.received));
        }
        match inbound.conn.as_mut() {
            // A handshake under way: rustls takes each fragment as it comes, so the
            // device's certificate is verified as soon as its record is complete.
            Some(conn) => self.feed(conn, frame.data)?,
            None => inbound.buf.extend_from_slice(frame.data),
        }
        if frame.more() {
            self.state = State::ExpectTls(inbound);
            return Ok(Action::Send(self.request(tls::encode(0, None, &[]))?));
        }
        if inbound.total.is_some_and(|t| t != inbound.received) {
            return Err(EapError::Framing(
                "TLS Message Length does not match the data",
            ));
        }
        let Inbound { conn, buf, .. } = *inbound;
        let mut conn = match conn {
            Some(c) => c,
            None => ServerConnection::new(self.cfg.tls.clone()).map_err(|e| tls_error(&e))?,
        };
        self.feed(&mut conn, &buf)?;
        let out = drain(&mut conn)?;
        if conn.is_handshaking() {
            if out.is_empty() {
                // The peer's flight is not complete yet: ask for the rest.
                self.state = State::ExpectTls(Box::new(Inbound {
                    conn: Some(conn),
                    buf: Vec::new(),
                    received: 0,
                    total: None,
                }));
                return Ok(Action::Send(self.request(tls::encode(0, None, &[]))?));
            }
            return self.send_next(Box::new(Outbound {
                conn,
                data: out,
                offset: 0,
                then: Then::AwaitTls,
            }));
        }
        let tls_version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "1.3",
            _ => "1.2",
        };
        self.tls_version = Some(tls_version);
        let keys = derive_keys(conn.protocol_version(), |out, label, ctx| {
            conn.export_keying_material(out, label, ctx).map(|_| ())
        })?;
        let chain = conn
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default();
        let Some(leaf) = chain.first() else {
            return Err(EapError::Tls {
                reason: "no_client_certificate",
                detail: "no client certificate".into(),
            });
        };
        // Revocation is asked about the CAs on the path webpki verified, never about
        // certificates the device merely sent.
        let Some(path) = self
            .verified
            .take()
            .filter(|p| p.end_entity() == leaf.as_ref())
        else {
            return Err(EapError::Tls {
                reason: "internal",
                detail: "the verified certificate path was not recorded".into(),
            });
        };
        let peer = PeerInfo {
            chain,
            path,
            tls_version,
            cipher_suite: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
        };
        self.state = State::ExpectVerdict(Box::new(Established {
            conn,
            pending: out,
            keys,
        }));
        Ok(Action::CheckPeer(peer))
    }

    fn on_verdict(&mut self, est: Box<Established>, verdict: Verdict) -> Result<Action, EapError> {
        let Established {
            mut conn,
            mut pending,
            keys,
        } = *est;
        if let Verdict::Deny(reason) = verdict {
            return Ok(Action::Finish(Outcome::Failure {
                eap: self.failure(),
                reason,
            }));
        }
        if conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
            // RFC 9190 §2.5: one application-data byte 0x00 is the protected success
            // indication, sent only now that every check has passed.
            conn.writer()
                .write_all(&[0x00])
                .map_err(|e| EapError::Tls {
                    reason: "tls_error",
                    detail: e.to_string(),
                })?;
        }
        pending.extend(drain(&mut conn)?);
        if pending.is_empty() {
            return Err(EapError::UnexpectedEvent("ExpectVerdict: no final flight"));
        }
        self.send_next(Box::new(Outbound {
            conn,
            data: pending,
            offset: 0,
            then: Then::Finish(keys),
        }))
    }

    fn send_next(&mut self, mut out: Box<Outbound>) -> Result<Action, EapError> {
        if out.offset == 0 {
            self.flights = self.flights.saturating_add(1);
        }
        let total = out.data.len();
        let chunk = out.data.get(out.offset..).unwrap_or_default();
        let take = chunk.len().min(self.fragment_size);
        let more = chunk.len() > take;
        let first = out.offset == 0;
        let fragmented = total > self.fragment_size;
        let length = (first && fragmented).then(|| u32::try_from(total).unwrap_or(u32::MAX));
        let body = tls::encode(
            if more { FLAG_M } else { 0 },
            length,
            chunk.get(..take).unwrap_or_default(),
        );
        out.offset += take;
        let req = self.request(body)?;
        self.state = if more {
            State::ExpectFragmentAck(out)
        } else {
            let Outbound { conn, then, .. } = *out;
            match then {
                Then::AwaitTls => State::ExpectTls(Box::new(Inbound {
                    conn: Some(conn),
                    buf: Vec::new(),
                    received: 0,
                    total: None,
                })),
                Then::Finish(keys) => State::ExpectFinalAck(Box::new(keys)),
            }
        };
        Ok(Action::Send(req))
    }
}

fn drain(conn: &mut ServerConnection) -> Result<Vec<u8>, EapError> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).map_err(|e| EapError::Tls {
            reason: "tls_error",
            detail: e.to_string(),
        })?;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use std::io::Read;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    use super::*;
    use crate::eap::tls::FLAG_L;
    use crate::tls::{server_config, TlsVersion};

    struct Pki {
        _dir: tempfile::TempDir,
        server: Arc<ServerConfig>,
        root: CertificateDer<'static>,
        path: std::path::PathBuf,
    }

    fn pki(versions: &[TlsVersion]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::dev::generate(dir.path(), time::OffsetDateTime::now_utc()).unwrap();
        let path = dir.path().to_path_buf();
        let chain: Vec<_> = CertificateDer::pem_file_iter(path.join("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(path.join("server.key")).unwrap();
        let root = CertificateDer::from_pem_file(path.join("root-ca.pem")).unwrap();
        let server =
            Arc::new(server_config(chain, key, std::slice::from_ref(&root), versions).unwrap());
        Pki {
            _dir: dir,
            server,
            root,
            path,
        }
    }

    fn config(p: &Pki, fragment_size: usize, max_message: usize) -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            tls: p.server.clone(),
            fragment_size,
            max_message,
            max_rounds: 100,
        })
    }

    fn client(
        p: &Pki,
        device: &str,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> ClientConnection {
        let mut roots = RootCertStore::empty();
        roots.add(p.root.clone()).unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(p.path.join(format!("{device}.pem")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(p.path.join(format!("{device}.key"))).unwrap();
        let cfg = ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        ClientConnection::new(Arc::new(cfg), "radius.anchord.test".try_into().unwrap()).unwrap()
    }

    /// What the in-memory peer saw.
    struct Run {
        requests: Vec<(u8, Option<u32>, usize)>,
        outcome: Outcome,
        client: ClientConnection,
        success_byte: Option<u8>,
    }

    /// Drives a rustls client against a Session: an EAP peer that fragments its own flights
    /// at `peer_fragment` bytes and acknowledges every server fragment.
    fn drive(
        p: &Pki,
        device: &str,
        version: &'static rustls::SupportedProtocolVersion,
        fragment: usize,
        peer_fragment: usize,
        verdict: Verdict,
    ) -> Run {
        drive_with(
            p,
            device,
            version,
            fragment,
            peer_fragment,
            verdict,
            |_, _| {},
        )
        .unwrap()
    }

    /// [`drive`], with `tamper` given each of the peer's fragmented flights (its number
    /// and its EAP-TLS fragments) before they are sent; the session's error, if any.
    fn drive_with(
        p: &Pki,
        device: &str,
        version: &'static rustls::SupportedProtocolVersion,
        fragment: usize,
        peer_fragment: usize,
        verdict: Verdict,
        tamper: impl Fn(usize, &mut Vec<Vec<u8>>),
    ) -> Result<Run, EapError> {
        let mut flights = 0;
        let cfg = config(p, fragment, 65536);
        let (mut s, mut action) = Session::start(cfg, 0x10, None).unwrap();
        let mut c = client(p, device, version);
        let mut inbound = Vec::new();
        let mut requests = Vec::new();
        let mut outbound: Vec<Vec<u8>> = Vec::new();
        let mut success_byte = None;
        loop {
            let req = match action {
                Action::Send(req) => req,
                Action::CheckPeer(peer) => {
                    assert_eq!(peer.chain.len(), 2, "device sends its chain");
                    action = s.handle(Event::Verdict(verdict.clone()))?;
                    continue;
                }
                Action::Finish(outcome) => {
                    return Ok(Run {
                        requests,
                        outcome,
                        client: c,
                        success_byte,
                    });
                }
            };
            assert_eq!(req.identifier, s.identifier());
            let frame = TlsFrame::decode(&req.data).unwrap();
            requests.push((frame.flags, frame.total, frame.data.len()));
            let reply_data = if !outbound.is_empty() {
                // We are sending a fragmented flight: the server's request was an ACK.
                assert!(frame.is_ack(), "server must ACK each peer fragment");
                outbound.remove(0)
            } else {
                inbound.extend_from_slice(frame.data);
                if frame.more() {
                    tls::encode(0, None, &[])
                } else {
                    let mut rd: &[u8] = &inbound;
                    while !rd.is_empty() {
                        c.read_tls(&mut rd).unwrap();
                        c.process_new_packets().unwrap();
                    }
                    inbound.clear();
                    let mut plain = [0u8; 8];
                    if let Ok(n) = c.reader().read(&mut plain) {
                        if n > 0 {
                            success_byte = Some(plain[0]);
                        }
                    }
                    let mut flight = Vec::new();
                    while c.wants_write() {
                        c.write_tls(&mut flight).unwrap();
                    }
                    let frags: Vec<&[u8]> = flight.chunks(peer_fragment).collect();
                    let n = frags.len();
                    for (i, f) in frags.iter().enumerate() {
                        let more = if i + 1 < n { FLAG_M } else { 0 };
                        let total = (i == 0 && n > 1).then(|| u32::try_from(flight.len()).unwrap());
                        outbound.push(tls::encode(more, total, f));
                    }
                    if n > 1 {
                        tamper(flights, &mut outbound);
                    }
                    flights += 1;
                    if outbound.is_empty() {
                        tls::encode(0, None, &[])
                    } else {
                        outbound.remove(0)
                    }
                }
            };
            let resp = EapPacket {
                code: EapCode::Response,
                identifier: req.identifier,
                ty: Some(TYPE_TLS),
                data: reply_data,
            };
            action = s.handle(Event::Response(&resp))?;
        }
    }

    #[test]
    fn a_fragmented_flight_is_held_to_the_length_its_first_fragment_announced() {
        let p = pki(&[TlsVersion::V1_3]);
        // The device's second flight announces 500 bytes more than it sends, and its last
        // fragment announces the true length: the first announcement is the one that counts.
        let r = drive_with(
            &p,
            "device-ecdsa",
            &rustls::version::TLS13,
            1024,
            200,
            Verdict::Allow,
            |flight, frags| {
                if flight == 1 {
                    let sent: usize = frags.iter().map(|f| f.len() - 1).sum::<usize>() - 4;
                    let first = frags.first_mut().unwrap();
                    let bogus = u32::try_from(sent + 500).unwrap().to_be_bytes();
                    first[1..5].copy_from_slice(&bogus);
                    let last = frags.last_mut().unwrap();
                    let mut with_length = vec![tls::FLAG_L];
                    with_length.extend(u32::try_from(sent).unwrap().to_be_bytes());
                    with_length.extend_from_slice(&last[1..]);
                    *last = with_length;
                }
            },
        );
        assert!(
            matches!(r, Err(EapError::Framing(_))),
            "{:?}",
            r.map(|run| run.requests.len())
        );
    }

    fn client_msk(c: &ClientConnection) -> [u8; 64] {
        let keys = derive_keys(c.protocol_version(), |out, label, ctx| {
            c.export_keying_material(out, label, ctx).map(|_| ())
        })
        .unwrap();
        *keys.msk
    }

    #[test]
    fn tls12_handshake_derives_the_same_msk_and_fragments_at_the_configured_size() {
        let p = pki(&[TlsVersion::V1_2, TlsVersion::V1_3]);
        let run = drive(
            &p,
            "device-ecdsa",
            &rustls::version::TLS12,
            300,
            1000,
            Verdict::Allow,
        );
        // Start first, with S and nothing else.
        assert_eq!(run.requests[0], (FLAG_S, None, 0));
        // The server flight is fragmented: L+M on the first, M on the middle, none on the last.
        let (f0, total0, len0) = run.requests[1];
        assert_eq!(f0, FLAG_L | FLAG_M);
        assert_eq!(len0, 300);
        let total = usize::try_from(total0.unwrap()).unwrap();
        let frags: Vec<_> = run.requests[1..].iter().take(total.div_ceil(300)).collect();
        assert!(frags.iter().all(|(_, _, len)| *len <= 300));
        assert_eq!(frags.iter().map(|(_, _, len)| len).sum::<usize>(), total);
        assert_eq!(frags.last().unwrap().0, 0);
        let Outcome::Success { eap, keys } = run.outcome else {
            panic!("expected success")
        };
        assert_eq!(eap.code, EapCode::Success);
        assert_eq!(*keys.msk, client_msk(&run.client));
        assert_eq!(
            run.client.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );
        assert_eq!(run.success_byte, None);
    }

    #[test]
    fn tls13_sends_success_byte_after_allow_and_derives_the_same_msk() {
        let p = pki(&[TlsVersion::V1_2, TlsVersion::V1_3]);
        let run = drive(
            &p,
            "device-rsa",
            &rustls::version::TLS13,
            1024,
            200,
            Verdict::Allow,
        );
        let Outcome::Success { keys, .. } = run.outcome else {
            panic!("expected success")
        };
        assert_eq!(
            run.client.protocol_version(),
            Some(ProtocolVersion::TLSv1_3)
        );
        assert_eq!(run.success_byte, Some(0x00));
        assert_eq!(*keys.msk, client_msk(&run.client));
        // The peer's 200-byte fragments were each acknowledged with an empty request.
        assert!(run.requests.iter().filter(|r| **r == (0, None, 0)).count() >= 3);
    }

    #[test]
    fn deny_verdict_fails_without_sending_the_success_indication() {
        let p = pki(&[TlsVersion::V1_3]);
        let run = drive(
            &p,
            "device-ecdsa",
            &rustls::version::TLS13,
            1024,
            1024,
            Verdict::Deny("policy".into()),
        );
        assert!(matches!(
            run.outcome,
            Outcome::Failure {
                reason: std::borrow::Cow::Borrowed("policy"),
                ..
            }
        ));
        assert_eq!(run.success_byte, None);
    }

    #[test]
    fn mismatched_identifier_is_discarded_and_session_survives() {
        let p = pki(&[TlsVersion::V1_3]);
        let cfg = config(&p, 1024, 65536);
        let (mut s, _) = Session::start(cfg, 7, None).unwrap();
        let wrong = EapPacket {
            code: EapCode::Response,
            identifier: 8,
            ty: Some(TYPE_TLS),
            data: vec![0],
        };
        let e = s.handle(Event::Response(&wrong)).unwrap_err();
        assert!(e.is_discard());
        let nak = EapPacket {
            code: EapCode::Response,
            identifier: 7,
            ty: Some(TYPE_NAK),
            data: vec![25],
        };
        assert_eq!(s.handle(Event::Response(&nak)).unwrap_err(), EapError::Nak);
    }

    #[test]
    fn oversized_reassembly_is_refused() {
        let p = pki(&[TlsVersion::V1_3]);
        let cfg = config(&p, 1024, 4096);
        let (mut s, _) = Session::start(cfg, 1, None).unwrap();
        let big = EapPacket {
            code: EapCode::Response,
            identifier: 1,
            ty: Some(TYPE_TLS),
            data: tls::encode(FLAG_M, Some(1 << 20), &[0x16; 100]),
        };
        assert_eq!(
            s.handle(Event::Response(&big)).unwrap_err(),
            EapError::TooLarge(1 << 20)
        );
        let (mut s, _) = Session::start(config(&p, 1024, 4096), 1, None).unwrap();
        let mut id = 1;
        let mut err = None;
        for _ in 0..10 {
            let frag = EapPacket {
                code: EapCode::Response,
                identifier: id,
                ty: Some(TYPE_TLS),
                data: tls::encode(FLAG_M, None, &[0x16; 1000]),
            };
            match s.handle(Event::Response(&frag)) {
                Ok(Action::Send(r)) => id = r.identifier,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(matches!(err, Some(EapError::TooLarge(_))));
    }

    #[test]
    fn framed_mtu_lowers_the_fragment_size() {
        let p = pki(&[TlsVersion::V1_3]);
        let cfg = config(&p, 1024, 65536);
        let (s, _) = Session::start(cfg, 1, Some(200)).unwrap();
        assert_eq!(s.fragment_size, 190);
    }

    #[test]
    fn only_the_client_hello_step_may_sign() {
        let p = pki(&[TlsVersion::V1_2, TlsVersion::V1_3]);
        let cfg = config(&p, 4000, 65536);
        let (mut s, action) = Session::start(cfg, 1, None).unwrap();
        let Action::Send(start) = action else {
            panic!("start")
        };
        assert!(s.may_sign(), "the ClientHello is due");
        let mut c = client(&p, "device-ecdsa", &rustls::version::TLS13);
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        let resp = EapPacket {
            code: EapCode::Response,
            identifier: start.identifier,
            ty: Some(TYPE_TLS),
            data: tls::encode(0, None, &hello),
        };
        let Action::Send(_flight) = s.handle(Event::Response(&resp)).unwrap() else {
            panic!("flight")
        };
        assert!(!s.may_sign(), "the signature is in the flight just sent");
    }

    #[test]
    fn tls_state_is_created_only_once_the_client_hello_is_complete() {
        let p = pki(&[TlsVersion::V1_2, TlsVersion::V1_3]);
        let (mut s, action) = Session::start(config(&p, 4000, 65536), 1, None).unwrap();
        let holds_tls = |s: &Session| match &s.state {
            State::ExpectTls(i) => i.conn.is_some(),
            _ => true,
        };
        assert!(
            !holds_tls(&s),
            "a conversation that only said hello holds no TLS state"
        );
        let Action::Send(start) = action else {
            panic!("start")
        };
        let mut c = client(&p, "device-ecdsa", &rustls::version::TLS13);
        let mut hello = Vec::new();
        c.write_tls(&mut hello).unwrap();
        let (first, rest) = hello.split_at(100);
        let frag = EapPacket {
            code: EapCode::Response,
            identifier: start.identifier,
            ty: Some(TYPE_TLS),
            data: tls::encode(FLAG_M, Some(u32::try_from(hello.len()).unwrap()), first),
        };
        let Action::Send(ack) = s.handle(Event::Response(&frag)).unwrap() else {
            panic!("ack")
        };
        assert!(!holds_tls(&s), "nor one halfway through its ClientHello");
        let last = EapPacket {
            code: EapCode::Response,
            identifier: ack.identifier,
            ty: Some(TYPE_TLS),
            data: tls::encode(0, None, rest),
        };
        let Action::Send(_flight) = s.handle(Event::Response(&last)).unwrap() else {
            panic!("flight")
        };
        assert!(holds_tls(&s));
    }

    #[test]
    fn keys_debug_is_redacted() {
        let k = Keys {
            msk: Zeroizing::new([1; 64]),
            emsk: Zeroizing::new([2; 64]),
        };
        assert_eq!(format!("{k:?}"), "Keys(<redacted>)");
    }
}
