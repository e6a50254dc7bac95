//! `/api/auth/…`: accounts, sessions and the tokens they yield.

use http::header::{CACHE_CONTROL, SET_COOKIE, USER_AGENT};
use http::request::Parts;
use http::{HeaderValue, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{Request, audit_origin, parse_json, parse_optional_json, read_body, throttled};
use crate::app::App;
use crate::audit::Event;
use crate::auth::cookies::{REFRESH_COOKIE, find_cookie};
use crate::auth::password::Verification;
use crate::auth::refresh::{self, hash_refresh_token, new_refresh_token};
use crate::auth::tokens::{self, AccessClaims, Audience, RejectReason};
use crate::auth::{CredentialSource, Identity, Rejection};
use crate::body::{Body, json, no_content};
use crate::domain::{Email, Password, Roles, Secret, SessionId, UserId, Username};
use crate::error::ApiError;
use crate::request::{RequestContext, authenticate, note_user, note_user_id};
use crate::store::{
    AuditAction, AuditOutcome, NewSession, NewUser, Presented, Rotation, SessionOwner, StoreError,
    User,
};
use crate::time::{UnixMillis, UnixSeconds};

#[derive(Deserialize)]
struct CredentialsBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct RegisterBody {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
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
    id: &'a UserId,
    username: &'a Username,
    roles: &'a Roles,
}

#[derive(Serialize)]
struct MeBody<'a> {
    id: &'a UserId,
    username: &'a Username,
    roles: &'a Roles,
    session_id: &'a SessionId,
    email: Option<&'a Email>,
}

#[derive(Serialize)]
struct SessionBody {
    id: SessionId,
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

pub async fn register(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    if !app.config.allow_registration {
        return Err(ApiError::RegistrationDisabled);
    }
    let (parts, body) = request.into_parts();
    let body: RegisterBody = parse_json(&read_body(body).await?)?;
    let (username, password) = parse_credentials(CredentialsBody {
        username: body.username,
        password: body.password,
    })?;
    let email = body
        .email
        .map(|email| Email::parse(&email).map_err(|e| invalid("email", e)))
        .transpose()?;
    let origin = audit_origin(ctx);
    let event = Event::new(AuditAction::Register);
    // Each registration costs a password hash: it counts against the
    // address's attempts like a login.
    if let Err(error) = app.throttle.registration(ctx.client.address).await {
        return Err(throttled(app, &origin, event, error).await);
    }
    let password_hash = app.passwords.hash(&password).await?;
    let now = UnixMillis::now();
    let created = app
        .store
        .create_user(NewUser {
            username: &username,
            email: email.as_ref(),
            password_hash,
            roles: Roles::default(),
            now,
        })
        .await;
    let user = match created {
        Ok(user) => user,
        Err(error @ (StoreError::Conflict | StoreError::EmailTaken)) => {
            app.audit
                .record(&origin, event.outcome(AuditOutcome::Failed))
                .await;
            return Err(match error {
                StoreError::Conflict => ApiError::UsernameTaken,
                _ => ApiError::EmailTaken,
            });
        }
        Err(other) => return Err(other.into()),
    };
    tracing::info!(user_id = %user.id, "registered");
    let user_id = user.id.clone();
    let response = start_session(app, ctx, &parts, user, StatusCode::CREATED, now).await?;
    app.audit
        .record(&origin, event.by(&user_id).on(&user_id))
        .await;
    Ok(response)
}

pub async fn login(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let (username, password) = parse_credentials(parse_json(&read_body(body).await?)?)?;
    let refused = |outcome: &'static str| {
        app.metrics.login(outcome);
        tracing::info!(username = %username, outcome, "login refused");
    };
    let origin = audit_origin(ctx);
    let event = Event::new(AuditAction::Login);
    let attempt = match app
        .throttle
        .begin(&username.key(), ctx.client.address)
        .await
    {
        Ok(attempt) => attempt,
        Err(error) => {
            if error.is_limited() {
                refused("rate_limited");
                // Which account is being guessed at, when it exists: the
                // row is then found by `--user` too.
                let target = app.store.user_by_username(&username).await.ok().flatten();
                let event = event
                    .outcome(AuditOutcome::Throttled)
                    .on_maybe(target.as_ref().map(|user| &user.id));
                app.audit.record(&origin, event).await;
            }
            return Err(error.into());
        }
    };
    let user = app.store.user_by_username(&username).await?;
    let stored_hash = user.as_ref().map(|user| user.password_hash.expose());
    // Unknown users are verified against a dummy hash: same answer, same time.
    let verification = app.passwords.verify(&password, stored_hash).await?;
    let (user, rehashed) = match (user, verification) {
        (Some(user), Verification::Valid { rehashed }) => (user, rehashed),
        (user, _) => {
            attempt.failed();
            refused("invalid_credentials");
            let event = event
                .outcome(AuditOutcome::Failed)
                .on_maybe(user.as_ref().map(|user| &user.id));
            app.audit.record(&origin, event).await;
            return Err(ApiError::InvalidCredentials);
        }
    };
    attempt.succeeded().await?;
    if user.is_disabled() {
        refused("account_disabled");
        let event = event.outcome(AuditOutcome::Failed).on(&user.id);
        app.audit.record(&origin, event).await;
        return Err(ApiError::AccountDisabled);
    }
    app.metrics.login("success");
    if let Some(rehashed) = rehashed {
        app.store.update_password_hash(&user.id, &rehashed).await?;
    }
    let user_id = user.id.clone();
    let response = start_session(app, ctx, &parts, user, StatusCode::OK, UnixMillis::now()).await?;
    app.audit
        .record(&origin, event.by(&user_id).on(&user_id))
        .await;
    Ok(response)
}

