//! `/api/auth/…`: accounts, sessions and the tokens they yield.

use std::net::IpAddr;

use http::header::{CACHE_CONTROL, SET_COOKIE, USER_AGENT};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{AuthenticatedUser, Request, parse_json, parse_optional_json, read_body};
use crate::app::App;
use std::sync::Arc;

use crate::auth::Identity;
use crate::auth::cookies::{REFRESH_COOKIE, find_cookie};
use crate::auth::password::Verification;
use crate::auth::refresh::{hash_refresh_token, new_refresh_token};
use crate::auth::tokens::{self, AccessClaims, Audience, RejectReason};
use crate::body::{Body, json, no_content};
use crate::client::{PeerAddr, client_ip};
use crate::domain::{Password, Secret, SessionId, UserId, Username, now_ms, rfc3339};
use crate::error::ApiError;
use crate::store::{NewSession, NewUser, Rotation, SessionOwner, StoreError, User};

#[derive(Deserialize)]
struct CredentialsBody {
    username: String,
    password: String,
}

#[derive(Default, Deserialize)]
struct RefreshBody {
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct PasswordChangeBody {
    current_password: String,
    new_password: String,
}

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: &'a str,
    refresh_expires_in: i64,
    user: UserBody<'a>,
}

#[derive(Serialize)]
struct UserBody<'a> {
    id: &'a str,
    username: &'a str,
    roles: &'a [String],
}

#[derive(Serialize)]
struct MeBody<'a> {
    id: &'a str,
    username: &'a str,
    roles: &'a [String],
    session_id: &'a str,
}

#[derive(Serialize)]
struct SessionBody {
    id: String,
    created_at: String,
    last_used_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
    current: bool,
}

fn invalid(field: &str, problem: String) -> ApiError {
    ApiError::InvalidRequest(format!("{field}: {problem}"))
}

fn parse_credentials(body: CredentialsBody) -> Result<(Username, Password), ApiError> {
    let username = Username::parse(&body.username).map_err(|e| invalid("username", e))?;
    let password = Password::parse(body.password).map_err(|e| invalid("password", e))?;
    Ok((username, password))
}

pub async fn register(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    if !app.config.allow_registration {
        return Err(ApiError::RegistrationDisabled);
    }
    let (parts, body) = request.into_parts();
    let (username, password) = parse_credentials(parse_json(&read_body(body).await?)?)?;
    // Each registration costs a password hash: it counts against the
    // address's attempts like a login.
    app.throttle
        .registration(client_address(app, &parts))
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let password_hash = app.passwords.hash(&password).await?;
    let now = now_ms();
    let user = app
        .store
        .create_user(NewUser {
            username: &username,
            password_hash,
            roles: Vec::new(),
            now,
        })
        .await
        .map_err(|error| match error {
            StoreError::Conflict => ApiError::UsernameTaken,
            other => other.into(),
        })?;
    tracing::info!(user_id = %user.id, "registered");
    start_session(app, &parts, user, StatusCode::CREATED, now).await
}

pub async fn login(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let (username, password) = parse_credentials(parse_json(&read_body(body).await?)?)?;
    let attempt = match app
        .throttle
        .begin(&username.key(), client_address(app, &parts))
    {
        Ok(attempt) => attempt,
        Err(retry_after) => {
            app.metrics.login("rate_limited");
            return Err(ApiError::RateLimited { retry_after });
        }
    };
    let user = app.store.user_by_username(&username).await?;
    let stored_hash = user.as_ref().map(|user| user.password_hash.as_str());
    // Unknown users are verified against a dummy hash: same answer, same time.
    let verification = app.passwords.verify(&password, stored_hash).await?;
    let (user, rehashed) = match (user, verification) {
        (Some(user), Verification::Valid { rehashed }) => (user, rehashed),
        _ => {
            attempt.failed();
            app.metrics.login("invalid_credentials");
            return Err(ApiError::InvalidCredentials);
        }
    };
    attempt.succeeded();
    if user.disabled {
        app.metrics.login("account_disabled");
        return Err(ApiError::AccountDisabled);
    }
    app.metrics.login("success");
    if let Some(rehashed) = rehashed {
        app.store.update_password_hash(&user.id, &rehashed).await?;
    }
    start_session(app, &parts, user, StatusCode::OK, now_ms()).await
}

/// Records a new session for `user` and answers with its tokens.
async fn start_session(
    app: &App,
    parts: &Parts,
    user: User,
    status: StatusCode,
    now: i64,
) -> Result<Response<Body>, ApiError> {
    let (refresh_token, refresh_hash) = new_refresh_token();
    let expires_at = now + app.config.refresh_ttl.as_millis() as i64;
    let ip = client_address(app, parts).to_string();
    let user_agent = parts
        .headers
        .get(USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| truncate(agent, 256));
    let session_id = app
        .store
        .start_session(NewSession {
            user_id: &user.id,
            user_agent: user_agent.as_deref(),
            ip: Some(&ip),
            now,
            expires_at,
            refresh_hash: &refresh_hash,
        })
        .await?;
    let owner = SessionOwner {
        session_id,
        user_id: user.id,
        username: user.username,
        roles: user.roles,
        expires_at,
    };
    tracing::info!(user_id = %owner.user_id, session_id = %owner.session_id, "session started");
    token_response(app, &owner, &refresh_token, status, now)
}

