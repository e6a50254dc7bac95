//! The keys a running gateway signs and verifies with, and publishes.
//!
//! A [`KeySet`] is immutable and built once per change: the keys of the key
//! store (the keys directory, or the database's sealed keys) plus every key
//! other instances recorded in the database that can still have unexpired
//! tokens. [`Keys`] holds the current set behind an atomic swap, so the
//! request path reads it without locking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::keystore::{KeyAlg, KeyState, KeyStore, KeyVersion, LocalKey};
use crate::store::{RecordedKey, Store};
use crate::time::UnixMillis;

pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub key: EncodingKey,
}

pub struct VerifyingKey {
    pub alg: Algorithm,
    /// As it appears in a token's `alg` header.
    pub alg_name: &'static str,
    pub key: DecodingKey,
}

pub struct KeySet {
    signing: SigningKey,
    verifying: HashMap<String, VerifyingKey>,
    jwks: Bytes,
}

impl KeySet {
    /// Builds the set from the local keys and the recorded ones. Keys retired
    /// more than `token_lifetime` ago cannot carry live tokens and are left
    /// out.
    pub fn build(
        local: &[LocalKey],
        recorded: &[RecordedKey],
        now: UnixMillis,
        token_lifetime: Duration,
    ) -> anyhow::Result<KeySet> {
        let live = |retired_at: Option<UnixMillis>| {
            retired_at.is_none_or(|at| at.plus(token_lifetime) >= now)
        };
        let active = local
            .iter()
            .find(|key| key.record.state == KeyState::Active)
            .context("the key store has no active key")?;
        let signing = SigningKey {
            kid: active.record.kid.clone(),
            alg: active.record.alg.algorithm(),
            key: active.encoding.clone(),
        };

        // Active first, then next, then retired; then other instances' keys.
        let mut ordered: Vec<&LocalKey> = local
            .iter()
            .filter(|key| live(key.record.retired_at))
            .collect();
        ordered.sort_by_key(|key| match key.record.state {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Retired => 2,
        });
        let mut published: Vec<(String, KeyAlg, Jwk)> = ordered
            .into_iter()
            .map(|key| {
                (
                    key.record.kid.clone(),
                    key.record.alg,
                    key.public_jwk.clone(),
                )
            })
            .collect();
        for key in recorded.iter().filter(|key| live(key.retired_at)) {
            if published.iter().any(|(kid, _, _)| *kid == key.kid) {
                continue;
            }
            let Some(alg) = KeyAlg::parse(&key.alg) else {
                tracing::warn!(kid = %key.kid, alg = %key.alg, "skipping a recorded key with an unknown algorithm");
                continue;
            };
            match serde_json::from_str::<Jwk>(&key.public_jwk) {
                Ok(jwk) => published.push((key.kid.clone(), alg, jwk)),
                Err(error) => {
                    tracing::warn!(kid = %key.kid, %error, "skipping an unreadable recorded key")
                }
            }
        }

        let mut verifying = HashMap::with_capacity(published.len());
        let mut jwks = Vec::with_capacity(published.len());
        for (kid, alg, mut jwk) in published {
            jwk.common.key_id = Some(kid.clone());
            let key = DecodingKey::from_jwk(&jwk)
                .map_err(|e| anyhow::anyhow!("key {kid} has an unusable public key: {e}"))?;
            verifying.insert(
                kid,
                VerifyingKey {
                    alg: alg.algorithm(),
                    alg_name: alg.as_str(),
                    key,
                },
            );
            jwks.push(jwk);
        }
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": jwks }))
            .expect("public keys serialize");
        Ok(KeySet {
            signing,
            verifying,
            jwks: Bytes::from(jwks),
        })
    }

    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    pub fn verifying(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    pub fn len(&self) -> usize {
        self.verifying.len()
    }

    pub fn is_empty(&self) -> bool {
        self.verifying.is_empty()
    }

    /// The JWKS document, serialized once per set.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks.clone()
    }

    /// Algorithms of the published keys, for OpenID discovery.
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut algs: Vec<&'static str> = self.verifying.values().map(|key| key.alg_name).collect();
        algs.sort_unstable();
        algs.dedup();
        algs
    }
}

/// The current key set and how to renew it.
pub struct Keys {
    current: ArcSwap<KeySet>,
    source: KeyStore,
    store: Store,
    token_lifetime: Duration,
    /// The key store's keys as last read, and its version then.
    local: Mutex<(KeyVersion, Arc<Vec<LocalKey>>)>,
    /// Keys recorded by every instance, as last read from the database.
    recorded: Mutex<Vec<RecordedKey>>,
    /// When the recorded keys were last re-read for an unknown `kid`; held
    /// while one is under way, so that concurrent callers wait for it.
    unknown_kid_refresh: tokio::sync::Mutex<Option<Instant>>,
}

