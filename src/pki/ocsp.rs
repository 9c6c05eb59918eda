//! OCSP (RFC 6960), sans-IO: build a request for a certificate and verify a response fully.
//!
//! No crate verifies OCSP end to end, so `x509-ocsp` encodes and parses, and this module
//! checks the rest: the response is signed by the issuing CA, or by a delegated responder
//! certificate that the issuing CA issued directly with id-kp-OCSPSigning and that is valid
//! now; the CertID matches the certificate asked about; the nonce is echoed when one was sent;
//! thisUpdate is not in the future and nextUpdate not in the past (both with a skew).
//! Signatures are verified with aws-lc-rs. A response that fails any check is no answer.

use der::{Decode, Encode};
use sha1::{Digest, Sha1};
use x509_cert::Certificate;
use x509_ocsp::builder::OcspRequestBuilder;
use x509_ocsp::ext::Nonce;
use x509_ocsp::{
    BasicOcspResponse, CertId, OcspResponse, OcspResponseStatus, Request, ResponderId,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// id-pkix-ocsp-basic (1.3.6.1.5.5.7.48.1.1).
const OCSP_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";
/// id-pkix-ocsp-nonce (1.3.6.1.5.5.7.48.1.2).
const OCSP_NONCE: &str = "1.3.6.1.5.5.7.48.1.2";

/// Why a response does not count as an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    /// Not DER we can read.
    #[error("malformed OCSP data: {0}")]
    Malformed(String),
    /// The responder said malformedRequest, tryLater, unauthorized, ...
    #[error("responder status {0}")]
    NotSuccessful(String),
    /// No signer we trust.
    #[error("response not signed by the issuer or an authorised responder: {0}")]
    UntrustedSigner(&'static str),
    /// The signature does not verify.
    #[error("bad response signature")]
    BadSignature,
    /// No SingleResponse for our CertID.
    #[error("response is not about the certificate asked for")]
    CertIdMismatch,
    /// A nonce was sent and the response carries none: a responder that does not echo
    /// nonces (pre-produced answers), or a replay.
    #[error("nonce not echoed")]
    NonceMissing,
    /// The response carries a nonce other than the one sent: an answer to someone else's
    /// request.
    #[error("nonce in the response differs from the one sent")]
    NonceMismatch,
    /// The response or its answer for our certificate has a critical extension we do not
    /// understand, so it cannot be read as a plain good/revoked (RFC 5280 §4.2).
    #[error("unsupported critical extension {0}")]
    UnsupportedCritical(String),
    /// thisUpdate in the future.
    #[error("response from the future (thisUpdate)")]
    NotYetValid,
    /// nextUpdate in the past.
    #[error("stale response (nextUpdate passed)")]
    Stale,
    /// No nextUpdate, no nonce, and thisUpdate older than allowed.
    #[error(
        "stale response (no nextUpdate, thisUpdate older than max_age_without_next_update_secs)"
    )]
    TooOld,
}

impl OcspError {
    /// Stable label for logs and counters.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "ocsp_malformed",
            Self::NotSuccessful(_) => "ocsp_not_successful",
            Self::UntrustedSigner(_) => "ocsp_untrusted_signer",
            Self::BadSignature => "ocsp_bad_signature",
            Self::CertIdMismatch => "ocsp_certid_mismatch",
            Self::NonceMissing => "ocsp_nonce_missing",
            Self::NonceMismatch => "ocsp_nonce_mismatch",
            Self::UnsupportedCritical(_) => "ocsp_unsupported_critical_extension",
            Self::NotYetValid => "ocsp_not_yet_valid",
            Self::Stale => "ocsp_stale",
            Self::TooOld => "ocsp_too_old",
        }
    }

    /// True for an answer that came back and is false or broken (malformed, signed by no
    /// one we trust, bad signature, about another certificate, another request's nonce):
    /// never a reason to soft-fail. False for a responder that only could not help (tryLater
    /// and the other error statuses, which are unsigned; a stale, too old or not-yet-valid
    /// answer; no nonce echoed; an extension we cannot read): none of these says "good", and
    /// an attacker able to replay them could as well drop the answer.
    pub fn is_hostile(&self) -> bool {
        match self {
            Self::Malformed(_)
            | Self::UntrustedSigner(_)
            | Self::BadSignature
            | Self::CertIdMismatch
            | Self::NonceMismatch => true,
            Self::NotSuccessful(_)
            | Self::NonceMissing
            | Self::UnsupportedCritical(_)
            | Self::NotYetValid
            | Self::Stale
            | Self::TooOld => false,
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> OcspError {
    OcspError::Malformed(e.to_string())
}

/// Hash for the CertID: SHA-1 is what responders index by; SHA-256 where asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdHash {
    /// SHA-1 (RFC 6960 default, RFC 5019).
    Sha1,
    /// SHA-256.
    Sha256,
}

/// A request ready to send, and what the answer must match.
#[derive(Debug, Clone)]
pub struct Query {
    /// DER of the OCSPRequest.
    pub der: Vec<u8>,
    /// The CertID asked about.
    pub cert_id: CertId,
    /// The nonce sent, if any.
    pub nonce: Option<Vec<u8>>,
}

/// Builds a request for `cert`, issued by `issuer` (both DER).
///
/// # Errors
/// Certificates that do not parse.
pub fn query(
    cert: &[u8],
    issuer: &[u8],
    hash: IdHash,
    nonce: Option<[u8; 16]>,
) -> Result<Query, OcspError> {
    let cert = Certificate::from_der(cert).map_err(malformed)?;
    let issuer = Certificate::from_der(issuer).map_err(malformed)?;
    let cert_id = match hash {
        IdHash::Sha1 => CertId::from_cert::<sha1::Sha1>(&issuer, &cert),
        IdHash::Sha256 => CertId::from_cert::<sha2::Sha256>(&issuer, &cert),
    }
    .map_err(malformed)?;
    let mut b = OcspRequestBuilder::default().with_request(Request::new(cert_id.clone()));
    if let Some(n) = nonce {
        b = b
            .with_extension(Nonce::new(n.to_vec()).map_err(malformed)?)
            .map_err(malformed)?;
    }
    let der = b.build().to_der().map_err(malformed)?;
    Ok(Query {
        der,
        cert_id,
        nonce: nonce.map(|n| n.to_vec()),
    })
}

/// What the responder said about the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Good,
    /// Revoked at a time (Unix seconds) for a reason (RFC 5280 CRLReason, if given).
    Revoked {
        /// Revocation time, Unix seconds.
        at: i64,
        /// CRLReason name.
        reason: Option<String>,
    },
    /// The responder does not know the certificate.
    Unknown,
}

