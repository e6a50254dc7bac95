//! Sessions and their refresh tokens. A session is one login; each refresh
//! spends the presented token and records its one successor in the same
//! session, so the lineage of every token is known and one logout ends every
//! branch.

use std::time::Duration;

use sqlx::AnyConnection;
use tracing::instrument;

use super::{Store, StoreResult, WriteTx};
use crate::domain::{Roles, SessionId, UserId, Username};
use crate::time::UnixMillis;

pub struct NewSession<'a> {
    pub user_id: &'a UserId,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub now: UnixMillis,
    pub expires_at: UnixMillis,
    /// Hash of the session's first refresh token.
    pub refresh_hash: &'a str,
}

/// A live session as its owner sees it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionInfo {
    pub id: SessionId,
    pub created_at: UnixMillis,
    pub last_used_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Who a session belongs to, as needed to issue its tokens.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SessionOwner {
    #[sqlx(rename = "id")]
    pub session_id: SessionId,
    pub user_id: UserId,
    pub username: Username,
    #[sqlx(try_from = "String")]
    pub roles: Roles,
    pub expires_at: UnixMillis,
}

/// What became of a session, for connections that outlive requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionFate {
    Revoked,
    /// Expired, or gone.
    Ended,
    /// Live until then, unless refreshed (which moves an idle deadline).
    EndsAt(UnixMillis),
}

/// A refresh token presented for rotation, as the store sees it.
pub struct Presented<'a> {
    /// The stored form of the presented token.
    pub hash: &'a str,
    /// Its successor the first time it is spent: the hash to store, and the
    /// token sealed so that only a holder of the presented token can read it
    /// back (see `auth::refresh`).
    pub successor_hash: &'a str,
    pub successor_sealed: &'a str,
    /// How long a spent token still yields its successor.
    pub reuse_grace: Duration,
    /// A session not refreshed for this long cannot be refreshed.
    pub idle_timeout: Option<Duration>,
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// The token was spent now and its successor recorded.
    Rotated(SessionOwner),
    /// The token was spent within the reuse grace: its successor (sealed as
    /// it was recorded the first time) is answered again.
    Replayed {
        owner: SessionOwner,
        successor_sealed: String,
    },
    /// The token was spent longer ago than the grace allows: the session is
    /// now revoked.
    Reused { session_id: SessionId },
    /// The session went unused for longer than the idle timeout.
    Idle,
    /// Unknown token, or its session is revoked, expired or its user disabled.
    Invalid,
}

/// One row of `refresh_tokens`, as the rotation reads it after spending it.
#[derive(sqlx::FromRow)]
struct Spent {
    session_id: SessionId,
    spent_at: UnixMillis,
    use_count: i64,
    successor_sealed: Option<String>,
}

impl Store {
    /// Records a new session and its first refresh token, and the user's
    /// last login.
    #[instrument(level = "debug", skip_all)]
    pub async fn start_session(&self, new: NewSession<'_>) -> StoreResult<SessionId> {
        self.bounded(async {
            let id = SessionId::new_random();
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6)",
            )
            .bind(&id)
            .bind(new.user_id)
            .bind(new.now)
            .bind(new.expires_at)
            .bind(new.user_agent)
            .bind(new.ip)
            .execute(&mut *tx)
            .await?;
            insert_refresh_token(&mut tx, new.refresh_hash, &id, None, new.now).await?;
            sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
                .bind(new.now)
                .bind(new.user_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    /// Spends a refresh token, in one transaction on the database's clock.
    /// The first statement locks the token's row, so concurrent
    /// presentations of one token queue up and each sees the previous one's
    /// outcome: the first records the successor, the others (within the
    /// grace) get that same successor back, and a session never has two live
    /// refresh tokens.
    #[instrument(level = "debug", skip_all)]
    pub async fn rotate_refresh_token(&self, presented: Presented<'_>) -> StoreResult<Rotation> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let rotation = self.rotate_in(&mut tx, &presented).await?;
            tx.commit().await?;
            Ok(rotation)
        })
        .await
    }

