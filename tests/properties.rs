//! Property tests of the parsers that face the network: no input panics,
//! normalisation is idempotent and canonical, and no path built under a
//! prefix without climbing out of it normalises to somewhere else.

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use tollgate::auth::KeyAlg;
use tollgate::auth::cookies::find_cookie;
use tollgate::auth::credentials::presented_token;
use tollgate::auth::keydir::KeyDir;
use tollgate::auth::keyset::KeySet;
use tollgate::auth::tokens::{Expectations, decode_unverified, verify};
use tollgate::client_addr::ClientAddressing;
use tollgate::config::{parse_duration, parse_origin, parse_size, parse_trusted_proxy};
use tollgate::paths::{is_under, normalize};
use tollgate::time::{UnixMillis, UnixSeconds};

/// Path-ish strings: the characters and escapes that tricks are made of.
fn path_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("\\".to_string()),
        Just(";".to_string()),
        Just("%".to_string()),
        Just("%c0%ae".to_string()),
        Just("%41".to_string()),
        Just("%00".to_string()),
        "[a-zA-Z0-9_~-]{1,4}",
        "%[0-9a-fA-F]{2}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| format!("/{}", pieces.concat()))
}

/// A segment that is never a dot segment in any spelling.
fn plain_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_~-]{1,8}",
        "[a-z]{1,3}%20[a-z]{1,3}",
        "[a-z]{1,3}\\.[a-z]{1,3}",
        "\\.\\.[a-z]{1,3}"
    ]
}

/// One key set for every case; its directory is gone once it is built.
static KEYS: LazyLock<KeySet> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyDir::open(dir.path()).unwrap();
    keys.generate_if_empty(KeyAlg::EdDSA, UnixMillis::new(0))
        .unwrap();
    KeySet::build(
        &keys.load().unwrap(),
        &[],
        UnixMillis::new(0),
        Duration::from_secs(60),
    )
    .unwrap()
});

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalising_never_panics(raw in any::<String>()) {
        let _ = normalize(&raw);
    }

    #[test]
    fn normalising_is_idempotent(raw in path_like()) {
        if let Ok(once) = normalize(&raw) {
            let twice = normalize(&once).expect("a normalised path normalises");
            prop_assert_eq!(twice.as_ref(), once.as_ref());
        }
    }

    #[test]
    fn normalised_paths_are_canonical(raw in path_like()) {
        if let Ok(path) = normalize(&raw) {
            prop_assert!(path.starts_with('/'));
            prop_assert!(!path.contains("//"), "{}", path);
            prop_assert!(!path.contains('\\'), "{}", path);
            let lower = path.to_ascii_lowercase();
            for escape in ["%2f", "%5c", "%2e", "%00"] {
                prop_assert!(!lower.contains(escape), "{} in {}", escape, path);
            }
            for segment in path.split('/') {
                let name = segment.split(';').next().unwrap_or(segment);
                prop_assert!(name != "." && name != "..", "dot segment in {}", path);
            }
        }
    }

    #[test]
    fn no_path_built_under_a_prefix_escapes_it(
        prefix in prop::collection::vec("[a-z]{1,6}", 1..3),
        rest in prop::collection::vec(plain_segment(), 0..5),
        dots in prop::collection::vec(prop_oneof![Just("."), Just("%2e"), Just("")], 0..3),
    ) {
        let prefix = format!("/{}", prefix.join("/"));
        let mut path = prefix.clone();
        for (i, segment) in rest.iter().enumerate() {
            path.push('/');
            // Sprinkle `.` segments and empty segments: resolving them never leaves the prefix.
            if let Some(dot) = dots.get(i) {
                path.push_str(dot);
                path.push('/');
            }
            path.push_str(segment);
        }
        let normalized = normalize(&path).expect("such paths normalise");
        prop_assert!(is_under(&normalized, &prefix), "{} -> {} left {}", path, normalized, prefix);
    }

    #[test]
    fn climbing_out_of_a_prefix_lands_outside_it(
        prefix in "[a-z]{1,6}",
        target in "[a-z]{1,6}",
        climb in prop_oneof![Just(".."), Just("%2e%2e"), Just(".%2E"), Just("%2E.")],
    ) {
        prop_assume!(prefix != target);
        let path = format!("/{prefix}/{climb}/{target}");
        let normalized = normalize(&path).unwrap();
        prop_assert_eq!(normalized.as_ref(), format!("/{target}"));
        let public = format!("/{}", prefix);
        prop_assert!(!is_under(&normalized, &public));
    }

    #[test]
    fn cookie_headers_never_panic(value in any::<String>(), name in "[a-z_]{1,16}") {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert("cookie", value);
        }
        let _ = find_cookie(&headers, &name);
        let _ = presented_token(&headers);
    }

    #[test]
    fn a_cookie_is_found_among_others(
        others in prop::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9]{0,12}"), 0..4),
        value in "[a-zA-Z0-9._-]{1,40}",
    ) {
        let mut pairs: Vec<String> = others
            .iter()
            .filter(|(name, _)| name != "tollgate_access")
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        pairs.insert(pairs.len() / 2, format!("tollgate_access={value}"));
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_str(&pairs.join("; ")).unwrap());
        prop_assert_eq!(find_cookie(&headers, "tollgate_access"), Some(value.as_str()));
    }

    #[test]
    fn forwarded_for_never_panics_and_names_a_hop_or_the_peer(value in any::<String>(), peer in any::<[u8; 4]>()) {
        let peer = IpAddr::from(peer);
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert("x-forwarded-for", value);
        }
        let addressing = ClientAddressing::new(vec!["0.0.0.0/0".parse().unwrap()], None);
        let client = addressing.client_info(std::net::SocketAddr::new(peer, 1), &headers).address;
        let hops: Vec<IpAddr> = value.split(',').filter_map(|hop| hop.trim().parse().ok()).collect();
        prop_assert!(client == peer || hops.contains(&client));
    }

    #[test]
    fn flag_parsers_never_panic(raw in any::<String>()) {
        let _ = parse_duration(&raw);
        let _ = parse_size(&raw);
        let _ = parse_origin(&raw);
        let _ = parse_trusted_proxy(&raw);
    }

    #[test]
    fn durations_parse_in_every_unit(amount in 1u64..100_000, unit in prop_oneof![Just(("s", 1u64)), Just(("m", 60)), Just(("h", 3600)), Just(("d", 86_400))]) {
        let parsed = parse_duration(&format!("{amount}{}", unit.0)).unwrap();
        prop_assert_eq!(parsed, Duration::from_secs(amount * unit.1));
    }

    #[test]
    fn token_parsing_never_panics(raw in any::<String>(), segments in prop::collection::vec("[A-Za-z0-9_-]{0,60}", 0..5)) {
        let expect = Expectations { issuer: "tollgate".into(), audience: "tollgate".into() };
        let joined = segments.join(".");
        for token in [raw.as_str(), joined.as_str()] {
            let _ = decode_unverified(token);
            prop_assert!(verify(&KEYS, token, &expect, UnixSeconds::new(0)).is_err());
        }
    }
}

