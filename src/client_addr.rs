//! Who is on the other end of a request: the socket peer, and the client's
//! address, which is the peer unless the peer is a trusted proxy that says
//! whom it forwarded for. Computed once per request.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};

use crate::config::TrustedProxy;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The facts about a request's origin that every rule needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// The socket peer, IPv4 as IPv4 even on a dual-stack listener.
    pub peer: IpAddr,
    /// Whether the peer is one of `--trusted-proxies`.
    pub peer_is_trusted: bool,
    /// The client's address: the peer, or what a trusted peer forwarded.
    pub address: IpAddr,
}

/// How the client address is found: which proxies are believed, and which
/// header they name the client in.
#[derive(Clone, Debug, Default)]
pub struct ClientAddressing {
    pub trusted_proxies: Vec<TrustedProxy>,
    /// `--client-ip-header`; `X-Forwarded-For` when unset.
    pub client_ip_header: Option<HeaderName>,
}

impl ClientAddressing {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client behind a request from `peer`.
    pub fn client_info(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientInfo {
        let peer = peer.ip().to_canonical();
        let peer_is_trusted = self.is_trusted(peer);
        let address = if !peer_is_trusted {
            peer
        } else if let Some(header) = &self.client_ip_header {
            headers
                .get(header)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<IpAddr>().ok())
                .map_or(peer, |ip| ip.to_canonical())
        } else {
            self.last_untrusted_forwarded_for(headers, peer)
        };
        ClientInfo {
            peer,
            peer_is_trusted,
            address,
        }
    }

    /// `X-Forwarded-For` read back from the nearest hop: trusted proxies are
    /// skipped, the first hop that is not one is the client. An unparsable
    /// hop ends the chain: a client cannot choose its address by sending the
    /// header itself.
    fn last_untrusted_forwarded_for(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let hops: Vec<Option<IpAddr>> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|hop| {
                hop.trim()
                    .parse::<IpAddr>()
                    .ok()
                    .map(|ip| ip.to_canonical())
            })
            .collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Some(hop) = hop else { break };
            client = hop;
            if !self.is_trusted(hop) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn addressing() -> ClientAddressing {
        ClientAddressing {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            client_ip_header: None,
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4000)
    }

    fn ip(ip: &str) -> IpAddr {
        ip.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let info = addressing().client_info(
            peer("203.0.113.9"),
            &headers(&[("x-forwarded-for", "1.2.3.4")]),
        );
        assert_eq!(info.address, ip("203.0.113.9"));
        assert!(!info.peer_is_trusted);
    }

    #[test]
    fn trusted_proxies_name_the_first_untrusted_hop_from_the_right() {
        let info = addressing().client_info(
            peer("10.0.0.1"),
            &headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2")]),
        );
        assert_eq!(info.address, ip("198.51.100.7"));
        assert!(info.peer_is_trusted);
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let info = addressing().client_info(peer("10.0.0.1"), &HeaderMap::new());
        assert_eq!(info.address, ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let info = addressing().client_info(
            peer("::ffff:10.0.0.1"),
            &headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]),
        );
        assert_eq!(info.peer, ip("10.0.0.1"));
        assert!(info.peer_is_trusted, "the mapped peer matches 10.0.0.0/8");
        assert_eq!(info.address, ip("198.51.100.7"));
    }

    #[test]
    fn a_client_ip_header_is_believed_from_trusted_proxies_only() {
        let addressing = ClientAddressing {
            client_ip_header: Some(HeaderName::from_static("fly-client-ip")),
            ..addressing()
        };
        let sent = headers(&[
            ("fly-client-ip", "198.51.100.7"),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        assert_eq!(
            addressing.client_info(peer("10.0.0.1"), &sent).address,
            ip("198.51.100.7")
        );
        assert_eq!(
            addressing.client_info(peer("203.0.113.9"), &sent).address,
            ip("203.0.113.9")
        );
    }
}
