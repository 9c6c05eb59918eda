//! The NAS table: source address to client entry, most specific network first.

use std::net::IpAddr;

use crate::config::Client;

/// Looks up clients by source address.
#[derive(Debug)]
pub struct ClientTable {
    clients: Vec<Client>,
}

impl ClientTable {
    /// Builds the table; `clients` must be sorted most specific first (config does this).
    pub fn new(clients: Vec<Client>) -> Self {
        Self { clients }
    }

    /// The client for a source address. IPv4-mapped IPv6 sources match IPv4 entries.
    pub fn lookup(&self, ip: IpAddr) -> Option<&Client> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.clients.iter().find(|c| c.network.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::SharedSecret;

    fn client(name: &str, net: &str) -> Client {
        Client {
            name: name.into(),
            network: net.parse().unwrap(),
            secret: SharedSecret::new(b"s".to_vec()),
            require_message_authenticator: true,
            accounting_require_message_authenticator: false,
            das: None,
        }
    }

    #[test]
    fn most_specific_entry_wins_and_unknown_is_none() {
        let t = ClientTable::new(vec![
            client("host", "10.0.0.5/32"),
            client("net", "10.0.0.0/24"),
        ]);
        assert_eq!(t.lookup("10.0.0.5".parse().unwrap()).unwrap().name, "host");
        assert_eq!(t.lookup("10.0.0.6".parse().unwrap()).unwrap().name, "net");
        assert_eq!(
            t.lookup("::ffff:10.0.0.7".parse().unwrap()).unwrap().name,
            "net"
        );
        assert!(t.lookup("10.0.1.1".parse().unwrap()).is_none());
    }
}
