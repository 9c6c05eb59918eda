//! What a NAS said in an Access-Request, as [`RequestFacts`] for the policy: the
//! attributes it names the device, the port and the network by, typed, and every other
//! attribute the dictionary can show, by name. Peer-supplied text is kept as sent (bounded
//! by the packet); logs and the audit record escape it.

use crate::config::Client;
use crate::policy::RequestFacts;
use crate::radius::dictionary::Dictionary;
use crate::radius::Request;

/// The facts of `req` from `client`; `eap_identity` is the EAP identity it carried, if any.
pub fn request_facts(
    req: &Request<'_>,
    client: &Client,
    dictionary: &Dictionary,
    eap_identity: &str,
) -> RequestFacts {
    RequestFacts::of(req.attributes(), &client.name, dictionary, eap_identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::packet::{Attribute, Code};
    use crate::radius::AttrType;

    const NAS_PORT_TYPE: u8 = 61;
    const NAS_PORT_ID: u8 = 87;
    const NAS_IPV6_ADDRESS: u8 = 95;

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
