//! Forged and doctored access tokens: each is refused with the `reason` that
//! explains it. Every forgery starts from a genuine token and, where it
//! needs a signature, the gateway's own signing key, so that it differs
//! from an accepted token in exactly one way.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tollgate::auth::KeyAlg;
use tollgate::auth::keydir::KeyDir;
use tollgate::time::{UnixMillis, UnixSeconds};

use crate::helpers::{
    Backend, PASSWORD, TestApp, TestResponse, Tokens, claims_of, header_of, private_key_pem,
};
use crate::on_both_backends;

/// A gateway, the claims of a genuine token of its user, and its signing key.
struct Forger {
    app: TestApp,
    claims: Value,
    genuine: String,
    kid: String,
    key: EncodingKey,
}

impl Forger {
    async fn new(backend: Backend) -> Forger {
        let app = TestApp::spawn(backend).await;
        let genuine = app.signed_up("alice").await.access;
        let kid = app.app.keys.current().signing().kid.clone();
        let key = EncodingKey::from_ed_pem(&private_key_pem(app.deployment.keys_dir(), &kid))
            .expect("the gateway's key is an Ed25519 PEM");
        Forger {
            claims: claims_of(&genuine),
            app,
            genuine,
            kid,
            key,
        }
    }

    /// The header of a genuine token.
    fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        header
    }

    /// A token with the genuine header and claims changed by `change`, signed
    /// with the gateway's own key.
    fn with_claims(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.claims.clone();
        change(&mut claims);
        sign(&self.header(), &claims, &self.key)
    }

    /// A token with the genuine claims and the header changed by `change`,
    /// signed with the gateway's own key.
    fn with_header(&self, change: impl FnOnce(&mut Header)) -> String {
        let mut header = self.header();
        change(&mut header);
        sign(&header, &self.claims, &self.key)
    }

    async fn me(&self, token: &str) -> TestResponse {
        self.app.me(token).await
    }
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("signing a test token")
}

fn now() -> i64 {
    UnixSeconds::now().get()
}

fn b64(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

/// Another gateway's signing key: its private half and its public JWK.
fn foreign_key() -> (EncodingKey, Jwk) {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyDir::open(dir.path()).unwrap();
    keys.generate_if_empty(KeyAlg::EdDSA, UnixMillis::now())
        .unwrap();
    let key = keys.load().unwrap().remove(0);
    (key.encoding, key.public_jwk)
}

async fn a_token_forged_with_the_gateways_own_key_is_accepted(backend: Backend) {
    // The control for every test below: the forging itself is sound.
    let forger = Forger::new(backend).await;
    let token = forger.with_claims(|claims| claims["jti"] = json!("another jti"));
    let me = forger.me(&token).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    assert_eq!(me.json()["username"], "alice");
}

async fn expired_tokens_are_refused(backend: Backend) {
    let forger = Forger::new(backend).await;
    let token = forger.with_claims(|claims| {
        claims["iat"] = json!(now() - 960);
        claims["exp"] = json!(now() - 60);
    });
    forger.me(&token).await.assert_rejected("expired");
}

async fn tokens_within_the_clock_skew_after_expiry_are_accepted(backend: Backend) {
    let forger = Forger::new(backend).await;
    let token = forger.with_claims(|claims| {
        claims["iat"] = json!(now() - 910);
        claims["exp"] = json!(now() - 10);
    });
    let me = forger.me(&token).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
}

async fn tokens_from_the_future_are_not_yet_valid(backend: Backend) {
    let forger = Forger::new(backend).await;
    let issued_later = forger.with_claims(|claims| {
        claims["iat"] = json!(now() + 3600);
        claims["exp"] = json!(now() + 4500);
    });
    forger
        .me(&issued_later)
        .await
        .assert_rejected("not_yet_valid");
    let valid_later = forger.with_claims(|claims| claims["nbf"] = json!(now() + 3600));
    forger
        .me(&valid_later)
        .await
        .assert_rejected("not_yet_valid");
}

async fn tokens_of_another_issuer_are_refused(backend: Backend) {
    let forger = Forger::new(backend).await;
    let token = forger.with_claims(|claims| claims["iss"] = json!("someone-else"));
    forger.me(&token).await.assert_rejected("wrong_issuer");
}

async fn tokens_for_another_audience_are_refused(backend: Backend) {
    let forger = Forger::new(backend).await;
    let token = forger.with_claims(|claims| claims["aud"] = json!("another-api"));
    forger.me(&token).await.assert_rejected("wrong_audience");
    let among_others = forger.with_claims(|claims| claims["aud"] = json!(["other", "tollgate"]));
    let me = forger.me(&among_others).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
}

async fn tokens_missing_a_required_claim_are_malformed(backend: Backend) {
    let forger = Forger::new(backend).await;
    for claim in ["sub", "exp", "iss", "aud"] {
        let token = forger.with_claims(|claims| {
            claims.as_object_mut().unwrap().remove(claim);
        });
        let response = forger.me(&token).await;
        assert_eq!(response.reason(), "malformed", "without {claim}");
        response.assert_rejected("malformed");
    }
}

async fn a_string_exp_is_malformed(backend: Backend) {
    let forger = Forger::new(backend).await;
    let token = forger.with_claims(|claims| claims["exp"] = json!((now() + 600).to_string()));
    forger.me(&token).await.assert_rejected("malformed");
}

async fn a_token_typed_jwt_is_malformed(backend: Backend) {
    let forger = Forger::new(backend).await;
    let typed_jwt = forger.with_header(|header| header.typ = Some("JWT".into()));
    forger.me(&typed_jwt).await.assert_rejected("malformed");
    let untyped = forger.with_header(|header| header.typ = None);
    forger.me(&untyped).await.assert_rejected("malformed");
}

async fn garbage_is_malformed(backend: Backend) {
    let forger = Forger::new(backend).await;
    for garbage in [
        "not-a-token",
        "a.b.c",
        "a.b",
        &format!("{}.x", forger.genuine),
    ] {
        forger.me(garbage).await.assert_rejected("malformed");
    }
}

async fn alg_none_is_a_disallowed_alg(backend: Backend) {
    let forger = Forger::new(backend).await;
    let header = json!({ "alg": "none", "typ": "at+jwt", "kid": forger.kid });
    let unsigned = format!("{}.{}.", b64(&header), b64(&forger.claims));
    forger.me(&unsigned).await.assert_rejected("disallowed_alg");
}

async fn hs256_keyed_with_the_public_key_is_a_disallowed_alg(backend: Backend) {
    let forger = Forger::new(backend).await;
    let jwks = forger.app.get("/.well-known/jwks.json").await.json();
    let published = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == forger.kid.as_str())
        .expect("the signing key is published")
        .clone();
    let public_key = URL_SAFE_NO_PAD
        .decode(published["x"].as_str().unwrap())
        .unwrap();
    for secret in [public_key, serde_json::to_vec(&published).unwrap()] {
        let mut header = forger.header();
        header.alg = Algorithm::HS256;
        let token = sign(&header, &forger.claims, &EncodingKey::from_secret(&secret));
        forger.me(&token).await.assert_rejected("disallowed_alg");
    }
}

