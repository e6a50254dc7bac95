//! What the upstream (or an ingress asking `/api/auth/verify`) is told about
//! a verified token: the `X-Auth-*` identity headers, and for the upstream
//! the token itself as `Authorization: Bearer`. Built once per token.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::tokens::AccessClaims;

pub const X_AUTH_USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
pub const X_AUTH_USERNAME: HeaderName = HeaderName::from_static("x-auth-username");
pub const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
pub const X_AUTH_SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");

#[derive(Debug)]
pub struct IdentityHeaders {
    /// `Bearer <token>`, marked sensitive so that no HTTP layer logs it.
    authorization: Option<HeaderValue>,
    identity: Vec<(HeaderName, HeaderValue)>,
}

impl IdentityHeaders {
    pub fn new(token: &str, claims: &AccessClaims) -> IdentityHeaders {
        let authorization =
            HeaderValue::from_str(&format!("Bearer {token}"))
                .ok()
                .map(|mut value| {
                    value.set_sensitive(true);
                    value
                });
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
        IdentityHeaders {
            authorization,
            identity,
        }
    }

    /// The identity headers and the bearer token, for the upstream.
    pub fn apply_for_upstream(&self, headers: &mut HeaderMap) {
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        self.apply_identity(headers);
    }

    /// The identity headers alone, for a forward-auth answer.
    pub fn apply_identity(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.identity {
            headers.insert(name.clone(), value.clone());
        }
    }
}
