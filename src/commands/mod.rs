//! One function per command of the command line. Each prints what it did on
//! stdout; failures come back as errors for `main` to print as one line.
//! `serve` itself lives beside the server.

mod audit;
mod keys;
mod probe;
mod token;
mod users;

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::audit::Event;
use crate::cli::{Command, SessionsCommand, TokenCommand};
use crate::config::{Config, redact_url};
use crate::domain::Password;
use crate::store::{AuditAction, Store};

pub async fn run(
    command: Option<Command>,
    rotate_key: bool,
    config: Config,
) -> anyhow::Result<ExitCode> {
    if rotate_key {
        keys::rotate(&config, None).await?;
        return Ok(ExitCode::SUCCESS);
    }
    match command.unwrap_or(Command::Serve) {
        Command::Serve => crate::server::serve(config).await?,
        Command::Migrate => {
            open_store(&config).await?;
            println!("migrations applied to {}", redact_url(&config.database_url));
        }
        Command::Keys(command) => keys::run(&config, command).await?,
        Command::Users(command) => users::run(&config, command).await?,
        Command::Sessions(SessionsCommand::Revoke { user }) => {
            let store = open_store(&config).await?;
            let user = users::find(&store, &user).await?;
            let revoked = store.revoke_user_sessions(&user.id, None).await?;
            let event = Event::new(AuditAction::SessionRevoked).on(&user.id);
            audit::record(&store, event).await;
            println!("revoked {} session(s) of {}", revoked.len(), user.username);
        }
        Command::Token(TokenCommand::Inspect { jwt }) => {
            return token::inspect(&config, &jwt).await;
        }
        Command::Probe(args) => {
            let password = read_password(args.password_stdin, false)?;
            return probe::run(args, password).await;
        }
        Command::Audit(args) => audit::run(&config, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The database, migrated.
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(store)
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
