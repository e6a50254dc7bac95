//! The public halves of signing keys, shared by every instance on the database.

use sqlx::Row;

use super::{Store, StoreResult};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedKey {
    pub kid: String,
    pub alg: String,
    /// The public JWK as JSON.
    pub public_jwk: String,
    pub created_at: i64,
    /// When the key stopped signing; `None` while it is `next` or `active`.
    pub retired_at: Option<i64>,
}

impl Store {
    /// Records this instance's keys, or updates their retirement, and marks
    /// them seen at `now`.
    pub async fn record_keys(&self, keys: &[RecordedKey], now: i64) -> StoreResult<()> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            for key in keys {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, public_jwk, created_at, retired_at, last_seen_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (kid) DO UPDATE SET \
                     retired_at = COALESCE(excluded.retired_at, signing_keys.retired_at), \
                     last_seen_at = excluded.last_seen_at",
                )
                .bind(&key.kid)
                .bind(&key.alg)
                .bind(&key.public_jwk)
                .bind(key.created_at)
                .bind(key.retired_at)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Every recorded key that can still have unexpired tokens: its signing
    /// ended at or after `live_since`. A key's signing ended when it was
    /// retired or, if no instance holds it any more (its keys directory was
    /// lost), `held_slack_ms` after it was last seen.
    pub async fn recorded_keys(
        &self,
        live_since: i64,
        held_slack_ms: i64,
    ) -> StoreResult<Vec<RecordedKey>> {
        self.bounded(async {
            let rows = sqlx::query(
                "SELECT kid, alg, public_jwk, created_at, retired_at FROM signing_keys \
                 WHERE COALESCE(retired_at, last_seen_at + $2) >= $1",
            )
            .bind(live_since)
            .bind(held_slack_ms)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .iter()
                .map(|row| {
                    Ok(RecordedKey {
                        kid: row.try_get("kid")?,
                        alg: row.try_get("alg")?,
                        public_jwk: row.try_get("public_jwk")?,
                        created_at: row.try_get("created_at")?,
                        retired_at: row.try_get("retired_at")?,
                    })
                })
                .collect::<sqlx::Result<_>>()?)
        })
        .await
    }

    /// Forgets recorded keys whose signing ended before `live_since` (see
    /// [`Store::recorded_keys`]): no unexpired token can carry them.
    pub async fn delete_recorded_keys(
        &self,
        live_since: i64,
        held_slack_ms: i64,
    ) -> StoreResult<u64> {
        self.bounded(async {
            let result = sqlx::query(
                "DELETE FROM signing_keys WHERE COALESCE(retired_at, last_seen_at + $2) < $1",
            )
            .bind(live_since)
            .bind(held_slack_ms)
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected())
        })
        .await
    }
}