async fn a_foreign_key_under_a_real_kid_is_a_bad_signature(backend: Backend) {
    let forger = Forger::new(backend).await;
    let (foreign, _) = foreign_key();
    let token = sign(&forger.header(), &forger.claims, &foreign);
    forger.me(&token).await.assert_rejected("bad_signature");
}

async fn an_attackers_key_in_the_jwk_header_is_ignored(backend: Backend) {
    let forger = Forger::new(backend).await;
    let (foreign, foreign_jwk) = foreign_key();
    let mut header = forger.header();
    header.jwk = Some(foreign_jwk);
    let token = sign(&header, &forger.claims, &foreign);
    forger.me(&token).await.assert_rejected("bad_signature");
}

async fn an_unknown_kid_is_refused(backend: Backend) {
    let forger = Forger::new(backend).await;
    let unknown = forger.with_header(|header| header.kid = Some("not-one-of-ours".into()));
    forger.me(&unknown).await.assert_rejected("unknown_kid");
    let without_kid = forger.with_header(|header| header.kid = None);
    forger.me(&without_kid).await.assert_rejected("unknown_kid");
}

async fn a_tampered_payload_is_a_bad_signature(backend: Backend) {
    let forger = Forger::new(backend).await;
    let (header, rest) = forger.genuine.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut claims = forger.claims.clone();
    claims["roles"] = json!(["admin"]);
    let tampered = format!("{header}.{}.{signature}", b64(&claims));
    forger.me(&tampered).await.assert_rejected("bad_signature");
}

async fn tokens_in_the_query_string_are_never_read(backend: Backend) {
    let forger = Forger::new(backend).await;
    let path = format!("/api/auth/me?access_token={}", forger.genuine);
    let response = forger.app.get(&path).await;
    response.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"tollgate\"")
    );
}

