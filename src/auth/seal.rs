//! Sealing small secrets at rest with AES-256-GCM (aws-lc-rs): a random
//! 96-bit nonce per seal, the nonce and ciphertext together in one URL-safe
//! base64 string. Used for refresh-token successors and, with the database
//! key store, for private signing keys.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The length of a sealing key in bytes.
pub const KEY_LEN: usize = 32;

/// An AES-256-GCM key. Its `Debug` shows nothing of it.
pub struct SealingKey(LessSafeKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    /// Wrong key, or the sealed value was altered.
    #[error("the sealed value does not open with this key")]
    WrongKey,
    #[error("cannot seal: {0}")]
    Crypto(&'static str),
}

impl SealingKey {
    pub fn new(key: &[u8; KEY_LEN]) -> SealingKey {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key suits AES-256");
        SealingKey(LessSafeKey::new(unbound))
    }

    /// Seals `plaintext`; `context` is bound to it (it must be given again to
    /// open it), so a value sealed for one purpose cannot be passed off as
    /// another.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Crypto("no randomness"))?;
        let mut in_out = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut in_out,
            )
            .map_err(|_| SealError::Crypto("sealing failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<Vec<u8>, SealError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| SealError::Malformed)?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .0
            .open_in_place(nonce, Aad::from(context), &mut in_out)
            .map_err(|_| SealError::WrongKey)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SealingKey::new(&[7; KEY_LEN]);
        let sealed = key.seal(b"secret", b"purpose").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(key.open(&sealed, b"purpose").unwrap(), b"secret");
        assert_eq!(
            key.open(&sealed, b"other purpose"),
            Err(SealError::WrongKey)
        );
        let other = SealingKey::new(&[8; KEY_LEN]);
        assert_eq!(other.open(&sealed, b"purpose"), Err(SealError::WrongKey));
        assert_eq!(
            key.open("not base64!", b"purpose"),
            Err(SealError::Malformed)
        );
        assert_ne!(
            key.seal(b"secret", b"purpose").unwrap(),
            sealed,
            "a fresh nonce every time"
        );
    }
}
