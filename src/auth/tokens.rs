//! Access tokens: issuing, and verification that states every rule.
//!
//! Verification is done here step by step rather than by
//! `jsonwebtoken::decode`, because that checks `iss`/`aud` only when asked to
//! require them, never checks `typ`, cannot take `now` from the caller, and
//! folds distinct failures together. Every rejection names its
//! [`RejectReason`], so a 401 in production explains itself.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;
use serde::{Deserialize, Serialize};

use super::keyset::KeySet;
use crate::domain::{Roles, SessionId, UserId, Username};
use crate::time::UnixSeconds;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The `typ` header of every access token (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Longer tokens are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a presented access token was refused: the `reason` of a 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    Malformed,
    Expired,
    NotYetValid,
    BadSignature,
    UnknownKid,
    WrongIssuer,
    WrongAudience,
    DisallowedAlg,
    Revoked,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Expired => "expired",
            RejectReason::NotYetValid => "not_yet_valid",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::UnknownKid => "unknown_kid",
            RejectReason::WrongIssuer => "wrong_issuer",
            RejectReason::WrongAudience => "wrong_audience",
            RejectReason::DisallowedAlg => "disallowed_alg",
            RejectReason::Revoked => "revoked",
        }
    }

    /// One human sentence; ASCII, since it also goes into `WWW-Authenticate`.
    pub fn description(self) -> &'static str {
        match self {
            RejectReason::Malformed => {
                "The access token is not a well-formed at+jwt with the required claims."
            }
            RejectReason::Expired => "The access token has expired; refresh it.",
            RejectReason::NotYetValid => "The access token is not valid yet; check the clocks.",
            RejectReason::BadSignature => "The access token's signature does not verify.",
            RejectReason::UnknownKid => {
                "The access token was signed with a key this gateway does not know."
            }
            RejectReason::WrongIssuer => "The access token was issued by someone else.",
            RejectReason::WrongAudience => "The access token is meant for another audience.",
            RejectReason::DisallowedAlg => {
                "The access token's algorithm is not the one of its key."
            }
            RejectReason::Revoked => "The access token's session has been revoked; log in again.",
        }
    }
}

/// `aud` may be one string or an array (RFC 7519 4.1.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

/// Exactly the claims of an access token. Every field is required and typed,
/// so a string `exp`, a missing `sub` or a `sid` that is not a session id
/// fails to parse: `malformed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: Audience,
    #[serde(deserialize_with = "parse_user_id")]
    pub sub: UserId,
    pub iat: UnixSeconds,
    pub exp: UnixSeconds,
    pub jti: String,
    #[serde(deserialize_with = "parse_session_id")]
    pub sid: SessionId,
    pub preferred_username: Username,
    pub roles: Roles,
    /// Never issued by us; honoured if a token carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<UnixSeconds>,
}

fn parse_user_id<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<UserId, D::Error> {
    let raw = String::deserialize(deserializer)?;
    UserId::parse(&raw).map_err(serde::de::Error::custom)
}

fn parse_session_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SessionId, D::Error> {
    let raw = String::deserialize(deserializer)?;
    SessionId::parse(&raw).map_err(serde::de::Error::custom)
}

/// The header fields verification looks at. `jwk`, `jku`, `x5u` and the like
/// are deliberately not read: keys come only from the gateway's own set.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// What a valid token must say about where it comes from.
#[derive(Clone, Debug)]
pub struct Expectations {
    pub issuer: String,
    pub audience: String,
}

/// Signs `claims` with the set's active key.
pub fn issue(keys: &KeySet, claims: &AccessClaims) -> anyhow::Result<String> {
    let signing = keys.signing();
    let mut header = Header::new(signing.alg);
    header.typ = Some(ACCESS_TOKEN_TYP.to_string());
    header.kid = Some(signing.kid.clone());
    jsonwebtoken::encode(&header, claims, &signing.key)
        .map_err(|e| anyhow::anyhow!("cannot sign an access token: {e}"))
}

/// Verifies a token against the key set at time `now`; the claims and the
/// id of the key that signed them.
pub fn verify(
    keys: &KeySet,
    token: &str,
    expect: &Expectations,
    now: UnixSeconds,
) -> Result<(String, AccessClaims), RejectReason> {
    let parts = split(token)?;
    let header: TokenHeader = decode_json(parts.header)?;

    if !matches!(header.alg.as_str(), "EdDSA" | "ES256" | "RS256") {
        return Err(RejectReason::DisallowedAlg);
    }
    let kid = header.kid.as_deref().ok_or(RejectReason::UnknownKid)?;
    let key = keys.verifying(kid).ok_or(RejectReason::UnknownKid)?;
    // The key decides the algorithm, never the token.
    if header.alg != key.alg_name {
        return Err(RejectReason::DisallowedAlg);
    }
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) || header.crit.is_some() {
        return Err(RejectReason::Malformed);
    }

    let signed = &token[..parts.header.len() + 1 + parts.payload.len()];
    let valid = jsonwebtoken::crypto::verify(parts.signature, signed.as_bytes(), &key.key, key.alg)
        .map_err(|_| RejectReason::BadSignature)?;
    if !valid {
        return Err(RejectReason::BadSignature);
    }

    let claims: AccessClaims = decode_json(parts.payload)?;
    check_claims(&claims, expect, now)?;
    Ok((kid.to_string(), claims))
}

/// The time-independent and time-dependent checks of verified claims.
pub fn check_claims(
    claims: &AccessClaims,
    expect: &Expectations,
    now: UnixSeconds,
) -> Result<(), RejectReason> {
    if claims.iss != expect.issuer {
        return Err(RejectReason::WrongIssuer);
    }
    if !claims.aud.contains(&expect.audience) {
        return Err(RejectReason::WrongAudience);
    }
    check_expiry(claims, now)
}

/// The checks that must be repeated on every use of a token, even one whose
/// signature was verified before.
pub fn check_expiry(claims: &AccessClaims, now: UnixSeconds) -> Result<(), RejectReason> {
    Validity::of(claims).check(now)
}

/// When a token may be used, from its claims.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    not_before: UnixSeconds,
    expires: UnixSeconds,
}

impl Validity {
    pub fn of(claims: &AccessClaims) -> Validity {
        Validity {
            not_before: claims.nbf.unwrap_or(claims.iat).max(claims.iat),
            expires: claims.exp,
        }
    }

    /// Within the leeway of its lifetime at `now`.
    pub fn check(self, now: UnixSeconds) -> Result<(), RejectReason> {
        if now > self.expires.plus(LEEWAY) {
            return Err(RejectReason::Expired);
        }
        if self.not_before > now.plus(LEEWAY) {
            return Err(RejectReason::NotYetValid);
        }
        Ok(())
    }
}

struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, RejectReason> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(RejectReason::Malformed);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        // An empty signature (`alg: none`) parses, so that it is refused
        // for its algorithm.
        (Some(header), Some(payload), Some(signature), None)
            if !header.is_empty() && !payload.is_empty() =>
        {
            Ok(Parts {
                header,
                payload,
                signature,
            })
        }
        _ => Err(RejectReason::Malformed),
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Result<T, RejectReason> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| RejectReason::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| RejectReason::Malformed)
}

/// A token's header and claims as JSON, without any verification: for
/// diagnosis only (`token inspect`, the debug endpoint).
pub fn decode_unverified(token: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let parts = split(token).ok()?;
    Some((
        decode_json(parts.header).ok()?,
        decode_json(parts.payload).ok()?,
    ))
}
