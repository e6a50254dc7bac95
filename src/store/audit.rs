//! The audit trail's rows: who did what to whom, from where. Written by
//! `audit`, read by the admin API and `tollgate audit`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::{Store, StoreResult};
use crate::domain::UserId;
use crate::time::UnixMillis;

/// What happened: the contract's list of audited events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Register,
    Login,
    RefreshReuse,
    Logout,
    LogoutAll,
    SessionRevoked,
    PasswordChanged,
    PasswordResetRequested,
    PasswordResetCompleted,
    UserAdded,
    UserDisabled,
    UserEnabled,
    /// Defined by the contract; nothing changes roles yet, so nothing
    /// records it.
    RoleChanged,
    KeyGenerated,
    KeyRotated,
    KeyPruned,
}

impl AuditAction {
    pub const ALL: [AuditAction; 16] = [
        AuditAction::Register,
        AuditAction::Login,
        AuditAction::RefreshReuse,
        AuditAction::Logout,
        AuditAction::LogoutAll,
        AuditAction::SessionRevoked,
        AuditAction::PasswordChanged,
        AuditAction::PasswordResetRequested,
        AuditAction::PasswordResetCompleted,
        AuditAction::UserAdded,
        AuditAction::UserDisabled,
        AuditAction::UserEnabled,
        AuditAction::RoleChanged,
        AuditAction::KeyGenerated,
        AuditAction::KeyRotated,
        AuditAction::KeyPruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Register => "register",
            AuditAction::Login => "login",
            AuditAction::RefreshReuse => "refresh_reuse",
            AuditAction::Logout => "logout",
            AuditAction::LogoutAll => "logout_all",
            AuditAction::SessionRevoked => "session_revoked",
            AuditAction::PasswordChanged => "password_changed",
            AuditAction::PasswordResetRequested => "password_reset_requested",
            AuditAction::PasswordResetCompleted => "password_reset_completed",
            AuditAction::UserAdded => "user_added",
            AuditAction::UserDisabled => "user_disabled",
            AuditAction::UserEnabled => "user_enabled",
            AuditAction::RoleChanged => "role_changed",
            AuditAction::KeyGenerated => "key_generated",
            AuditAction::KeyRotated => "key_rotated",
            AuditAction::KeyPruned => "key_pruned",
        }
    }
}

impl FromStr for AuditAction {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        AuditAction::ALL
            .into_iter()
            .find(|action| action.as_str() == raw)
            .ok_or_else(|| format!("unknown audit action `{raw}`"))
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Ok,
    Failed,
    Throttled,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Failed => "failed",
            AuditOutcome::Throttled => "throttled",
        }
    }
}

impl FromStr for AuditOutcome {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "ok" => Ok(AuditOutcome::Ok),
            "failed" => Ok(AuditOutcome::Failed),
            "throttled" => Ok(AuditOutcome::Throttled),
            _ => Err(format!("unknown audit outcome `{raw}`")),
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who acted: a user, or an operator at the command line. An anonymous
/// caller (a failed login, a reset request) is no actor at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditActor {
    User(UserId),
    Cli,
}

impl AuditActor {
    pub const CLI: &str = "cli";

    fn stored(&self) -> &str {
        match self {
            AuditActor::User(id) => id.as_str(),
            AuditActor::Cli => Self::CLI,
        }
    }
}

/// One row to write. `target` is the user the event is about (their id) or,
/// for key events, the key id; `ip` and `request_id` are set for events that
/// came in as a request.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    pub time: UnixMillis,
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub actor: Option<AuditActor>,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

/// One row as read back. `actor` is a user id, `cli`, or absent.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AuditEntry {
    /// Orders the rows: the newest has the highest.
    pub id: i64,
    #[sqlx(rename = "at")]
    pub time: UnixMillis,
    /// As stored: an [`AuditAction`] (kept as text, so that a row written by
    /// a newer version still reads).
    pub action: String,
    /// As stored: an [`AuditOutcome`].
    pub outcome: String,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
}

/// One page of [`Store::audit_entries`], newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery<'a> {
    /// Only rows whose actor or target is this user.
    pub user: Option<&'a UserId>,
    /// Only rows at or after this.
    pub since: Option<UnixMillis>,
    /// Only rows older than the row with this id (the cursor).
    pub before_id: Option<i64>,
    pub limit: u32,
}

impl Store {
    pub async fn record_audit(&self, record: &AuditRecord) -> StoreResult<()> {
        self.bounded(async {
            sqlx::query(
                "INSERT INTO audit_events (at, action, outcome, actor, target, ip, request_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(record.time)
            .bind(record.action.as_str())
            .bind(record.outcome.as_str())
            .bind(record.actor.as_ref().map(AuditActor::stored))
            .bind(record.target.as_deref())
            .bind(record.ip.as_deref())
            .bind(record.request_id.as_deref())
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    pub async fn audit_entries(&self, query: AuditQuery<'_>) -> StoreResult<Vec<AuditEntry>> {
        self.bounded(async {
            Ok(sqlx::query_as(
                "SELECT id, at, action, outcome, actor, target, ip, request_id FROM audit_events \
                 WHERE ($1 IS NULL OR actor = $1 OR target = $1) \
                 AND ($2 IS NULL OR at >= $2) \
                 AND ($3 IS NULL OR id < $3) \
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(query.user)
            .bind(query.since)
            .bind(query.before_id)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Deletes the rows older than `before`; how many went.
    pub async fn delete_audit_before(&self, before: UnixMillis) -> StoreResult<u64> {
        self.bounded(async {
            let result = sqlx::query("DELETE FROM audit_events WHERE at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(result.rows_affected())
        })
        .await
    }
}
