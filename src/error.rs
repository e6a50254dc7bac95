//! The one HTTP-facing error type. Each variant is named by what the client
//! sees; one `match` picks the status, the code and the message. 5xx bodies
//! are generic and their cause is logged once, here.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::auth::Rejection;
use crate::auth::password::HashingError;
use crate::auth::tokens::RejectReason;
use crate::body::{Body, full};
use crate::store::StoreError;
use crate::throttle::ThrottleError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No credentials at all.
    #[error("no credentials")]
    Unauthorized,
    /// An access token was presented and rejected.
    #[error("invalid token: {}", .0.as_str())]
    InvalidToken(RejectReason),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// The refresh token's session went unused past `--session-idle-timeout`.
    #[error("idle session")]
    SessionIdle,
    #[error("refresh token reused")]
    RefreshTokenReused,
    #[error("csrf rejected")]
    CsrfRejected,
    #[error("registration disabled")]
    RegistrationDisabled,
    #[error("account disabled")]
    AccountDisabled,
    #[error("insufficient role")]
    InsufficientRole,
    #[error("not found")]
    NotFound,
    /// A user id (or name) that is no user's, on a route that exists.
    #[error("no such user")]
    UserNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("username taken")]
    UsernameTaken,
    #[error("email taken")]
    EmailTaken,
    #[error("invalid reset token")]
    InvalidResetToken,
    #[error("payload too large")]
    PayloadTooLarge,
    /// The client stopped sending its body.
    #[error("request timeout")]
    RequestTimeout,
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("bad gateway: {0}")]
    BadGateway(String),
    #[error("upstream not configured")]
    UpstreamNotConfigured,
    #[error("gateway timeout")]
    GatewayTimeout,
    /// The mail server or webhook refused or failed a mail sent now (the
    /// probe's test mail); the reason is the server's, never the mail's.
    #[error("mail failed: {0}")]
    MailFailed(String),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized
            | ApiError::InvalidToken(_)
            | ApiError::InvalidCredentials
            | ApiError::InvalidRefreshToken
            | ApiError::SessionIdle
            | ApiError::RefreshTokenReused => StatusCode::UNAUTHORIZED,
            ApiError::CsrfRejected
            | ApiError::RegistrationDisabled
            | ApiError::AccountDisabled
            | ApiError::InsufficientRole => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::UserNotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UsernameTaken | ApiError::EmailTaken => StatusCode::CONFLICT,
            ApiError::InvalidResetToken => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway(_) | ApiError::UpstreamNotConfigured | ApiError::MailFailed(_) => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error` code of the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InvalidCredentials => "invalid_credentials",
            ApiError::InvalidRefreshToken | ApiError::SessionIdle => "invalid_refresh_token",
            ApiError::RefreshTokenReused => "refresh_token_reused",
            ApiError::CsrfRejected => "csrf_rejected",
            ApiError::RegistrationDisabled => "registration_disabled",
            ApiError::AccountDisabled => "account_disabled",
            ApiError::InsufficientRole => "insufficient_role",
            ApiError::NotFound | ApiError::UserNotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UsernameTaken => "username_taken",
            ApiError::EmailTaken => "email_taken",
            ApiError::InvalidResetToken => "invalid_reset_token",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BadGateway(_) | ApiError::MailFailed(_) => "bad_gateway",
            ApiError::UpstreamNotConfigured => "upstream_not_configured",
            ApiError::GatewayTimeout => "gateway_timeout",
            ApiError::DatabaseUnavailable(_) => "database_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::InvalidRequest(detail) => detail.clone(),
            ApiError::Unauthorized => "Authentication is required.".into(),
            ApiError::InvalidToken(reason) => reason.description().into(),
            ApiError::InvalidCredentials => "The username or password is wrong.".into(),
            ApiError::InvalidRefreshToken => {
                "The refresh token is unknown, expired or its session has ended.".into()
            }
            ApiError::SessionIdle => "The session went unused for too long; log in again.".into(),
            ApiError::RefreshTokenReused => {
                "The refresh token was already used; its session has been revoked.".into()
            }
            ApiError::CsrfRejected => {
                "Cookie-authenticated requests that change state need an allowed Origin.".into()
            }
            ApiError::RegistrationDisabled => "Registration is disabled.".into(),
            ApiError::AccountDisabled => "This account is disabled.".into(),
            ApiError::InsufficientRole => "This needs a role the caller does not have.".into(),
            ApiError::NotFound => "No such route.".into(),
            ApiError::UserNotFound => "No such user.".into(),
            ApiError::MethodNotAllowed => "This route does not accept that method.".into(),
            ApiError::UsernameTaken => "That username is taken.".into(),
            ApiError::EmailTaken => "That email address belongs to another account.".into(),
            ApiError::InvalidResetToken => {
                "The reset token is unknown, used, expired or replaced by a newer one.".into()
            }
            ApiError::PayloadTooLarge => "The request body is too large.".into(),
            ApiError::RequestTimeout => "The request body did not arrive in time.".into(),
            ApiError::RateLimited { .. } => "Too many attempts; try again later.".into(),
            ApiError::BadGateway(_) => "The upstream service failed to answer.".into(),
            ApiError::UpstreamNotConfigured => "No upstream service is configured.".into(),
            ApiError::GatewayTimeout => "The upstream service did not answer in time.".into(),
            // Only an admin sends mail now: the reason helps them, and names
            // the server's answer, never the mail's content.
            ApiError::MailFailed(reason) => format!("The mail could not be sent: {reason}."),
            ApiError::DatabaseUnavailable(_) => {
                "The database is unavailable; try again shortly.".into()
            }
            ApiError::Internal(_) => "Something went wrong on our side.".into(),
        }
    }

    /// What to log and count when this refuses a credential or a caller.
    pub fn auth_failure_reason(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidToken(reason) => Some(reason.as_str()),
            ApiError::SessionIdle => Some("idle"),
            ApiError::Unauthorized
            | ApiError::InvalidCredentials
            | ApiError::InvalidRefreshToken
            | ApiError::RefreshTokenReused
            | ApiError::CsrfRejected
            | ApiError::AccountDisabled
            | ApiError::InsufficientRole
            | ApiError::RateLimited { .. } => Some(self.code()),
            _ => None,
        }
    }

    /// The `reason` of a 401 body that has one.
    fn body_reason(&self) -> Option<&'static str> {
        match self {
            ApiError::InvalidToken(reason) => Some(reason.as_str()),
            ApiError::SessionIdle => Some("idle"),
            _ => None,
        }
    }

    /// Why, in one word: the body's `reason` when it has one, else the
    /// error code (what forward-auth sends as `X-Auth-Reason`).
    pub fn reason(&self) -> &'static str {
        self.body_reason().unwrap_or_else(|| self.code())
    }

    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), cause = %self, "request failed");
        }
        let message = self.message();
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code(),
            message: &message,
            reason: self.body_reason(),
        })
        .expect("error bodies serialize");

        let mut response = Response::new(full(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, self.www_authenticate());
        }
        let retry_after = match &self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::DatabaseUnavailable(_) => Some(DATABASE_RETRY_AFTER),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
        }
        response
    }

    /// RFC 6750: the challenge names the error only when a token was
    /// presented and rejected.
    fn www_authenticate(&self) -> HeaderValue {
        match self {
            ApiError::InvalidToken(reason) => HeaderValue::from_str(&format!(
                "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"{}\"",
                reason.description()
            ))
            .expect("reason descriptions are ASCII"),
            ApiError::InvalidRefreshToken
            | ApiError::SessionIdle
            | ApiError::RefreshTokenReused => HeaderValue::from_static(
                "Bearer realm=\"tollgate\", error=\"invalid_token\", error_description=\"refresh token rejected\"",
            ),
            _ => HeaderValue::from_static("Bearer realm=\"tollgate\""),
        }
    }
}

/// What a 503 for an unreachable database suggests: the store's operations
/// give up within 5 s, and reconnecting takes about as long.
const DATABASE_RETRY_AFTER: Duration = Duration::from_secs(5);

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Missing => ApiError::Unauthorized,
            Rejection::MalformedAuthorization => ApiError::InvalidRequest(
                "Authorization: Bearer must be followed by exactly one token".into(),
            ),
            Rejection::Invalid(reason) => ApiError::InvalidToken(reason),
        }
    }
}

impl From<HashingError> for ApiError {
    fn from(error: HashingError) -> Self {
        match error {
            HashingError::Busy => ApiError::RateLimited {
                retry_after: Duration::from_secs(1),
            },
            HashingError::Failed(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<ThrottleError> for ApiError {
    fn from(error: ThrottleError) -> Self {
        match error {
            ThrottleError::Limited { retry_after } => ApiError::RateLimited { retry_after },
            ThrottleError::Store(error) => error.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => ApiError::DatabaseUnavailable(cause),
            other => ApiError::Internal(other.into()),
        }
    }
}
