//! `/api/admin/…`: user administration and the audit trail, for callers
//! whose access token carries the role `admin` (403 `insufficient_role`
//! otherwise). A cookie credential follows the `Origin` rule on POST and
//! DELETE, as everywhere. Every change is audited with the admin as its
//! actor; reading is not.
//!
//! Lists answer `{"items": [...], "next_cursor": "…" | null}`, a page of
//! `?limit=` items (default 50, at most 500) after the opaque `?cursor=` of
//! the page before.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::request::Parts;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{Request, audit_origin, parse_json, read_body};
use crate::app::App;
use crate::audit::{AuditView, Event};
use crate::auth::Identity;
use crate::body::{Body, json, no_content};
use crate::config::parse_duration;
use crate::domain::{Email, Role, Roles, SessionId, UserId, Username};
use crate::error::ApiError;
use crate::mail::Mail;
use crate::request::{RequestContext, authenticate};
use crate::store::{AuditAction, AuditQuery, User, UserQuery};
use crate::time::UnixMillis;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
/// The longest search text: an email address can be no longer.
const MAX_SEARCH: usize = 254;
const ADMIN: &str = "admin";

#[derive(Serialize)]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct UserItem {
    id: UserId,
    username: Username,
    email: Option<Email>,
    roles: Roles,
    disabled: bool,
    created_at: String,
    last_login_at: Option<String>,
}

impl From<User> for UserItem {
    fn from(user: User) -> UserItem {
        UserItem {
            disabled: user.is_disabled(),
            id: user.id,
            username: user.username,
            email: user.email,
            roles: user.roles,
            created_at: user.created_at.rfc3339(),
            last_login_at: user.last_login_at.map(UnixMillis::rfc3339),
        }
    }
}

#[derive(Serialize)]
struct SessionItem {
    id: SessionId,
    created_at: String,
    last_used_at: String,
    expires_at: String,
    user_agent: Option<String>,
    ip: Option<String>,
}

/// The identity of a caller who holds the role `admin`.
async fn admin(app: &App, ctx: &RequestContext, parts: &Parts) -> Result<Identity, ApiError> {
    let identity = authenticate(app, ctx, parts).await?;
    let admin = Role::parse(ADMIN).expect("`admin` is a valid role name");
    if !identity.claims.roles.contains(&admin) {
        return Err(ApiError::InsufficientRole);
    }
    Ok(identity)
}

/// The query parameters a route takes, each at most once; any other is a
/// mistake worth hearing about.
struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    fn parse(parts: &Parts, allowed: &[&str]) -> Result<Query, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let mut params: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(ApiError::InvalidRequest(format!(
                    "unexpected query parameter `{name}` (this route takes {})",
                    allowed.join(", ")
                )));
            }
            if params.iter().any(|(seen, _)| *seen == name) {
                return Err(ApiError::InvalidRequest(format!(
                    "{name}: given more than once"
                )));
            }
            if value.is_empty() {
                return Err(ApiError::InvalidRequest(format!(
                    "{name}: must not be empty"
                )));
            }
            params.push((name.into_owned(), value.into_owned()));
        }
        Ok(Query { params })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(param, _)| param == name)
            .map(|(_, value)| value.as_str())
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(raw) => raw
                .parse::<u32>()
                .ok()
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "limit: must be a whole number from 1 to {MAX_LIMIT}"
                    ))
                }),
        }
    }

    /// The position a cursor of list `kind` stands for.
    fn cursor(&self, kind: &str) -> Result<Option<String>, ApiError> {
        self.get("cursor")
            .map(|raw| {
                URL_SAFE_NO_PAD
                    .decode(raw)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .and_then(|text| {
                        text.strip_prefix(kind)
                            .and_then(|rest| rest.strip_prefix(':'))
                            .map(str::to_string)
                    })
                    .ok_or_else(invalid_cursor)
            })
            .transpose()
    }
}

fn invalid_cursor() -> ApiError {
    ApiError::InvalidRequest("cursor: not a cursor of this list".into())
}

