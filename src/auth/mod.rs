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

use http::HeaderMap;
use http::header::AUTHORIZATION;

use self::cookies::{ACCESS_COOKIE, find_cookie};
use self::keyset::Keys;
use self::tokens::{AccessClaims, Expectations, RejectReason};
use crate::error::ApiError;
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
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
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

/// A request's verified identity.
#[derive(Clone, Debug)]
pub struct Identity {
    pub claims: Arc<AccessClaims>,
    /// The access token itself, forwarded to the upstream.
    pub token: Arc<str>,
    pub source: CredentialSource,
}

/// Checks access tokens: signature, claims, expiry, revocation.
pub struct Authenticator {
    keys: Arc<Keys>,
    expect: Expectations,
    revocations: Arc<Revocations>,
}

impl Authenticator {
    pub fn new(keys: Arc<Keys>, expect: Expectations, revocations: Arc<Revocations>) -> Self {
        Authenticator {
            keys,
            expect,
            revocations,
        }
    }

    pub fn expectations(&self) -> &Expectations {
        &self.expect
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
        let claims = match tokens::verify(&self.keys.current(), presented.token, &self.expect, now)
        {
            Err(RejectReason::UnknownKid) if self.keys.refresh_for_unknown_kid().await => {
                tokens::verify(&self.keys.current(), presented.token, &self.expect, now)?
            }
            other => other?,
        };
        if self.revocations.is_revoked(&claims.sid) {
            return Err(RejectReason::Revoked);
        }
        tracing::Span::current().record("user_id", claims.sub.as_str());
        Ok(Identity {
            claims: Arc::new(claims),
            token: Arc::from(presented.token),
            source: presented.source,
        })
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
