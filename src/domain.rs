//! Values parsed at the edge (HTTP bodies, CLI arguments, database rows) so the
//! core never re-validates strings. Secrets redact themselves in `Debug`.

use std::fmt;

use serde::Serialize;

/// A user's id: a UUID in text form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(pub String);

/// A session's id: a UUID in text form. One login is one session; every
/// refresh token and access token it yields carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl UserId {
    pub fn new_random() -> Self {
        UserId(uuid::Uuid::new_v4().to_string())
    }
}

impl SessionId {
    pub fn new_random() -> Self {
        SessionId(uuid::Uuid::new_v4().to_string())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A username: 1 to 64 characters of `A-Z a-z 0-9 . _ @ -`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(format!(
                "username must be 1 to {} characters",
                Self::MAX_LEN
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
        if !raw.chars().all(allowed) {
            return Err("username may only contain A-Z a-z 0-9 . _ @ -".to_string());
        }
        Ok(Username(raw.to_string()))
    }

    /// The form used for uniqueness and lookup: usernames ignore case.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For values read back from the database, which were validated on the way in.
    pub(crate) fn from_trusted(raw: String) -> Self {
        Username(raw)
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password as the user typed it: 8 to 1024 bytes. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub const MIN_BYTES: usize = 8;
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(raw: String) -> Result<Self, String> {
        if raw.len() < Self::MIN_BYTES || raw.len() > Self::MAX_BYTES {
            return Err(format!(
                "must be {} to {} bytes",
                Self::MIN_BYTES,
                Self::MAX_BYTES
            ));
        }
        Ok(Password(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A role name: 1 to 64 characters of `A-Z a-z 0-9 . _ : -` (no commas, since
/// roles travel comma-separated in `X-Auth-Roles`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role(String);

impl Role {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(allowed) {
            return Err(format!(
                "invalid role `{raw}`: use 1 to 64 characters of A-Z a-z 0-9 . _ : -"
            ));
        }
        Ok(Role(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque secret string (a refresh token, an access token) whose `Debug`
/// shows only that it is there.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Unix milliseconds as an RFC 3339 timestamp, to the second.
pub fn rfc3339(unix_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Milliseconds since the unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is after 1970");
    since_epoch.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_bounded_and_restricted() {
        assert!(Username::parse("alice.b_c@d-e").is_ok());
        assert!(Username::parse("").is_err());
        assert!(Username::parse(&"a".repeat(65)).is_err());
        assert!(Username::parse(&"a".repeat(64)).is_ok());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse("älice").is_err());
        assert_eq!(Username::parse("Alice").unwrap().key(), "alice");
    }

    #[test]
    fn passwords_are_bounded_in_bytes() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("x".repeat(1024)).is_ok());
        assert!(Password::parse("x".repeat(1025)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("hunter2hunter2".into()).unwrap()),
            "Password([redacted])"
        );
    }

    #[test]
    fn roles_cannot_carry_commas() {
        assert!(Role::parse("admin").is_ok());
        assert!(Role::parse("a,b").is_err());
        assert!(Role::parse("").is_err());
    }
}