/// Records a new session for `user` and answers with its tokens.
async fn start_session(
    app: &App,
    ctx: &RequestContext,
    parts: &Parts,
    user: User,
    status: StatusCode,
    now: UnixMillis,
) -> Result<Response<Body>, ApiError> {
    let (refresh_token, refresh_hash) = new_refresh_token();
    let expires_at = now.plus(app.config.refresh_ttl);
    let ip = ctx.client.address.to_string();
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
    let response = token_response(app, &owner, &refresh_token, status, now)?;
    tracing::info!(session_id = %owner.session_id, "session started");
    Ok(response)
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
    now: UnixMillis,
) -> Result<Response<Body>, ApiError> {
    note_user_id(&owner.user_id);
    let issued_at = now.to_seconds();
    let claims = AccessClaims {
        iss: app.config.issuer.clone(),
        aud: Audience::One(app.config.audience.clone()),
        sub: owner.user_id.clone(),
        iat: issued_at,
        exp: issued_at.plus(app.config.access_ttl),
        jti: uuid::Uuid::new_v4().to_string(),
        sid: owner.session_id.clone(),
        preferred_username: owner.username.clone(),
        roles: owner.roles.clone(),
        nbf: None,
    };
    let access_token = tokens::issue(&app.keys.current(), &claims).map_err(ApiError::Internal)?;
    let mut response = json(
        status,
        &TokenBody {
            token_type: "Bearer",
            expires_in: app.config.access_ttl.as_secs() as i64,
            refresh_token: refresh_token.expose(),
            refresh_expires_in: owner.expires_at.since(now).as_secs() as i64,
            user: UserBody {
                id: &owner.user_id,
                username: &owner.username,
                roles: &owner.roles,
            },
            access_token: &access_token,
        },
    );
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.append(SET_COOKIE, app.cookies.set_access(&access_token));
    headers.append(SET_COOKIE, app.cookies.set_refresh(refresh_token.expose()));
    Ok(response)
}

/// The refresh token a request presents: the body's, else the refresh
/// cookie's. The cookie is a credential the browser sends by itself, so
/// using it needs a trusted `Origin`, whatever else the request carries.
fn presented_refresh_token(
    app: &App,
    ctx: &RequestContext,
    parts: &Parts,
    body: RefreshBody,
) -> Result<Option<String>, ApiError> {
    match body.refresh_token {
        Some(token) if token.is_empty() => {
            Err(invalid("refresh_token", "must not be empty".to_string()))
        }
        Some(token) => Ok(Some(token)),
        None => match find_cookie(&parts.headers, REFRESH_COOKIE) {
            Some(token) if !token.is_empty() => {
                app.browser
                    .check_cookie_origin(&ctx.facts(&parts.uri, &parts.headers))?;
                Ok(Some(token.to_string()))
            }
            _ => Ok(None),
        },
    }
}

