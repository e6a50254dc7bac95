//! `/api/debug/session` (only with `--debug-endpoints`): why this request is,
//! or is not, authenticated. It names the credentials that arrived and shows
//! the token's header and claims, never a token, cookie value or password.

use http::header::{AUTHORIZATION, COOKIE};
use http::{Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use super::Request;
use crate::app::App;
use crate::auth::CredentialSource;
use crate::auth::cookies::{ACCESS_COOKIE, REFRESH_COOKIE, find_cookie};
use crate::auth::credentials::presented_token;
use crate::auth::tokens::{RejectReason, decode_unverified};
use crate::body::{Body, json};
use crate::time::UnixSeconds;

#[derive(Serialize)]
struct Report {
    credentials: Credentials,
    token: Option<TokenView>,
    verdict: Verdict,
    gateway: GatewayView,
}

#[derive(Serialize)]
struct Credentials {
    /// The scheme of the `Authorization` header, if any.
    authorization_scheme: Option<String>,
    /// Names of the gateway's cookies that arrived.
    cookies: Vec<&'static str>,
    /// Which credential the gateway reads: the bearer header wins.
    used: Option<&'static str>,
}

#[derive(Serialize)]
struct TokenView {
    header: Value,
    claims: Value,
    expires_in_s: Option<i64>,
}

#[derive(Serialize)]
struct Verdict {
    valid: bool,
    reason: Option<&'static str>,
    explanation: String,
}

#[derive(Serialize)]
struct GatewayView {
    issuer: String,
    audience: String,
    server_time: UnixSeconds,
    cookie_samesite: &'static str,
    cookie_secure: bool,
}

pub async fn session(app: &App, request: &Request) -> Response<Body> {
    let headers = request.headers();
    let now = UnixSeconds::now();
    // A malformed Authorization header presents no token to explain.
    let presented = presented_token(headers).ok().flatten();
    let credentials = Credentials {
        // The scheme only: a header that is all token must not be echoed.
        authorization_scheme: headers.get(AUTHORIZATION).map(|value| {
            let value = value.to_str().unwrap_or("");
            match value.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((scheme, _))
                    if scheme.len() <= 20 && scheme.chars().all(|c| c.is_ascii_alphabetic()) =>
                {
                    scheme.to_string()
                }
                _ => "(no scheme)".to_string(),
            }
        }),
        cookies: [ACCESS_COOKIE, REFRESH_COOKIE]
            .into_iter()
            .filter(|name| find_cookie(headers, name).is_some())
            .collect(),
        used: presented.map(|p| match p.source {
            CredentialSource::Bearer => "bearer",
            CredentialSource::Cookie => "cookie",
        }),
    };
    let token = presented
        .and_then(|p| decode_unverified(p.token))
        .map(|(header, claims)| {
            let expires_in_s = claims
                .get("exp")
                .and_then(Value::as_i64)
                .map(|exp| UnixSeconds::new(exp).seconds_after(now));
            TokenView {
                header,
                claims,
                expires_in_s,
            }
        });
    let verdict = match presented {
        None => Verdict {
            valid: false,
            reason: None,
            explanation: no_credentials_explanation(headers.contains_key(COOKIE)),
        },
        Some(presented) => match app.authenticator.verify(presented, now).await {
            Ok(_) => Verdict {
                valid: true,
                reason: None,
                explanation: "The token is valid: requests with it reach the upstream.".into(),
            },
            Err(reason) => Verdict {
                valid: false,
                reason: Some(reason.as_str()),
                explanation: explain(reason, app),
            },
        },
    };
    json(
        StatusCode::OK,
        &Report {
            credentials,
            token,
            verdict,
            gateway: GatewayView {
                issuer: app.config.issuer.clone(),
                audience: app.config.audience.clone(),
                server_time: now,
                cookie_samesite: app.config.cookie_samesite.attribute(),
                cookie_secure: app.config.cookie_secure,
            },
        },
    )
}

fn no_credentials_explanation(has_other_cookies: bool) -> String {
    let mut text = String::from(
        "No access token arrived: send `Authorization: Bearer <token>` or the tollgate_access cookie.",
    );
    if has_other_cookies {
        text.push_str(
            " Other cookies arrived but not tollgate_access: it may have expired (Max-Age is the \
             access TTL; refresh), or the browser withheld it (SameSite on a cross-site request, \
             Secure over plain HTTP, third-party cookies blocked).",
        );
    } else {
        text.push_str(
            " If the browser should have sent the cookie, check its SameSite and Secure attributes \
             and whether the frontend is on another site (use bearer mode there).",
        );
    }
    text
}

fn explain(reason: RejectReason, app: &App) -> String {
    let detail = match reason {
        RejectReason::Expired => {
            "Refresh it with POST /api/auth/refresh before it expires.".to_string()
        }
        RejectReason::NotYetValid => {
            "The issuer's clock is ahead of this gateway's: synchronise the clocks.".into()
        }
        RejectReason::UnknownKid => {
            "Instances must share the database, where every instance records its public keys; \
             a token from another deployment is never known."
                .into()
        }
        RejectReason::BadSignature => {
            "The token was altered, or signed by a key of another deployment under a known id."
                .into()
        }
        RejectReason::WrongIssuer => format!(
            "This gateway expects iss \"{}\": give every instance the same --issuer.",
            app.config.issuer
        ),
        RejectReason::WrongAudience => format!(
            "This gateway expects aud \"{}\": give every instance the same --audience.",
            app.config.audience
        ),
        RejectReason::DisallowedAlg => {
            "Only the algorithm of the key named by kid is accepted.".into()
        }
        RejectReason::Revoked => "The session was logged out or revoked: log in again.".into(),
        RejectReason::Malformed => {
            "Expected a JWT with typ at+jwt and the claims iss, aud, sub, exp, sid.".into()
        }
    };
    format!("{} {}", reason.description(), detail)
}
