//! Password-reset tokens: made like refresh tokens (256 random bits,
//! URL-safe; only their SHA-256 is stored, a plain hash being enough for a
//! token of full entropy), valid for [`RESET_TOKEN_LIFETIME`], used once.

use std::time::Duration;

use super::refresh;
use crate::domain::Secret;

/// How long a reset link works.
pub const RESET_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A new reset token and the hash to store for it.
pub fn new_reset_token() -> (Secret, String) {
    refresh::new_refresh_token()
}

/// The stored form of a reset token: SHA-256, hex.
pub fn hash_reset_token(token: &str) -> String {
    refresh::hash_refresh_token(token)
}

/// A string that cannot be one of our reset tokens is refused before any
/// database work.
pub fn is_plausible(token: &str) -> bool {
    refresh::is_plausible(token)
}
