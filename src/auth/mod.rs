//! Who is asking: credentials read from a request and checked. A leaf:
//! nothing here knows of HTTP errors, the proxy or the command line; callers
//! map a [`Rejection`] to their own answer.
//!
//! - `credentials`: where a request's access token is read from.
//! - `password`: argon2id hashing on the blocking pool.
//! - `keystore`: where the private keys live (`--key-store`), their states
//!   and how they change (generation, rotation, pruning, import), whichever
//!   store holds them: `keydir` (the keys directory) or `keydb` (the
//!   database, sealed).
//! - `keyset`: the in-memory signing/verifying set and the JWKS.
//! - `tokens`: issuing and verifying access tokens.
//! - `identity`: what the upstream is told about a verified token.
//! - `refresh`: refresh tokens and their sealed successors.
//! - `reset`: password-reset tokens.
//! - `seal`: AES-256-GCM sealing of secrets at rest.
//! - `cookies`: the two cookies and their attributes.

pub mod cookies;
pub mod credentials;
pub mod identity;
pub mod keydb;
pub mod keydir;
pub mod keyset;
pub mod keystore;
pub mod password;
pub mod refresh;
pub mod reset;
pub mod seal;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;
use http::HeaderMap;
use moka::sync::Cache;

pub use self::credentials::{CredentialSource, MalformedAuthorization, PresentedToken};
pub use self::identity::IdentityHeaders;
use self::keyset::Keys;
pub use self::keystore::KeyAlg;
use self::tokens::{AccessClaims, Expectations, RejectReason};
use crate::revocation::Revocations;
use crate::time::UnixSeconds;

/// Why a request that needs an access token did not get through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No access token at all.
    Missing,
    /// An `Authorization: Bearer` header that is not one token.
    MalformedAuthorization,
    /// A token was presented and refused.
    Invalid(RejectReason),
}

impl From<MalformedAuthorization> for Rejection {
    fn from(_: MalformedAuthorization) -> Self {
        Rejection::MalformedAuthorization
    }
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
    /// The key that signed it: a hit is refused once the key is pruned.
    kid: Box<str>,
    claims: Arc<AccessClaims>,
    upstream_headers: Arc<IdentityHeaders>,
}

/// Checks access tokens: signature, claims, expiry, revocation.
///
/// A signature check costs tens of microseconds, more than everything else a
/// proxied request does, so verified tokens are remembered, keyed by the
/// whole token string: only the very same bytes can hit an entry. A hit skips
/// the signature and claims checks but never the expiry, revocation and
/// key-still-known checks, which are repeated on every request.
pub struct Authenticator {
    keys: Arc<Keys>,
    expect: Expectations,
    revocations: Arc<Revocations>,
    verified: Cache<Arc<str>, Arc<Verified>, RandomState>,
}

impl Authenticator {
    /// `token_lifetime` bounds how long a verified token is remembered, and
    /// `capacity` how many are.
    pub fn new(
        keys: Arc<Keys>,
        expect: Expectations,
        revocations: Arc<Revocations>,
        token_lifetime: Duration,
        capacity: u64,
    ) -> Self {
        Authenticator {
            keys,
            expect,
            revocations,
            verified: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(token_lifetime)
                // Looked up on every request: a fast hash (keyed per
                // process, so still safe against flooding).
                .build_with_hasher(RandomState::default()),
        }
    }

    /// The identity of a request that must carry an access token.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        now: UnixSeconds,
    ) -> Result<Identity, Rejection> {
        let presented = credentials::presented_token(headers)?.ok_or(Rejection::Missing)?;
        self.verify(presented, now)
            .await
            .map_err(Rejection::Invalid)
    }

    /// Verifies one presented token. An unknown `kid` first makes the key set
    /// re-read the keys other instances recorded.
    pub async fn verify(
        &self,
        presented: PresentedToken<'_>,
        now: UnixSeconds,
    ) -> Result<Identity, RejectReason> {
        let verified = match self.verified.get(presented.token) {
            Some(verified) => {
                tokens::check_expiry(&verified.claims, now)?;
                if !self.keys.knows(&verified.kid) {
                    return Err(RejectReason::UnknownKid);
                }
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
    async fn verify_signature(
        &self,
        token: &str,
        now: UnixSeconds,
    ) -> Result<Arc<Verified>, RejectReason> {
        let (kid, claims) = match tokens::verify(&self.keys.current(), token, &self.expect, now) {
            Err(RejectReason::UnknownKid) if self.keys.refresh_for_unknown_kid().await => {
                tokens::verify(&self.keys.current(), token, &self.expect, now)?
            }
            other => other?,
        };
        let verified = Arc::new(Verified {
            kid: kid.into(),
            upstream_headers: Arc::new(IdentityHeaders::new(token, &claims)),
            claims: Arc::new(claims),
        });
        self.verified.insert(Arc::from(token), verified.clone());
        Ok(verified)
    }
}
