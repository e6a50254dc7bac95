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

use std::hash::Hasher as _;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use siphasher::sip128::{Hasher128 as _, SipHasher13};

pub use self::credentials::{CredentialSource, MalformedAuthorization, PresentedToken};
pub use self::identity::IdentityHeaders;
use self::keyset::Keys;
pub use self::keystore::KeyAlg;
use self::tokens::{AccessClaims, Expectations, RejectReason, Validity};
use crate::domain::{Roles, SessionId, UserId, Username};
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
    pub claims: Arc<SessionClaims>,
    pub source: CredentialSource,
    /// `Bearer <token>` for the upstream.
    authorization: Option<HeaderValue>,
}

impl Identity {
    /// The identity of a token with `claims`, signed by `kid`, as presented.
    pub fn of(kid: &str, claims: AccessClaims, presented: &PresentedToken<'_>) -> Identity {
        Identity {
            claims: Arc::new(SessionClaims::of(kid, claims)),
            source: presented.source,
            authorization: presented.upstream_authorization(),
        }
    }

    /// The token and the identity headers, for the upstream.
    pub fn apply_for_upstream(&self, headers: &mut HeaderMap) {
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        self.claims.identity_headers.apply(headers);
    }

    /// The identity headers alone, for a forward-auth answer.
    pub fn apply_identity(&self, headers: &mut HeaderMap) {
        self.claims.identity_headers.apply(headers);
    }
}

/// What every token of one session says alike (and the key that signed
/// it): shared by the session's remembered tokens, so that a remembered
/// token costs little more than its key.
#[derive(Debug)]
pub struct SessionClaims {
    pub sub: UserId,
    pub sid: SessionId,
    pub preferred_username: Username,
    pub roles: Roles,
    /// The key that signed the token: a remembered one is refused once the
    /// key is pruned.
    kid: Box<str>,
    identity_headers: IdentityHeaders,
}

impl SessionClaims {
    fn of(kid: &str, claims: AccessClaims) -> SessionClaims {
        SessionClaims {
            identity_headers: IdentityHeaders::new(&claims),
            sub: claims.sub,
            sid: claims.sid,
            preferred_username: claims.preferred_username,
            roles: claims.roles,
            kid: kid.into(),
        }
    }

    fn same_as(&self, other: &SessionClaims) -> bool {
        self.sub == other.sub
            && self.sid == other.sid
            && self.preferred_username == other.preferred_username
            && self.roles == other.roles
            && self.kid == other.kid
    }
}

/// A token whose signature and claims checked out, as remembered.
#[derive(Clone)]
struct Remembered {
    claims: Arc<SessionClaims>,
    validity: Validity,
}

/// Checks access tokens: signature, claims, expiry, revocation.
///
/// A signature check costs tens of microseconds, more than everything else a
/// proxied request does, so verified tokens are remembered. An entry is keyed
/// by a 128-bit SipHash of the whole token under a key drawn at start and
/// never shown, so no token can be made to hit another's entry, and it holds
/// only the token's validity and the claims its session shares: a hundred
/// thousand tokens fit in a few megabytes. A hit skips the signature and
/// claims checks but never the expiry, revocation and key-still-known
/// checks, which are repeated on every request.
pub struct Authenticator {
    keys: Arc<Keys>,
    expect: Expectations,
    revocations: Arc<Revocations>,
    token_key: TokenKey,
    verified: quick_cache::sync::Cache<u128, Remembered>,
    /// The shared claims of sessions with a remembered token.
    sessions: quick_cache::sync::Cache<SessionId, Arc<SessionClaims>>,
}

impl Authenticator {
    /// `capacity` bounds how many verified tokens are remembered.
    pub fn new(
        keys: Arc<Keys>,
        expect: Expectations,
        revocations: Arc<Revocations>,
        capacity: u64,
    ) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        Authenticator {
            keys,
            expect,
            revocations,
            token_key: TokenKey::random(),
            verified: quick_cache::sync::Cache::new(capacity),
            sessions: quick_cache::sync::Cache::new(capacity),
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
        let key = self.token_key.of(presented.token);
        let claims = match self.verified.get(&key) {
            Some(remembered) => {
                remembered.validity.check(now)?;
                if !self.keys.knows(&remembered.claims.kid) {
                    return Err(RejectReason::UnknownKid);
                }
                remembered.claims
            }
            None => self.verify_signature(key, presented.token, now).await?,
        };
        if self.revocations.is_revoked(&claims.sid) {
            return Err(RejectReason::Revoked);
        }
        Ok(Identity {
            claims,
            source: presented.source,
            authorization: presented.upstream_authorization(),
        })
    }

    /// The full check of a token not seen before; remembered if it passes.
    async fn verify_signature(
        &self,
        key: u128,
        token: &str,
        now: UnixSeconds,
    ) -> Result<Arc<SessionClaims>, RejectReason> {
        let (kid, claims) = match tokens::verify(&self.keys.current(), token, &self.expect, now) {
            Err(RejectReason::UnknownKid) if self.keys.refresh_for_unknown_kid().await => {
                tokens::verify(&self.keys.current(), token, &self.expect, now)?
            }
            other => other?,
        };
        let validity = Validity::of(&claims);
        let fresh = SessionClaims::of(&kid, claims);
        let shared = match self.sessions.get(&fresh.sid) {
            Some(known) if known.same_as(&fresh) => known,
            _ => {
                let fresh = Arc::new(fresh);
                self.sessions.insert(fresh.sid.clone(), fresh.clone());
                fresh
            }
        };
        self.verified.insert(
            key,
            Remembered {
                claims: shared.clone(),
                validity,
            },
        );
        Ok(shared)
    }
}

/// The secret key of the remembered tokens' hashes.
struct TokenKey(u64, u64);

impl TokenKey {
    fn random() -> TokenKey {
        TokenKey(rand::random(), rand::random())
    }

    fn of(&self, token: &str) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.0, self.1);
        hasher.write(token.as_bytes());
        hasher.finish128().as_u128()
    }
}
