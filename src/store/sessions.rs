//! Sessions and their refresh tokens. A session is one login; each refresh
//! spends the presented token and records a child in the same session, so the
//! lineage of every token is known and one logout ends every branch.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::users::split_roles;
use super::{Store, StoreResult};
use crate::domain::{SessionId, UserId, Username};

pub struct NewSession<'a> {
    pub user_id: &'a UserId,
    pub user_agent: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
    /// Hash of the session's first refresh token.
    pub refresh_hash: &'a str,
}

/// A live session as its owner sees it.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub id: SessionId,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// Who a session belongs to, as needed to issue its tokens.
#[derive(Clone, Debug)]
pub struct SessionOwner {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub username: Username,
    pub roles: Vec<String>,
    pub expires_at: i64,
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// The token was spent (or re-presented within the grace) and the new
    /// token recorded in the same session.
    Rotated(SessionOwner),
    /// The token was spent longer ago than the grace allows: the session is
    /// now revoked.
    Reused { session_id: SessionId },
    /// Unknown token, or its session is revoked, expired or its user disabled.
    Invalid,
}

impl Store {
    /// Records a new session and its first refresh token.
    pub async fn start_session(&self, new: NewSession<'_>) -> StoreResult<SessionId> {
        self.bounded(async {
            let id = SessionId::new_random();
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6)",
            )
            .bind(&id.0)
            .bind(&new.user_id.0)
            .bind(new.now)
            .bind(new.expires_at)
            .bind(new.user_agent)
            .bind(new.ip)
            .execute(&mut *tx)
            .await?;
            insert_refresh_token(&mut tx, new.refresh_hash, &id, None, new.now).await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    /// Spends the refresh token hashed as `presented` and records `next` as
    /// its child, in one transaction. The first statement locks the token's
    /// row, so concurrent presentations of one token queue up and each sees
    /// the previous one's outcome: they all land in the same session.
    pub async fn rotate_refresh_token(
        &self,
        presented: &str,
        next: &str,
        now: i64,
        reuse_grace_ms: i64,
    ) -> StoreResult<Rotation> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let spent = sqlx::query(
                "UPDATE refresh_tokens SET use_count = use_count + 1, spent_at = COALESCE(spent_at, $1) \
                 WHERE token_hash = $2 RETURNING session_id, spent_at, use_count",
            )
            .bind(now)
            .bind(presented)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(spent) = spent else {
                return Ok(Rotation::Invalid);
            };
            let session_id = SessionId(spent.try_get("session_id")?);
            let spent_at: i64 = spent.try_get("spent_at")?;
            let use_count: i64 = spent.try_get("use_count")?;

            if use_count > 1 && now - spent_at > reuse_grace_ms {
                self.revoke_session_in(&mut tx, &session_id).await?;
                tx.commit().await?;
                return Ok(Rotation::Reused { session_id });
            }

            let Some(owner) = live_session_owner(&mut tx, &session_id, now).await? else {
                // Leave the token as it was: nothing about it changed.
                tx.rollback().await?;
                return Ok(Rotation::Invalid);
            };
            insert_refresh_token(&mut tx, next, &session_id, Some(presented), now).await?;
            sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&session_id.0)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Rotation::Rotated(owner))
        })
        .await
    }

    /// The session a refresh token belongs to, spent or not.
    pub async fn session_of_refresh_token(&self, hash: &str) -> StoreResult<Option<SessionId>> {
        self.bounded(async {
            let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row
                .map(|row| row.try_get("session_id").map(SessionId))
                .transpose()?)
        })
        .await
    }

    /// The owner of a session, if it is live (not revoked, not expired, user
    /// not disabled).
    pub async fn live_session(
        &self,
        id: &SessionId,
        now: i64,
    ) -> StoreResult<Option<SessionOwner>> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            Ok(live_session_owner(&mut conn, id, now).await?)
        })
        .await
    }

    /// Revokes one session; false when it was already revoked or unknown.
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
    pub async fn active_sessions(&self, user: &UserId, now: i64) -> StoreResult<Vec<SessionInfo>> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT id, created_at, last_used_at, expires_at, user_agent, ip FROM sessions \
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                 ORDER BY created_at DESC",
            )
            .bind(&user.0)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(session_info).collect::<sqlx::Result<_>>()?)
        })
        .await
    }

    /// Which user a session belongs to, whatever its state.
    pub async fn session_user(&self, id: &SessionId) -> StoreResult<Option<UserId>> {
        self.bounded(async {
            let row = sqlx::query("SELECT user_id FROM sessions WHERE id = $1")
                .bind(&id.0)
                .fetch_optional(&self.pool)
                .await?;
            Ok(row
                .map(|row| row.try_get("user_id").map(UserId))
                .transpose()?)
        })
        .await
    }

    /// Sessions revoked at or after `since` (database clock, unix ms), with
    /// when they were revoked.
    pub async fn revoked_since(&self, since: i64) -> StoreResult<Vec<(SessionId, i64)>> {
        self.bounded(async {
            let rows = sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows
                .iter()
                .map(|row| Ok((SessionId(row.try_get("id")?), row.try_get("revoked_at")?)))
                .collect::<sqlx::Result<_>>()?)
        })
        .await
    }

    /// Deletes sessions (and, by cascade, their refresh tokens) that can no
    /// longer matter: expired before `now`, or revoked before
    /// `revoked_before`. Returns how many went.
    pub async fn delete_finished_sessions(
        &self,
        now: i64,
        revoked_before: i64,
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
        tx: &mut Transaction<'static, Any>,
        id: &SessionId,
    ) -> StoreResult<bool> {
        let now = self.db_now(tx).await?;
        let result =
            sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(&id.0)
                .execute(&mut **tx)
                .await?;
        Ok(result.rows_affected() > 0)
    }

    pub(super) async fn revoke_user_sessions_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        let now = self.db_now(tx).await?;
        let rows = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE user_id = $2 AND revoked_at IS NULL AND id <> $3 RETURNING id",
        )
        .bind(now)
        .bind(&user.0)
        .bind(keep.map(|id| id.0.as_str()).unwrap_or(""))
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("id").map(SessionId))
            .collect::<sqlx::Result<_>>()?)
    }

    /// The database clock, so that revocation times from every instance
    /// share one clock.
    async fn db_now(&self, tx: &mut Transaction<'static, Any>) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(self.backend.now_ms_sql())
            .fetch_one(&mut **tx)
            .await?)
    }
}

