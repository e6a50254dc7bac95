//! Who is asking: credentials read from a request and checked.
//!
//! - `password`: argon2id hashing on the blocking pool.
//! - `keys`: the keys directory (files, states, rotation).
//! - `keyset`: the in-memory signing/verifying set and the JWKS.
//! - `tokens`: issuing and verifying access tokens.
//! - `cookies`: the two cookies and their attributes.

pub mod cookies;
pub mod keys;
pub mod keyset;
pub mod password;
pub mod refresh;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use moka::sync::Cache;

use self::cookies::{ACCESS_COOKIE, find_cookie};
use self::keyset::Keys;
use self::tokens::{AccessClaims, Expectations, RejectReason};
use crate::error::ApiError;
use crate::proxy::IdentityHeaders;
use crate::revocation::Revocations;

/// Where the access token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Bearer,
    Cookie,
}

/// An access token as presented, before any check.
#[derive(Clone, Copy)]
pub struct PresentedToken<'a> {
    pub token: &'a str,
    pub source: CredentialSource,
}

/// The `Authorization: Bearer` token if there is one, else the access cookie.
/// Tokens in the query string are never read.
pub fn presented_token(headers: &HeaderMap) -> Option<PresentedToken<'_>> {
    let bearer = headers.get_all(AUTHORIZATION).iter().find_map(bearer_token);
    if let Some(token) = bearer {
        return Some(PresentedToken {
            token,
            source: CredentialSource::Bearer,
        });
    }
    find_cookie(headers, ACCESS_COOKIE)
        .filter(|token| !token.is_empty())
        .map(|token| PresentedToken {
            token,
            source: CredentialSource::Cookie,
        })
}

/// The one reading of `Authorization` values: the `Bearer` scheme, in any
/// case, then whitespace, then the token.
pub fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether an `Authorization` value uses the bearer scheme at all, however
/// malformed, so that it can be withheld from the upstream.
pub fn is_bearer_scheme(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    rest.len() >= 6
        && rest[..6].eq_ignore_ascii_case(b"bearer")
        && rest.get(6).is_none_or(|b| b.is_ascii_whitespace())
}

/// A request's verified identity.
#[derive(Clone, Debug)]
pub struct Identity {
    pub claims: Arc<AccessClaims>,
    /// What the upstream is told about it, built once per token.
    pub upstream_headers: Arc<IdentityHeaders>,
    pub source: CredentialSource,
}

/// A token whose signature and claims checked out.
struct Verified {
    claims: Arc<AccessClaims>,
    upstream_headers: Arc<IdentityHeaders>,
}

/// At most this many verified tokens are remembered.
const VERIFIED_CACHE_CAPACITY: u64 = 10_000;

/// Checks access tokens: signature, claims, expiry, revocation.
///
/// A signature check costs tens of microseconds, more than everything else a
/// proxied request does, so verified tokens are remembered, keyed by the
/// whole token string: only the very same bytes can hit an entry. A hit skips
/// the signature and claims checks but never the expiry and revocation
/// checks, which are repeated on every request.
pub struct Authenticator {
    keys: Arc<Keys>,
    expect: Expectations,
    revocations: Arc<Revocations>,
    verified: Cache<Arc<str>, Arc<Verified>, RandomState>,
}

impl Authenticator {
    /// `token_lifetime` bounds how long a verified token is remembered.
    pub fn new(
        keys: Arc<Keys>,
        expect: Expectations,
        revocations: Arc<Revocations>,
        token_lifetime: Duration,
    ) -> Self {
        Authenticator {
            keys,
            expect,
            revocations,
            verified: Cache::builder()
                .max_capacity(VERIFIED_CACHE_CAPACITY)
                .time_to_live(token_lifetime)
                // Looked up on every request: a fast hash (keyed per
                // process, so still safe against flooding).
                .build_with_hasher(RandomState::default()),
        }
    }

    /// The identity of a request that must carry an access token.
    pub async fn authenticate(&self, headers: &HeaderMap, now: i64) -> Result<Identity, ApiError> {
        let presented = presented_token(headers).ok_or(ApiError::Unauthorized)?;
        self.verify(presented, now)
            .await
            .map_err(ApiError::InvalidToken)
    }

    /// Verifies one presented token. An unknown `kid` first makes the key set
    /// re-read the keys other instances recorded.
    pub async fn verify(
        &self,
        presented: PresentedToken<'_>,
        now: i64,
    ) -> Result<Identity, RejectReason> {
        let verified = match self.verified.get(presented.token) {
            Some(verified) => {
                tokens::check_expiry(&verified.claims, now)?;
                verified
            }
            None => self.verify_signature(presented.token, now).await?,
        };
        if self.revocations.is_revoked(&verified.claims.sid) {
            return Err(RejectReason::Revoked);
        }
        Ok(Identity {
            claims: verified.claims.clone(),
            upstream_headers: verified.upstream_headers.clone(),
            source: presented.source,
        })
    }

    /// The full check of a token not seen before; remembered if it passes.
    async fn verify_signature(&self, token: &str, now: i64) -> Result<Arc<Verified>, RejectReason> {
        let claims = match tokens::verify(&self.keys.current(), token, &self.expect, now) {
            Err(RejectReason::UnknownKid) if self.keys.refresh_for_unknown_kid().await => {
                tokens::verify(&self.keys.current(), token, &self.expect, now)?
            }
            other => other?,
        };
        let verified = Arc::new(Verified {
            upstream_headers: Arc::new(IdentityHeaders::new(token, &claims)),
            claims: Arc::new(claims),
        });
        self.verified.insert(Arc::from(token), verified.clone());
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::COOKIE;

    #[test]
    fn bearer_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("tollgate_access=from-cookie"),
        );
        let cookie = presented_token(&headers).unwrap();
        assert_eq!(
            (cookie.token, cookie.source),
            ("from-cookie", CredentialSource::Cookie)
        );

        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer from-header"),
        );
        let bearer = presented_token(&headers).unwrap();
        assert_eq!(
            (bearer.token, bearer.source),
            ("from-header", CredentialSource::Bearer)
        );
    }

    #[test]
    fn other_schemes_are_not_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(presented_token(&headers).is_none());
    }
}