/// Verified tokens are remembered; these show what a remembered token still
/// goes through.
async fn a_tampered_copy_of_a_remembered_token_is_still_refused(backend: Backend) {
    let forger = Forger::new(backend).await;
    assert_eq!(forger.me(&forger.genuine).await.status, StatusCode::OK);
    assert_eq!(
        forger.me(&forger.genuine).await.status,
        StatusCode::OK,
        "now remembered"
    );
    let (signed, signature) = forger.genuine.rsplit_once('.').unwrap();
    let mut flipped = signature.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let bad_signature = format!("{signed}.{}", String::from_utf8(flipped).unwrap());
    forger
        .me(&bad_signature)
        .await
        .assert_rejected("bad_signature");
    let (header, rest) = forger.genuine.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let mut claims = forger.claims.clone();
    claims["sub"] = json!("someone-else");
    forger
        .me(&format!("{header}.{}.{signature}", b64(&claims)))
        .await
        .assert_rejected("bad_signature");
    assert_eq!(forger.me(&forger.genuine).await.status, StatusCode::OK);
}

async fn a_remembered_token_still_expires_to_the_second(backend: Backend) {
    let forger = Forger::new(backend).await;
    // Valid for two more seconds thanks to the 30 s clock-skew leeway.
    let expiring = forger.with_claims(|claims| claims["exp"] = json!(now() - 28));
    assert_eq!(forger.me(&expiring).await.status, StatusCode::OK);
    assert_eq!(
        forger.me(&expiring).await.status,
        StatusCode::OK,
        "now remembered"
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    forger.me(&expiring).await.assert_rejected("expired");
}

async fn a_remembered_token_of_a_revoked_session_is_refused_at_once(backend: Backend) {
    let forger = Forger::new(backend).await;
    assert_eq!(forger.me(&forger.genuine).await.status, StatusCode::OK);
    assert_eq!(
        forger.app.logout(&forger.genuine).await.status,
        StatusCode::NO_CONTENT
    );
    forger.me(&forger.genuine).await.assert_rejected("revoked");
}

async fn a_remembered_token_stops_verifying_once_its_key_is_pruned(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let remembered = app.signed_up("alice").await.access;
    let unseen = Tokens::from(&app.login("alice", PASSWORD).await).access;
    assert_eq!(app.me(&remembered).await.status, StatusCode::OK);
    let kid = header_of(&remembered)["kid"].as_str().unwrap().to_string();

    // Two rotations retire the tokens' key and its successor; the gateway
    // records the retirements.
    let keys = KeyDir::open(app.deployment.keys_dir()).unwrap();
    let rotated_at = UnixMillis::now();
    keys.rotate(None, rotated_at).unwrap();
    keys.rotate(None, rotated_at).unwrap();
    app.app.keys.reload().await.unwrap();
    assert_eq!(app.me(&remembered).await.status, StatusCode::OK);

    // Pruned as `tollgate keys prune` prunes once no unexpired token can
    // carry the keys (an hour on: the clock is passed in), from the
    // directory and from the database; then picked up.
    let an_hour_on = rotated_at.plus(Duration::from_secs(3600));
    let pruned = keys.prune(an_hour_on, app.app.config.access_ttl).unwrap();
    assert!(pruned.contains(&kid), "{pruned:?}");
    app.app
        .store
        .delete_recorded_keys(
            rotated_at.plus(Duration::from_millis(1)),
            tollgate::auth::keyset::HELD_SLACK,
        )
        .await
        .unwrap();
    app.app.keys.reload().await.unwrap();

    app.me(&remembered).await.assert_rejected("unknown_kid");
    app.me(&unseen).await.assert_rejected("unknown_kid");
}

on_both_backends!(
    a_remembered_token_stops_verifying_once_its_key_is_pruned,
    a_tampered_copy_of_a_remembered_token_is_still_refused,
    a_remembered_token_still_expires_to_the_second,
    a_remembered_token_of_a_revoked_session_is_refused_at_once,
    a_token_forged_with_the_gateways_own_key_is_accepted,
    expired_tokens_are_refused,
    tokens_within_the_clock_skew_after_expiry_are_accepted,
    tokens_from_the_future_are_not_yet_valid,
    tokens_of_another_issuer_are_refused,
    tokens_for_another_audience_are_refused,
    tokens_missing_a_required_claim_are_malformed,
    a_string_exp_is_malformed,
    a_token_typed_jwt_is_malformed,
    garbage_is_malformed,
    alg_none_is_a_disallowed_alg,
    hs256_keyed_with_the_public_key_is_a_disallowed_alg,
    a_foreign_key_under_a_real_kid_is_a_bad_signature,
    an_attackers_key_in_the_jwk_header_is_ignored,
    an_unknown_kid_is_refused,
    a_tampered_payload_is_a_bad_signature,
    tokens_in_the_query_string_are_never_read,
);
