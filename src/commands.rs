//! One function per command of the command line. Each prints what it did on
//! stdout; failures come back as errors for `main` to print as one line.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::app::{App, token_lifetime};
use crate::auth::keys::{KeyAlgName, KeyDir, KeyRecord, KeyState, ROTATION_PICKUP_MARGIN_MS};
use crate::auth::keyset::{HELD_SLACK_MS, KeySet};
use crate::auth::password::Passwords;
use crate::auth::tokens::{self, Expectations, RejectReason};
use crate::cli::{Command, KeysCommand, SessionsCommand, TokenCommand, UsersCommand};
use crate::config::{Config, redact_url};
use crate::domain::{Password, Role, SessionId, Username, now_ms, rfc3339};
use crate::store::{NewUser, Store, StoreError, User};

pub async fn run(
    command: Option<Command>,
    rotate_key: bool,
    config: Config,
) -> anyhow::Result<ExitCode> {
    if rotate_key {
        rotate_keys(&config, None)?;
        return Ok(ExitCode::SUCCESS);
    }
    match command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await?,
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied to {}", redact_url(&config.database_url));
        }
        Command::Keys(command) => keys(&config, command).await?,
        Command::Users(command) => users(&config, command).await?,
        Command::Sessions(SessionsCommand::Revoke { user }) => {
            let store = open_store(&config).await?;
            let user = find_user(&store, &user).await?;
            let revoked = store.revoke_user_sessions(&user.id, None).await?;
            println!("revoked {} session(s) of {}", revoked.len(), user.username);
        }
        Command::Token(TokenCommand::Inspect { jwt }) => return inspect_token(&config, &jwt).await,
        Command::Probe(args) => {
            let password = read_password(args.password_stdin, false)?;
            return crate::probe::run(args, password).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    for warning in config.browser_warnings() {
        tracing::warn!("{warning}");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let app = App::build(config).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        database = app.store.backend().name(),
        active_kid = %app.keys.current().signing().kid,
        "tollgate is serving"
    );
    reload_keys_on_hangup(app.clone())?;
    crate::server::run(listener, app.clone(), shutdown_signal()).await?;
    app.store.close().await;
    Ok(())
}

/// SIGHUP re-reads the keys directory at once (it is also polled).
fn reload_keys_on_hangup(app: std::sync::Arc<App>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("cannot install a SIGHUP handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match app.keys.reload().await {
                Ok(()) => tracing::info!(
                    active_kid = %app.keys.current().signing().kid,
                    "SIGHUP: reloaded the signing keys"
                ),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "SIGHUP: cannot reload the signing keys")
                }
            }
        }
    });
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(store)
}

async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let dir = KeyDir::open(&config.keys_dir)?;
    match command {
        KeysCommand::Generate { alg } => {
            if dir.generate_if_empty(alg.into(), now_ms())? {
                println!(
                    "created an active and a next {} key in {}",
                    KeyAlgName::from(alg).as_str(),
                    dir.path().display()
                );
            } else {
                println!(
                    "keys already exist in {}; nothing to do",
                    dir.path().display()
                );
            }
            print_keys(&dir.records()?);
        }
        KeysCommand::Rotate { alg } => rotate_keys(config, alg.map(Into::into))?,
        KeysCommand::List => print_keys(&dir.records()?),
        KeysCommand::Prune => {
            // A key retired longer ago than a token lives carries no live
            // token; a serving gateway may have declared a longer lifetime.
            let lifetime = dir.token_lifetime_ms(token_lifetime(config).as_millis() as i64)?;
            let pruned = dir.prune(now_ms(), lifetime)?;
            let live_since = now_ms() - lifetime - ROTATION_PICKUP_MARGIN_MS;
            println!("pruned {} key(s){}", pruned.len(), list_suffix(&pruned));
            match Store::connect(&config.database_url).await {
                Ok(store) => {
                    store.migrate().await?;
                    let forgotten = store
                        .delete_recorded_keys(live_since, HELD_SLACK_MS)
                        .await?;
                    println!("forgot {forgotten} recorded public key(s) in the database");
                }
                Err(error) => println!("warning: {error:#}; recorded public keys left as they are"),
            }
        }
    }
    Ok(())
}

fn rotate_keys(config: &Config, alg: Option<KeyAlgName>) -> anyhow::Result<()> {
    let dir = KeyDir::open(&config.keys_dir)?;
    let records = dir.rotate(alg, now_ms())?;
    println!("rotated the keys in {}", dir.path().display());
    print_keys(&records);
    Ok(())
}

fn list_suffix(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(": {}", items.join(", "))
    }
}

fn print_keys(records: &[KeyRecord]) {
    for key in records {
        let state = match (key.state, key.retired_at) {
            (KeyState::Next, _) => "next".to_string(),
            (KeyState::Active, _) => "active".to_string(),
            (KeyState::Retired, Some(at)) => format!("retired since {}", rfc3339(at)),
            (KeyState::Retired, None) => "retired".to_string(),
        };
        println!(
            "{}  {:<5}  created {}  {}",
            key.kid,
            key.alg.as_str(),
            rfc3339(key.created_at),
            state
        );
    }
}

