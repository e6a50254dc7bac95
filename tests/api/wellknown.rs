//! What verifiers and operators read: the JWKS, OpenID discovery and health.

use http::StatusCode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tollgate::auth::KeyAlg;
use tollgate::auth::keydir::KeyDir;
use tollgate::auth::keystore::KeyState;
use tollgate::time::UnixMillis;

use crate::helpers::{Backend, Deployment, TestApp, header_of};
use crate::on_both_backends;

async fn the_jwks_publishes_the_active_and_next_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let cache_control = response.header("cache-control").unwrap();
    let max_age: u64 = cache_control
        .split(',')
        .find_map(|directive| directive.trim().strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("a max-age in {cache_control}"))
        .parse()
        .unwrap();
    assert!((1..=300).contains(&max_age), "{cache_control}");

    let records = KeyDir::open(app.deployment.keys_dir())
        .unwrap()
        .records()
        .unwrap();
    let kid_in = |state| {
        records
            .iter()
            .find(|key| key.state == state)
            .unwrap()
            .kid
            .clone()
    };
    let jwks = response.json();
    let keys = jwks["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids.len(), 2, "{jwks}");
    assert!(kids.contains(&kid_in(KeyState::Active).as_str()), "{jwks}");
    assert!(kids.contains(&kid_in(KeyState::Next).as_str()), "{jwks}");
    for key in keys {
        assert_eq!(key["alg"], "EdDSA", "{key}");
        assert_eq!(key["use"], "sig", "{key}");
        assert_eq!(key["kty"], "OKP", "{key}");
        assert!(key.get("d").is_none(), "a private key is published: {key}");
    }
}

/// Verifies a token as an upstream would: with the published JWKS alone.
async fn verified_by_the_jwks(app: &TestApp, token: &str) -> Value {
    let jwks = app.get("/.well-known/jwks.json").await.json();
    let header = header_of(token);
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == header["kid"])
        .expect("the token's key is published");
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let alg: Algorithm = header["alg"].as_str().unwrap().parse().unwrap();
    let mut validation = Validation::new(alg);
    validation.set_issuer(&["tollgate"]);
    validation.set_audience(&["tollgate"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
        .expect("the token verifies with the published key")
        .claims
}

async fn access_tokens_verify_against_the_jwks_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    assert_eq!(header_of(&tokens.access)["typ"], "at+jwt");
    let claims = verified_by_the_jwks(&app, &tokens.access).await;
    assert_eq!(claims["sub"], tokens.user_id.as_str());
}

async fn es256_and_rs256_keys_sign_tokens_that_verify(backend: Backend) {
    for alg in [KeyAlg::ES256, KeyAlg::RS256] {
        let deployment = Deployment::new(backend).await;
        KeyDir::open(deployment.keys_dir())
            .unwrap()
            .generate_if_empty(alg, UnixMillis::now())
            .unwrap();
        let app = deployment.spawn(&[]).await;
        let tokens = app.signed_up("alice").await;
        assert_eq!(header_of(&tokens.access)["alg"], alg.as_str());
        let me = app.me(&tokens.access).await;
        assert_eq!(me.status, StatusCode::OK, "{alg:?}: {}", me.text());
        let claims = verified_by_the_jwks(&app, &tokens.access).await;
        assert_eq!(claims["sub"], tokens.user_id.as_str(), "{alg:?}");
        let discovery = app.get("/.well-known/openid-configuration").await.json();
        assert_eq!(
            discovery["id_token_signing_alg_values_supported"],
            serde_json::json!([alg.as_str()])
        );
    }
}

async fn openid_configuration_names_the_issuer_and_the_jwks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/.well-known/openid-configuration").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let discovery = response.json();
    assert_eq!(discovery["issuer"], "tollgate");
    assert_eq!(
        discovery["jwks_uri"],
        app.url("/.well-known/jwks.json").as_str()
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );

    let app = app
        .stop()
        .await
        .spawn(&["--issuer", "https://auth.example.com"])
        .await;
    let discovery = app.get("/.well-known/openid-configuration").await.json();
    assert_eq!(discovery["issuer"], "https://auth.example.com");
    assert_eq!(
        discovery["jwks_uri"],
        "https://auth.example.com/.well-known/jwks.json"
    );
}

async fn health_answers_ok(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/health").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json(), serde_json::json!({ "status": "ok" }));
}

async fn detailed_health_reports_the_database_and_the_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app.get("/health/detailed").await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let health = response.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_s"].is_u64(), "{health}");
    assert_eq!(health["database"]["ok"], true);
    assert!(health["database"]["latency_ms"].is_number(), "{health}");
    assert_eq!(
        health["keys"]["active_kid"],
        app.app.keys.current().signing().kid.as_str()
    );
    assert_eq!(health["keys"]["count"], 2);
    assert_eq!(health["upstream"]["configured"], false);
    assert!(health["upstream"].get("ok").is_some(), "{health}");
}

on_both_backends!(
    the_jwks_publishes_the_active_and_next_keys,
    access_tokens_verify_against_the_jwks_alone,
    es256_and_rs256_keys_sign_tokens_that_verify,
    openid_configuration_names_the_issuer_and_the_jwks,
    health_answers_ok,
    detailed_health_reports_the_database_and_the_keys,
);