pub async fn refresh(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let body: RefreshBody = parse_optional_json(&read_body(body).await?)?;
    let presented =
        presented_refresh_token(app, ctx, &parts, body)?.ok_or(ApiError::Unauthorized)?;
    if !refresh::is_plausible(&presented) {
        return Err(ApiError::InvalidRefreshToken);
    }
    let (successor, successor_hash) = new_refresh_token();
    let successor_sealed = refresh::seal_successor(&presented, &successor)
        .map_err(|error| ApiError::Internal(error.into()))?;
    let rotation = app
        .store
        .rotate_refresh_token(Presented {
            hash: &hash_refresh_token(&presented),
            successor_hash: &successor_hash,
            successor_sealed: &successor_sealed,
            reuse_grace: app.config.refresh_reuse_grace,
            idle_timeout: app.config.session_idle_timeout,
        })
        .await?;
    let now = UnixMillis::now();
    match rotation {
        Rotation::Rotated(owner) => {
            app.metrics.refresh("rotated");
            token_response(app, &owner, &successor, StatusCode::OK, now)
        }
        Rotation::Replayed {
            owner,
            successor_sealed,
        } => {
            app.metrics.refresh("replayed");
            let successor = refresh::open_successor(&presented, &successor_sealed)
                .map_err(|error| ApiError::Internal(error.into()))?;
            token_response(app, &owner, &successor, StatusCode::OK, now)
        }
        Rotation::Reused { session_id } => {
            app.metrics.refresh("reused");
            app.metrics.refresh_reuse.inc();
            refuse_revoked(app, std::slice::from_ref(&session_id));
            tracing::warn!(session_id = %session_id, reason = "refresh_token_reused", "refresh token reused after the grace; session revoked");
            // Whoever presented it is nobody we know: the row names whose
            // session it was.
            let owner = app.store.session_user(&session_id).await.ok().flatten();
            let event = Event::new(AuditAction::RefreshReuse)
                .outcome(AuditOutcome::Failed)
                .on_maybe(owner.as_ref());
            app.audit.record(&audit_origin(ctx), event).await;
            Err(ApiError::RefreshTokenReused)
        }
        Rotation::Idle => {
            app.metrics.refresh("idle");
            Err(ApiError::SessionIdle)
        }
        Rotation::Invalid => {
            app.metrics.refresh("invalid");
            Err(ApiError::InvalidRefreshToken)
        }
    }
}

