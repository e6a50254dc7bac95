//! Where the private signing keys live, and the one set of rules for how
//! their states change, whichever store holds them: the keys directory
//! ([`KeyDir`], `--key-store dir`) or the database, sealed under the
//! key-encryption key ([`DatabaseKeys`], `--key-store database`).
//!
//! A key is `next` (published, not yet signing), `active` (signing; exactly
//! one) or `retired` (published and verifying until no unexpired token can
//! carry it). Every change is a [`KeyChange`]: the store reads the states
//! under its lock (or, for the database, with its generation), the change is
//! worked out here, and the store writes it back whole or not at all.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};

use super::keydb::DatabaseKeys;
use super::keydir::KeyDir;
use crate::time::UnixMillis;

/// A gateway may go on signing with a key this long after it was retired,
/// until it notices the rotation (it checks every two seconds).
pub const ROTATION_PICKUP_MARGIN: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Next,
    Active,
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }

    pub fn parse(raw: &str) -> Option<KeyState> {
        [KeyState::Next, KeyState::Active, KeyState::Retired]
            .into_iter()
            .find(|state| state.as_str() == raw)
    }
}

/// One key's state, without its private half.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub kid: String,
    pub alg: KeyAlg,
    pub created_at: UnixMillis,
    pub state: KeyState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<UnixMillis>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlg {
    EdDSA,
    ES256,
    RS256,
}

impl KeyAlg {
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyAlg::EdDSA => Algorithm::EdDSA,
            KeyAlg::ES256 => Algorithm::ES256,
            KeyAlg::RS256 => Algorithm::RS256,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
            KeyAlg::RS256 => "RS256",
        }
    }

    pub const ALL: [KeyAlg; 3] = [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256];

    pub fn parse(raw: &str) -> Option<KeyAlg> {
        KeyAlg::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(raw))
    }
}

impl FromStr for KeyAlg {
    type Err = String;

    fn from_str(raw: &str) -> Result<KeyAlg, String> {
        KeyAlg::parse(raw)
            .ok_or_else(|| format!("unknown key algorithm `{raw}`: use EdDSA, ES256 or RS256"))
    }
}

/// What a key store holds besides the private halves: each key's state, and
/// the longest a token signed with them can be accepted (access TTL plus
/// leeway), the most any gateway serving them has declared, so that pruning
/// waits that long after a retirement whatever the pruning command's own
/// flags say. In the keys directory this is `keys.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStates {
    /// Oldest first.
    pub keys: Vec<KeyRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_lifetime_ms: Option<u64>,
}

impl KeyStates {
    pub fn declared_lifetime(&self) -> Duration {
        Duration::from_millis(self.token_lifetime_ms.unwrap_or(0))
    }

    /// Exactly one active key and at most one next key (or no keys at all).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.keys.is_empty() {
            return Ok(());
        }
        let count = |state| self.keys.iter().filter(|key| key.state == state).count();
        if count(KeyState::Active) != 1 || count(KeyState::Next) > 1 {
            bail!(
                "the keys record must have exactly one active key and at most one next key \
                 (has {} active, {} next)",
                count(KeyState::Active),
                count(KeyState::Next)
            );
        }
        Ok(())
    }

    fn contains(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid == kid)
    }
}

/// A private key as PKCS#8 PEM. Its `Debug` shows nothing of it.
pub struct PrivateKeyPem(Vec<u8>);

impl PrivateKeyPem {
    pub fn new(pem: Vec<u8>) -> PrivateKeyPem {
        PrivateKeyPem(pem)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

/// A key a change brings into a store (made just now, or imported), with
/// its private half for the store to write.
#[derive(Debug)]
pub struct NewKey {
    pub record: KeyRecord,
    pub pem: PrivateKeyPem,
}

impl NewKey {
    /// Generates a key pair; its kid follows from its public half.
    pub fn generate(alg: KeyAlg, state: KeyState, now: UnixMillis) -> anyhow::Result<NewKey> {
        let der = generate_pkcs8(alg)?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der)).into_bytes();
        let (_, public_jwk) = parse_private_key(alg, &pem)?;
        Ok(NewKey {
            record: KeyRecord {
                kid: kid_of(&public_jwk)?,
                alg,
                created_at: now,
                state,
                retired_at: None,
            },
            pem: PrivateKeyPem(pem),
        })
    }
}

