//! Password hashing with argon2id, off the async threads. A semaphore sized to
//! the cores bounds concurrent hashes so a login flood queues instead of
//! starving the proxy path; unknown users get a dummy verify so their timing
//! matches that of a wrong password.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::domain::Password;

/// OWASP's recommended argon2id parameters: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19_456;
const ITERATIONS: u32 = 2;
const PARALLELISM: u32 = 1;

/// How long a request waits for a hashing slot before it is turned away:
/// a flood of logins or registrations queues, but never without bound.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HashingError {
    /// Every hashing slot stayed taken for [`QUEUE_TIMEOUT`].
    #[error("too many password checks are waiting")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    Valid {
        /// A hash of the same password with the current parameters, when the
        /// stored one used others.
        rehashed: Option<String>,
    },
    Invalid,
}

pub struct Passwords {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    /// Verified against when the user does not exist.
    dummy_hash: String,
}

impl Passwords {
    pub fn new(max_concurrent: usize) -> anyhow::Result<Passwords> {
        let dummy_hash = hash_now(b"tollgate dummy password for unknown users")?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            dummy_hash,
        })
    }

    /// Sized to the machine: one hash per core.
    pub fn for_this_machine() -> anyhow::Result<Passwords> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Passwords::new(cores)
    }

    /// Requests waiting for a hashing slot.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub async fn hash(&self, password: &Password) -> Result<String, HashingError> {
        let password = password.clone();
        self.run_bounded(move || hash_now(password.expose().as_bytes()))
            .await
    }

    /// Checks `password` against `stored`, or against the dummy hash when
    /// there is no user, so both take the same time.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verification, HashingError> {
        let password = password.clone();
        let (stored, is_dummy) = match stored {
            Some(stored) => (stored.to_string(), false),
            None => (self.dummy_hash.clone(), true),
        };
        self.run_bounded(move || {
            let verification = verify_now(password.expose().as_bytes(), &stored)?;
            Ok(if is_dummy {
                Verification::Invalid
            } else {
                verification
            })
        })
        .await
    }

    /// Runs `work` on the blocking pool once a hashing slot is free, waiting
    /// at most [`QUEUE_TIMEOUT`] for one.
    async fn run_bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, HashingError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit =
            tokio::time::timeout(QUEUE_TIMEOUT, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let permit = match permit {
            Err(_) => return Err(HashingError::Busy),
            Ok(permit) => permit.context("the password hasher is shut down")?,
        };
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            yield_to_requests();
            work()
        })
        .await
        .context("password hashing task failed")?;
        Ok(result?)
    }
}

/// The nice value of a thread that hashes passwords.
const HASHING_NICE: i32 = 10;

/// Lowers this (blocking-pool) thread's scheduling priority: a login flood
/// gets the cores the proxied requests leave, rather than taking them from
/// the data plane. Linux keeps a nice value per thread; where it cannot be
/// set, hashing runs at the normal priority.
fn yield_to_requests() {
    let _ = rustix::process::setpriority_process(None, HASHING_NICE);
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("the argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &[u8]) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = hasher()
        .hash_password(password, &salt)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
    Ok(hash.to_string())
}

fn verify_now(password: &[u8], stored: &str) -> anyhow::Result<Verification> {
    let parsed =
        PasswordHash::new(stored).map_err(|e| anyhow::anyhow!("stored password hash: {e}"))?;
    // Verify with the parameters the hash was made with.
    if Argon2::default()
        .verify_password(password, &parsed)
        .is_err()
    {
        return Ok(Verification::Invalid);
    }
    let rehashed = if uses_current_parameters(&parsed) {
        None
    } else {
        Some(hash_now(password)?)
    };
    Ok(Verification::Valid { rehashed })
}

fn uses_current_parameters(hash: &PasswordHash<'_>) -> bool {
    if hash.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    match Params::try_from(hash) {
        Ok(params) => {
            params.m_cost() == MEMORY_KIB
                && params.t_cost() == ITERATIONS
                && params.p_cost() == PARALLELISM
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(raw: &str) -> Password {
        Password::parse(raw.to_string()).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(2).unwrap();
        let hash = passwords.hash(&password("correct horse")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            passwords
                .verify(&password("correct horse"), Some(&hash))
                .await
                .unwrap(),
            Verification::Valid { rehashed: None }
        );
        assert_eq!(
            passwords
                .verify(&password("wrong horse"), Some(&hash))
                .await
                .unwrap(),
            Verification::Invalid
        );
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let passwords = Passwords::new(1).unwrap();
        let any = password("tollgate dummy password for unknown users");
        assert_eq!(
            passwords.verify(&any, None).await.unwrap(),
            Verification::Invalid
        );
    }

    #[tokio::test]
    async fn old_parameters_are_rehashed_on_verify() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        );
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let old = weak
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let passwords = Passwords::new(1).unwrap();
        let Verification::Valid {
            rehashed: Some(new),
        } = passwords
            .verify(&password("correct horse"), Some(&old))
            .await
            .unwrap()
        else {
            panic!("expected a re-hash");
        };
        assert!(new.contains("m=19456,t=2,p=1"));
        assert_eq!(
            passwords
                .verify(&password("correct horse"), Some(&new))
                .await
                .unwrap(),
            Verification::Valid { rehashed: None }
        );
    }
}