async fn users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        UsersCommand::Add {
            username,
            roles,
            password_stdin,
        } => {
            let username =
                Username::parse(&username).map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
            let roles = roles
                .iter()
                .map(|role| Role::parse(role).map(|role| role.as_str().to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!(e))?;
            let password = read_password(password_stdin, true)?;
            let password_hash = Passwords::new(1)?.hash(&password).await?;
            let user = store
                .create_user(NewUser {
                    username: &username,
                    password_hash,
                    roles,
                    now: now_ms(),
                })
                .await
                .map_err(|error| match error {
                    StoreError::Conflict => anyhow::anyhow!("username {username} is taken"),
                    other => other.into(),
                })?;
            println!("created user {} ({})", user.username, user.id);
        }
        UsersCommand::SetPassword {
            username,
            password_stdin,
        } => {
            let user = find_user(&store, &username).await?;
            let password = read_password(password_stdin, true)?;
            let password_hash = Passwords::new(1)?.hash(&password).await?;
            let revoked = store
                .change_password(&user.id, &password_hash, None)
                .await?;
            println!(
                "changed the password of {}; revoked {} session(s)",
                user.username,
                revoked.len()
            );
        }
        UsersCommand::Disable { username } => {
            let user = find_user(&store, &username).await?;
            let revoked = store.set_disabled(&user.id, true, now_ms()).await?;
            println!(
                "disabled {}; revoked {} session(s)",
                user.username,
                revoked.len()
            );
        }
        UsersCommand::Enable { username } => {
            let user = find_user(&store, &username).await?;
            store.set_disabled(&user.id, false, now_ms()).await?;
            println!("enabled {}", user.username);
        }
        UsersCommand::List => {
            println!(
                "{:<32}  {:<24}  {:<8}  created",
                "username", "roles", "disabled"
            );
            for user in store.list_users().await? {
                println!(
                    "{:<32}  {:<24}  {:<8}  {}",
                    user.username,
                    if user.roles.is_empty() {
                        "-".to_string()
                    } else {
                        user.roles.join(",")
                    },
                    if user.disabled { "yes" } else { "no" },
                    rfc3339(user.created_at)
                );
            }
        }
    }
    Ok(())
}

async fn find_user(store: &Store, username: &str) -> anyhow::Result<User> {
    let parsed = Username::parse(username).map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
    store
        .user_by_username(&parsed)
        .await?
        .with_context(|| format!("no user named {username}"))
}

/// One line from stdin, or a prompt without echo on a terminal (twice when
/// setting a password, so that a typo does not lock the user out).
fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<Password> {
    let raw = if !from_stdin && std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        if confirm {
            let again =
                rpassword::prompt_password("Again: ").context("cannot read the password")?;
            if first != again {
                bail!("the passwords do not match");
            }
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    Password::parse(raw).map_err(|e| anyhow::anyhow!("invalid password: {e}"))
}

/// Prints a token's header and claims and whether it is valid here: against
/// the local keys and those recorded in the database, and (when the database
/// answers) whether its session is still live.
async fn inspect_token(config: &Config, token: &str) -> anyhow::Result<ExitCode> {
    let token = token.trim();
    let Some((header, claims)) = tokens::decode_unverified(token) else {
        println!(
            "invalid: {} ({})",
            RejectReason::Malformed.as_str(),
            RejectReason::Malformed.description()
        );
        return Ok(ExitCode::FAILURE);
    };
    println!("header: {}", serde_json::to_string_pretty(&header)?);
    println!("claims: {}", serde_json::to_string_pretty(&claims)?);
    if let Some(exp) = claims.get("exp").and_then(|exp| exp.as_i64()) {
        println!("expires: {}", rfc3339(exp.saturating_mul(1000)));
    }

    let dir = KeyDir::open(&config.keys_dir)?;
    let local = dir.load()?;
    let lifetime = token_lifetime(config);
    let store = match Store::connect(&config.database_url).await {
        Ok(store) => Some(store),
        Err(error) => {
            println!("warning: {error:#}; checking against the local keys only");
            None
        }
    };
    let recorded = match &store {
        Some(store) => store
            .recorded_keys(now_ms() - lifetime.as_millis() as i64, HELD_SLACK_MS)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let keys = KeySet::build(&local, &recorded, now_ms(), lifetime.as_millis() as i64)?;
    let expect = Expectations {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
    };
    let verdict = match tokens::verify(&keys, token, &expect, now_ms() / 1000) {
        Ok(claims) => match &store {
            Some(store) => match store
                .live_session(&SessionId(claims.sid.clone()), now_ms())
                .await
            {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(RejectReason::Revoked),
                Err(error) => {
                    println!("warning: cannot check the session: {error}");
                    Ok(())
                }
            },
            None => Ok(()),
        },
        Err(reason) => Err(reason),
    };
    match verdict {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            println!("invalid: {} ({})", reason.as_str(), reason.description());
            Ok(ExitCode::FAILURE)
        }
    }
}
