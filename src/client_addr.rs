//! Who is on the other end of a request: the socket peer, and the client's
//! address, which is the peer unless the peer is a trusted proxy that says
//! whom it forwarded for. Computed once per request. A private peer that
//! names a client without being trusted is most likely a platform's proxy
//! left out of `--trusted-proxies`: that is said once per peer.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName};

use crate::config::TrustedProxy;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// At most this many peers are remembered as warned about; past it, new
/// peers go unmentioned (by then the log has said it many times).
const MAX_WARNED_PEERS: usize = 1024;

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
    /// The untrusted private peers already warned about.
    warned: Arc<Mutex<HashSet<IpAddr>>>,
}

impl ClientAddressing {
    pub fn new(
        trusted_proxies: Vec<TrustedProxy>,
        client_ip_header: Option<HeaderName>,
    ) -> ClientAddressing {
        ClientAddressing {
            trusted_proxies,
            client_ip_header,
            warned: Arc::default(),
        }
    }

    /// Warns, once per peer, when a private or loopback peer that is not a
    /// trusted proxy names a client in `X-Forwarded-For` (or the
    /// `--client-ip-header`): behind a platform's proxy every user is then
    /// seen as the proxy and shares one login budget. Nothing is looked at
    /// for a trusted peer, and only a header for an untrusted private one.
    /// Whether it warned now.
    pub fn warn_if_untrusted_proxy(&self, client: &ClientInfo, headers: &HeaderMap) -> bool {
        if client.peer_is_trusted || !is_private_or_loopback(client.peer) {
            return false;
        }
        let header = if headers.contains_key(X_FORWARDED_FOR) {
            X_FORWARDED_FOR
        } else {
            match &self.client_ip_header {
                Some(header) if headers.contains_key(header) => header.as_str(),
                _ => return false,
            }
        };
        {
            // A poisoned lock only means another warning panicked halfway.
            let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
            if warned.len() >= MAX_WARNED_PEERS || !warned.insert(client.peer) {
                return false;
            }
        }
        tracing::warn!(
            peer = %client.peer,
            header,
            "the private peer {} sent {header} but is not in --trusted-proxies \
             (TOLLGATE_TRUSTED_PROXIES): the header is ignored, so every client behind it \
             is seen as {} and shares one login throttle budget; if it is your proxy or \
             your platform's, add its addresses to --trusted-proxies",
            client.peer,
            client.peer
        );
        true
    }

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

/// Loopback, private (RFC 1918, shared address space, unique local) and
/// link-local addresses: where a platform's proxy connects from.
fn is_private_or_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [first, second, ..] = v4.octets();
            let shared_address_space = first == 100 && (second & 0xc0) == 64;
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || shared_address_space
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            let unique_local = (first & 0xfe00) == 0xfc00;
            let link_local = (first & 0xffc0) == 0xfe80;
            v6.is_loopback() || unique_local || link_local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn addressing() -> ClientAddressing {
        ClientAddressing::new(vec!["10.0.0.0/8".parse().unwrap()], None)
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

    #[test]
    fn an_untrusted_private_peer_naming_a_client_is_warned_about_once() {
        let addressing = addressing();
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.7")]);
        let warns = |peer_ip: &str, sent: &HeaderMap| {
            let info = addressing.client_info(peer(peer_ip), sent);
            addressing.warn_if_untrusted_proxy(&info, sent)
        };
        assert!(warns("127.0.0.1", &forwarded));
        assert!(!warns("127.0.0.1", &forwarded), "once per peer");
        assert!(warns("::ffff:192.168.1.2", &forwarded), "another peer");
        assert!(warns("fd00::1", &forwarded));
        assert!(warns("100.64.0.1", &forwarded));
        assert!(!warns("10.0.0.1", &forwarded), "a trusted proxy");
        assert!(!warns("203.0.113.9", &forwarded), "a public client");
        assert!(!warns("172.16.0.1", &HeaderMap::new()), "no header");
    }

    #[test]
    fn the_client_ip_header_from_an_untrusted_private_peer_is_warned_about() {
        let addressing =
            ClientAddressing::new(Vec::new(), Some(HeaderName::from_static("fly-client-ip")));
        let sent = headers(&[("fly-client-ip", "198.51.100.7")]);
        let info = addressing.client_info(peer("172.16.0.1"), &sent);
        assert!(addressing.warn_if_untrusted_proxy(&info, &sent));
    }

    #[test]
    fn warned_peers_are_bounded() {
        let addressing = ClientAddressing::new(Vec::new(), None);
        let forwarded = headers(&[("x-forwarded-for", "198.51.100.7")]);
        let warned = (0..MAX_WARNED_PEERS + 10)
            .filter(|n| {
                let ip = IpAddr::from([10, 1, (n / 256) as u8, (n % 256) as u8]);
                let info = addressing.client_info(SocketAddr::new(ip, 1), &forwarded);
                addressing.warn_if_untrusted_proxy(&info, &forwarded)
            })
            .count();
        assert_eq!(warned, MAX_WARNED_PEERS);
    }
}