/// A key read from a store: its state, its private half for signing and its
/// public half as a JWK (with its `kid`).
pub struct LocalKey {
    pub record: KeyRecord,
    pub encoding: EncodingKey,
    pub public_jwk: Jwk,
}

impl LocalKey {
    /// Parses a stored private key; `where_from` names it in the error.
    pub fn parse(record: KeyRecord, pem: &[u8], where_from: &str) -> anyhow::Result<LocalKey> {
        let (encoding, mut public_jwk) = parse_private_key(record.alg, pem)
            .with_context(|| format!("{where_from} is not a valid {} key", record.alg.as_str()))?;
        public_jwk.common.key_id = Some(record.kid.clone());
        Ok(LocalKey {
            record,
            encoding,
            public_jwk,
        })
    }
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// A change to a store's keys, worked out on the states the store read. The
/// store writes the resulting states, the keys created, and deletes the
/// private halves of the keys that are gone.
pub struct KeyChange {
    before: KeyStates,
    states: KeyStates,
    created: Vec<NewKey>,
}

impl KeyChange {
    pub fn new(states: KeyStates) -> KeyChange {
        KeyChange {
            before: states.clone(),
            states,
            created: Vec::new(),
        }
    }

    pub fn states(&self) -> &KeyStates {
        &self.states
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.states == self.before && self.created.is_empty()
    }

    /// The states to write, the keys to add (with their final states), and
    /// the keys that are gone.
    pub fn finish(self) -> (KeyStates, Vec<NewKey>, Vec<KeyRecord>) {
        let removed = self
            .before
            .keys
            .into_iter()
            .filter(|key| !self.states.contains(&key.kid))
            .collect();
        let created = self
            .created
            .into_iter()
            .filter_map(|mut key| {
                key.record = self
                    .states
                    .keys
                    .iter()
                    .find(|record| record.kid == key.record.kid)?
                    .clone();
                Some(key)
            })
            .collect();
        (self.states, created, removed)
    }

    fn add(&mut self, key: NewKey) {
        self.states.keys.push(key.record.clone());
        self.created.push(key);
    }

    /// Creates an active and a next key when there are none. Returns
    /// whether it created them.
    pub fn generate_if_empty(&mut self, alg: KeyAlg, now: UnixMillis) -> anyhow::Result<bool> {
        if !self.states.keys.is_empty() {
            return Ok(false);
        }
        for state in [KeyState::Active, KeyState::Next] {
            self.add(NewKey::generate(alg, state, now)?);
        }
        Ok(true)
    }

    /// `next` becomes `active`, `active` becomes `retired`, and a new `next`
    /// key is created (of `alg`, or of the promoted key's algorithm).
    pub fn rotate(&mut self, alg: Option<KeyAlg>, now: UnixMillis) -> anyhow::Result<()> {
        if self.states.keys.is_empty() {
            bail!("no keys to rotate: run `tollgate keys generate` first");
        }
        self.states.validate()?;
        let next_alg = {
            let next = self
                .states
                .keys
                .iter()
                .find(|key| key.state == KeyState::Next)
                .context("the keys record has no next key to promote")?;
            alg.unwrap_or(next.alg)
        };
        for key in &mut self.states.keys {
            match key.state {
                KeyState::Active => {
                    key.state = KeyState::Retired;
                    key.retired_at = Some(now);
                }
                KeyState::Next => key.state = KeyState::Active,
                KeyState::Retired => {}
            }
        }
        self.add(NewKey::generate(next_alg, KeyState::Next, now)?);
        Ok(())
    }

    /// Records that a gateway serves these keys with tokens accepted for up
    /// to `token_lifetime`.
    pub fn declare_token_lifetime(&mut self, token_lifetime: Duration) {
        let lifetime_ms = token_lifetime.as_millis() as u64;
        if self
            .states
            .token_lifetime_ms
            .is_none_or(|declared| declared < lifetime_ms)
        {
            self.states.token_lifetime_ms = Some(lifetime_ms);
        }
    }

