//! Accounts: usernames and email addresses are unique without regard to
//! case.

use tracing::instrument;

use super::{Store, StoreError, StoreResult};
use crate::domain::{Email, Roles, Secret, SessionId, UserId, Username};
use crate::time::UnixMillis;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    #[sqlx(try_from = "String")]
    pub roles: Roles,
    /// The argon2 PHC string: a hash, but still never logged.
    #[sqlx(try_from = "String")]
    pub password_hash: Secret,
    pub disabled_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    /// Where password-reset mail goes.
    pub email: Option<Email>,
    /// When the user last started a session (login or registration).
    pub last_login_at: Option<UnixMillis>,
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

pub struct NewUser<'a> {
    pub username: &'a Username,
    pub email: Option<&'a Email>,
    pub password_hash: String,
    pub roles: Roles,
    pub now: UnixMillis,
}

const USER_COLUMNS: &str =
    "id, username, roles, password_hash, disabled_at, created_at, email, last_login_at";

/// One page of [`Store::search_users`].
pub struct UserQuery<'a> {
    /// Only users whose username or email contains this, in any case.
    pub contains: Option<&'a str>,
    /// Only users whose lowercased username sorts after this (the cursor).
    pub after: Option<&'a str>,
    pub limit: u32,
}

impl Store {
    /// Creates a user; [`StoreError::Conflict`] when the username (in any
    /// case) is taken, [`StoreError::EmailTaken`] when the email is.
    #[instrument(level = "debug", skip_all)]
    pub async fn create_user(&self, new: NewUser<'_>) -> StoreResult<User> {
        self.bounded(async {
            let user = User {
                id: UserId::new_random(),
                username: new.username.clone(),
                roles: new.roles,
                password_hash: Secret::new(new.password_hash),
                disabled_at: None,
                created_at: new.now,
                email: new.email.cloned(),
                last_login_at: None,
            };
            sqlx::query(
                "INSERT INTO users \
                 (id, username, username_key, password_hash, roles, created_at, email, email_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&user.id)
            .bind(&user.username)
            .bind(user.username.key())
            .bind(user.password_hash.expose())
            .bind(user.roles.joined())
            .bind(user.created_at)
            .bind(user.email.as_ref())
            .bind(user.email.as_ref().map(Email::key))
            .execute(&self.pool)
            .await?;
            Ok(user)
        })
        .await
    }

    #[instrument(level = "debug", skip_all)]
    pub async fn user_by_username(&self, username: &Username) -> StoreResult<Option<User>> {
        self.bounded(async {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = $1");
            Ok(sqlx::query_as(&sql)
                .bind(username.key())
                .fetch_optional(&self.pool)
                .await?)
        })
        .await
    }

    #[instrument(level = "debug", skip_all)]
    pub async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        self.bounded(async {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email_key = $1");
            Ok(sqlx::query_as(&sql)
                .bind(email.key())
                .fetch_optional(&self.pool)
                .await?)
        })
        .await
    }

    #[instrument(level = "debug", skip_all)]
    pub async fn user_by_id(&self, id: &UserId) -> StoreResult<Option<User>> {
        self.bounded(async {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
            Ok(sqlx::query_as(&sql)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
        })
        .await
    }

    #[instrument(level = "debug", skip_all)]
    pub async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.bounded(async {
            let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username_key");
            Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
        })
        .await
    }

    /// One page of users in username order, optionally only those whose
    /// username or email contains a text.
    #[instrument(level = "debug", skip_all)]
    pub async fn search_users(&self, query: UserQuery<'_>) -> StoreResult<Vec<User>> {
        self.bounded(async {
            let pattern = query
                .contains
                .map(|text| format!("%{}%", escape_like(&text.to_lowercase())));
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users \
                 WHERE ($1 IS NULL OR username_key LIKE $1 ESCAPE '\\' OR email_key LIKE $1 ESCAPE '\\') \
                 AND ($2 IS NULL OR username_key > $2) \
                 ORDER BY username_key LIMIT $3"
            );
            Ok(sqlx::query_as(&sql)
                .bind(pattern)
                .bind(query.after)
                .bind(i64::from(query.limit))
                .fetch_all(&self.pool)
                .await?)
        })
        .await
    }

    /// Records (or with `None`, forgets) a user's email address;
    /// [`StoreError::EmailTaken`] when another user has it.
    #[instrument(level = "debug", skip_all)]
    pub async fn set_email(&self, id: &UserId, email: Option<&Email>) -> StoreResult<()> {
        self.bounded(async {
            sqlx::query("UPDATE users SET email = $1, email_key = $2 WHERE id = $3")
                .bind(email)
                .bind(email.map(Email::key))
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Stores a re-hash of the same password (new argon2 parameters); the
    /// user's sessions are untouched.
    #[instrument(level = "debug", skip_all)]
    pub async fn update_password_hash(&self, id: &UserId, password_hash: &str) -> StoreResult<()> {
        self.bounded(async {
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(password_hash)
                .bind(id)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    /// Sets a new password and revokes the user's sessions, all but `keep`,
    /// in one transaction. Returns the revoked session ids.
    #[instrument(level = "debug", skip_all)]
    pub async fn change_password(
        &self,
        id: &UserId,
        password_hash: &str,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let updated = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(password_hash)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::Query(sqlx::Error::RowNotFound));
            }
            let revoked = self.revoke_user_sessions_in(&mut tx, id, keep).await?;
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }

    /// Disables or enables a user. Disabling revokes every session of theirs;
    /// returns the revoked session ids.
    #[instrument(level = "debug", skip_all)]
    pub async fn set_disabled(
        &self,
        id: &UserId,
        disabled: bool,
        now: UnixMillis,
    ) -> StoreResult<Vec<SessionId>> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            sqlx::query("UPDATE users SET disabled_at = $1 WHERE id = $2")
                .bind(disabled.then_some(now))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let revoked = if disabled {
                self.revoke_user_sessions_in(&mut tx, id, None).await?
            } else {
                Vec::new()
            };
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }
}

/// `text` with the `LIKE` wildcards (and the escape character) escaped, so a
/// search for `a_b` finds only `a_b`.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
