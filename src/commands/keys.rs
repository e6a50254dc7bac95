//! `tollgate keys …` and `--rotate-key`: the signing keys of the keys
//! directory, and the public halves recorded in the database.

use anyhow::bail;

use crate::app::token_lifetime;
use crate::auth::keydir::{KeyAlg, KeyDir, KeyRecord, KeyState, ROTATION_PICKUP_MARGIN};
use crate::auth::keyset::HELD_SLACK;
use crate::cli::KeysCommand;
use crate::config::Config;
use crate::store::Store;
use crate::time::UnixMillis;

pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let dir = KeyDir::open(&config.keys_dir)?;
    match command {
        KeysCommand::Generate { alg } => {
            if dir.generate_if_empty(alg, UnixMillis::now())? {
                println!(
                    "created an active and a next {} key in {}",
                    alg.as_str(),
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
        KeysCommand::Rotate { alg } => rotate(config, alg).await?,
        KeysCommand::List => print_keys(&dir.records()?),
        KeysCommand::Prune => {
            // A key retired longer ago than a token lives carries no live
            // token; a serving gateway may have declared a longer lifetime.
            let lifetime = dir.token_lifetime(token_lifetime(config))?;
            let now = UnixMillis::now();
            let pruned = dir.prune(now, lifetime)?;
            let live_since = now.minus(lifetime + ROTATION_PICKUP_MARGIN);
            println!("pruned {} key(s){}", pruned.len(), list_suffix(&pruned));
            match Store::connect(&config.database_url).await {
                Ok(store) => {
                    store.migrate().await?;
                    let forgotten = store.delete_recorded_keys(live_since, HELD_SLACK).await?;
                    println!("forgot {forgotten} recorded public key(s) in the database");
                }
                Err(error) => println!("warning: {error:#}; recorded public keys left as they are"),
            }
        }
        KeysCommand::Import { .. } => bail!("keys import needs --key-store database"),
    }
    Ok(())
}

/// `next` becomes `active`, `active` retires, a new `next` is made.
pub async fn rotate(config: &Config, alg: Option<KeyAlg>) -> anyhow::Result<()> {
    let dir = KeyDir::open(&config.keys_dir)?;
    let records = dir.rotate(alg, UnixMillis::now())?;
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
            (KeyState::Retired, Some(at)) => format!("retired since {at}"),
            (KeyState::Retired, None) => "retired".to_string(),
        };
        println!(
            "{}  {:<5}  created {}  {}",
            key.kid,
            key.alg.as_str(),
            key.created_at,
            state
        );
    }
}
