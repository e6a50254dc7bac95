//! Values parsed at the edge (HTTP bodies, CLI arguments, database rows) so the
//! core never re-validates strings. Secrets redact themselves in `Debug`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A user's id: a UUID in text form, made only by [`UserId::new_random`] or
/// by parsing.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct UserId(String);

/// A session's id: a UUID in text form. One login is one session; every
/// refresh token and access token it yields carries it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct SessionId(String);

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        impl $name {
            pub fn new_random() -> Self {
                $name(uuid::Uuid::new_v4().to_string())
            }

            /// Accepts a UUID in any of its text forms, kept in the
            /// hyphenated lower-case form every id is stored in.
            pub fn parse(raw: &str) -> Result<Self, String> {
                uuid::Uuid::try_parse(raw)
                    .map(|uuid| $name(uuid.hyphenated().to_string()))
                    .map_err(|_| format!("{} must be a UUID", $what))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

uuid_id!(UserId, "a user id");
uuid_id!(SessionId, "a session id");

/// A username: 1 to 64 characters of `A-Z a-z 0-9 . _ @ -`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(try_from = "String", into = "String")]
#[sqlx(transparent)]
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
}

impl TryFrom<String> for Username {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Username::parse(&raw)
    }
}

impl From<Username> for String {
    fn from(username: Username) -> String {
        username.0
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
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
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

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Role::parse(&raw)
    }
}

impl From<Role> for String {
    fn from(role: Role) -> String {
        role.0
    }
}

/// A user's roles, stored comma-separated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Roles(Vec<Role>);

impl Roles {
    pub fn new(roles: Vec<Role>) -> Roles {
        Roles(roles)
    }

    pub fn contains(&self, role: &Role) -> bool {
        self.0.contains(role)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Role> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `a,b,c`: how roles are stored and sent in `X-Auth-Roles`.
    pub fn joined(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(Role::as_str).collect();
        names.join(",")
    }
}

/// Read back from the database, where roles were validated on the way in;
/// an unreadable one is dropped rather than failing the whole user.
impl From<String> for Roles {
    fn from(joined: String) -> Roles {
        Roles(
            joined
                .split(',')
                .filter_map(|role| Role::parse(role).ok())
                .collect(),
        )
    }
}

/// An email address: one `@` with something on either side, no spaces or
/// control characters, at most 254 bytes (RFC 5321). Compared without regard
/// to case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(try_from = "String", into = "String")]
#[sqlx(transparent)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let invalid = || "email must be an address like name@example.com".to_string();
        if raw.is_empty() || raw.len() > Self::MAX_LEN {
            return Err(invalid());
        }
        let (local, domain) = raw.rsplit_once('@').ok_or_else(invalid)?;
        let well_formed = !local.is_empty()
            && local.len() <= 64
            && !domain.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
            && !local.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(c, '@' | '<' | '>' | ',' | ';' | '"' | '\\')
            });
        if !well_formed {
            return Err(invalid());
        }
        Ok(Email(raw.to_string()))
    }

    /// The form used for uniqueness and lookup: addresses ignore case.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, String> {
        Email::parse(&raw)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> String {
        email.0
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

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
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
    fn ids_are_uuids() {
        let id = SessionId::new_random();
        assert_eq!(SessionId::parse(id.as_str()).unwrap(), id);
        assert_eq!(
            UserId::parse("6553CB73-4E83-4E5A-B25B-283F3EE92A8E")
                .unwrap()
                .as_str(),
            "6553cb73-4e83-4e5a-b25b-283f3ee92a8e"
        );
        assert!(SessionId::parse("../etc").is_err());
        assert!(UserId::parse("").is_err());
    }

    #[test]
    fn emails_are_plausible_addresses() {
        assert!(Email::parse("alice@example.com").is_ok());
        assert_eq!(
            Email::parse("Alice@Example.COM").unwrap().key(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a b@example.com",
            "alice@exa mple.com",
            "alice@.example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_cannot_carry_commas() {
        assert!(Role::parse("admin").is_ok());
        assert!(Role::parse("a,b").is_err());
        assert!(Role::parse("").is_err());
    }
}
