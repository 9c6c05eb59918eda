//! The device side of EAP-TLS for the load generator, sans-IO: EAP-Requests in,
//! EAP-Responses out, driving a rustls `ClientConnection` (RFC 5216, RFC 9190).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::eap::packet::{EapCode, EapPacket, TYPE_IDENTITY, TYPE_TLS};
use crate::eap::session::{derive_keys, Keys};
use crate::eap::tls::{self, TlsFrame, FLAG_M, FLAG_S};

/// What went wrong on the device side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The server's EAP framing was wrong.
    #[error("EAP framing: {0}")]
    Framing(&'static str),
    /// TLS failed (includes a bad server certificate).
    #[error("TLS: {0}")]
    Tls(String),
}

/// One device's EAP-TLS conversation.
pub struct Peer {
    conn: ClientConnection,
    fragment_size: usize,
    inbound: Vec<u8>,
    outbound: VecDeque<Vec<u8>>,
    success_byte: bool,
    started: bool,
}

impl Peer {
    /// A new conversation.
    ///
    /// # Errors
    /// rustls refuses the configuration.
    pub fn new(
        cfg: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        fragment_size: usize,
    ) -> Result<Self, PeerError> {
        let conn =
            ClientConnection::new(cfg, server_name).map_err(|e| PeerError::Tls(e.to_string()))?;
        Ok(Self {
            conn,
            fragment_size: fragment_size.max(64),
            inbound: Vec::new(),
            outbound: VecDeque::new(),
            success_byte: false,
            started: false,
        })
    }

    /// The EAP-Response/Identity that opens a conversation.
    pub fn identity(identifier: u8, identity: &str) -> EapPacket {
        EapPacket {
            code: EapCode::Response,
            identifier,
            ty: Some(TYPE_IDENTITY),
            data: identity.as_bytes().to_vec(),
        }
    }

    /// True once this peer has sent its ClientHello.
    pub fn started(&self) -> bool {
        self.started
    }

    /// True once the TLS handshake completed (and, for TLS 1.3, the success byte arrived).
    pub fn finished(&self) -> bool {
        !self.conn.is_handshaking()
            && (self.success_byte
                || self.conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3))
    }

    /// MSK/EMSK as the server should have derived them.
    ///
    /// # Errors
    /// The handshake is not finished.
    pub fn keys(&self) -> Result<Keys, PeerError> {
        derive_keys(self.conn.protocol_version(), |out, label, ctx| {
            self.conn
                .export_keying_material(out, label, ctx)
                .map(|_| ())
        })
        .map_err(|e| PeerError::Tls(e.to_string()))
    }

    /// Negotiated TLS version.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Answers one EAP-Request.
    ///
    /// # Errors
    /// Bad framing from the server, or a TLS failure.
    pub fn respond(&mut self, req: &EapPacket) -> Result<EapPacket, PeerError> {
        if req.code != EapCode::Request || req.ty != Some(TYPE_TLS) {
            return Err(PeerError::Framing("expected an EAP-TLS request"));
        }
        let frame =
            TlsFrame::decode(&req.data).map_err(|_| PeerError::Framing("EAP-TLS header"))?;
        let data = if frame.flags & FLAG_S != 0 {
            self.started = true;
            self.flight()?
        } else if !self.outbound.is_empty() {
            if !frame.is_ack() {
                return Err(PeerError::Framing("expected an ACK for our fragment"));
            }
            self.outbound.pop_front().unwrap_or_default()
        } else {
            self.inbound.extend_from_slice(frame.data);
            if frame.more() {
                tls::encode(0, None, &[])
            } else {
                let input = std::mem::take(&mut self.inbound);
                let mut rd: &[u8] = &input;
                while !rd.is_empty() {
                    self.conn
                        .read_tls(&mut rd)
                        .map_err(|e| PeerError::Tls(e.to_string()))?;
                    self.conn
                        .process_new_packets()
                        .map_err(|e| PeerError::Tls(e.to_string()))?;
                }
                let mut plain = [0u8; 16];
                if let Ok(n) = self.conn.reader().read(&mut plain) {
                    if n > 0 && plain.first() == Some(&0x00) {
                        self.success_byte = true;
                    }
                }
                self.flight()?
            }
        };
        Ok(EapPacket {
            code: EapCode::Response,
            identifier: req.identifier,
            ty: Some(TYPE_TLS),
            data,
        })
    }

    /// Takes what rustls wants to send, queues its fragments and returns the first (or an
    /// empty acknowledgement when there is nothing to send).
    fn flight(&mut self) -> Result<Vec<u8>, PeerError> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn
                .write_tls(&mut out)
                .map_err(|e| PeerError::Tls(e.to_string()))?;
        }
        if out.is_empty() {
            return Ok(tls::encode(0, None, &[]));
        }
        let total = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let chunks: Vec<&[u8]> = out.chunks(self.fragment_size).collect();
        let n = chunks.len();
        for (i, c) in chunks.into_iter().enumerate() {
            let more = if i + 1 < n { FLAG_M } else { 0 };
            let length = (i == 0 && n > 1).then_some(total);
            self.outbound.push_back(tls::encode(more, length, c));
        }
        Ok(self.outbound.pop_front().unwrap_or_default())
    }
}
