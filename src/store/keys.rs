//! The signing keys in the database: the public halves every instance
//! records, and, with the database key store, the sealed private keys
//! themselves with the generation that says when they last changed.

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

/// A private signing key as the database key store holds it. The store
/// neither seals nor opens it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SealedKey {
    pub kid: String,
    pub alg: String,
    /// `next`, `active` or `retired`.
    pub state: String,
    pub created_at: UnixMillis,
    pub retired_at: Option<UnixMillis>,
    /// The PKCS#8 private key, sealed under the key-encryption key.
    pub sealed_private_key: String,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The database key store as read at one generation.
#[derive(Debug)]
pub struct SealedKeys {
    pub generation: i64,
    /// The longest token lifetime a gateway serving the keys declared; 0
    /// when none did.
    pub token_lifetime_ms: i64,
    /// In the order they were made: oldest first; of keys made at once (an
    /// active and a next one), the one that signed first.
    pub keys: Vec<SealedKey>,
}

/// The order rows are written in: at most one active and one next key may
/// exist at any moment (a unique index), so a rotation retires the active
/// key before promoting the next one, and adds the new next key last.
fn write_order(state: &str) -> u8 {
    match state {
        "retired" => 0,
        "active" => 1,
        _ => 2,
    }
}

impl Store {
    /// The generation of the database key store: raised by every change to
    /// its keys, so one tiny read tells whether they changed.
    pub async fn key_store_generation(&self) -> StoreResult<i64> {
        self.bounded(async {
            Ok(
                sqlx::query_scalar("SELECT generation FROM key_store WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?,
            )
        })
        .await
    }

    /// The sealed keys and the generation they are at least as new as.
    pub async fn sealed_keys(&self) -> StoreResult<SealedKeys> {
        self.bounded(async {
            // The generation first: keys read after it are at least as new,
            // so a change worked out on them is refused if anything changed
            // since. (The other order could pair old keys with a new
            // generation, and a change based on them would be accepted.)
            let (generation, token_lifetime_ms): (i64, i64) =
                sqlx::query_as("SELECT generation, token_lifetime_ms FROM key_store WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
            let keys = sqlx::query_as(
                "SELECT kid, alg, state, created_at, retired_at, sealed_private_key \
                 FROM sealed_keys ORDER BY created_at, \
                 CASE state WHEN 'retired' THEN 0 WHEN 'active' THEN 1 ELSE 2 END, \
                 retired_at, kid",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok(SealedKeys {
                generation,
                token_lifetime_ms,
                keys,
            })
        })
        .await
    }

    /// Makes `keys` the database key store's keys and records
    /// `token_lifetime_ms`, if its generation is still `expected`, and
    /// raises the generation. Returns false, having written nothing, when
    /// another writer changed the keys since `expected` was read.
    pub async fn replace_sealed_keys(
        &self,
        expected: i64,
        token_lifetime_ms: i64,
        keys: &[SealedKey],
    ) -> StoreResult<bool> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            // First, so that a concurrent writer waits on this row and then
            // finds the generation moved on (on SQLite, the write lock
            // taken at BEGIN serialises writers anyway).
            let claimed = sqlx::query(
                "UPDATE key_store SET generation = generation + 1, token_lifetime_ms = $2 \
                 WHERE id = 1 AND generation = $1",
            )
            .bind(expected)
            .bind(token_lifetime_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !claimed {
                tx.rollback().await?;
                return Ok(false);
            }
            let existing: Vec<String> = sqlx::query_scalar("SELECT kid FROM sealed_keys")
                .fetch_all(&mut *tx)
                .await?;
            for kid in existing
                .iter()
                .filter(|kid| !keys.iter().any(|key| &key.kid == *kid))
            {
                sqlx::query("DELETE FROM sealed_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(&mut *tx)
                    .await?;
            }
            let mut ordered: Vec<&SealedKey> = keys.iter().collect();
            ordered.sort_by_key(|key| write_order(&key.state));
            for key in ordered {
                if existing.contains(&key.kid) {
                    sqlx::query(
                        "UPDATE sealed_keys SET state = $1, retired_at = $2 WHERE kid = $3",
                    )
                    .bind(&key.state)
                    .bind(key.retired_at)
                    .bind(&key.kid)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    sqlx::query(
                        "INSERT INTO sealed_keys \
                         (kid, alg, state, created_at, retired_at, sealed_private_key) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&key.kid)
                    .bind(&key.alg)
                    .bind(&key.state)
                    .bind(key.created_at)
                    .bind(key.retired_at)
                    .bind(&key.sealed_private_key)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

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