    /// Deletes the retired keys that no unexpired token can carry at `now`:
    /// retired longer ago than the token lifetime (at least the declared
    /// one), plus the time gateways take to notice a rotation. Returns
    /// their kids.
    pub fn prune(&mut self, now: UnixMillis, token_lifetime: Duration) -> Vec<String> {
        let lifetime = self.states.declared_lifetime().max(token_lifetime);
        let retired_before = now.minus(lifetime + ROTATION_PICKUP_MARGIN);
        let (pruned, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.states.keys)
            .into_iter()
            .partition(|key| {
                key.state == KeyState::Retired
                    && key.retired_at.is_some_and(|at| at < retired_before)
            });
        self.states.keys = kept;
        pruned.into_iter().map(|key| key.kid).collect()
    }

    /// Brings another store's keys in, states included, when this store has
    /// none. Returns how many it brought in: none when they are all here
    /// already (an import run twice).
    pub fn import(&mut self, incoming: KeyStates, keys: Vec<NewKey>) -> anyhow::Result<usize> {
        incoming.validate()?;
        if incoming.keys.is_empty() {
            bail!("there are no keys to import");
        }
        if let Some(lifetime_ms) = incoming.token_lifetime_ms {
            self.declare_token_lifetime(Duration::from_millis(lifetime_ms));
        }
        if incoming
            .keys
            .iter()
            .all(|key| self.states.contains(&key.kid))
        {
            return Ok(0);
        }
        if let Some(active) = self
            .states
            .keys
            .iter()
            .find(|key| key.state == KeyState::Active)
        {
            bail!(
                "the database already holds other signing keys (active: {}); keys import only \
                 fills an empty key store",
                active.kid
            );
        }
        let mut pems: HashMap<String, PrivateKeyPem> = keys
            .into_iter()
            .map(|key| (key.record.kid, key.pem))
            .collect();
        // In the order and the states of the record they came with.
        for record in incoming.keys {
            let pem = pems
                .remove(&record.kid)
                .with_context(|| format!("key {} has no private key to import", record.kid))?;
            self.add(NewKey { record, pem });
        }
        self.states.validate()?;
        Ok(self.created.len())
    }
}

/// What a store looks like now, cheap to read: a rotation changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVersion {
    /// The keys record's modification time and size.
    File(Option<SystemTime>, u64),
    /// The database key store's generation, raised by every change.
    Generation(i64),
}

/// The store of the private signing keys `--key-store` names.
pub enum KeyStore {
    Dir(KeyDir),
    Database(DatabaseKeys),
}

impl From<KeyDir> for KeyStore {
    fn from(dir: KeyDir) -> KeyStore {
        KeyStore::Dir(dir)
    }
}

impl From<DatabaseKeys> for KeyStore {
    fn from(database: DatabaseKeys) -> KeyStore {
        KeyStore::Database(database)
    }
}

impl std::fmt::Display for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyStore::Dir(dir) => write!(f, "{}", dir.path().display()),
            KeyStore::Database(_) => f.write_str("the database"),
        }
    }
}