pub async fn logout(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let body: RefreshBody = parse_optional_json(&read_body(body).await?)?;

    // A refresh token named in the body says which session to end; otherwise
    // the access token's session, else the refresh cookie's.
    let (session, user) = if body.refresh_token.is_some() {
        let token = presented_refresh_token(app, ctx, &parts, body)?;
        (session_of_refresh_token(app, token.as_deref()).await?, None)
    } else {
        match app
            .authenticator
            .authenticate(&parts.headers, UnixSeconds::now())
            .await
        {
            Ok(identity) => {
                if identity.source == CredentialSource::Cookie {
                    app.browser
                        .check_cookie_origin(&ctx.facts(&parts.uri, &parts.headers))?;
                }
                note_user(&identity);
                (
                    identity.claims.sid.clone(),
                    Some(identity.claims.sub.clone()),
                )
            }
            // A malformed `Authorization` is the client's mistake to hear
            // about, not a reason to fall back on a cookie.
            Err(rejection @ Rejection::MalformedAuthorization) => return Err(rejection.into()),
            Err(rejection) => match presented_refresh_token(app, ctx, &parts, body)? {
                Some(token) => (session_of_refresh_token(app, Some(&token)).await?, None),
                None => return Err(rejection.into()),
            },
        }
    };
    revoke_session(app, &session).await?;
    tracing::info!(session_id = %session, "logged out");
    // A refresh token names its session; the session names its user.
    let user = match user {
        Some(user) => Some(user),
        None => app.store.session_user(&session).await.ok().flatten(),
    };
    let event = Event::new(AuditAction::Logout)
        .by_maybe(user.as_ref())
        .on_maybe(user.as_ref());
    app.audit.record(&audit_origin(ctx), event).await;
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
pub(super) fn refuse_revoked(app: &App, sessions: &[SessionId]) {
    app.metrics.revoked(sessions.len());
    app.revocations.insert_all(sessions);
}

async fn session_of_refresh_token(app: &App, token: Option<&str>) -> Result<SessionId, ApiError> {
    let token = token.ok_or(ApiError::Unauthorized)?;
    if !refresh::is_plausible(token) {
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

pub async fn logout_all(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = authenticate(app, ctx, &parts).await?;
    let user = &identity.claims.sub;
    let revoked = app.store.revoke_user_sessions(user, None).await?;
    refuse_revoked(app, &revoked);
    // The current session too, even if the database had already revoked it.
    app.revocations.insert(&identity.claims.sid);
    tracing::info!(sessions = revoked.len(), "logged out everywhere");
    let event = Event::new(AuditAction::LogoutAll).by(user).on(user);
    app.audit.record(&audit_origin(ctx), event).await;
    Ok(cleared_cookies(app))
}

pub async fn me(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = authenticate(app, ctx, &parts).await?;
    let claims = &identity.claims;
    // The email is not a claim (upstreams need not see it): it is read here.
    let user = app
        .store
        .user_by_id(&claims.sub)
        .await?
        .ok_or(ApiError::InvalidToken(RejectReason::Revoked))?;
    Ok(json(
        StatusCode::OK,
        &MeBody {
            id: &claims.sub,
            username: &claims.preferred_username,
            roles: &claims.roles,
            session_id: &claims.sid,
            email: user.email.as_ref(),
        },
    ))
}

pub async fn sessions(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = authenticate(app, ctx, &parts).await?;
    let sessions = app
        .store
        .active_sessions(&identity.claims.sub, UnixMillis::now())
        .await?;
    let body: Vec<SessionBody> = sessions
        .into_iter()
        .filter(|session| !app.revocations.is_revoked(&session.id))
        .map(|session| SessionBody {
            current: session.id == identity.claims.sid,
            id: session.id,
            created_at: session.created_at.rfc3339(),
            last_used_at: session.last_used_at.rfc3339(),
            user_agent: session.user_agent,
            ip: session.ip,
        })
        .collect();
    Ok(json(StatusCode::OK, &body))
}

pub async fn delete_session(
    app: &App,
    ctx: &RequestContext,
    request: Request,
    session: String,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = authenticate(app, ctx, &parts).await?;
    // Not a session id at all: certainly not one of the caller's.
    let session = SessionId::parse(&session).map_err(|_| ApiError::NotFound)?;
    match app.store.session_user(&session).await? {
        Some(owner) if owner == identity.claims.sub => {
            revoke_session(app, &session).await?;
            tracing::info!(session_id = %session, "session revoked by its owner");
            let user = &identity.claims.sub;
            let event = Event::new(AuditAction::SessionRevoked).by(user).on(user);
            app.audit.record(&audit_origin(ctx), event).await;
            Ok(no_content(StatusCode::NO_CONTENT))
        }
        _ => Err(ApiError::NotFound),
    }
}

pub async fn change_password(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    let identity: Identity = authenticate(app, ctx, &parts).await?;
    let body: PasswordChangeBody = parse_json(&read_body(body).await?)?;
    let current =
        Password::parse(body.current_password).map_err(|e| invalid("current_password", e))?;
    let new = Password::parse(body.new_password).map_err(|e| invalid("new_password", e))?;

    let user = app
        .store
        .user_by_id(&identity.claims.sub)
        .await?
        .ok_or(ApiError::InvalidToken(RejectReason::Revoked))?;
    let origin = audit_origin(ctx);
    let event = Event::new(AuditAction::PasswordChanged)
        .by(&user.id)
        .on(&user.id);
    // Guessing the current password with a stolen token is throttled like
    // guessing it at login.
    let attempt = match app
        .throttle
        .begin(&format!("password-change:{}", user.id), ctx.client.address)
        .await
    {
        Ok(attempt) => attempt,
        Err(error) => return Err(throttled(app, &origin, event, error).await),
    };
    if app
        .passwords
        .verify(&current, Some(user.password_hash.expose()))
        .await?
        == Verification::Invalid
    {
        attempt.failed();
        app.audit
            .record(&origin, event.outcome(AuditOutcome::Failed))
            .await;
        return Err(ApiError::InvalidCredentials);
    }
    attempt.succeeded().await?;
    let new_hash = app.passwords.hash(&new).await?;
    let revoked = app
        .store
        .change_password(&user.id, &new_hash, Some(&identity.claims.sid))
        .await?;
    refuse_revoked(app, &revoked);
    tracing::info!(revoked_sessions = revoked.len(), "password changed");
    app.audit.record(&origin, event).await;
    Ok(no_content(StatusCode::NO_CONTENT))
}
