//! `tollgate keys …` and `--rotate-key`: the signing keys of the key store
//! (`--key-store`: the keys directory or the database), and the public
//! halves recorded in the database.

use std::path::PathBuf;

use anyhow::bail;

use super::{audit, open_store};
use crate::app::{open_key_store, token_lifetime};
use crate::audit::Event;
use crate::auth::keydir::KeyDir;
use crate::auth::keyset::HELD_SLACK;
use crate::auth::keystore::{KeyAlg, KeyRecord, KeyState, KeyStore, ROTATION_PICKUP_MARGIN};
use crate::cli::KeysCommand;
use crate::config::{Config, KeyStoreConfig};
use crate::store::{AuditAction, Store};
use crate::time::UnixMillis;

pub async fn run(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    if let KeysCommand::Import { dir } = command {
        return import(config, dir).await;
    }
    let (keys, store) = key_store(config).await?;
    match command {
        KeysCommand::Generate { alg } => {
            let generated = keys.generate_if_empty(alg, UnixMillis::now()).await?;
            let records = keys.records().await?;
            if generated {
                println!(
                    "created an active and a next {} key in {keys}",
                    alg.as_str()
                );
                let events = records
                    .iter()
                    .map(|key| Event::new(AuditAction::KeyGenerated).on_key(&key.kid))
                    .collect();
                audit::record_beside(config, store.as_ref(), events).await;
            } else {
                println!("keys already exist in {keys}; nothing to do");
            }
            print_keys(&records);
        }
        KeysCommand::Rotate { alg } => rotate_in(config, &keys, store.as_ref(), alg).await?,
        KeysCommand::List => print_keys(&keys.records().await?),
        KeysCommand::Prune => {
            // A key retired longer ago than a token lives carries no live
            // token; a serving gateway may have declared a longer lifetime.
            let lifetime = keys.token_lifetime(token_lifetime(config)).await?;
            let now = UnixMillis::now();
            let pruned = keys.prune(now, lifetime).await?;
            let live_since = now.minus(lifetime + ROTATION_PICKUP_MARGIN);
            println!("pruned {} key(s){}", pruned.len(), list_suffix(&pruned));
            let store = match store {
                Some(store) => Ok(store),
                None => open_store(config).await,
            };
            let events = pruned
                .iter()
                .map(|kid| Event::new(AuditAction::KeyPruned).on_key(kid))
                .collect();
            audit::record_beside(config, store.as_ref().ok(), events).await;
            match store {
                Ok(store) => {
                    let forgotten = store.delete_recorded_keys(live_since, HELD_SLACK).await?;
                    println!("forgot {forgotten} recorded public key(s) in the database");
                }
                Err(error) => println!("warning: {error:#}; recorded public keys left as they are"),
            }
        }
        KeysCommand::Import { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// `next` becomes `active`, `active` retires, a new `next` is made.
pub async fn rotate(config: &Config, alg: Option<KeyAlg>) -> anyhow::Result<()> {
    let (keys, store) = key_store(config).await?;
    rotate_in(config, &keys, store.as_ref(), alg).await
}

async fn rotate_in(
    config: &Config,
    keys: &KeyStore,
    store: Option<&Store>,
    alg: Option<KeyAlg>,
) -> anyhow::Result<()> {
    let records = keys.rotate(alg, UnixMillis::now()).await?;
    let events = records
        .iter()
        .filter(|key| key.state == KeyState::Active)
        .map(|key| Event::new(AuditAction::KeyRotated).on_key(&key.kid))
        .collect();
    audit::record_beside(config, store, events).await;
    match keys {
        KeyStore::Dir(_) => println!("rotated the keys in {keys}"),
        KeyStore::Database(_) => println!(
            "rotated the keys in the database: every instance signs with the new active key \
             within 10 s (at once on SIGHUP)"
        ),
    }
    print_keys(&records);
    Ok(())
}

/// The configured key store, and the database when it needed one.
async fn key_store(config: &Config) -> anyhow::Result<(KeyStore, Option<Store>)> {
    let store = match config.key_store {
        KeyStoreConfig::Database(_) => Some(open_store(config).await?),
        KeyStoreConfig::Dir => None,
    };
    Ok((open_key_store(config, store.as_ref())?, store))
}

/// `keys import [DIR]`: the directory's keys, states included, into the
/// database key store, which must hold no others. The directory is only
/// read.
async fn import(config: &Config, dir: Option<PathBuf>) -> anyhow::Result<()> {
    if let KeyStoreConfig::Dir = config.key_store {
        bail!(
            "keys import moves a keys directory into the database: run it with --key-store \
             database and TOLLGATE_KEY_ENCRYPTION_KEY"
        );
    }
    let path = dir.unwrap_or_else(|| config.keys_dir.clone());
    let source = KeyDir::open_existing(&path)?;
    let (keys, _store) = key_store(config).await?;
    let imported = keys.import(&source).await?;
    if imported == 0 {
        println!(
            "the keys of {} are in the database already; nothing to do",
            path.display()
        );
    } else {
        println!(
            "imported {imported} key(s) from {} into the database, states included; the \
             directory is left as it was: delete it once every instance runs with --key-store \
             database",
            path.display()
        );
    }
    print_keys(&keys.records().await?);
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
