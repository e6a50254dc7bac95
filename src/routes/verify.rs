//! `/api/auth/verify[?role=NAME]`: forward-auth, for teams that keep their
//! ingress (nginx `auth_request`, Traefik `ForwardAuth`, Caddy
//! `forward_auth`, Envoy `ext_authz` over HTTP) and ask the gateway only
//! whether a request may pass.
//!
//! The token is read exactly as for a proxied request (the bearer header,
//! else the access cookie) and checked through the verified-token cache and
//! the revoked-session set: the database is never read. The answer is 200
//! with the identity headers and no body, or the proxied request's 401 (with
//! `WWW-Authenticate`) or 403, each with `X-Auth-Reason` saying why, which
//! an ingress can log or hand on.
//!
//! Envoy sends the original request's method, and its path after the
//! configured prefix: any method is answered, and so is any path below
//! `/api/auth/verify` (whose query then belongs to the original request and
//! is not read). The other ingresses ask with GET and name the original
//! method in `X-Forwarded-Method` (Traefik, Caddy) or `X-Original-Method`
//! (the nginx snippet in the README). A cookie credential on a request
//! that changes state, or on a WebSocket handshake, must pass the `Origin`
//! rule as it would through the proxy.

use http::header::{CACHE_CONTROL, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};

use super::Request;
use crate::app::App;
use crate::auth::tokens::RejectReason;
use crate::auth::{CredentialSource, Identity, credentials};
use crate::body::{Body, no_content};
use crate::domain::Role;
use crate::error::ApiError;
use crate::request::{RequestContext, changes_state, error_response, note_user};
use crate::time::UnixSeconds;

pub const X_AUTH_REASON: HeaderName = HeaderName::from_static("x-auth-reason");
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

/// Where the check was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyTarget {
    /// `/api/auth/verify` itself: its query may name a role.
    Fixed,
    /// A path below it (Envoy's `path_prefix`): the rest is the original
    /// request's path and query.
    OriginalPath,
}

/// Any refusal is answered here, not by the pipeline, so that it carries
/// `X-Auth-Reason`; it is logged and counted like every other.
pub async fn verify(
    app: &App,
    ctx: &RequestContext,
    request: Request,
    target: VerifyTarget,
) -> Response<Body> {
    let (parts, _) = request.into_parts();
    let decision = match target {
        VerifyTarget::Fixed => required_role(parts.uri.query()),
        VerifyTarget::OriginalPath => Ok(None),
    };
    let decision = match decision {
        Ok(role) => check(app, ctx, &parts, role.as_ref()).await,
        Err(error) => Err(error),
    };
    let mut response = match decision {
        Ok(identity) => {
            let mut response = no_content(StatusCode::OK);
            identity.apply_identity(response.headers_mut());
            response
        }
        Err(error) => {
            let reason = HeaderValue::from_static(error.reason());
            let mut response = error_response(app, error);
            response.headers_mut().insert(X_AUTH_REASON, reason);
            response
        }
    };
    // An answer about one request, for one credential: never to be reused.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn check(
    app: &App,
    ctx: &RequestContext,
    parts: &http::request::Parts,
    role: Option<&Role>,
) -> Result<Identity, ApiError> {
    // An ingress can only hand on a 401 or a 403: a malformed bearer header
    // is a rejected token here, where the proxy would answer 400.
    let presented = credentials::presented_token(&parts.headers)
        .map_err(|_| ApiError::InvalidToken(RejectReason::Malformed))?
        .ok_or(ApiError::Unauthorized)?;
    let identity = app
        .authenticator
        .verify(presented, UnixSeconds::now())
        .await
        .map_err(ApiError::InvalidToken)?;
    note_user(&identity);
    if let Some(role) = role
        && !identity.claims.roles.contains(role)
    {
        return Err(ApiError::InsufficientRole);
    }
    if identity.source == CredentialSource::Cookie
        && (original_changes_state(&parts.method, &parts.headers)
            || parts.headers.contains_key(UPGRADE))
    {
        app.browser
            .check_cookie_origin(&ctx.facts(&parts.uri, &parts.headers))?;
    }
    Ok(identity)
}

/// Whether the request being checked changes state, by any of the methods
/// it names: the check's own (Envoy) and the ingress's headers. A client
/// adding a header can only make the check stricter.
fn original_changes_state(method: &Method, headers: &HeaderMap) -> bool {
    changes_state(method)
        || [X_FORWARDED_METHOD, X_ORIGINAL_METHOD]
            .iter()
            .flat_map(|name| headers.get_all(name))
            .filter_map(|value| Method::from_bytes(value.as_bytes()).ok())
            .any(|method| changes_state(&method))
}

/// `?role=NAME`: at most one, and nothing else, so that a typo such as
/// `?roles=admin` is a 400 rather than a check that lets everyone in.
fn required_role(query: Option<&str>) -> Result<Option<Role>, ApiError> {
    let mut role = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "role" if role.is_none() => {
                role = Some(Role::parse(&value).map_err(ApiError::InvalidRequest)?);
            }
            "role" => {
                return Err(ApiError::InvalidRequest(
                    "name at most one role= to verify".into(),
                ));
            }
            other => {
                return Err(ApiError::InvalidRequest(format!(
                    "unknown query parameter `{other}` (the verify route takes role=NAME)"
                )));
            }
        }
    }
    Ok(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_at_most_one_role_and_nothing_else() {
        assert_eq!(required_role(None).unwrap(), None);
        assert_eq!(required_role(Some("")).unwrap(), None);
        assert_eq!(
            required_role(Some("role=admin")).unwrap().unwrap().as_str(),
            "admin"
        );
        assert_eq!(
            required_role(Some("role=team%3Aops"))
                .unwrap()
                .unwrap()
                .as_str(),
            "team:ops"
        );
        for bad in ["roles=admin", "role=a&role=b", "role=", "role=a,b", "x=1"] {
            assert!(required_role(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn any_named_method_that_changes_state_counts() {
        let mut headers = HeaderMap::new();
        assert!(!original_changes_state(&Method::GET, &headers));
        assert!(original_changes_state(&Method::DELETE, &headers));
        headers.insert(X_FORWARDED_METHOD, HeaderValue::from_static("GET"));
        headers.insert(X_ORIGINAL_METHOD, HeaderValue::from_static("POST"));
        assert!(original_changes_state(&Method::GET, &headers));
        headers.insert(X_ORIGINAL_METHOD, HeaderValue::from_static("HEAD"));
        assert!(!original_changes_state(&Method::GET, &headers));
    }
}
