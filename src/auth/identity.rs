//! What the upstream (or an ingress asking `/api/auth/verify`) is told about
//! a verified token: the `X-Auth-*` identity headers, built once per session
//! (the upstream is given the token itself too, as `Authorization: Bearer`).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::tokens::AccessClaims;

pub const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
pub const X_AUTH_USERNAME: HeaderName = HeaderName::from_static("x-auth-username");
pub const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
pub const X_AUTH_SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");

/// The `X-Auth-*` values of one session's user, built once per session.
#[derive(Debug)]
pub struct IdentityHeaders {
    identity: Vec<(HeaderName, HeaderValue)>,
}

impl IdentityHeaders {
    pub fn new(claims: &AccessClaims) -> IdentityHeaders {
        let identity = [
            (X_AUTH_USER_ID, claims.sub.as_str().to_string()),
            (
                X_AUTH_USERNAME,
                claims.preferred_username.as_str().to_string(),
            ),
            (X_AUTH_ROLES, claims.roles.joined()),
            (X_AUTH_SESSION_ID, claims.sid.as_str().to_string()),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            HeaderValue::from_str(&value)
                .ok()
                .map(|value| (name, value))
        })
        .collect();
        IdentityHeaders { identity }
    }

    /// The identity headers, for the upstream or a forward-auth answer.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.identity {
            headers.insert(name.clone(), value.clone());
        }
    }
}