    async fn rotate_in(
        &self,
        tx: &mut WriteTx,
        presented: &Presented<'_>,
    ) -> StoreResult<Rotation> {
        let now = self.db_now(tx).await?;
        let spent: Option<Spent> = sqlx::query_as(
            "UPDATE refresh_tokens SET use_count = use_count + 1, spent_at = COALESCE(spent_at, $1) \
             WHERE token_hash = $2 RETURNING session_id, spent_at, use_count, successor_sealed",
        )
        .bind(now)
        .bind(presented.hash)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(spent) = spent else {
            return Ok(Rotation::Invalid);
        };

        if spent.use_count > 1 {
            if now.since(spent.spent_at) > presented.reuse_grace {
                self.revoke_session_in(tx, &spent.session_id).await?;
                return Ok(Rotation::Reused {
                    session_id: spent.session_id,
                });
            }
            let (Some(owner), Some(successor_sealed)) = (
                live_session_owner(tx, &spent.session_id, now).await?,
                spent.successor_sealed,
            ) else {
                return Ok(Rotation::Invalid);
            };
            return Ok(Rotation::Replayed {
                owner,
                successor_sealed,
            });
        }

        if let Some(idle_timeout) = presented.idle_timeout
            && is_idle(tx, &spent.session_id, now.minus(idle_timeout)).await?
        {
            return Ok(Rotation::Idle);
        }
        let Some(owner) = live_session_owner(tx, &spent.session_id, now).await? else {
            return Ok(Rotation::Invalid);
        };
        insert_refresh_token(
            tx,
            presented.successor_hash,
            &spent.session_id,
            Some(presented.hash),
            now,
        )
        .await?;
        sqlx::query("UPDATE refresh_tokens SET successor_sealed = $1 WHERE token_hash = $2")
            .bind(presented.successor_sealed)
            .bind(presented.hash)
            .execute(&mut **tx)
            .await?;
        sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&spent.session_id)
            .execute(&mut **tx)
            .await?;
        Ok(Rotation::Rotated(owner))
    }

    /// The session a refresh token belongs to, spent or not.
    #[instrument(level = "debug", skip_all)]
    pub async fn session_of_refresh_token(&self, hash: &str) -> StoreResult<Option<SessionId>> {
        self.bounded(async {
            Ok(
                sqlx::query_scalar("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
        .await
    }

    /// The owner of a session, if it is live (not revoked, not expired, user
    /// not disabled).
    #[instrument(level = "debug", skip_all)]
    pub async fn live_session(
        &self,
        id: &SessionId,
        now: UnixMillis,
    ) -> StoreResult<Option<SessionOwner>> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            Ok(live_session_owner(&mut conn, id, now).await?)
        })
        .await
    }

    /// What became of a session: revoked, ended, or live until a time (its
    /// refresh lifetime, or `idle_timeout` after its last refresh, unless it
    /// is used again).
    pub async fn session_fate(
        &self,
        id: &SessionId,
        idle_timeout: Option<Duration>,
    ) -> StoreResult<SessionFate> {
        self.bounded(async {
            let row: Option<(UnixMillis, UnixMillis, Option<UnixMillis>)> = sqlx::query_as(
                "SELECT expires_at, last_used_at, revoked_at FROM sessions WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(match row {
                None => SessionFate::Ended,
                Some((_, _, Some(_))) => SessionFate::Revoked,
                Some((expires_at, last_used_at, None)) => SessionFate::EndsAt(match idle_timeout {
                    Some(idle) => expires_at.min(last_used_at.plus(idle)),
                    None => expires_at,
                }),
            })
        })
        .await
    }

    /// Revokes one session; false when it was already revoked or unknown.
    #[instrument(level = "debug", skip_all)]
    pub async fn revoke_session(&self, id: &SessionId) -> StoreResult<bool> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let revoked = self.revoke_session_in(&mut tx, id).await?;
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }

    /// Revokes every live session of a user but `keep`; returns their ids.
    #[instrument(level = "debug", skip_all)]
    pub async fn revoke_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let revoked = self.revoke_user_sessions_in(&mut tx, user, keep).await?;
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }

    /// The user's sessions that are neither revoked nor expired, newest first.
    #[instrument(level = "debug", skip_all)]
    pub async fn active_sessions(
        &self,
        user: &UserId,
        now: UnixMillis,
    ) -> StoreResult<Vec<SessionInfo>> {
        self.bounded(async {
            Ok(sqlx::query_as(
                "SELECT id, created_at, last_used_at, expires_at, user_agent, ip FROM sessions \
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                 ORDER BY created_at DESC",
            )
            .bind(user)
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Which user a session belongs to, whatever its state.
    #[instrument(level = "debug", skip_all)]
    pub async fn session_user(&self, id: &SessionId) -> StoreResult<Option<UserId>> {
        self.bounded(async {
            Ok(
                sqlx::query_scalar("SELECT user_id FROM sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
        .await
    }

    /// Sessions revoked at or after `since` (database clock), with when they
    /// were revoked.
    #[instrument(level = "debug", skip_all)]
    pub async fn revoked_since(
        &self,
        since: UnixMillis,
    ) -> StoreResult<Vec<(SessionId, UnixMillis)>> {
        self.bounded(async {
            Ok(
                sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1")
                    .bind(since)
                    .fetch_all(&self.pool)
                    .await?,
            )
        })
        .await
    }

    /// Deletes sessions (and, by cascade, their refresh tokens) that can no
    /// longer matter: expired before `now`, or revoked before
    /// `revoked_before`. Returns how many went.
    #[instrument(level = "debug", skip_all)]
    pub async fn delete_finished_sessions(
        &self,
        now: UnixMillis,
        revoked_before: UnixMillis,
    ) -> StoreResult<u64> {
        self.bounded(async {
            let result =
                sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $2")
                    .bind(now)
                    .bind(revoked_before)
                    .execute(&self.pool)
                    .await?;
            Ok(result.rows_affected())
        })
        .await
    }

    pub(super) async fn revoke_session_in(
        &self,
        tx: &mut WriteTx,
        id: &SessionId,
    ) -> StoreResult<bool> {
        let now = self.db_now(tx).await?;
        let result =
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    pub(super) async fn revoke_user_sessions_in(
        &self,
        tx: &mut WriteTx,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        let now = self.db_now(tx).await?;
        Ok(sqlx::query_scalar(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3 RETURNING id",
        )
        .bind(now)
        .bind(user)
        .bind(keep.map_or("", SessionId::as_str))
        .fetch_all(&mut **tx)
        .await?)
    }
}

async fn insert_refresh_token(
    tx: &mut WriteTx,
    hash: &str,
    session: &SessionId,
    parent: Option<&str>,
    now: UnixMillis,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(session)
    .bind(parent)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether a session was last used before `cutoff`.
async fn is_idle(
    conn: &mut AnyConnection,
    id: &SessionId,
    cutoff: UnixMillis,
) -> sqlx::Result<bool> {
    let last_used: Option<UnixMillis> =
        sqlx::query_scalar("SELECT last_used_at FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(last_used.is_some_and(|last_used| last_used < cutoff))
}

async fn live_session_owner(
    conn: &mut AnyConnection,
    id: &SessionId,
    now: UnixMillis,
) -> sqlx::Result<Option<SessionOwner>> {
    sqlx::query_as(
        "SELECT s.id, s.user_id, s.expires_at, u.username, u.roles FROM sessions s \
         JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.disabled_at IS NULL",
    )
    .bind(id)
    .bind(now)
    .fetch_optional(conn)
    .await
}
