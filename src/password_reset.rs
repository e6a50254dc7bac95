//! Password reset by mail, behind `POST /api/auth/password-reset`.
//!
//! A request is answered before anything about the account is looked up: a
//! queue hands it to one worker, which finds the account, records a new
//! token (voiding the older ones) and queues the mail. So the answer, and
//! the time it takes, are the same whether or not the account exists, and
//! the requests one instance receives are handled in the order they came in:
//! the newest request's token is the one that works.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::audit::{AuditTrail, Event, Origin};
use crate::auth::reset::{RESET_TOKEN_LIFETIME, new_reset_token};
use crate::config::PublicUrl;
use crate::domain::{Email, Username};
use crate::mail::{Mail, Mailer};
use crate::store::{AuditAction, NewReset, Store, StoreResult, User};
use crate::time::UnixMillis;

/// Requests waiting for the worker; beyond this they are dropped (and
/// logged), the answer staying the same.
const QUEUE_CAPACITY: usize = 1024;

/// The account a reset is asked for.
#[derive(Clone, Debug)]
pub enum Account {
    Username(Username),
    Email(Email),
}

impl Account {
    /// What the throttle counts requests against: the account as named,
    /// without regard to case.
    pub fn key(&self) -> String {
        match self {
            Account::Username(username) => format!("username:{}", username.key()),
            Account::Email(email) => format!("email:{}", email.key()),
        }
    }
}

pub struct ResetRequest {
    pub account: Account,
    pub origin: Origin,
}

/// The queue in front of the worker; cheap to share.
pub struct PasswordResets {
    queue: mpsc::Sender<(ResetRequest, tracing::Span)>,
}

/// What the worker needs to act on a request.
struct Worker {
    store: Store,
    mailer: Arc<Mailer>,
    audit: AuditTrail,
    public_url: PublicUrl,
}

impl PasswordResets {
    /// Starts the worker, which stops when this is dropped.
    pub fn start(
        store: Store,
        mailer: Arc<Mailer>,
        audit: AuditTrail,
        public_url: PublicUrl,
    ) -> PasswordResets {
        let (queue, mut requests) = mpsc::channel::<(ResetRequest, tracing::Span)>(QUEUE_CAPACITY);
        let worker = Worker {
            store,
            mailer,
            audit,
            public_url,
        };
        tokio::spawn(async move {
            while let Some((request, span)) = requests.recv().await {
                worker.handle(request).instrument(span).await;
            }
        });
        PasswordResets { queue }
    }

    /// Hands a request to the worker, inside the caller's span (so that its
    /// log lines carry the request id), and returns at once.
    pub fn submit(&self, request: ResetRequest) {
        if self
            .queue
            .try_send((request, tracing::Span::current()))
            .is_err()
        {
            tracing::warn!(
                queued = QUEUE_CAPACITY,
                "password-reset request dropped: the queue is full"
            );
        }
    }
}

impl Worker {
    async fn handle(&self, request: ResetRequest) {
        let user = match self.find(&request.account).await {
            Ok(user) => user,
            Err(error) => {
                tracing::warn!(%error, "cannot look up the account of a password-reset request");
                return;
            }
        };
        let event = Event::new(AuditAction::PasswordResetRequested);
        let Some(user) = user.filter(|user| !user.is_disabled()) else {
            tracing::info!("password reset asked for no (enabled) account: nothing sent");
            self.audit.record(&request.origin, event).await;
            return;
        };
        self.audit.record(&request.origin, event.on(&user.id)).await;
        let Some(email) = user.email.clone() else {
            tracing::info!(user_id = %user.id, "password reset asked for an account without an email: nothing sent");
            return;
        };
        let (token, token_hash) = new_reset_token();
        let now = UnixMillis::now();
        let expires_at = now.plus(RESET_TOKEN_LIFETIME);
        let recorded = self
            .store
            .create_password_reset(NewReset {
                user_id: &user.id,
                token_hash: &token_hash,
                created_at: now,
                expires_at,
            })
            .await;
        if let Err(error) = recorded {
            tracing::warn!(user_id = %user.id, %error, "cannot record a password-reset token");
            return;
        }
        self.mailer.send_later(Mail::password_reset(
            email,
            user.username.as_str(),
            &self.public_url,
            &token,
            expires_at,
            RESET_TOKEN_LIFETIME,
        ));
        tracing::info!(user_id = %user.id, "password-reset mail queued");
    }

    async fn find(&self, account: &Account) -> StoreResult<Option<User>> {
        match account {
            Account::Username(username) => self.store.user_by_username(username).await,
            Account::Email(email) => self.store.user_by_email(email).await,
        }
    }
}
