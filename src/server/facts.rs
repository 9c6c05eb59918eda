//! What a NAS said in an Access-Request, as [`RequestFacts`] for the policy: the
//! attributes it names the device, the port and the network by, typed, and every other
//! attribute the dictionary can show, by name. Peer-supplied text is kept as sent (bounded
//! by the packet); logs and the audit record escape it.

use std::net::{IpAddr, Ipv6Addr};

use super::sessions::station_id;
use crate::config::Client;
use crate::policy::RequestFacts;
use crate::radius::dictionary::Dictionary;
use crate::radius::summary::named_values;
use crate::radius::{AttrType, Request};

/// RADIUS attribute numbers without an [`AttrType`] of their own (RFC 2869, RFC 3162).
const NAS_PORT_TYPE: u8 = 61;
const NAS_PORT_ID: u8 = 87;
const NAS_IPV6_ADDRESS: u8 = 95;

/// The facts of `req` from `client`; `eap_identity` is the EAP identity it carried, if any.
pub fn request_facts(
    req: &Request<'_>,
    client: &Client,
    dictionary: &Dictionary,
    eap_identity: &str,
) -> RequestFacts {
    let text = |ty: AttrType| {
        req.first(ty)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let u32_of = |ty: AttrType| {
        req.first(ty)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes)
    };
    let called_station = text(AttrType::CalledStationId);
    let ssid = called_station
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .map(|(_, ssid)| ssid.to_owned())
        .filter(|s| !s.is_empty());
    RequestFacts {
        client: client.name.clone(),
        nas_ip: req
            .first(AttrType::NasIpAddress)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(IpAddr::from),
        nas_ipv6: req
            .first(AttrType::Other(NAS_IPV6_ADDRESS))
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .map(Ipv6Addr::from),
        nas_identifier: text(AttrType::NasIdentifier),
        nas_port_type: u32_of(AttrType::Other(NAS_PORT_TYPE)),
        nas_port_id: text(AttrType::Other(NAS_PORT_ID)),
        called_station,
        ssid,
        calling_station: req.first(AttrType::CallingStationId).map(station_id),
        framed_mtu: req.framed_mtu(),
        eap_identity: eap_identity.to_owned(),
        attributes: named_values(req.attributes(), dictionary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::packet::{Attribute, Code};

    #[test]
    fn a_wifi_request_reads_as_typed_facts() {
        let attrs = [
            (AttrType::UserName, b"laptop-1".to_vec()),
            (AttrType::NasIpAddress, vec![192, 0, 2, 10]),
            (AttrType::NasIdentifier, b"wlc-1".to_vec()),
            (AttrType::Other(NAS_PORT_TYPE), vec![0, 0, 0, 19]),
            (AttrType::Other(NAS_PORT_ID), b"ap-17".to_vec()),
            (
                AttrType::CalledStationId,
                b"AA-BB-CC-DD-EE-FF:Corp-WiFi".to_vec(),
            ),
            (AttrType::CallingStationId, b"02:00:00:00:00:01".to_vec()),
            (AttrType::FramedMtu, vec![0, 0, 5, 0x78]),
            (AttrType::EapMessage, vec![2, 1, 0, 5, 1]),
            (
                AttrType::Other(NAS_IPV6_ADDRESS),
                vec![0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
        ];
        let attributes: Vec<Attribute<'_>> = attrs
            .iter()
            .map(|(ty, v)| Attribute { ty: *ty, value: v })
            .collect();
        let req = Request::for_test(Code::AccessRequest, attributes);
        let client = Client::for_test("wlc-campus");
        let dict = Dictionary::builtin().unwrap();
        let f = request_facts(&req, &client, &dict, "laptop-1");
        assert_eq!(f.client, "wlc-campus");
        assert_eq!(f.nas_ip, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(f.nas_ipv6, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(f.nas_identifier.as_deref(), Some("wlc-1"));
        assert_eq!(f.nas_port_type, Some(19));
        assert_eq!(f.nas_port_id.as_deref(), Some("ap-17"));
        assert_eq!(f.ssid.as_deref(), Some("Corp-WiFi"));
        assert_eq!(f.calling_station.as_deref(), Some("02-00-00-00-00-01"));
        assert_eq!(f.framed_mtu, Some(1400));
        assert_eq!(f.eap_identity, "laptop-1");
        assert_eq!(f.attribute("user-name"), Some("laptop-1"));
        assert_eq!(f.attribute("NAS-Port-Type"), Some("Wireless-802.11"));
        assert!(
            f.attributes.iter().all(|(n, _)| n != "EAP-Message"),
            "payloads are not facts: {:?}",
            f.attributes
        );
    }

    #[test]
    fn a_called_station_without_an_ssid_has_none() {
        let attrs = [(AttrType::CalledStationId, b"AA-BB-CC-DD-EE-FF".to_vec())];
        let attributes: Vec<Attribute<'_>> = attrs
            .iter()
            .map(|(ty, v)| Attribute { ty: *ty, value: v })
            .collect();
        let req = Request::for_test(Code::AccessRequest, attributes);
        let f = request_facts(
            &req,
            &Client::for_test("sw"),
            &Dictionary::builtin().unwrap(),
            "",
        );
        assert_eq!(f.ssid, None);
        assert_eq!(f.called_station.as_deref(), Some("AA-BB-CC-DD-EE-FF"));
    }
}
