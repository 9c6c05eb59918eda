//! Attribute types the server logic uses, as Rust types (RFC 2865, 2868, 2869, 3579, 2548).
//!
//! Everything else is data, described by `dictionaries/` for logging and policy.

use radius::core::{rfc2865, rfc2868, rfc2869, rfc3580};

/// Attribute types that anchord reads or writes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// User-Name (1).
    UserName,
    /// NAS-IP-Address (4).
    NasIpAddress,
    /// Framed-MTU (12): the device link MTU, lowers the EAP fragment size.
    FramedMtu,
    /// State (24): keys the EAP session.
    State,
    /// Class (25).
    Class,
    /// Vendor-Specific (26).
    VendorSpecific,
    /// Called-Station-Id (30).
    CalledStationId,
    /// Calling-Station-Id (31): the device MAC.
    CallingStationId,
    /// NAS-Identifier (32).
    NasIdentifier,
    /// Proxy-State (33): copied unchanged into the reply.
    ProxyState,
    /// Tunnel-Type (64).
    TunnelType,
    /// Tunnel-Medium-Type (65).
    TunnelMediumType,
    /// EAP-Message (79).
    EapMessage,
    /// Message-Authenticator (80).
    MessageAuthenticator,
    /// Tunnel-Private-Group-ID (81): the VLAN.
    TunnelPrivateGroupId,
    /// Any other type.
    Other(u8),
}

impl AttrType {
    /// The wire number.
    pub fn code(self) -> u8 {
        match self {
            Self::UserName => rfc2865::USER_NAME_TYPE,
            Self::NasIpAddress => rfc2865::NAS_IP_ADDRESS_TYPE,
            Self::FramedMtu => rfc2865::FRAMED_MTU_TYPE,
            Self::State => rfc2865::STATE_TYPE,
            Self::Class => rfc2865::CLASS_TYPE,
            Self::VendorSpecific => rfc2865::VENDOR_SPECIFIC_TYPE,
            Self::CalledStationId => rfc2865::CALLED_STATION_ID_TYPE,
            Self::CallingStationId => rfc2865::CALLING_STATION_ID_TYPE,
            Self::NasIdentifier => rfc2865::NAS_IDENTIFIER_TYPE,
            Self::ProxyState => rfc2865::PROXY_STATE_TYPE,
            Self::TunnelType => rfc2868::TUNNEL_TYPE_TYPE,
            Self::TunnelMediumType => rfc2868::TUNNEL_MEDIUM_TYPE_TYPE,
            Self::EapMessage => rfc2869::EAP_MESSAGE_TYPE,
            Self::MessageAuthenticator => rfc2869::MESSAGE_AUTHENTICATOR_TYPE,
            Self::TunnelPrivateGroupId => rfc2868::TUNNEL_PRIVATE_GROUP_ID_TYPE,
            Self::Other(code) => code,
        }
    }

    /// The type for a wire number.
    pub fn from_code(code: u8) -> Self {
        [
            Self::UserName,
            Self::NasIpAddress,
            Self::FramedMtu,
            Self::State,
            Self::Class,
            Self::VendorSpecific,
            Self::CalledStationId,
            Self::CallingStationId,
            Self::NasIdentifier,
            Self::ProxyState,
            Self::TunnelType,
            Self::TunnelMediumType,
            Self::EapMessage,
            Self::MessageAuthenticator,
            Self::TunnelPrivateGroupId,
        ]
        .into_iter()
        .find(|t| t.code() == code)
        .unwrap_or(Self::Other(code))
    }
}

/// Tunnel-Type value VLAN (RFC 3580 §3.31).
pub const TUNNEL_TYPE_VLAN: u32 = rfc3580::TUNNEL_TYPE_VLAN;
/// Tunnel-Medium-Type value IEEE-802 (RFC 2868 §3.2).
pub const TUNNEL_MEDIUM_IEEE_802: u32 = rfc2868::TUNNEL_MEDIUM_TYPE_IEEE_802;
/// Microsoft's SMI vendor number (RFC 2548).
pub const VENDOR_MICROSOFT: u32 = 311;
/// MS-MPPE-Send-Key vendor type (RFC 2548 §2.4.2).
pub const MS_MPPE_SEND_KEY: u8 = 0x10;
/// MS-MPPE-Recv-Key vendor type (RFC 2548 §2.4.3).
pub const MS_MPPE_RECV_KEY: u8 = 0x11;

/// A Calling-Station-Id in one form: a MAC address in any common notation
/// (`00:11:22:AA:BB:CC`, `0011.22aa.bbcc`, `001122aabbcc`, ...) becomes the IEEE form
/// `00-11-22-AA-BB-CC` (RFC 3580 §3.21); anything else is kept as sent (lossy UTF-8, at most
/// 64 characters).
pub fn station_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let hex: Vec<char> = text.chars().filter(char::is_ascii_hexdigit).collect();
    let separators_only = text
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '-' | '.'));
    if hex.len() == 12 && separators_only {
        let up: String = hex.iter().map(char::to_ascii_uppercase).collect();
        return up
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
            .join("-");
    }
    text.chars().take(64).collect()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixed test data")]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(AttrType::from_code(code).code(), code);
        }
        assert_eq!(AttrType::from_code(0x50), AttrType::MessageAuthenticator);
        assert_eq!(AttrType::EapMessage.code(), 0x4F);
        assert_eq!(TUNNEL_TYPE_VLAN, 13);
        assert_eq!(TUNNEL_MEDIUM_IEEE_802, 6);
    }
}
