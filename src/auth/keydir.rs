//! The keys directory (`--key-store dir`): one PKCS#8 PEM file per private
//! key (mode 0600) and `keys.json`, the keys' states ([`KeyStates`]).
//!
//! Every change happens under an exclusive lock on `.lock`, and the record is
//! replaced atomically, so instances and CLI commands sharing a directory
//! never see half a rotation.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::keystore::{
    KeyAlg, KeyChange, KeyRecord, KeyStates, KeyVersion, LocalKey, NewKey, PrivateKeyPem,
};
use crate::time::UnixMillis;

const RECORD_FILE: &str = "keys.json";
const LOCK_FILE: &str = ".lock";

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
        KeyDir::open_existing(path)
    }

    /// Opens a directory that must already exist (one to read keys from).
    pub fn open_existing(path: &Path) -> anyhow::Result<KeyDir> {
        if !path.exists() {
            bail!("there is no keys directory {}", path.display());
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
    pub fn version(&self) -> KeyVersion {
        match fs::metadata(self.path.join(RECORD_FILE)) {
            Ok(metadata) => KeyVersion::File(metadata.modified().ok(), metadata.len()),
            Err(_) => KeyVersion::File(None, 0),
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

    /// Applies `change` under the lock: new private keys are written first,
    /// then the record, then the private keys no longer in it are deleted.
    pub fn update<T>(
        &self,
        mut change: impl FnMut(&mut KeyChange) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let _lock = self.lock()?;
        let mut draft = KeyChange::new(self.read_record()?);
        let outcome = change(&mut draft)?;
        if draft.is_empty() {
            return Ok(outcome);
        }
        let (states, created, removed) = draft.finish();
        for key in &created {
            write_synced(&self.pem_path(&key.record.kid), key.pem.expose(), 0o600)?;
        }
        self.write_record(&states)?;
        for key in &removed {
            let pem = self.pem_path(&key.kid);
            fs::remove_file(&pem).with_context(|| format!("cannot delete {}", pem.display()))?;
        }
        Ok(outcome)
    }

    /// The keys' states, without reading private keys.
    pub fn states(&self) -> anyhow::Result<KeyStates> {
        let _lock = self.lock()?;
        self.read_record()
    }

    /// The recorded keys, oldest first, without reading private keys.
    pub fn records(&self) -> anyhow::Result<Vec<KeyRecord>> {
        Ok(self.states()?.keys)
    }

    /// Creates an active and a next key when the directory has none.
    /// Returns whether it created them.
    pub fn generate_if_empty(&self, alg: KeyAlg, now: UnixMillis) -> anyhow::Result<bool> {
        self.update(|change| change.generate_if_empty(alg, now))
    }

    /// Rotates (see [`KeyChange::rotate`]); returns the new records.
    pub fn rotate(&self, alg: Option<KeyAlg>, now: UnixMillis) -> anyhow::Result<Vec<KeyRecord>> {
        self.update(|change| {
            change.rotate(alg, now)?;
            Ok(change.states().keys.clone())
        })
    }

    /// Prunes (see [`KeyChange::prune`]); returns the kids deleted.
    pub fn prune(&self, now: UnixMillis, token_lifetime: Duration) -> anyhow::Result<Vec<String>> {
        self.update(|change| Ok(change.prune(now, token_lifetime)))
    }

    pub fn declare_token_lifetime(&self, token_lifetime: Duration) -> anyhow::Result<()> {
        self.update(|change| {
            change.declare_token_lifetime(token_lifetime);
            Ok(())
        })
    }

    /// Reads every key with its private half.
    pub fn load(&self) -> anyhow::Result<Vec<LocalKey>> {
        let (states, keys) = self.export()?;
        debug_assert_eq!(states.keys.len(), keys.len());
        keys.into_iter()
            .map(|key| {
                let path = self.pem_path(&key.record.kid);
                LocalKey::parse(key.record, key.pem.expose(), &path.display().to_string())
            })
            .collect()
    }

    /// The states and every private key, checked, for another store to take
    /// over (`keys import`).
    pub fn export(&self) -> anyhow::Result<(KeyStates, Vec<NewKey>)> {
        let _lock = self.lock()?;
        let states = self.read_record()?;
        states.validate()?;
        let keys = states
            .keys
            .iter()
            .map(|record| {
                let pem = self.read_private_key(record)?;
                Ok(NewKey {
                    record: record.clone(),
                    pem,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((states, keys))
    }

    fn pem_path(&self, kid: &str) -> PathBuf {
        self.path.join(format!("{kid}.pem"))
    }

    fn read_record(&self) -> anyhow::Result<KeyStates> {
        let path = self.path.join(RECORD_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("cannot parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyStates::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Replaces the record atomically: write beside it, sync, rename.
    fn write_record(&self, states: &KeyStates) -> anyhow::Result<()> {
        let path = self.path.join(RECORD_FILE);
        let temporary = self.path.join(format!("{RECORD_FILE}.tmp"));
        let mut bytes = serde_json::to_vec_pretty(states).expect("the keys record serializes");
        bytes.push(b'\n');
        write_synced(&temporary, &bytes, 0o644)?;
        fs::rename(&temporary, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        sync_dir(&self.path)
    }

    /// A key's PEM file, checked to be a key of its algorithm.
    fn read_private_key(&self, record: &KeyRecord) -> anyhow::Result<PrivateKeyPem> {
        let path = self.pem_path(&record.kid);
        let metadata =
            fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "private key file is readable by other users; chmod 600 it"
            );
        }
        let pem = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        LocalKey::parse(record.clone(), &pem, &path.display().to_string())?;
        Ok(PrivateKeyPem::new(pem))
    }
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
    use crate::auth::keystore::{KeyState, ROTATION_PICKUP_MARGIN};

    fn ms(ms: i64) -> UnixMillis {
        UnixMillis::new(ms)
    }

    #[test]
    fn generate_is_idempotent_and_rotation_promotes_next() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open(dir.path()).unwrap();
        assert!(keys.generate_if_empty(KeyAlg::EdDSA, ms(1_000)).unwrap());
        let version = keys.version();
        assert!(!keys.generate_if_empty(KeyAlg::EdDSA, ms(2_000)).unwrap());
        assert_eq!(keys.version(), version, "nothing changed, nothing written");
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
    fn reading_a_missing_directory_never_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("keys");
        let error = KeyDir::open_existing(&missing).err().unwrap().to_string();
        assert!(error.contains("no keys directory"), "{error}");
        assert!(!missing.exists());
    }
}
