//! `tollgate token inspect`: why a token is, or is not, accepted here.

use std::process::ExitCode;

use crate::app::{open_key_store, token_lifetime};
use crate::auth::keyset::{HELD_SLACK, KeySet};
use crate::auth::tokens::{self, Expectations, RejectReason};
use crate::config::{Config, KeyStoreConfig};
use crate::store::Store;
use crate::time::{UnixMillis, UnixSeconds};

/// Prints a token's header and claims and whether it is valid here: against
/// the key store's keys and those recorded in the database, and (when the
/// database answers) whether its session is still live. The database key
/// store needs the database; the keys directory does not.
pub async fn inspect(config: &Config, token: &str) -> anyhow::Result<ExitCode> {
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
        println!("expires: {}", UnixSeconds::new(exp).to_millis());
    }

    let lifetime = token_lifetime(config);
    let store = match Store::connect(&config.database_url).await {
        Ok(store) => Some(store),
        Err(error) if matches!(config.key_store, KeyStoreConfig::Dir) => {
            println!("warning: {error:#}; checking against the local keys only");
            None
        }
        Err(error) => return Err(error),
    };
    let (_, local) = open_key_store(config, store.as_ref())?.load().await?;
    let now = UnixMillis::now();
    let recorded = match &store {
        Some(store) => store
            .recorded_keys(now.minus(lifetime), HELD_SLACK)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let keys = KeySet::build(&local, &recorded, now, lifetime)?;
    let expect = Expectations {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
    };
    let verdict = match tokens::verify(&keys, token, &expect, now.to_seconds()) {
        Ok((_, claims)) => match &store {
            Some(store) => match store.live_session(&claims.sid, now).await {
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
