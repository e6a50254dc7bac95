//! `tollgate users …`: accounts from the command line.

use anyhow::Context;

use super::{audit, open_store, read_password};
use crate::audit::Event;
use crate::auth::password::Passwords;
use crate::cli::UsersCommand;
use crate::config::Config;
use crate::domain::{Email, Role, Roles, Username};
use crate::store::{AuditAction, NewUser, Store, StoreError, User};
use crate::time::UnixMillis;

pub async fn run(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        UsersCommand::Add {
            username,
            roles,
            email,
            password_stdin,
        } => {
            let username =
                Username::parse(&username).map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
            let email = email.as_deref().map(parse_email).transpose()?;
            let roles = roles
                .iter()
                .map(|role| Role::parse(role))
                .collect::<Result<Vec<_>, _>>()
                .map_err(anyhow::Error::msg)?;
            let password = read_password(password_stdin, true)?;
            let password_hash = Passwords::new(1)?.hash(&password).await?;
            let user = store
                .create_user(NewUser {
                    username: &username,
                    email: email.as_ref(),
                    password_hash,
                    roles: Roles::new(roles),
                    now: UnixMillis::now(),
                })
                .await
                .map_err(|error| match error {
                    StoreError::Conflict => anyhow::anyhow!("username {username} is taken"),
                    StoreError::EmailTaken => email_taken(email.as_ref()),
                    other => other.into(),
                })?;
            audit::record(&store, Event::new(AuditAction::UserAdded).on(&user.id)).await;
            println!("created user {} ({})", user.username, user.id);
        }
        UsersCommand::SetPassword {
            username,
            password_stdin,
        } => {
            let user = find(&store, &username).await?;
            let password = read_password(password_stdin, true)?;
            let password_hash = Passwords::new(1)?.hash(&password).await?;
            let revoked = store
                .change_password(&user.id, &password_hash, None)
                .await?;
            let event = Event::new(AuditAction::PasswordChanged).on(&user.id);
            audit::record(&store, event).await;
            println!(
                "changed the password of {}; revoked {} session(s)",
                user.username,
                revoked.len()
            );
        }
        UsersCommand::Disable { username } => {
            let user = find(&store, &username).await?;
            let revoked = store
                .set_disabled(&user.id, true, UnixMillis::now())
                .await?;
            audit::record(&store, Event::new(AuditAction::UserDisabled).on(&user.id)).await;
            println!(
                "disabled {}; revoked {} session(s)",
                user.username,
                revoked.len()
            );
        }
        UsersCommand::Enable { username } => {
            let user = find(&store, &username).await?;
            store
                .set_disabled(&user.id, false, UnixMillis::now())
                .await?;
            audit::record(&store, Event::new(AuditAction::UserEnabled).on(&user.id)).await;
            println!("enabled {}", user.username);
        }
        UsersCommand::SetEmail { username, email } => {
            let user = find(&store, &username).await?;
            let email = parse_email(&email)?;
            store
                .set_email(&user.id, Some(&email))
                .await
                .map_err(|error| match error {
                    StoreError::EmailTaken => email_taken(Some(&email)),
                    other => other.into(),
                })?;
            println!("set the email of {} to {email}", user.username);
        }
        UsersCommand::List => {
            println!(
                "{:<32}  {:<24}  {:<8}  {:<20}  email",
                "username", "roles", "disabled", "created"
            );
            for user in store.list_users().await? {
                println!(
                    "{:<32}  {:<24}  {:<8}  {:<20}  {}",
                    user.username,
                    if user.roles.is_empty() {
                        "-".to_string()
                    } else {
                        user.roles.joined()
                    },
                    if user.is_disabled() { "yes" } else { "no" },
                    user.created_at.to_string(),
                    user.email.as_ref().map_or("-", Email::as_str),
                );
            }
        }
    }
    Ok(())
}

pub async fn find(store: &Store, username: &str) -> anyhow::Result<User> {
    let parsed = Username::parse(username).map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
    store
        .user_by_username(&parsed)
        .await?
        .with_context(|| format!("no user named {username}"))
}

fn parse_email(raw: &str) -> anyhow::Result<Email> {
    Email::parse(raw).map_err(anyhow::Error::msg)
}

fn email_taken(email: Option<&Email>) -> anyhow::Error {
    match email {
        Some(email) => anyhow::anyhow!("the email address {email} belongs to another user"),
        None => anyhow::anyhow!("the email address belongs to another user"),
    }
}