impl KeyStore {
    /// Reads the states, works out `change` on them and writes the result,
    /// all or nothing. `change` may run more than once (the database store
    /// retries when another writer got there first).
    async fn update<T>(
        &self,
        change: impl FnMut(&mut KeyChange) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            KeyStore::Dir(dir) => dir.update(change),
            KeyStore::Database(database) => database.update(change).await,
        }
    }

    /// The states as they are, without the private keys.
    pub async fn states(&self) -> anyhow::Result<KeyStates> {
        match self {
            KeyStore::Dir(dir) => dir.states(),
            KeyStore::Database(database) => database.states().await,
        }
    }

    /// Every key with its private half, and the version they were read at.
    pub async fn load(&self) -> anyhow::Result<(KeyVersion, Vec<LocalKey>)> {
        match self {
            KeyStore::Dir(dir) => {
                // Read before the keys: a change in between is seen again.
                let version = dir.version();
                Ok((version, dir.load()?))
            }
            KeyStore::Database(database) => database.load().await,
        }
    }

    /// The version now; a different one than [`KeyStore::load`] returned
    /// means the keys changed.
    pub async fn version(&self) -> anyhow::Result<KeyVersion> {
        match self {
            KeyStore::Dir(dir) => Ok(dir.version()),
            KeyStore::Database(database) => database.version().await,
        }
    }

    /// The keys, oldest first, without their private halves.
    pub async fn records(&self) -> anyhow::Result<Vec<KeyRecord>> {
        Ok(self.states().await?.keys)
    }

    /// Creates an active and a next key when the store has none. Returns
    /// whether it created them.
    pub async fn generate_if_empty(&self, alg: KeyAlg, now: UnixMillis) -> anyhow::Result<bool> {
        self.update(|change| change.generate_if_empty(alg, now))
            .await
    }

    /// Rotates (see [`KeyChange::rotate`]); returns the new records.
    pub async fn rotate(
        &self,
        alg: Option<KeyAlg>,
        now: UnixMillis,
    ) -> anyhow::Result<Vec<KeyRecord>> {
        self.update(|change| {
            change.rotate(alg, now)?;
            Ok(change.states().keys.clone())
        })
        .await
    }

    pub async fn declare_token_lifetime(&self, token_lifetime: Duration) -> anyhow::Result<()> {
        self.update(|change| {
            change.declare_token_lifetime(token_lifetime);
            Ok(())
        })
        .await
    }

    /// The longest a token can be accepted: `token_lifetime` or what a
    /// serving gateway declared, whichever is longer.
    pub async fn token_lifetime(&self, token_lifetime: Duration) -> anyhow::Result<Duration> {
        Ok(self.states().await?.declared_lifetime().max(token_lifetime))
    }

    /// Prunes (see [`KeyChange::prune`]); returns the kids deleted.
    pub async fn prune(
        &self,
        now: UnixMillis,
        token_lifetime: Duration,
    ) -> anyhow::Result<Vec<String>> {
        self.update(|change| Ok(change.prune(now, token_lifetime)))
            .await
    }

    /// Brings the keys of `source` in, states included (see
    /// [`KeyChange::import`]); returns how many.
    pub async fn import(&self, source: &KeyDir) -> anyhow::Result<usize> {
        self.update(|change| {
            let (states, keys) = source.export()?;
            change.import(states, keys)
        })
        .await
    }
}

fn generate_pkcs8(alg: KeyAlg) -> anyhow::Result<Vec<u8>> {
    let failed = |_| anyhow::anyhow!("cannot generate a {} key", alg.as_str());
    Ok(match alg {
        // v1 (without the public key) is what OpenSSL writes and what the
        // JWK conversion expects.
        KeyAlg::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
        KeyAlg::ES256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
        KeyAlg::RS256 => {
            let key_pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(failed)?;
            AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key_pair)
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
    })
}

/// The signing key and the public JWK (with `alg` and `use`, without `kid`)
/// of a PKCS#8 PEM private key.
pub fn parse_private_key(alg: KeyAlg, pem: &[u8]) -> anyhow::Result<(EncodingKey, Jwk)> {
    let encoding = match alg {
        KeyAlg::EdDSA => EncodingKey::from_ed_pem(pem),
        KeyAlg::ES256 => EncodingKey::from_ec_pem(pem),
        KeyAlg::RS256 => EncodingKey::from_rsa_pem(pem),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut jwk = Jwk::from_encoding_key(&encoding, alg.algorithm())
        .map_err(|e| anyhow::anyhow!("cannot derive the public key: {e}"))?;
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match alg {
        KeyAlg::EdDSA => KeyAlgorithm::EdDSA,
        KeyAlg::ES256 => KeyAlgorithm::ES256,
        KeyAlg::RS256 => KeyAlgorithm::RS256,
    });
    Ok((encoding, jwk))
}

