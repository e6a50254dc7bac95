//! The database key store (`--key-store database`): the private signing keys
//! of every instance in one table, each sealed (AES-256-GCM) under the
//! key-encryption key with its kid and algorithm bound into the seal, so
//! that every instance signs with the same active key and one command
//! rotates them all.
//!
//! Changes are optimistic: read the keys with the store's generation, work
//! the change out, and write it only if the generation is still the one
//! read; otherwise read again and retry. Instances starting at once on an
//! empty database all try to create the first keys: one wins, the others
//! find its keys when they retry. Nothing is written unless every stored key
//! opens under the key-encryption key: a wrong key is an error, never new
//! keys.

use std::collections::HashMap;

use anyhow::{Context, bail};

use super::keystore::{
    KeyAlg, KeyChange, KeyRecord, KeyState, KeyStates, KeyVersion, LocalKey, PrivateKeyPem,
};
use super::seal::{SealError, SealingKey};
use crate::store::{SealedKey, SealedKeys, Store};

/// How many times a change is worked out again after other writers got
/// there first. Each lost race means another writer made progress.
const ATTEMPTS: usize = 10;

pub struct DatabaseKeys {
    store: Store,
    sealing: SealingKey,
}

/// The keys as read: their states, and each key's sealed private half.
struct Opened {
    generation: i64,
    states: KeyStates,
    sealed: HashMap<String, String>,
    private: Vec<(KeyRecord, PrivateKeyPem)>,
}

impl DatabaseKeys {
    pub fn new(store: Store, sealing: SealingKey) -> DatabaseKeys {
        DatabaseKeys { store, sealing }
    }

    /// One small read: the store's generation.
    pub async fn version(&self) -> anyhow::Result<KeyVersion> {
        let generation = self
            .store
            .key_store_generation()
            .await
            .context("cannot read the key store's generation")?;
        Ok(KeyVersion::Generation(generation))
    }

    /// The states, after checking that every key opens.
    pub async fn states(&self) -> anyhow::Result<KeyStates> {
        Ok(self.read().await?.states)
    }

    /// Every key with its private half.
    pub async fn load(&self) -> anyhow::Result<(KeyVersion, Vec<LocalKey>)> {
        let opened = self.read().await?;
        opened.states.validate()?;
        let keys = opened
            .private
            .into_iter()
            .map(|(record, pem)| {
                let kid = record.kid.clone();
                LocalKey::parse(record, pem.expose(), &format!("signing key {kid}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((KeyVersion::Generation(opened.generation), keys))
    }

    /// Applies `change` to the keys as read, and writes the result if no
    /// other writer changed them meanwhile; otherwise starts over.
    pub async fn update<T>(
        &self,
        mut change: impl FnMut(&mut KeyChange) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        for _ in 0..ATTEMPTS {
            let opened = self.read().await?;
            let mut draft = KeyChange::new(opened.states);
            let outcome = change(&mut draft)?;
            if draft.is_empty() {
                return Ok(outcome);
            }
            let (states, created, _removed) = draft.finish();
            let mut sealed = opened.sealed;
            for key in &created {
                let seal = self
                    .sealing
                    .seal(key.pem.expose(), &seal_context(&key.record))
                    .map_err(|e| {
                        anyhow::anyhow!("cannot seal signing key {}: {e}", key.record.kid)
                    })?;
                sealed.insert(key.record.kid.clone(), seal);
            }
            let rows: Vec<SealedKey> = states
                .keys
                .iter()
                .map(|record| SealedKey {
                    kid: record.kid.clone(),
                    alg: record.alg.as_str().to_string(),
                    state: record.state.as_str().to_string(),
                    created_at: record.created_at,
                    retired_at: record.retired_at,
                    sealed_private_key: sealed
                        .remove(&record.kid)
                        .expect("every key kept or created has its sealed private half"),
                })
                .collect();
            let lifetime_ms = states.token_lifetime_ms.unwrap_or(0) as i64;
            let written = self
                .store
                .replace_sealed_keys(opened.generation, lifetime_ms, &rows)
                .await
                .context("cannot write the signing keys to the database")?;
            if written {
                return Ok(outcome);
            }
            tracing::debug!("the signing keys in the database changed meanwhile; trying again");
        }
        bail!("the signing keys in the database keep changing under this command; try again")
    }

    /// Reads the keys and opens every one of them.
    async fn read(&self) -> anyhow::Result<Opened> {
        let SealedKeys {
            generation,
            token_lifetime_ms,
            keys,
        } = self
            .store
            .sealed_keys()
            .await
            .context("cannot read the signing keys from the database")?;
        let mut states = KeyStates {
            keys: Vec::with_capacity(keys.len()),
            token_lifetime_ms: (token_lifetime_ms > 0).then_some(token_lifetime_ms as u64),
        };
        let mut sealed = HashMap::with_capacity(keys.len());
        let mut private = Vec::with_capacity(keys.len());
        for row in keys {
            let record = KeyRecord {
                alg: KeyAlg::parse(&row.alg).with_context(|| {
                    format!(
                        "signing key {} has an unknown algorithm `{}`",
                        row.kid, row.alg
                    )
                })?,
                state: KeyState::parse(&row.state).with_context(|| {
                    format!(
                        "signing key {} has an unknown state `{}`",
                        row.kid, row.state
                    )
                })?,
                kid: row.kid,
                created_at: row.created_at,
                retired_at: row.retired_at,
            };
            let pem = self
                .sealing
                .open(&row.sealed_private_key, &seal_context(&record))
                .map_err(|error| match error {
                    SealError::WrongKey => anyhow::anyhow!(
                        "signing key {} in the database does not open with this \
                         TOLLGATE_KEY_ENCRYPTION_KEY: it was sealed under another one (or \
                         altered); start with the key the keys were sealed with",
                        record.kid
                    ),
                    other => anyhow::anyhow!("signing key {} in the database: {other}", record.kid),
                })?;
            states.keys.push(record.clone());
            sealed.insert(record.kid.clone(), row.sealed_private_key);
            private.push((record, PrivateKeyPem::new(pem)));
        }
        Ok(Opened {
            generation,
            states,
            sealed,
            private,
        })
    }
}

/// What a key's seal is bound to: a sealed key moved to another row, or
/// relabelled with another algorithm, does not open.
fn seal_context(record: &KeyRecord) -> Vec<u8> {
    format!(
        "tollgate signing key\0{}\0{}",
        record.kid,
        record.alg.as_str()
    )
    .into_bytes()
}