/// Bytes `HeaderValue::from_bytes` accepts: tab, space and visible ASCII,
/// and every byte from 0x80 up (not UTF-8 on its own).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff]
}

/// Header values made of the pieces tricks are made of: the gateway's cookie
/// names, separators, whitespace ASCII and not, schemes, identity header
/// names, and arbitrary bytes between them.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"tollgate_access=".to_vec()),
        Just(b"tollgate_refresh=".to_vec()),
        Just(b"tollgate_".to_vec()),
        Just(b"TOLLGATE_ACCESS=".to_vec()),
        Just(b";".to_vec()),
        Just(b"; ".to_vec()),
        Just(b",".to_vec()),
        Just(b"=".to_vec()),
        Just(b"\"".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just("\u{a0}".as_bytes().to_vec()),
        Just("\u{2003}".as_bytes().to_vec()),
        Just("\u{feff}".as_bytes().to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b"Bearer ".to_vec()),
        Just(b"bearer\t".to_vec()),
        Just(b"Basic ".to_vec()),
        Just(b"x-auth-user-id".to_vec()),
        Just(b"X_Auth_Roles".to_vec()),
        Just(b"127.0.0.1".to_vec()),
        Just(b"[::1]:80".to_vec()),
        Just(b"https".to_vec()),
        prop::collection::vec(prop::sample::select(&b"azAZ09._-"[..]), 1..8),
        prop::collection::vec(header_byte(), 1..8),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

/// Header names a client may send: the ones the rules are about, the
/// identity headers in every spelling, and some others.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("cookie".to_string()),
        Just("host".to_string()),
        Just("authorization".to_string()),
        Just("x-forwarded-for".to_string()),
        Just("x-forwarded-host".to_string()),
        Just("x-forwarded-proto".to_string()),
        Just("forwarded".to_string()),
        Just("x-real-ip".to_string()),
        Just("connection".to_string()),
        identity_spelling(),
        Just("x-other".to_string()),
    ]
}

/// `X-Auth-*` names, in the spellings an upstream may take for one.
fn identity_spelling() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["x-auth-", "X_Auth_", "x-auth_", "X_AUTH-"]),
        prop::sample::select(vec![
            "",
            "user-id",
            "user_id",
            "Username",
            "ROLES",
            "session-id",
            "session_Id",
            "other",
        ]),
    )
        .prop_map(|(prefix, suffix)| format!("{prefix}{suffix}"))
}