/// A key's id: the start of its RFC 7638 thumbprint, so the id follows from
/// the key itself.
fn kid_of(public_jwk: &Jwk) -> anyhow::Result<String> {
    let thumbprint = public_jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| anyhow::anyhow!("cannot fingerprint the key: {e}"))?;
    Ok(thumbprint.chars().take(22).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: i64) -> UnixMillis {
        UnixMillis::new(ms)
    }

    fn kid_in(states: &KeyStates, state: KeyState) -> String {
        states
            .keys
            .iter()
            .find(|key| key.state == state)
            .unwrap()
            .kid
            .clone()
    }

    #[test]
    fn every_algorithm_generates_a_loadable_key() {
        for alg in KeyAlg::ALL {
            let key = NewKey::generate(alg, KeyState::Next, ms(1)).unwrap();
            assert_eq!(key.record.kid.len(), 22, "{alg:?}");
            let local = LocalKey::parse(key.record.clone(), key.pem.expose(), "it").unwrap();
            assert_eq!(local.public_jwk.common.key_id, Some(key.record.kid));
            assert!(!format!("{:?}", key.pem).contains("PRIVATE"));
        }
    }

    #[test]
    fn a_change_that_changes_nothing_writes_nothing() {
        let mut change = KeyChange::new(KeyStates::default());
        assert!(change.is_empty());
        assert!(change.generate_if_empty(KeyAlg::EdDSA, ms(1)).unwrap());
        let (states, created, removed) = change.finish();
        assert_eq!(created.len(), 2);
        assert!(removed.is_empty());

        let mut again = KeyChange::new(states);
        assert!(!again.generate_if_empty(KeyAlg::EdDSA, ms(2)).unwrap());
        assert_eq!(
            again.prune(ms(3), Duration::from_secs(1)),
            Vec::<String>::new()
        );
        assert!(again.is_empty());
        again.declare_token_lifetime(Duration::from_secs(5));
        assert!(!again.is_empty());
    }

    #[test]
    fn rotation_promotes_next_and_pruning_waits_for_the_longest_lifetime() {
        let mut change = KeyChange::new(KeyStates::default());
        change.generate_if_empty(KeyAlg::EdDSA, ms(1_000)).unwrap();
        let (before, _, _) = change.finish();
        let (active, next) = (
            kid_in(&before, KeyState::Active),
            kid_in(&before, KeyState::Next),
        );

        let mut change = KeyChange::new(before);
        change.rotate(Some(KeyAlg::ES256), ms(3_000)).unwrap();
        change.declare_token_lifetime(Duration::from_secs(5));
        let (after, created, removed) = change.finish();
        assert_eq!(kid_in(&after, KeyState::Active), next);
        assert_eq!(kid_in(&after, KeyState::Retired), active);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].record.alg, KeyAlg::ES256);
        assert_eq!(created[0].record.state, KeyState::Next);
        assert!(removed.is_empty());
        after.validate().unwrap();

        let lifetime = Duration::from_secs(1);
        let first_prunable = ms(3_000)
            .plus(Duration::from_secs(5) + ROTATION_PICKUP_MARGIN)
            .plus(Duration::from_millis(1));
        let mut change = KeyChange::new(after.clone());
        assert!(
            change
                .prune(ms(first_prunable.get() - 1), lifetime)
                .is_empty(),
            "the declared lifetime wins over the caller's shorter one"
        );
        assert_eq!(change.prune(first_prunable, lifetime), vec![active.clone()]);
        let (pruned, _, removed) = change.finish();
        assert_eq!(pruned.keys.len(), 2);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].kid, active);
    }

    #[test]
    fn rotation_without_keys_says_what_to_do() {
        let mut change = KeyChange::new(KeyStates::default());
        let error = change.rotate(None, ms(1)).unwrap_err().to_string();
        assert!(error.contains("keys generate"), "{error}");
    }

    #[test]
    fn an_import_fills_an_empty_store_once_and_never_mixes_key_sets() {
        let exported = || {
            let mut change = KeyChange::new(KeyStates::default());
            change.generate_if_empty(KeyAlg::EdDSA, ms(1)).unwrap();
            change.rotate(None, ms(2)).unwrap();
            change.declare_token_lifetime(Duration::from_secs(7));
            let (states, created, _) = change.finish();
            (states, created)
        };
        let (states, keys) = exported();

        let mut change = KeyChange::new(KeyStates::default());
        assert_eq!(change.import(states.clone(), keys).unwrap(), 3);
        assert_eq!(change.states(), &states, "states and order kept");
        let (imported, created, _) = change.finish();
        assert_eq!(created.len(), 3);

        let mut again = KeyChange::new(imported.clone());
        let same_keys = stand_ins(&states);
        assert_eq!(again.import(states, same_keys).unwrap(), 0);
        assert!(again.is_empty());

        let (other_states, other_keys) = exported();
        let mut mixed = KeyChange::new(imported);
        let error = mixed
            .import(other_states, other_keys)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("already holds other signing keys"),
            "{error}"
        );
    }

    /// Stand-ins for keys already imported: only their kids matter.
    fn stand_ins(states: &KeyStates) -> Vec<NewKey> {
        states
            .keys
            .iter()
            .map(|record| NewKey {
                record: record.clone(),
                pem: PrivateKeyPem::new(Vec::new()),
            })
            .collect()
    }
}
