//! What verifiers and operators read: the JWKS, OpenID discovery and health.

use http::StatusCode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tollgate::auth::keys::{KeyDir, KeyState};

use crate::helpers::{Backend, TestApp, header_of};
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

async fn access_tokens_verify_against_the_jwks_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = app.signed_up("alice").await;
    let jwks = app.get("/.well-known/jwks.json").await.json();
    let kid = header_of(&tokens.access)["kid"].clone();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == kid)
        .expect("the token's key is published");
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&["tollgate"]);
    validation.set_audience(&["tollgate"]);
    let verified = jsonwebtoken::decode::<Value>(
        &tokens.access,
        &DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .expect("the token verifies with the published key");
    assert_eq!(verified.claims["sub"], tokens.user_id.as_str());
    assert_eq!(verified.header.typ.as_deref(), Some("at+jwt"));
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
    openid_configuration_names_the_issuer_and_the_jwks,
    health_answers_ok,
    detailed_health_reports_the_database_and_the_keys,
);
