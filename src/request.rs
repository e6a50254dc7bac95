//! What a request carries through the gateway, shared by the pipeline and
//! the routes it calls: the listener it came in on, its context (client,
//! request id), and the steps every route may take (authenticate, note the
//! user in the span, answer a failure). It imports neither the pipeline nor
//! the routes, so that they do not import each other.

use http::request::Parts;
use http::{HeaderMap, Method, Response, Uri};
use tracing::field;

use crate::app::App;
use crate::auth::{CredentialSource, Identity};
use crate::body::Body;
use crate::browser::RequestFacts;
use crate::client_addr::ClientInfo;
use crate::domain::UserId;
use crate::error::ApiError;
use crate::time::UnixSeconds;

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `--listen`: the API and the proxied routes.
    Public,
    /// `--admin-listen`: `/metrics` and `/health…` only.
    Admin,
}

/// What every stage knows about the request beyond the request itself.
#[derive(Clone)]
pub struct RequestContext {
    pub client: ClientInfo,
    pub listener: Listener,
    /// The request's `X-Request-Id` (the client's, or one made at the edge):
    /// a field of the span, and of the audit rows the request writes.
    pub request_id: String,
}

impl RequestContext {
    /// The facts the browser rules read.
    pub fn facts<'a>(&'a self, uri: &'a Uri, headers: &'a HeaderMap) -> RequestFacts<'a> {
        RequestFacts {
            uri,
            headers,
            client: &self.client,
        }
    }
}

/// The contract's answer to a failure; a refused credential or caller is
/// logged and counted.
pub fn error_response(app: &App, error: ApiError) -> Response<Body> {
    if let Some(reason) = error.auth_failure_reason() {
        tracing::info!(reason, status = error.status().as_u16(), "auth failure");
        app.metrics.auth_failure(reason);
    }
    error.into_response()
}

/// The identity of a request to one of the gateway's own routes that needs
/// an access token. A cookie credential must pass the `Origin` rule when the
/// request changes state.
pub async fn authenticate(
    app: &App,
    ctx: &RequestContext,
    parts: &Parts,
) -> Result<Identity, ApiError> {
    let identity = app
        .authenticator
        .authenticate(&parts.headers, UnixSeconds::now())
        .await?;
    if identity.source == CredentialSource::Cookie && changes_state(&parts.method) {
        app.browser
            .check_cookie_origin(&ctx.facts(&parts.uri, &parts.headers))?;
    }
    note_user(&identity);
    Ok(identity)
}

/// Records the user in the request's span, for every line after this.
pub fn note_user(identity: &Identity) {
    note_user_id(&identity.claims.sub);
}

/// Records the user in the request's span, for every line after this. Once
/// per request: a text log line would show a second record twice.
pub fn note_user_id(user: &UserId) {
    tracing::Span::current().record("user_id", field::display(user));
}

pub fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}
