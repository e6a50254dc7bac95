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