/// The identity of an authenticated request: alice, with a session.
static IDENTITY: LazyLock<tollgate::auth::Identity> = LazyLock::new(|| {
    let claims: tollgate::auth::tokens::AccessClaims = serde_json::from_value(serde_json::json!({
        "iss": "tollgate",
        "aud": "tollgate",
        "sub": "8c6d1c1e-3f43-4a34-9c51-0d7b0f0f4b4e",
        "iat": 0,
        "exp": 1,
        "jti": "j",
        "sid": "0e8d8f6a-9b7e-4f4e-8f0a-3a0c6c1d2e3f",
        "preferred_username": "alice",
        "roles": ["admin"],
    }))
    .expect("valid claims");
    let presented = tollgate::auth::PresentedToken {
        token: "the.access.token",
        source: tollgate::auth::CredentialSource::Cookie,
        header: None,
    };
    tollgate::auth::Identity::of("test-key", claims, &presented)
});

/// Whether a forwarded `Cookie` header carries a cookie named `tollgate_…`
/// as any cookie parser would read it: pairs split at `;`, the name trimmed
/// of any whitespace, ASCII or not.
fn carries_a_gateway_cookie(value: &HeaderValue) -> bool {
    String::from_utf8_lossy(value.as_bytes())
        .split(';')
        .any(|pair| pair.trim().starts_with("tollgate_"))
}

/// Whether a header name is an identity header in some spelling.
fn is_identity_spelling(name: &str) -> bool {
    name.to_ascii_lowercase()
        .replace('_', "-")
        .starts_with("x-auth-")
}

proptest! {
    // XorShift: unoptimised ChaCha took nine tenths of the time of these
    // many, large cases.
    #![proptest_config(ProptestConfig {
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(4000)
    })]

    #[test]
    fn forwarded_headers_never_carry_the_gateways_cookies_or_a_clients_identity(
        sent in prop::collection::vec((header_name(), header_value()), 0..12),
        authenticated in any::<bool>(),
        trusted in any::<bool>(),
        peer in any::<[u8; 4]>(),
        client_host in prop::option::of(header_value()),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &sent {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
            }
        }
        let peer = IpAddr::from(peer);
        let client = tollgate::client_addr::ClientInfo {
            peer,
            peer_is_trusted: trusted,
            address: peer,
        };
        let forwarded = tollgate::proxy::headers::Forwarded {
            identity: authenticated.then(|| &*IDENTITY),
            client: &client,
            client_host: client_host.and_then(|host| HeaderValue::from_bytes(&host).ok()),
            upgrade: None,
            trace: None,
        };
        tollgate::proxy::headers::prepare_request(&mut headers, &forwarded);

        for value in headers.get_all("cookie") {
            prop_assert!(!carries_a_gateway_cookie(value), "{:?}", value);
        }
        prop_assert_eq!(find_cookie(&headers, "tollgate_access"), None);
        prop_assert_eq!(find_cookie(&headers, "tollgate_refresh"), None);
        prop_assert!(!headers.contains_key("host"));

        let identity: Vec<(&str, &HeaderValue)> = headers
            .iter()
            .filter(|(name, _)| is_identity_spelling(name.as_str()))
            .map(|(name, value)| (name.as_str(), value))
            .collect();
        if authenticated {
            let mut names: Vec<&str> = identity.iter().map(|(name, _)| *name).collect();
            names.sort_unstable();
            prop_assert_eq!(
                names,
                ["x-auth-roles", "x-auth-session-id", "x-auth-user-id", "x-auth-username"]
            );
            prop_assert_eq!(headers.get("x-auth-username").unwrap(), "alice");
            prop_assert_eq!(headers.get("x-auth-roles").unwrap(), "admin");
            let authorization: Vec<&HeaderValue> = headers.get_all("authorization").iter().collect();
            prop_assert_eq!(authorization, ["Bearer the.access.token"]);
        } else {
            prop_assert!(identity.is_empty(), "{:?}", identity);
            for value in headers.get_all("authorization") {
                prop_assert!(
                    !tollgate::auth::credentials::is_bearer_scheme(value),
                    "{:?}", value
                );
            }
        }

        let forwarded_for: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
        prop_assert_eq!(forwarded_for.len(), 1);
        let forwarded_for = forwarded_for[0].to_str().unwrap();
        if trusted {
            prop_assert!(forwarded_for.ends_with(&peer.to_string()), "{}", forwarded_for);
        } else {
            prop_assert_eq!(forwarded_for, peer.to_string());
            for name in ["forwarded", "x-real-ip"] {
                prop_assert!(!headers.contains_key(name));
            }
        }
        prop_assert!(headers.contains_key("x-forwarded-proto"));
        if !trusted {
            prop_assert_eq!(headers.get_all("x-forwarded-proto").iter().count(), 1);
            prop_assert!(headers.get_all("x-forwarded-host").iter().count() <= 1);
        }
    }
}