/// Who signed the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The issuing CA itself.
    Issuer,
    /// A responder certificate the issuing CA issued with id-kp-OCSPSigning.
    Delegated,
}

/// A verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: Status,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds, if given: the answer may be cached until then.
    pub next_update: Option<i64>,
    /// Who signed it.
    pub signer: Signer,
}

/// Verifies a response to `query` for a certificate issued by `issuer` (DER), at `now`
/// (Unix seconds), allowing `skew` seconds of clock difference. An answer with no nextUpdate
/// must be fresh by its nonce, or its thisUpdate at most `max_age` seconds old.
///
/// # Errors
/// Any failed check: such a response is no answer.
pub fn verify(
    response: &[u8],
    query: &Query,
    issuer: &[u8],
    now: i64,
    skew: i64,
    max_age: i64,
) -> Result<Answer, OcspError> {
    let resp = OcspResponse::from_der(response).map_err(malformed)?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::NotSuccessful(format!(
            "{:?}",
            resp.response_status
        )));
    }
    let bytes = resp
        .response_bytes
        .ok_or_else(|| malformed("no responseBytes"))?;
    if bytes.response_type.to_string() != OCSP_BASIC {
        return Err(malformed("not a basic OCSP response"));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).map_err(malformed)?;
    let tbs = basic.tbs_response_data.to_der().map_err(malformed)?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("signature bits"))?;
    let (_, issuer_cert) = X509Certificate::from_der(issuer).map_err(malformed)?;

    let delegated = basic
        .certs
        .iter()
        .flatten()
        .map(|c| c.to_der().map_err(malformed))
        .collect::<Result<Vec<_>, _>>()?;
    let (signer, key) = if responder_is(&basic.tbs_response_data.responder_id, &issuer_cert)? {
        (
            Signer::Issuer,
            issuer_cert.tbs_certificate.subject_pki.clone(),
        )
    } else {
        let der = delegated
            .iter()
            .find(|d| {
                X509Certificate::from_der(d).is_ok_and(|(_, c)| {
                    responder_is(&basic.tbs_response_data.responder_id, &c).unwrap_or(false)
                })
            })
            .ok_or(OcspError::UntrustedSigner(
                "responder is neither the issuer nor a certificate in the response",
            ))?;
        let (_, responder) = X509Certificate::from_der(der).map_err(malformed)?;
        check_delegated(&responder, &issuer_cert, now, skew)?;
        (
            Signer::Delegated,
            responder.tbs_certificate.subject_pki.clone(),
        )
    };
    verify_signature(
        &basic.signature_algorithm.oid.to_string(),
        &key,
        &tbs,
        signature,
    )?;

    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| r.cert_id == query.cert_id)
        .ok_or(OcspError::CertIdMismatch)?;
    let this_update = unix(&single.this_update.0);
    let next_update = single.next_update.as_ref().map(|t| unix(&t.0));
    // A signed "revoked" about this very certificate stands whatever else is off (no nonce,
    // stale, an extension we cannot read): revocation is for good, so dropping it would
    // only let a revoked device on. certificateHold can be lifted: that one must be current.
    if let x509_ocsp::CertStatus::Revoked(info) = &single.cert_status {
        if info.revocation_reason != Some(x509_cert::ext::pkix::CrlReason::CertificateHold) {
            return Ok(Answer {
                status: Status::Revoked {
                    at: unix(&info.revocation_time.0),
                    reason: info.revocation_reason.map(|r| format!("{r:?}")),
                },
                this_update,
                next_update,
                signer,
            });
        }
    }
    let response_extensions = basic.tbs_response_data.response_extensions.iter().flatten();
    if let Some(sent) = &query.nonce {
        let echoed = response_extensions
            .clone()
            .find(|e| e.extn_id.to_string() == OCSP_NONCE)
            .map(|e| e.extn_value.as_bytes().to_vec())
            .ok_or(OcspError::NonceMissing)?;
        // The extension value is the DER OCTET STRING holding the nonce.
        let matches = der::asn1::OctetString::from_der(&echoed)
            .map(|o| o.as_bytes() == sent.as_slice())
            .unwrap_or(false)
            || echoed == *sent;
        if !matches {
            return Err(OcspError::NonceMismatch);
        }
    }
    // The nonce is the only response extension read; no single-response extension is.
    let unsupported = response_extensions
        .filter(|e| e.extn_id.to_string() != OCSP_NONCE)
        .chain(single.single_extensions.iter().flatten())
        .find(|e| e.critical);
    if let Some(e) = unsupported {
        return Err(OcspError::UnsupportedCritical(e.extn_id.to_string()));
    }
    if this_update > now + skew {
        return Err(OcspError::NotYetValid);
    }
    if next_update.is_some_and(|n| n < now - skew) {
        return Err(OcspError::Stale);
    }
    // RFC 5019 §2.2.4: without nextUpdate the answer says nothing of how long it holds; only
    // an echoed nonce or a recent thisUpdate shows it is not a replay of an old "good".
    if next_update.is_none()
        && query.nonce.is_none()
        && now.saturating_sub(this_update) > max_age.saturating_add(skew)
    {
        return Err(OcspError::TooOld);
    }
    let status = match &single.cert_status {
        x509_ocsp::CertStatus::Good(_) => Status::Good,
        x509_ocsp::CertStatus::Revoked(info) => Status::Revoked {
            at: unix(&info.revocation_time.0),
            reason: info.revocation_reason.map(|r| format!("{r:?}")),
        },
        x509_ocsp::CertStatus::Unknown(_) => Status::Unknown,
    };
    Ok(Answer {
        status,
        this_update,
        next_update,
        signer,
    })
}

