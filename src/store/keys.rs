//! The public halves of signing keys, shared by every instance on the database.

use std::time::Duration;

use tracing::instrument;

use super::{Store, StoreResult};
use crate::time::UnixMillis;

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RecordedKey {
    pub kid: String,
    pub alg: String,
    /// The public JWK as JSON.
    pub public_jwk: String,
    pub created_at: UnixMillis,
    /// When the key stopped signing; `None` while it is `next` or `active`.
    pub retired_at: Option<UnixMillis>,
}

impl Store {
    /// Records this instance's keys, or updates their retirement, and marks
    /// them seen at `now`.
    #[instrument(level = "debug", skip_all)]
    pub async fn record_keys(&self, keys: &[RecordedKey], now: UnixMillis) -> StoreResult<()> {
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
    #[instrument(level = "debug", skip_all)]
    pub async fn recorded_keys(
        &self,
        live_since: UnixMillis,
        held_slack: Duration,
    ) -> StoreResult<Vec<RecordedKey>> {
        self.bounded(async {
            Ok(sqlx::query_as(
                "SELECT kid, alg, public_jwk, created_at, retired_at FROM signing_keys \
                 WHERE COALESCE(retired_at, last_seen_at + $2) >= $1",
            )
            .bind(live_since)
            .bind(held_slack.as_millis() as i64)
            .fetch_all(&self.pool)
            .await?)
        })
        .await
    }

    /// Forgets recorded keys whose signing ended before `live_since` (see
    /// [`Store::recorded_keys`]): no unexpired token can carry them.
    #[instrument(level = "debug", skip_all)]
    pub async fn delete_recorded_keys(
        &self,
        live_since: UnixMillis,
        held_slack: Duration,
    ) -> StoreResult<u64> {
        self.bounded(async {
            let result = sqlx::query(
                "DELETE FROM signing_keys WHERE COALESCE(retired_at, last_seen_at + $2) < $1",
            )
            .bind(live_since)
            .bind(held_slack.as_millis() as i64)
            .execute(&self.pool)
            .await?;
            Ok(result.rows_affected())
        })
        .await
    }
}