/// How often an unknown `kid` may trigger a re-read of the recorded keys.
const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How often a running instance marks its keys as held in the database.
pub const KEY_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// A key not marked held for this long is taken to have stopped signing when
/// it was last seen: its keys directory was lost.
pub const HELD_SLACK: Duration = Duration::from_secs(5 * 60);

impl Keys {
    /// Reads the key store, records its public keys in the database and
    /// builds the first set. The key store must already hold keys.
    pub async fn load(
        source: KeyStore,
        store: Store,
        token_lifetime: Duration,
    ) -> anyhow::Result<Keys> {
        let (version, local) = source.load().await?;
        store
            .record_keys(&to_records(&local)?, UnixMillis::now())
            .await
            .context("cannot record the public keys in the database")?;
        let recorded = store
            .recorded_keys(UnixMillis::now().minus(token_lifetime), HELD_SLACK)
            .await
            .context("cannot read the recorded keys")?;
        let set = KeySet::build(&local, &recorded, UnixMillis::now(), token_lifetime)?;
        Ok(Keys {
            current: ArcSwap::from_pointee(set),
            source,
            store,
            token_lifetime,
            local: Mutex::new((version, Arc::new(local))),
            recorded: Mutex::new(recorded),
            unknown_kid_refresh: tokio::sync::Mutex::new(None),
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Whether the key `kid` still verifies: a pruned or removed key stops
    /// at once, for remembered tokens too.
    pub fn knows(&self, kid: &str) -> bool {
        self.current.load().verifying(kid).is_some()
    }

    /// Whether the key store changed since it was last read (a rotation).
    /// When its version cannot be read, nothing is known to have changed.
    pub async fn changed(&self) -> bool {
        match self.source.version().await {
            Ok(version) => version != self.local.lock().expect("not poisoned").0,
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "cannot check the key store for changes");
                false
            }
        }
    }

    /// Re-reads the key store and the recorded keys, marks this instance's
    /// keys as held, and swaps in a new set. The keys it signs with are
    /// marked held even when the key store cannot be read right now, and
    /// with the database unreachable the last recorded keys are kept.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let read = self.source.load().await.map(|loaded| {
            let (version, local) = loaded;
            *self.local.lock().expect("not poisoned") = (version, Arc::new(local));
        });
        let local = self.local.lock().expect("not poisoned").1.clone();
        if let Err(error) = self
            .store
            .record_keys(&to_records(&local)?, UnixMillis::now())
            .await
        {
            tracing::warn!(%error, "cannot record the public keys; will retry on the next reload");
        }
        self.refresh_recorded().await;
        self.rebuild(&local)?;
        read
    }

    /// On a token with an unknown `kid`: re-read the recorded keys, at most
    /// once per second; callers arriving while a re-read is under way wait
    /// for it. Returns whether the caller should look again.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let mut last = self.unknown_kid_refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL) {
            // Someone re-read the keys a moment ago: the set is as fresh as
            // it gets.
            return true;
        }
        *last = Some(Instant::now());
        if !self.refresh_recorded().await {
            return false;
        }
        let local = self.local.lock().expect("not poisoned").1.clone();
        match self.rebuild(&local) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot rebuild the key set");
                false
            }
        }
    }

    async fn refresh_recorded(&self) -> bool {
        // Asked from a data-plane worker when a token names an unknown key.
        let store = self.store.clone();
        let live_since = UnixMillis::now().minus(self.token_lifetime);
        let recorded = self
            .store
            .control()
            .run(async move { store.recorded_keys(live_since, HELD_SLACK).await })
            .await;
        match recorded {
            Ok(recorded) => {
                *self.recorded.lock().expect("not poisoned") = recorded;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the recorded keys; keeping the last ones");
                false
            }
        }
    }

    fn rebuild(&self, local: &[LocalKey]) -> anyhow::Result<()> {
        let recorded = self.recorded.lock().expect("not poisoned").clone();
        let set = KeySet::build(local, &recorded, UnixMillis::now(), self.token_lifetime)?;
        self.current.store(Arc::new(set));
        Ok(())
    }
}

/// The public halves of the key store's keys, as recorded in the database.
fn to_records(local: &[LocalKey]) -> anyhow::Result<Vec<RecordedKey>> {
    local
        .iter()
        .map(|key| {
            Ok(RecordedKey {
                kid: key.record.kid.clone(),
                alg: key.record.alg.as_str().to_string(),
                public_jwk: serde_json::to_string(&key.public_jwk)?,
                created_at: key.record.created_at,
                retired_at: key.record.retired_at,
            })
        })
        .collect()
}