async fn insert_refresh_token(
    tx: &mut Transaction<'static, Any>,
    hash: &str,
    session: &SessionId,
    parent: Option<&str>,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(&session.0)
    .bind(parent)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn live_session_owner(
    conn: &mut sqlx::AnyConnection,
    id: &SessionId,
    now: i64,
) -> sqlx::Result<Option<SessionOwner>> {
    let row = sqlx::query(
        "SELECT s.user_id, s.expires_at, u.username, u.roles FROM sessions s \
         JOIN users u ON u.id = s.user_id \
         WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.disabled_at IS NULL",
    )
    .bind(&id.0)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let roles: String = row.try_get("roles")?;
        Ok(SessionOwner {
            session_id: id.clone(),
            user_id: UserId(row.try_get("user_id")?),
            username: Username::from_trusted(row.try_get("username")?),
            roles: split_roles(&roles),
            expires_at: row.try_get("expires_at")?,
        })
    })
    .transpose()
}

fn session_info(row: &AnyRow) -> sqlx::Result<SessionInfo> {
    Ok(SessionInfo {
        id: SessionId(row.try_get("id")?),
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        expires_at: row.try_get("expires_at")?,
        user_agent: row.try_get("user_agent")?,
        ip: row.try_get("ip")?,
    })
}
