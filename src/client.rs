//! Who is on the other end of a connection: the socket peer, or the address a
//! trusted proxy says it forwarded for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{Extensions, HeaderMap};

use crate::config::TrustedProxy;

/// The socket peer of a request's connection, stored in its extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// The peer's address of a request (unspecified if it has none, as in
    /// requests not made by the server).
    pub fn ip_of(extensions: &Extensions) -> IpAddr {
        extensions
            .get::<PeerAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.0.ip())
    }
}

pub fn is_trusted_proxy(ip: IpAddr, trusted: &[TrustedProxy]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client's address. `X-Forwarded-For` is believed only when the peer is
/// a trusted proxy, and then only up to the first hop that is not one: a
/// client cannot choose its address by sending the header itself.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[TrustedProxy]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| is_trusted_proxy(*ip, trusted);
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>().ok())
        .collect();
    let mut client = peer;
    // Walk back from the nearest hop; an unparsable hop ends the trust chain.
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop else { break };
        client = hop;
        if !is_trusted(&hop) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted() -> Vec<TrustedProxy> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn with_xff(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(&with_xff("1.2.3.4"), peer, &trusted()), peer);
    }

    #[test]
    fn trusted_proxies_name_the_first_untrusted_hop_from_the_right() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let headers = with_xff("6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            client_ip(&headers, peer, &trusted()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(client_ip(&HeaderMap::new(), peer, &trusted()), peer);
    }
}