/// An opaque cursor: which list, and where in it.
fn cursor(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

/// A page of `limit` items out of the `limit + 1` asked for, and the cursor
/// of the next page when there is one.
fn page<T, I>(
    mut rows: Vec<T>,
    limit: u32,
    kind: &str,
    position: impl Fn(&T) -> String,
    item: impl Fn(T) -> I,
) -> Page<I> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|last| cursor(kind, &position(last)));
    Page {
        items: rows.into_iter().map(item).collect(),
        next_cursor,
    }
}

/// The user a path names; 404 for an id that is no user's.
async fn user_of_path(app: &App, id: &str) -> Result<User, ApiError> {
    let id = UserId::parse(id).map_err(|_| ApiError::UserNotFound)?;
    app.store
        .user_by_id(&id)
        .await?
        .ok_or(ApiError::UserNotFound)
}

/// `GET /api/admin/users[?q=…]`: in username order; `q` finds users whose
/// username or email contains it, in any case.
pub async fn users(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    admin(app, ctx, &parts).await?;
    let query = Query::parse(&parts, &["q", "limit", "cursor"])?;
    let limit = query.limit()?;
    let after = query.cursor("users")?;
    let search = query.get("q");
    if search.is_some_and(|q| q.len() > MAX_SEARCH) {
        return Err(ApiError::InvalidRequest(format!(
            "q: at most {MAX_SEARCH} bytes"
        )));
    }
    let users = app
        .store
        .search_users(UserQuery {
            contains: search,
            after: after.as_deref(),
            limit: limit + 1,
        })
        .await?;
    let page = page(
        users,
        limit,
        "users",
        |user| user.username.key(),
        UserItem::from,
    );
    Ok(json(StatusCode::OK, &page))
}

/// `POST /api/admin/users/{id}/disable` and `…/enable`. Disabling revokes
/// every session of the user: here at once, elsewhere within the
/// revocation bound. Answers the user as it now is.
pub async fn set_disabled(
    app: &App,
    ctx: &RequestContext,
    request: Request,
    id: String,
    disabled: bool,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = admin(app, ctx, &parts).await?;
    let user = user_of_path(app, &id).await?;
    let revoked = app
        .store
        .set_disabled(&user.id, disabled, UnixMillis::now())
        .await?;
    super::auth::refuse_revoked(app, &revoked);
    let action = if disabled {
        AuditAction::UserDisabled
    } else {
        AuditAction::UserEnabled
    };
    tracing::info!(
        target_user = %user.id,
        action = action.as_str(),
        revoked_sessions = revoked.len(),
        "user changed by an admin"
    );
    let event = Event::new(action).by(&identity.claims.sub).on(&user.id);
    app.audit.record(&audit_origin(ctx), event).await;
    let user = app
        .store
        .user_by_id(&user.id)
        .await?
        .ok_or(ApiError::UserNotFound)?;
    Ok(json(StatusCode::OK, &UserItem::from(user)))
}

/// `GET /api/admin/users/{id}/sessions`: the user's live sessions, newest
/// first; `DELETE`: revokes them all (204).
pub async fn sessions(
    app: &App,
    ctx: &RequestContext,
    request: Request,
    id: String,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    let identity = admin(app, ctx, &parts).await?;
    let user = user_of_path(app, &id).await?;
    if parts.method == http::Method::DELETE {
        let revoked = app.store.revoke_user_sessions(&user.id, None).await?;
        super::auth::refuse_revoked(app, &revoked);
        tracing::info!(target_user = %user.id, revoked_sessions = revoked.len(), "sessions revoked by an admin");
        let event = Event::new(AuditAction::SessionRevoked)
            .by(&identity.claims.sub)
            .on(&user.id);
        app.audit.record(&audit_origin(ctx), event).await;
        return Ok(no_content(StatusCode::NO_CONTENT));
    }
    let query = Query::parse(&parts, &["limit", "cursor"])?;
    let limit = query.limit()?;
    let after = query
        .cursor("sessions")?
        .map(|position| parse_session_position(&position))
        .transpose()?;
    // A user's live sessions are few (one per login within the refresh
    // lifetime): paged here rather than in the database.
    let mut sessions: Vec<_> = app
        .store
        .active_sessions(&user.id, UnixMillis::now())
        .await?
        .into_iter()
        .filter(|session| !app.revocations.is_revoked(&session.id))
        .collect();
    // Newest first, the id breaking ties: a total order for the cursor.
    sessions.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
    if let Some((created_at, id)) = &after {
        sessions.retain(|session| {
            (session.created_at, session.id.as_str()) < (*created_at, id.as_str())
        });
    }
    sessions.truncate(limit as usize + 1);
    let page = page(
        sessions,
        limit,
        "sessions",
        |session| format!("{}:{}", session.created_at.get(), session.id),
        |session| SessionItem {
            id: session.id,
            created_at: session.created_at.rfc3339(),
            last_used_at: session.last_used_at.rfc3339(),
            expires_at: session.expires_at.rfc3339(),
            user_agent: session.user_agent,
            ip: session.ip,
        },
    );
    Ok(json(StatusCode::OK, &page))
}

