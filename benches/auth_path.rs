//! The cost of authenticating one request: a cold verification per
//! algorithm (signature and claims), a remembered token, and rejections.
//!
//! `cargo bench --bench auth_path`

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use tollgate::auth::credentials::presented_token;
use tollgate::auth::keydir::KeyDir;
use tollgate::auth::keyset::{KeySet, Keys};
use tollgate::auth::tokens::{self, AccessClaims, Audience, Expectations};
use tollgate::auth::{Authenticator, CredentialSource, KeyAlg, PresentedToken};
use tollgate::domain::{Role, Roles, SessionId, UserId, Username};
use tollgate::revocation::Revocations;
use tollgate::store::Store;
use tollgate::time::{UnixMillis, UnixSeconds};

fn claims(now: UnixSeconds) -> AccessClaims {
    AccessClaims {
        iss: "tollgate".into(),
        aud: Audience::One("tollgate".into()),
        sub: UserId::parse("6553cb73-4e83-4e5a-b25b-283f3ee92a8e").unwrap(),
        iat: now,
        exp: now.plus(Duration::from_secs(900)),
        jti: "8c8feb7e-76b4-4a3d-a7e5-658254c520b4".into(),
        sid: SessionId::parse("926d5515-15b5-4c6c-b487-0f3563799bfb").unwrap(),
        preferred_username: Username::parse("alice").unwrap(),
        roles: Roles::new(vec![Role::parse("agent").unwrap()]),
        nbf: None,
    }
}

fn expectations() -> Expectations {
    Expectations {
        issuer: "tollgate".into(),
        audience: "tollgate".into(),
    }
}

/// A key set of one algorithm, and a token it signed.
fn key_set(alg: KeyAlg) -> (KeySet, String) {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyDir::open(dir.path()).unwrap();
    keys.generate_if_empty(alg, UnixMillis::now()).unwrap();
    let set = KeySet::build(
        &keys.load().unwrap(),
        &[],
        UnixMillis::now(),
        Duration::from_secs(960),
    )
    .unwrap();
    let token = tokens::issue(&set, &claims(UnixSeconds::now())).unwrap();
    (set, token)
}

fn cold_verification(c: &mut Criterion) {
    let mut group = c.benchmark_group("cold verify");
    for alg in KeyAlg::ALL {
        let (set, token) = key_set(alg);
        let expect = expectations();
        group.bench_function(alg.as_str(), |b| {
            b.iter(|| tokens::verify(&set, &token, &expect, UnixSeconds::now()).unwrap())
        });
    }
    group.finish();
}

/// The request path: an authenticator over a real (SQLite) store.
fn authenticated_requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (authenticator, token) = runtime.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let key_dir = KeyDir::open(&dir.path().join("keys")).unwrap();
        key_dir
            .generate_if_empty(KeyAlg::EdDSA, UnixMillis::now())
            .unwrap();
        let lifetime = Duration::from_secs(930);
        let keys = Arc::new(Keys::load(key_dir.into(), store, lifetime).await.unwrap());
        let token = tokens::issue(&keys.current(), &claims(UnixSeconds::now())).unwrap();
        let revocations = Arc::new(Revocations::new(lifetime));
        (
            Authenticator::new(keys, expectations(), revocations, 10_000),
            token,
        )
    });
    // Known keys never wait: the future is ready on its first poll.
    let verify = |token: &str| {
        let presented = PresentedToken {
            token,
            source: CredentialSource::Bearer,
            header: None,
        };
        authenticator
            .verify(presented, UnixSeconds::now())
            .now_or_never()
            .expect("no waiting for a known key")
    };

    let mut group = c.benchmark_group("authenticate");
    verify(&token).unwrap();
    group.bench_function("remembered token", |b| b.iter(|| verify(&token).unwrap()));
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let tampered = format!(
        "{signed}.{}",
        signature.replacen('A', "B", 1).replacen('a', "b", 1)
    );
    group.bench_function("reject bad signature", |b| {
        b.iter(|| verify(&tampered).unwrap_err())
    });
    group.bench_function("reject malformed", |b| {
        b.iter(|| verify("not.a.token").unwrap_err())
    });
    group.finish();

    // Finding the token in the request: the header, or the cookie among others.
    let mut group = c.benchmark_group("read token");
    let mut bearer = HeaderMap::new();
    bearer.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    group.bench_function("bearer", |b| b.iter(|| presented_token(&bearer).unwrap()));
    let mut cookie = HeaderMap::new();
    let value = format!("theme=dark; tollgate_access={token}; lang=en");
    cookie.insert(COOKIE, HeaderValue::from_str(&value).unwrap());
    group.bench_function("cookie", |b| b.iter(|| presented_token(&cookie).unwrap()));
    group.finish();
}

criterion_group!(benches, cold_verification, authenticated_requests);
criterion_main!(benches);
