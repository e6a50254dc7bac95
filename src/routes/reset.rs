//! `/api/auth/password-reset…`: a forgotten password, reset by mail. Both
//! routes answer 404 unless mail is set up (`--smtp-url` or
//! `--mail-webhook`). The work behind a request is `password_reset`'s.

use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::{Request, audit_origin, parse_json, read_body, throttled};
use crate::app::App;
use crate::audit::Event;
use crate::auth::reset::{hash_reset_token, is_plausible};
use crate::body::{Body, json, no_content};
use crate::domain::{Email, Password, Username};
use crate::error::ApiError;
use crate::password_reset::{Account, PasswordResets, ResetRequest};
use crate::request::RequestContext;
use crate::store::{AuditAction, AuditOutcome};
use crate::time::UnixMillis;

#[derive(Deserialize)]
struct RequestBody {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct ConfirmBody {
    token: String,
    new_password: String,
}

#[derive(Serialize)]
struct Accepted {
    status: &'static str,
}

/// The one answer to every well-formed request.
const SENT_IF_THE_ACCOUNT_EXISTS: Accepted = Accepted {
    status: "sent if the account exists",
};

fn resets(app: &App) -> Result<&PasswordResets, ApiError> {
    app.password_resets.as_ref().ok_or(ApiError::NotFound)
}

pub async fn request(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let resets = resets(app)?;
    let body: RequestBody = parse_json(&read_body(request.into_body()).await?)?;
    let account = match (body.username, body.email) {
        (Some(username), None) => Account::Username(
            Username::parse(&username)
                .map_err(|e| ApiError::InvalidRequest(format!("username: {e}")))?,
        ),
        (None, Some(email)) => Account::Email(
            Email::parse(&email).map_err(|e| ApiError::InvalidRequest(format!("email: {e}")))?,
        ),
        _ => {
            return Err(ApiError::InvalidRequest(
                "give either username or email".into(),
            ));
        }
    };
    let origin = audit_origin(ctx);
    // Each request may send a mail: budgets per account and address like
    // failed logins, so that nobody floods a mailbox.
    let spent = app
        .throttle
        .reset_request(&account.key(), ctx.client.address)
        .await;
    if let Err(error) = spent {
        let event = Event::new(AuditAction::PasswordResetRequested);
        return Err(throttled(app, &origin, event, error).await);
    }
    resets.submit(ResetRequest { account, origin });
    Ok(json(StatusCode::ACCEPTED, &SENT_IF_THE_ACCOUNT_EXISTS))
}

pub async fn confirm(
    app: &App,
    ctx: &RequestContext,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    resets(app)?;
    let body: ConfirmBody = parse_json(&read_body(request.into_body()).await?)?;
    if body.token.is_empty() {
        return Err(ApiError::InvalidRequest("token: must not be empty".into()));
    }
    let new_password = Password::parse(body.new_password)
        .map_err(|e| ApiError::InvalidRequest(format!("new_password: {e}")))?;
    let origin = audit_origin(ctx);
    let event = Event::new(AuditAction::PasswordResetCompleted);
    // A confirmation costs a password hash: it counts against the address's
    // attempts like a login.
    if let Err(error) = app.throttle.registration(ctx.client.address).await {
        return Err(throttled(app, &origin, event, error).await);
    }
    let token_hash = hash_reset_token(&body.token);
    let now = UnixMillis::now();
    // Checked before hashing, so that a wrong token costs no hash; checked
    // again, atomically, when it is spent.
    let user = if is_plausible(&body.token) {
        app.store.password_reset_user(&token_hash, now).await?
    } else {
        None
    };
    let completed = match user {
        Some(_) => {
            let password_hash = app.passwords.hash(&new_password).await?;
            app.store
                .complete_password_reset(&token_hash, &password_hash, now)
                .await?
        }
        None => None,
    };
    let Some(completed) = completed else {
        app.audit
            .record(&origin, event.outcome(AuditOutcome::Failed))
            .await;
        return Err(ApiError::InvalidResetToken);
    };
    super::auth::refuse_revoked(app, &completed.revoked);
    tracing::info!(
        user_id = %completed.user_id,
        revoked_sessions = completed.revoked.len(),
        "password reset"
    );
    app.audit
        .record(&origin, event.by(&completed.user_id).on(&completed.user_id))
        .await;
    Ok(no_content(StatusCode::NO_CONTENT))
}
