//! Refresh tokens: opaque, 256 random bits, URL-safe. Only their SHA-256 is
//! stored, so a database leak yields no usable token; a plain hash suffices
//! because the token has full entropy.
//!
//! When a token is spent, its successor is also stored sealed under a key
//! derived from the spent token (a different hash of it than the stored one),
//! so that presenting the spent token again within the reuse grace can be
//! answered with the very same successor: a session never has two live
//! refresh tokens, and nobody holding only the database can read it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::seal::{SealError, SealingKey};
use crate::domain::Secret;

/// Binds a sealed successor to its purpose.
const SUCCESSOR_CONTEXT: &[u8] = b"tollgate refresh successor";

/// A new refresh token and the hash to store for it.
pub fn new_refresh_token() -> (Secret, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (Secret::new(token), hash)
}

/// The stored form of a refresh token: SHA-256, hex.
pub fn hash_refresh_token(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

/// A string that cannot be one of our refresh tokens is refused before any
/// database work.
pub fn is_plausible(token: &str) -> bool {
    (32..=128).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Seals `successor` so that only a holder of `spent` can read it back.
pub fn seal_successor(spent: &str, successor: &Secret) -> Result<String, SealError> {
    successor_key(spent).seal(successor.expose().as_bytes(), SUCCESSOR_CONTEXT)
}

/// The successor sealed by [`seal_successor`] for `spent`.
pub fn open_successor(spent: &str, sealed: &str) -> Result<Secret, SealError> {
    let bytes = successor_key(spent).open(sealed, SUCCESSOR_CONTEXT)?;
    String::from_utf8(bytes)
        .map(Secret::new)
        .map_err(|_| SealError::Malformed)
}

fn successor_key(spent: &str) -> SealingKey {
    let mut hasher = Sha256::new();
    hasher.update(b"tollgate successor key\0");
    hasher.update(spent.as_bytes());
    SealingKey::new(&hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_distinct() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(is_plausible(a.expose()));
        assert_eq!(hash_a, hash_refresh_token(a.expose()));
        assert_eq!(hash_a.len(), 64);
    }

    #[test]
    fn a_successor_opens_only_with_the_spent_token() {
        let (spent, _) = new_refresh_token();
        let (successor, _) = new_refresh_token();
        let sealed = seal_successor(spent.expose(), &successor).unwrap();
        assert_eq!(open_successor(spent.expose(), &sealed).unwrap(), successor);
        let (other, _) = new_refresh_token();
        assert!(open_successor(other.expose(), &sealed).is_err());
    }
}
