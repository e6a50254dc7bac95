//! Password-reset tokens: stored as hashes, valid until `expires_at`, used
//! once; a newer request for a user voids the older ones.

use super::{Store, StoreResult};
use crate::domain::{SessionId, UserId};
use crate::time::UnixMillis;

pub struct NewReset<'a> {
    pub user_id: &'a UserId,
    /// The stored form of the token (`auth::reset`).
    pub token_hash: &'a str,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// A reset that went through.
#[derive(Debug)]
pub struct CompletedReset {
    pub user_id: UserId,
    /// Every session the user had, now revoked.
    pub revoked: Vec<SessionId>,
}

impl Store {
    /// Records a reset token for a user, voiding the user's earlier ones.
    pub async fn create_password_reset(&self, new: NewReset<'_>) -> StoreResult<()> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            sqlx::query("DELETE FROM password_resets WHERE user_id = $1")
                .bind(new.user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(new.token_hash)
            .bind(new.user_id)
            .bind(new.created_at)
            .bind(new.expires_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// The user a reset token would reset, if it is unused, unexpired at
    /// `now`, and its user not disabled. Changes nothing.
    pub async fn password_reset_user(
        &self,
        token_hash: &str,
        now: UnixMillis,
    ) -> StoreResult<Option<UserId>> {
        self.bounded(async {
            Ok(sqlx::query_scalar(
                "SELECT r.user_id FROM password_resets r JOIN users u ON u.id = r.user_id \
                 WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.expires_at > $2 \
                 AND u.disabled_at IS NULL",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?)
        })
        .await
    }

    /// Spends a reset token: in one transaction, marks it used, sets the new
    /// password, voids the user's other reset tokens and revokes every
    /// session. `None` when the token is unknown, used, expired at `now`, or
    /// its user disabled: then nothing changed. Two confirmations of one
    /// token cannot both pass: the first to mark it used wins.
    pub async fn complete_password_reset(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: UnixMillis,
    ) -> StoreResult<Option<CompletedReset>> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let user_id: Option<UserId> = sqlx::query_scalar(
                "UPDATE password_resets SET used_at = $1 \
                 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                 AND user_id IN (SELECT id FROM users WHERE disabled_at IS NULL) \
                 RETURNING user_id",
            )
            .bind(now)
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(user_id) = user_id else {
                return Ok(None);
            };
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(password_hash)
                .bind(&user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM password_resets WHERE user_id = $1 AND token_hash <> $2")
                .bind(&user_id)
                .bind(token_hash)
                .execute(&mut *tx)
                .await?;
            let revoked = self
                .revoke_user_sessions_in(&mut tx, &user_id, None)
                .await?;
            tx.commit().await?;
            Ok(Some(CompletedReset { user_id, revoked }))
        })
        .await
    }

    /// Deletes reset tokens that expired before `before`; how many went.
    pub async fn delete_expired_password_resets(&self, before: UnixMillis) -> StoreResult<u64> {
        self.bounded(async {
            let result = sqlx::query("DELETE FROM password_resets WHERE expires_at < $1")
                .bind(before)
                .execute(&self.pool)
                .await?;
            Ok(result.rows_affected())
        })
        .await
    }
}
