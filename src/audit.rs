//! Writing the audit trail. A write that fails never fails what it records:
//! it is logged and counted (`tollgate_audit_write_failures_total`), and the
//! answer goes out as it would have. Rows older than `--audit-retention` are
//! deleted in the background (`app`).

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::domain::UserId;
use crate::store::{AuditAction, AuditActor, AuditEntry, AuditOutcome, AuditRecord, Store};
use crate::time::UnixMillis;

/// Where an event came from: a request (its client address and request id)
/// or the command line.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

/// One event to record; built with [`Event::new`] and the methods below.
#[derive(Clone, Debug)]
pub struct Event {
    action: AuditAction,
    outcome: AuditOutcome,
    actor: Option<AuditActor>,
    target: Option<String>,
}

impl Event {
    /// An event that went through, with no actor or target yet.
    pub fn new(action: AuditAction) -> Event {
        Event {
            action,
            outcome: AuditOutcome::Ok,
            actor: None,
            target: None,
        }
    }

    pub fn outcome(mut self, outcome: AuditOutcome) -> Event {
        self.outcome = outcome;
        self
    }

    /// Done by this user.
    pub fn by(mut self, user: &UserId) -> Event {
        self.actor = Some(AuditActor::User(user.clone()));
        self
    }

    /// Done by an operator at the command line.
    pub fn by_cli(mut self) -> Event {
        self.actor = Some(AuditActor::Cli);
        self
    }

    /// About this user.
    pub fn on(mut self, user: &UserId) -> Event {
        self.target = Some(user.as_str().to_string());
        self
    }

    /// Done by this user, when known.
    pub fn by_maybe(mut self, user: Option<&UserId>) -> Event {
        self.actor = user.map(|user| AuditActor::User(user.clone()));
        self
    }

    /// About this user, when known (an unknown username is recorded as no
    /// target: what a stranger typed is not worth keeping).
    pub fn on_maybe(mut self, user: Option<&UserId>) -> Event {
        self.target = user.map(|user| user.as_str().to_string());
        self
    }

    /// About this signing key.
    pub fn on_key(mut self, kid: &str) -> Event {
        self.target = Some(kid.to_string());
        self
    }
}

/// Writes events to the store; cheap to clone.
#[derive(Clone)]
pub struct AuditTrail {
    store: Store,
    write_failures: Counter,
}

impl AuditTrail {
    pub fn new(store: Store, write_failures: Counter) -> AuditTrail {
        AuditTrail {
            store,
            write_failures,
        }
    }

    /// Records `event`, now. Never fails: a failed write is logged and
    /// counted.
    pub async fn record(&self, origin: &Origin, event: Event) {
        let record = AuditRecord {
            time: UnixMillis::now(),
            action: event.action,
            outcome: event.outcome,
            actor: event.actor,
            target: event.target,
            ip: origin.ip.clone(),
            request_id: origin.request_id.clone(),
        };
        if let Err(error) = self.store.record_audit(&record).await {
            self.write_failures.inc();
            tracing::warn!(
                action = record.action.as_str(),
                outcome = record.outcome.as_str(),
                %error,
                "cannot write the audit trail"
            );
        }
    }
}

/// One row as the admin API and `tollgate audit --json` show it: the
/// contract's `{time, action, outcome, actor, target, ip, request_id}`.
#[derive(Debug, Serialize)]
pub struct AuditView {
    /// RFC 3339, UTC, to the millisecond.
    pub time: String,
    pub action: String,
    pub outcome: String,
    /// A user id, `cli`, or null for an anonymous caller.
    pub actor: Option<String>,
    /// The user id (or, for key events, the key id) the event is about.
    pub target: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

impl From<AuditEntry> for AuditView {
    fn from(entry: AuditEntry) -> AuditView {
        AuditView {
            time: entry.time.rfc3339_millis(),
            action: entry.action,
            outcome: entry.outcome,
            actor: entry.actor,
            target: entry.target,
            ip: entry.ip,
            request_id: entry.request_id,
        }
    }
}