fn unix(t: &der::asn1::GeneralizedTime) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// True if the ResponderID names `cert` (by subject, or by SHA-1 of its public key bits).
fn responder_is(id: &ResponderId, cert: &X509Certificate<'_>) -> Result<bool, OcspError> {
    Ok(match id {
        ResponderId::ByName(name) => name.to_der().map_err(malformed)? == cert.subject().as_raw(),
        ResponderId::ByKey(hash) => {
            Sha1::digest(cert.public_key().subject_public_key.data.as_ref()).as_slice()
                == hash.as_bytes()
        }
    })
}

/// A delegated responder: issued directly by the issuing CA (name and signature), with the
/// id-kp-OCSPSigning EKU, and valid now.
fn check_delegated(
    responder: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    now: i64,
    skew: i64,
) -> Result<(), OcspError> {
    if responder.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(OcspError::UntrustedSigner(
            "responder certificate not issued by the issuing CA",
        ));
    }
    let ocsp_signing =
        matches!(responder.extended_key_usage(), Ok(Some(eku)) if eku.value.ocsp_signing);
    if !ocsp_signing {
        return Err(OcspError::UntrustedSigner(
            "responder certificate lacks id-kp-OCSPSigning",
        ));
    }
    let v = responder.validity();
    if v.not_before.timestamp() > now + skew || v.not_after.timestamp() < now - skew {
        return Err(OcspError::UntrustedSigner(
            "responder certificate expired or not yet valid",
        ));
    }
    verify_signature(
        &responder.signature_algorithm.algorithm.to_id_string(),
        issuer.public_key(),
        responder.tbs_certificate.as_ref(),
        responder.signature_value.data.as_ref(),
    )
    .map_err(|_| OcspError::UntrustedSigner("responder certificate signature does not verify"))
}

/// Verifies `signature` over `message` with the key in `spki`, for the algorithm OID:
/// ECDSA P-256/P-384 with SHA-256/384 and RSA PKCS#1 v1.5 (2048 bits and up) with
/// SHA-256/384/512; SHA-1 and everything else is refused. Used for CRLs too.
pub(crate) fn verify_signature(
    alg_oid: &str,
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), OcspError> {
    use aws_lc_rs::signature as sig;
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let alg: &'static dyn sig::VerificationAlgorithm = match (alg_oid, curve.as_deref()) {
        ("1.2.840.10045.4.3.2", Some(P256)) => &sig::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.2", Some(P384)) => &sig::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some(P256)) => &sig::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.3", Some(P384)) => &sig::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.113549.1.1.11", _) => &sig::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", _) => &sig::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", _) => &sig::RSA_PKCS1_2048_8192_SHA512,
        // SHA-1 signatures and anything else: not accepted.
        _ => return Err(OcspError::BadSignature),
    };
    sig::UnparsedPublicKey::new(alg, spki.subject_public_key.data.as_ref())
        .verify(message, signature)
        .map_err(|_| OcspError::BadSignature)
}