/// The client's address: the socket peer, or what a trusted proxy forwarded.
fn client_address(app: &App, parts: &Parts) -> IpAddr {
    let peer = PeerAddr::ip_of(&parts.extensions);
    client_ip(&parts.headers, peer, &app.config.trusted_proxies)
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// The token body, with both cookies set.
fn token_response(
    app: &App,
    owner: &SessionOwner,
    refresh_token: &Secret,
    status: StatusCode,
    now_ms: i64,
) -> Result<Response<Body>, ApiError> {
    let now = now_ms / 1000;
    let expires_in = app.config.access_ttl.as_secs() as i64;
    let claims = AccessClaims {
        iss: app.config.issuer.clone(),
        aud: Audience::One(app.config.audience.clone()),
        sub: owner.user_id.0.clone(),
        iat: now,
        exp: now + expires_in,
        jti: uuid::Uuid::new_v4().to_string(),
        sid: owner.session_id.0.clone(),
        preferred_username: owner.username.as_str().to_string(),
        roles: owner.roles.clone(),
        nbf: None,
    };
    let access_token = tokens::issue(&app.keys.current(), &claims).map_err(ApiError::Internal)?;
    let mut response = json(
        status,
        &TokenBody {
            token_type: "Bearer",
            expires_in,
            refresh_token: refresh_token.expose(),
            refresh_expires_in: ((owner.expires_at - now_ms) / 1000).max(0),
            user: UserBody {
                id: &owner.user_id.0,
                username: owner.username.as_str(),
                roles: &owner.roles,
            },
            access_token: &access_token,
        },
    );
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.append(SET_COOKIE, app.cookies.set_access(&access_token));
    headers.append(SET_COOKIE, app.cookies.set_refresh(refresh_token.expose()));
    response
        .extensions_mut()
        .insert(AuthenticatedUser(Arc::new(claims)));
    Ok(response)
}

/// Marks the response with the caller, for the request's log line.
fn as_user(mut response: Response<Body>, identity: &Identity) -> Response<Body> {
    response
        .extensions_mut()
        .insert(AuthenticatedUser(identity.claims.clone()));
    response
}

/// The refresh token of a request: the body's, else the refresh cookie.
fn presented_refresh_token(parts: &Parts, body: RefreshBody) -> Option<String> {
    body.refresh_token
        .or_else(|| find_cookie(&parts.headers, REFRESH_COOKIE).map(str::to_string))
        .filter(|token| !token.is_empty())
}

/// A string that cannot be one of our refresh tokens is refused before any
/// database work.
fn plausible_refresh_token(token: &str) -> bool {
    (32..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub async fn refresh(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let body: RefreshBody = parse_optional_json(&read_body(body).await?)?;
    let presented = presented_refresh_token(&parts, body).ok_or(ApiError::Unauthorized)?;
    if !plausible_refresh_token(&presented) {
        return Err(ApiError::InvalidRefreshToken);
    }
    let (next_token, next_hash) = new_refresh_token();
    let now = now_ms();
    let rotation = app
        .store
        .rotate_refresh_token(
            &hash_refresh_token(&presented),
            &next_hash,
            now,
            app.config.refresh_reuse_grace.as_millis() as i64,
        )
        .await?;
    match rotation {
        Rotation::Rotated(owner) => {
            app.metrics.refresh("rotated");
            token_response(app, &owner, &next_token, StatusCode::OK, now)
        }
        Rotation::Reused { session_id } => {
            app.metrics.refresh("reused");
            app.metrics.refresh_reuse.inc();
            refuse_revoked(app, std::slice::from_ref(&session_id));
            tracing::warn!(session_id = %session_id, reason = "refresh_token_reused", "refresh token reused after the grace; session revoked");
            Err(ApiError::RefreshTokenReused)
        }
        Rotation::Invalid => {
            app.metrics.refresh("invalid");
            Err(ApiError::InvalidRefreshToken)
        }
    }
}

pub async fn logout(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let body: RefreshBody = parse_optional_json(&read_body(body).await?)?;
    let explicit_refresh = body.refresh_token.is_some();
    let refresh_token = presented_refresh_token(&parts, body);

    // A refresh token named in the body says which session to end; otherwise
    // the access token's session, else the refresh cookie's.
    let session = if explicit_refresh {
        session_of_refresh_token(app, refresh_token.as_deref()).await?
    } else {
        match app
            .authenticator
            .authenticate(&parts.headers, now_ms() / 1000)
            .await
        {
            Ok(identity) => SessionId(identity.claims.sid.clone()),
            Err(access_error) => match refresh_token {
                Some(token) => session_of_refresh_token(app, Some(&token)).await?,
                None => return Err(access_error),
            },
        }
    };
    revoke_session(app, &session).await?;
    tracing::info!(session_id = %session, "logged out");
    Ok(cleared_cookies(app))
}

/// Revokes one session, and refuses its access tokens here at once (even if
/// another instance revoked it first).
async fn revoke_session(app: &App, session: &SessionId) -> Result<(), ApiError> {
    if app.store.revoke_session(session).await? {
        app.metrics.revoked(1);
    }
    app.revocations.insert(session);
    Ok(())
}

/// Counts sessions this instance just revoked and refuses their access
/// tokens here at once; other instances learn of them from the database.
fn refuse_revoked(app: &App, sessions: &[SessionId]) {
    app.metrics.revoked(sessions.len());
    app.revocations.insert_all(sessions);
}

async fn session_of_refresh_token(app: &App, token: Option<&str>) -> Result<SessionId, ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
    if !plausible_refresh_token(token) {
        return Err(ApiError::InvalidRefreshToken);
    }
    app.store
        .session_of_refresh_token(&hash_refresh_token(token))
        .await?
        .ok_or(ApiError::InvalidRefreshToken)
}

fn cleared_cookies(app: &App) -> Response<Body> {
    let mut response = no_content(StatusCode::NO_CONTENT);
    for cookie in app.cookies.clear_both() {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

async fn identity(app: &App, parts: &Parts) -> Result<Identity, ApiError> {
    app.authenticator
        .authenticate(&parts.headers, now_ms() / 1000)
        .await
}

pub async fn logout_all(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = identity(app, &parts).await?;
    let user = UserId(identity.claims.sub.clone());
    let revoked = app.store.revoke_user_sessions(&user, None).await?;
    refuse_revoked(app, &revoked);
    // The current session too, even if the database had already revoked it.
    app.revocations
        .insert(&SessionId(identity.claims.sid.clone()));
    tracing::info!(user_id = %user, sessions = revoked.len(), "logged out everywhere");
    Ok(as_user(cleared_cookies(app), &identity))
}

pub async fn me(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = identity(app, &parts).await?;
    let claims = &identity.claims;
    let body = MeBody {
        id: &claims.sub,
        username: &claims.preferred_username,
        roles: &claims.roles,
        session_id: &claims.sid,
    };
    Ok(as_user(json(StatusCode::OK, &body), &identity))
}

pub async fn sessions(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = identity(app, &parts).await?;
    let user = UserId(identity.claims.sub.clone());
    let sessions = app.store.active_sessions(&user, now_ms()).await?;
    let body: Vec<SessionBody> = sessions
        .into_iter()
        .filter(|session| !app.revocations.is_revoked(&session.id.0))
        .map(|session| SessionBody {
            current: session.id.0 == identity.claims.sid,
            id: session.id.0,
            created_at: rfc3339(session.created_at),
            last_used_at: rfc3339(session.last_used_at),
            user_agent: session.user_agent,
            ip: session.ip,
        })
        .collect();
    Ok(as_user(json(StatusCode::OK, &body), &identity))
}

pub async fn delete_session(
    app: &App,
    request: Request,
    id: String,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = identity(app, &parts).await?;
    let session = SessionId(id);
    match app.store.session_user(&session).await? {
        Some(owner) if owner.0 == identity.claims.sub => {
            revoke_session(app, &session).await?;
            tracing::info!(session_id = %session, "session revoked by its owner");
            Ok(as_user(no_content(StatusCode::NO_CONTENT), &identity))
        }
        _ => Err(ApiError::NotFound),
    }
}

pub async fn change_password(app: &App, request: Request) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let identity = identity(app, &parts).await?;
    let body: PasswordChangeBody = parse_json(&read_body(body).await?)?;
    let current =
        Password::parse(body.current_password).map_err(|e| invalid("current_password", e))?;
    let new = Password::parse(body.new_password).map_err(|e| invalid("new_password", e))?;

    let user_id = UserId(identity.claims.sub.clone());
    let user = app
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or(ApiError::InvalidToken(RejectReason::Revoked))?;
    // Guessing the current password with a stolen token is throttled like
    // guessing it at login.
    let attempt = app
        .throttle
        .begin(
            &format!("password-change:{}", user.id),
            client_address(app, &parts),
        )
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    if app
        .passwords
        .verify(&current, Some(&user.password_hash))
        .await?
        == Verification::Invalid
    {
        attempt.failed();
        return Err(ApiError::InvalidCredentials);
    }
    attempt.succeeded();
    let new_hash = app.passwords.hash(&new).await?;
    let current_session = SessionId(identity.claims.sid.clone());
    let revoked = app
        .store
        .change_password(&user.id, &new_hash, Some(&current_session))
        .await?;
    refuse_revoked(app, &revoked);
    tracing::info!(user_id = %user.id, revoked_sessions = revoked.len(), "password changed");
    Ok(as_user(no_content(StatusCode::NO_CONTENT), &identity))
}
