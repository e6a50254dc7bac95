//! `tollgate audit`: the audit trail, newest first, as a table or as JSON
//! lines; and how the other commands write to it.

use std::collections::HashMap;

use prometheus_client::metrics::counter::Counter;

use super::{open_store, users};
use crate::audit::{AuditTrail, AuditView, Event, Origin};
use crate::cli::AuditArgs;
use crate::config::Config;
use crate::domain::UserId;
use crate::store::{AuditActor, AuditEntry, AuditQuery, Backend, Store};
use crate::time::UnixMillis;

/// Rows read from the database at a time.
const PAGE: u32 = 500;

pub async fn run(config: &Config, args: AuditArgs) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let user = match &args.user {
        Some(username) => Some(users::find(&store, username).await?.id),
        None => None,
    };
    let since = args.since.map(|since| UnixMillis::now().minus(since));
    let mut names = Names::default();
    if !args.json {
        println!(
            "{:<24}  {:<24}  {:<9}  {:<36}  {:<36}  {:<39}  request_id",
            "time", "action", "outcome", "actor", "target", "ip"
        );
    }
    let mut before_id = None;
    loop {
        let page = store
            .audit_entries(AuditQuery {
                user: user.as_ref(),
                since,
                before_id,
                limit: PAGE,
            })
            .await?;
        let full = page.len() == PAGE as usize;
        before_id = page.last().map(|entry| entry.id);
        for entry in page {
            if args.json {
                println!("{}", serde_json::to_string(&AuditView::from(entry))?);
            } else {
                print_row(&store, &mut names, entry).await?;
            }
        }
        if !full {
            return Ok(());
        }
    }
}

async fn print_row(store: &Store, names: &mut Names, entry: AuditEntry) -> anyhow::Result<()> {
    let actor = names.show(store, entry.actor.as_deref()).await?;
    let target = names.show(store, entry.target.as_deref()).await?;
    println!(
        "{:<24}  {:<24}  {:<9}  {:<36}  {:<36}  {:<39}  {}",
        entry.time.rfc3339_millis(),
        entry.action,
        entry.outcome,
        actor,
        target,
        entry.ip.as_deref().unwrap_or("-"),
        entry.request_id.as_deref().unwrap_or("-"),
    );
    Ok(())
}

/// Usernames of the user ids in the trail, looked up once each: a table is
/// read by people. A key id, `cli`, or the id of a user who is gone is shown
/// as it is.
#[derive(Default)]
struct Names(HashMap<String, String>);

impl Names {
    async fn show(&mut self, store: &Store, stored: Option<&str>) -> anyhow::Result<String> {
        let Some(stored) = stored else {
            return Ok("-".to_string());
        };
        if let Some(name) = self.0.get(stored) {
            return Ok(name.clone());
        }
        let name = match UserId::parse(stored) {
            Ok(id) if stored != AuditActor::CLI => match store.user_by_id(&id).await? {
                Some(user) => user.username.to_string(),
                None => stored.to_string(),
            },
            _ => stored.to_string(),
        };
        self.0.insert(stored.to_string(), name.clone());
        Ok(name)
    }
}

/// The trail as the command line writes it: by `cli`, from no address. A
/// write that fails is logged (a warning on stderr) and never fails the
/// command, like a request's.
pub async fn record(store: &Store, event: Event) {
    AuditTrail::new(store.clone(), Counter::default())
        .record(&Origin::default(), event.by_cli())
        .await;
}

/// Records the events of a command that may not have needed the database
/// (keys in a keys directory): the trail lives there, so it is opened for
/// this, but never created (an SQLite file that does not exist has no trail
/// yet). A database that cannot be opened leaves the events unrecorded, with
/// a warning, and the command succeeds.
pub async fn record_beside(config: &Config, store: Option<&Store>, events: Vec<Event>) {
    if events.is_empty() {
        return;
    }
    let opened;
    let store = match store {
        Some(store) => store,
        None => match open_existing(config).await {
            Ok(store) => {
                opened = store;
                &opened
            }
            Err(error) => {
                eprintln!("warning: the audit trail was not written: {error:#}");
                return;
            }
        },
    };
    for event in events {
        record(store, event).await;
    }
}

/// The configured database, migrated, if it exists.
async fn open_existing(config: &Config) -> anyhow::Result<Store> {
    let url = &config.database_url;
    let url = match Backend::from_url(url)? {
        Backend::Sqlite if !url.contains("mode=") => {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}mode=rw")
        }
        _ => url.clone(),
    };
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    Ok(store)
}