fn parse_session_position(position: &str) -> Result<(UnixMillis, String), ApiError> {
    let (created_at, id) = position.split_once(':').ok_or_else(invalid_cursor)?;
    let created_at = created_at.parse::<i64>().map_err(|_| invalid_cursor())?;
    let id = SessionId::parse(id).map_err(|_| invalid_cursor())?;
    Ok((UnixMillis::new(created_at), id.as_str().to_string()))
}

/// `GET /api/admin/audit[?user=…&since=…]`: newest first. `user` is a user
/// id or a username (rows whose actor or target is that user); `since` a
/// duration back from now (`1h`, `7d`) or an RFC 3339 time.
pub async fn audit(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    admin(app, ctx, &parts).await?;
    let query = Query::parse(&parts, &["user", "since", "limit", "cursor"])?;
    let limit = query.limit()?;
    let before_id = query
        .cursor("audit")?
        .map(|position| {
            position
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(invalid_cursor)
        })
        .transpose()?;
    let since = query.get("since").map(parse_since).transpose()?;
    let user = match query.get("user") {
        None => None,
        Some(raw) => Some(audited_user(app, raw).await?),
    };
    let entries = app
        .store
        .audit_entries(AuditQuery {
            user: user.as_ref(),
            since,
            before_id,
            limit: limit + 1,
        })
        .await?;
    let page = page(
        entries,
        limit,
        "audit",
        |entry| entry.id.to_string(),
        AuditView::from,
    );
    Ok(json(StatusCode::OK, &page))
}

/// A user id as it is (the trail outlives nothing, but an id needs no
/// lookup), or the id of the user with that name.
async fn audited_user(app: &App, raw: &str) -> Result<UserId, ApiError> {
    if let Ok(id) = UserId::parse(raw) {
        return Ok(id);
    }
    let username = Username::parse(raw)
        .map_err(|_| ApiError::InvalidRequest("user: a user id or a username".into()))?;
    Ok(app
        .store
        .user_by_username(&username)
        .await?
        .ok_or(ApiError::UserNotFound)?
        .id)
}

fn parse_since(raw: &str) -> Result<UnixMillis, ApiError> {
    if let Ok(ago) = parse_duration(raw) {
        return Ok(UnixMillis::now().minus(ago.min(Duration::from_secs(100 * 365 * 86_400))));
    }
    humantime::parse_rfc3339(raw)
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| UnixMillis::new(since.as_millis() as i64))
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "since: a duration back from now (30m, 1h, 7d) or an RFC 3339 time".into(),
            )
        })
}

#[derive(Deserialize)]
struct TestMailBody {
    to: String,
}

/// `POST /api/admin/mail/test {to}`: one test mail, sent now through the
/// gateway's mail setup (`tollgate probe --check-mail`); 204 once the mail
/// server or webhook took it, 502 with its reason when not, 404 without
/// mail set up.
pub async fn test_mail(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = request.into_parts();
    admin(app, ctx, &parts).await?;
    let (Some(mailer), Some(public_url)) = (&app.mailer, &app.config.public_url) else {
        return Err(ApiError::NotFound);
    };
    let body: TestMailBody = parse_json(&read_body(body).await?)?;
    let to = Email::parse(&body.to).map_err(|e| ApiError::InvalidRequest(format!("to: {e}")))?;
    mailer
        .send_now(&Mail::test(to, public_url))
        .await
        .map_err(|error| ApiError::MailFailed(error.to_string()))?;
    tracing::info!("test mail sent");
    Ok(no_content(StatusCode::NO_CONTENT))
}
