//! The keys directory: one PKCS#8 PEM file per private key (mode 0600) and
//! `keys.json`, the record of each key's state. A key is `next` (published,
//! not yet signing), `active` (signing; exactly one) or `retired` (published
//! and verifying until no unexpired token can carry it).
//!
//! Every change happens under an exclusive lock on `.lock`, and the record is
//! replaced atomically, so instances and CLI commands sharing a directory
//! never see half a rotation.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

const RECORD_FILE: &str = "keys.json";
/// A gateway may go on signing with a key this long after it was retired,
/// until it notices the rotation (it checks every two seconds).
pub const ROTATION_PICKUP_MARGIN: Duration = Duration::from_secs(60);
const LOCK_FILE: &str = ".lock";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Next,
    Active,
    Retired,
}

/// One entry of `keys.json`.
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

#[derive(Default, Serialize, Deserialize)]
struct Record {
    keys: Vec<KeyRecord>,
    /// The longest a token signed with these keys can be accepted (access
    /// TTL plus leeway), in milliseconds, the most any gateway serving them
    /// has declared: pruning waits this long after a retirement, whatever the
    /// pruning command's own flags say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_lifetime_ms: Option<u64>,
}

impl Record {
    fn declared_lifetime(&self) -> Duration {
        Duration::from_millis(self.token_lifetime_ms.unwrap_or(0))
    }
}

/// A key read from the directory: its record, its private half for signing
/// and its public half as a JWK.
pub struct LocalKey {
    pub record: KeyRecord,
    pub encoding: EncodingKey,
    pub public_jwk: Jwk,
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

pub struct KeyDir {
    path: PathBuf,
}

/// Held while the directory is being read or changed.
struct DirLock(#[allow(dead_code)] File);

impl KeyDir {
    /// Opens the directory, creating it (mode 0700) if missing.
    pub fn open(path: &Path) -> anyhow::Result<KeyDir> {
        if !path.exists() {
            fs::create_dir_all(path)
                .with_context(|| format!("cannot create keys directory {}", path.display()))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict keys directory {}", path.display()))?;
        }
        if !path.is_dir() {
            bail!("keys directory {} is not a directory", path.display());
        }
        Ok(KeyDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes whenever the keys record is replaced: its modification time
    /// and size (zero when there is none).
    pub fn fingerprint(&self) -> (Option<std::time::SystemTime>, u64) {
        match fs::metadata(self.path.join(RECORD_FILE)) {
            Ok(metadata) => (metadata.modified().ok(), metadata.len()),
            Err(_) => (None, 0),
        }
    }

    fn lock(&self) -> anyhow::Result<DirLock> {
        let lock_path = self.path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", lock_path.display()))?;
        Ok(DirLock(file))
    }

    /// The recorded keys, oldest first, without reading private keys.
    pub fn records(&self) -> anyhow::Result<Vec<KeyRecord>> {
        let _lock = self.lock()?;
        Ok(self.read_record()?.keys)
    }

    /// Creates an active and a next key when the directory has none.
    /// Returns whether it created them.
    pub fn generate_if_empty(&self, alg: KeyAlg, now: UnixMillis) -> anyhow::Result<bool> {
        let _lock = self.lock()?;
        let mut record = self.read_record()?;
        if !record.keys.is_empty() {
            return Ok(false);
        }
        for state in [KeyState::Active, KeyState::Next] {
            record.keys.push(self.create_key(alg, state, now)?);
        }
        self.write_record(&record)?;
        Ok(true)
    }

    /// Reads every key with its private half.
    pub fn load(&self) -> anyhow::Result<Vec<LocalKey>> {
        let _lock = self.lock()?;
        let record = self.read_record()?;
        validate(&record.keys)?;
        record
            .keys
            .into_iter()
            .map(|entry| {
                let (encoding, public_jwk) = self.read_private_key(&entry)?;
                Ok(LocalKey {
                    record: entry,
                    encoding,
                    public_jwk,
                })
            })
            .collect()
    }

    /// `next` becomes `active`, `active` becomes `retired`, and a new `next`
    /// key is created (of `alg`, or of the promoted key's algorithm).
    /// Returns the new records.
    pub fn rotate(&self, alg: Option<KeyAlg>, now: UnixMillis) -> anyhow::Result<Vec<KeyRecord>> {
        let _lock = self.lock()?;
        let mut record = self.read_record()?;
        if record.keys.is_empty() {
            bail!(
                "no keys in {} to rotate: run `tollgate keys generate` first",
                self.path.display()
            );
        }
        validate(&record.keys)?;
        let next_alg = {
            let next = record
                .keys
                .iter()
                .find(|key| key.state == KeyState::Next)
                .context("the keys record has no next key to promote")?;
            alg.unwrap_or(next.alg)
        };
        for key in &mut record.keys {
            match key.state {
                KeyState::Active => {
                    key.state = KeyState::Retired;
                    key.retired_at = Some(now);
                }
                KeyState::Next => key.state = KeyState::Active,
                KeyState::Retired => {}
            }
        }
        record
            .keys
            .push(self.create_key(next_alg, KeyState::Next, now)?);
        self.write_record(&record)?;
        Ok(record.keys)
    }

    /// Records that a gateway serves these keys with tokens accepted for up
    /// to `token_lifetime`.
    pub fn declare_token_lifetime(&self, token_lifetime: Duration) -> anyhow::Result<()> {
        let lifetime_ms = token_lifetime.as_millis() as u64;
        let _lock = self.lock()?;
        let mut record = self.read_record()?;
        if record
            .token_lifetime_ms
            .is_some_and(|declared| declared >= lifetime_ms)
        {
            return Ok(());
        }
        record.token_lifetime_ms = Some(lifetime_ms);
        self.write_record(&record)
    }

    /// The longest a token can be accepted: `token_lifetime` or what a
    /// serving gateway declared, whichever is longer.
    pub fn token_lifetime(&self, token_lifetime: Duration) -> anyhow::Result<Duration> {
        let _lock = self.lock()?;
        Ok(self.read_record()?.declared_lifetime().max(token_lifetime))
    }

    /// Deletes the retired keys that no unexpired token can carry at `now`:
    /// retired longer ago than the token lifetime (at least the declared
    /// one), plus the time gateways take to notice a rotation. Returns
    /// their kids.
    pub fn prune(&self, now: UnixMillis, token_lifetime: Duration) -> anyhow::Result<Vec<String>> {
        let _lock = self.lock()?;
        let mut record = self.read_record()?;
        let lifetime = record.declared_lifetime().max(token_lifetime);
        let retired_before = now.minus(lifetime + ROTATION_PICKUP_MARGIN);
        let (pruned, kept): (Vec<_>, Vec<_>) = record.keys.into_iter().partition(|key| {
            key.state == KeyState::Retired && key.retired_at.is_some_and(|at| at < retired_before)
        });
        record.keys = kept;
        self.write_record(&record)?;
        for key in &pruned {
            let pem = self.pem_path(&key.kid);
            fs::remove_file(&pem).with_context(|| format!("cannot delete {}", pem.display()))?;
        }
        Ok(pruned.into_iter().map(|key| key.kid).collect())
    }

    fn pem_path(&self, kid: &str) -> PathBuf {
        self.path.join(format!("{kid}.pem"))
    }

    fn read_record(&self) -> anyhow::Result<Record> {
        let path = self.path.join(RECORD_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("cannot parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces the record atomically: write beside it, sync, rename.
    fn write_record(&self, record: &Record) -> anyhow::Result<()> {
        let path = self.path.join(RECORD_FILE);
        let temporary = self.path.join(format!("{RECORD_FILE}.tmp"));
        let mut bytes = serde_json::to_vec_pretty(record).expect("the keys record serializes");
        bytes.push(b'\n');
        write_synced(&temporary, &bytes, 0o644)?;
        fs::rename(&temporary, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        sync_dir(&self.path)
    }

    /// Generates a key pair and writes its private half; returns its record.
    fn create_key(
        &self,
        alg: KeyAlg,
        state: KeyState,
        now: UnixMillis,
    ) -> anyhow::Result<KeyRecord> {
        let der = generate_pkcs8(alg)?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
        let (_, public_jwk) = parse_private_key(alg, pem.as_bytes())?;
        let kid = kid_of(&public_jwk)?;
        write_synced(&self.pem_path(&kid), pem.as_bytes(), 0o600)?;
        Ok(KeyRecord {
            kid,
            alg,
            created_at: now,
            state,
            retired_at: None,
        })
    }

    fn read_private_key(&self, entry: &KeyRecord) -> anyhow::Result<(EncodingKey, Jwk)> {
        let path = self.pem_path(&entry.kid);
        let metadata =
            fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "private key file is readable by other users; chmod 600 it"
            );
        }
        let pem = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (encoding, mut jwk) = parse_private_key(entry.alg, &pem).with_context(|| {
            format!(
                "{} is not a valid {} key",
                path.display(),
                entry.alg.as_str()
            )
        })?;
        jwk.common.key_id = Some(entry.kid.clone());
        Ok((encoding, jwk))
    }
}

/// Exactly one active key and at most one next key.
fn validate(keys: &[KeyRecord]) -> anyhow::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let count = |state| keys.iter().filter(|key| key.state == state).count();
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

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: i64) -> UnixMillis {
        UnixMillis::new(ms)
    }

    #[test]
    fn every_algorithm_generates_a_loadable_key() {
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
            let der = generate_pkcs8(alg).unwrap();
            let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
            let (_, jwk) = parse_private_key(alg, pem.as_bytes()).unwrap();
            assert_eq!(kid_of(&jwk).unwrap().len(), 22, "{alg:?}");
        }
    }

    #[test]
    fn generate_is_idempotent_and_rotation_promotes_next() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open(dir.path()).unwrap();
        assert!(keys.generate_if_empty(KeyAlg::EdDSA, ms(1_000)).unwrap());
        assert!(!keys.generate_if_empty(KeyAlg::EdDSA, ms(2_000)).unwrap());
        let before = keys.records().unwrap();
        assert_eq!(before.len(), 2);
        let next = before
            .iter()
            .find(|k| k.state == KeyState::Next)
            .unwrap()
            .kid
            .clone();
        let active = before
            .iter()
            .find(|k| k.state == KeyState::Active)
            .unwrap()
            .kid
            .clone();

        let after = keys.rotate(None, ms(3_000)).unwrap();
        let state_of = |kid: &str| after.iter().find(|k| k.kid == kid).unwrap().state;
        assert_eq!(state_of(&next), KeyState::Active);
        assert_eq!(state_of(&active), KeyState::Retired);
        assert_eq!(
            after.iter().filter(|k| k.state == KeyState::Next).count(),
            1
        );
        assert_eq!(keys.load().unwrap().len(), 3);

        let mode = fs::metadata(keys.pem_path(&next))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let lifetime = Duration::from_secs(1);
        let first_prunable = ms(3_000)
            .plus(lifetime + ROTATION_PICKUP_MARGIN)
            .plus(Duration::from_millis(1));
        assert!(
            keys.prune(ms(first_prunable.get() - 1), lifetime)
                .unwrap()
                .is_empty()
        );
        keys.declare_token_lifetime(Duration::from_secs(5)).unwrap();
        assert!(
            keys.prune(first_prunable, lifetime).unwrap().is_empty(),
            "a longer declared lifetime wins over the caller's"
        );
        assert_eq!(
            keys.prune(first_prunable.plus(Duration::from_secs(4)), lifetime)
                .unwrap(),
            vec![active.clone()]
        );
        assert!(!keys.pem_path(&active).exists());
        assert_eq!(keys.load().unwrap().len(), 2);
    }

    #[test]
    fn rotation_without_keys_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open(dir.path()).unwrap();
        let error = keys.rotate(None, ms(1)).unwrap_err().to_string();
        assert!(error.contains("keys generate"), "{error}");
    }
}
