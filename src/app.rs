//! The gateway's shared state, built once at start and handed to every
//! request, and the background tasks that keep it fresh.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::audit::{AuditTrail, Event, Origin};
use crate::auth::Authenticator;
use crate::auth::cookies::CookiePolicy;
use crate::auth::keydb::DatabaseKeys;
use crate::auth::keydir::KeyDir;
use crate::auth::keyset::{KEY_HEARTBEAT_INTERVAL, Keys};
use crate::auth::keystore::{KeyAlg, KeyStore};
use crate::auth::password::Passwords;
use crate::auth::tokens::{Expectations, LEEWAY};
use crate::browser::BrowserRules;
use crate::client_addr::ClientAddressing;
use crate::config::{Config, KeyStoreConfig};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::password_reset::PasswordResets;
use crate::proxy::Proxy;
use crate::revocation::Revocations;
use crate::store::{AuditAction, Store};
use crate::throttle::{self, LoginThrottle};
use crate::time::UnixMillis;

/// How often sessions that can no longer matter are deleted.
const SESSION_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
/// How often login throttle counters whose window has passed are deleted.
const THROTTLE_CLEANUP_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// How often audit rows past `--audit-retention` and expired reset tokens
/// are deleted.
const ACCOUNTS_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);
/// How often the key store is checked for a rotation.
const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(2);

pub struct App {
    pub config: Config,
    pub client_addressing: ClientAddressing,
    pub store: Store,
    pub keys: Arc<Keys>,
    pub authenticator: Authenticator,
    pub passwords: Passwords,
    pub revocations: Arc<Revocations>,
    pub cookies: CookiePolicy,
    pub browser: BrowserRules,
    pub proxy: Proxy,
    pub throttle: LoginThrottle,
    pub metrics: Metrics,
    pub audit: AuditTrail,
    /// Set when mail is (`--smtp-url` or `--mail-webhook`).
    pub mailer: Option<Arc<Mailer>>,
    /// Set when mail is: password reset needs it.
    pub password_resets: Option<PasswordResets>,
    pub started_at: Instant,
    /// Becomes `true` when the gateway shuts down: connections finish their
    /// request and close, tunnels say goodbye.
    pub draining: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Connects and migrates the database, loads (or on an empty key store
    /// generates) the signing keys, and starts the background tasks, which
    /// stop when the returned `App` is dropped.
    pub async fn build(config: Config) -> anyhow::Result<Arc<App>> {
        let store = Store::connect(&config.database_url).await?;
        store.migrate().await?;

        let metrics = Metrics::new();
        let audit = AuditTrail::new(store.clone(), metrics.audit_write_failures.clone());

        let key_store = open_key_store(&config, Some(&store))?;
        if key_store
            .generate_if_empty(KeyAlg::EdDSA, UnixMillis::now())
            .await?
        {
            // By the gateway itself: no actor.
            for key in key_store.records().await? {
                let event = Event::new(AuditAction::KeyGenerated).on_key(&key.kid);
                audit.record(&Origin::default(), event).await;
            }
            match &key_store {
                KeyStore::Dir(dir) => tracing::warn!(
                    keys_dir = %dir.path().display(),
                    "generated a signing key just now: keep the keys directory on persistent \
                     storage, or every restart starts new keys"
                ),
                KeyStore::Database(_) => tracing::info!(
                    "generated the first signing keys, sealed in the database: every instance \
                     on this database signs with them"
                ),
            }
        }
        let token_lifetime = token_lifetime(&config);
        key_store.declare_token_lifetime(token_lifetime).await?;
        let keys = Arc::new(
            Keys::load(key_store, store.clone(), token_lifetime)
                .await
                .context("cannot load the signing keys")?,
        );

        // A token from an instance whose clock runs ahead lives up to one
        // leeway longer than our own: remember revocations that long too.
        let revocations = Arc::new(Revocations::new(token_lifetime + LEEWAY));
        revocations
            .poll(&store)
            .await
            .context("cannot read the revoked sessions")?;

        let expect = Expectations {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        };
        let mailer = Mailer::start(
            &config.mail,
            config.public_url.as_ref(),
            metrics.mail.clone(),
        )?
        .map(Arc::new);
        // The configuration refuses mail without a public URL.
        let password_resets =
            mailer
                .clone()
                .zip(config.public_url.clone())
                .map(|(mailer, public_url)| {
                    PasswordResets::start(store.clone(), mailer, audit.clone(), public_url)
                });
        let proxy = Proxy::new(
            &config.routes,
            config.upstream_timeout,
            config.max_body,
            config.upstream_max_connections,
            metrics.upstream_latency.clone(),
        )?;
        proxy.spawn_sweepers();
        let app = Arc::new(App {
            authenticator: Authenticator::new(
                keys.clone(),
                expect,
                revocations.clone(),
                config.token_cache_capacity,
            ),
            passwords: Passwords::for_this_machine()?,
            cookies: CookiePolicy::new(
                config.cookie_samesite,
                config.cookie_secure,
                config.access_ttl,
                config.refresh_ttl,
            ),
            browser: BrowserRules::new(
                config.cors_origins.clone(),
                config
                    .public_url
                    .as_ref()
                    .map(|url| url.origin().to_string()),
            ),
            client_addressing: ClientAddressing::new(
                config.trusted_proxies.clone(),
                config.client_ip_header.clone(),
            ),
            throttle: LoginThrottle::new(store.clone()),
            metrics,
            audit,
            mailer,
            password_resets,
            proxy,
            started_at: Instant::now(),
            draining: tokio::sync::watch::Sender::new(false),
            config,
            store,
            keys,
            revocations,
        });
        spawn_background_tasks(Arc::downgrade(&app));
        Ok(app)
    }
}

/// The key store `--key-store` names. The database one works on `store`,
/// which it then needs; the keys directory is created when missing, and
/// only when it is the key store.
pub fn open_key_store(config: &Config, store: Option<&Store>) -> anyhow::Result<KeyStore> {
    Ok(match (&config.key_store, store) {
        (KeyStoreConfig::Dir, _) => KeyDir::open(&config.keys_dir)?.into(),
        (KeyStoreConfig::Database(key), Some(store)) => {
            DatabaseKeys::new(store.clone(), key.sealing_key()).into()
        }
        (KeyStoreConfig::Database(_), None) => bail!("--key-store database needs the database"),
    })
}

/// The longest an access token can be accepted: its TTL plus the leeway.
pub fn token_lifetime(config: &Config) -> Duration {
    config.access_ttl + LEEWAY
}

fn spawn_background_tasks(app: Weak<App>) {
    Revocations::spawn_poller(app.clone(), |app: &App| (&app.revocations, &app.store));
    tokio::spawn(delete_finished_sessions(app.clone()));
    tokio::spawn(delete_old_throttle_counters(app.clone()));
    tokio::spawn(delete_old_account_records(app.clone()));
    // A rotation changes the key store's version (the keys record, or the
    // database's generation): check for one every couple of seconds, and
    // re-record the keys as held every minute.
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(KEY_CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heartbeat = Instant::now();
        loop {
            interval.tick().await;
            let Some(app) = still_running(&app) else {
                return;
            };
            let changed = app.keys.changed().await;
            if !changed && last_heartbeat.elapsed() < KEY_HEARTBEAT_INTERVAL {
                continue;
            }
            last_heartbeat = Instant::now();
            match app.keys.reload().await {
                Ok(()) if changed => tracing::info!(
                    active_kid = %app.keys.current().signing().kid,
                    "picked up new signing keys"
                ),
                Ok(()) => {}
                Err(_) if app.store.is_closed() => return,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot reload the signing keys")
                }
            }
        }
    });
}

/// The app, for one more round of a background loop: none once it is
/// dropped or its store closed (shutting down), so that no loop keeps
/// failing against a closed pool until the process exits.
fn still_running(app: &Weak<App>) -> Option<Arc<App>> {
    app.upgrade().filter(|app| !app.store.is_closed())
}

/// Every hour, deletes the sessions that can no longer matter: expired ones,
/// and revoked ones whose access tokens have all expired (the revocation
/// polls look back no further). Their refresh tokens go with them.
async fn delete_finished_sessions(app: Weak<App>) {
    let mut interval = tokio::time::interval(SESSION_CLEANUP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(app) = still_running(&app) else {
            return;
        };
        let now = UnixMillis::now();
        let revoked_before = now.minus(token_lifetime(&app.config) + SESSION_CLEANUP_INTERVAL);
        match app
            .store
            .delete_finished_sessions(now, revoked_before)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted finished sessions"),
            Err(_) if app.store.is_closed() => return,
            Err(error) => tracing::warn!(%error, "cannot delete finished sessions"),
        }
    }
}

/// Every 15 minutes (and at start), deletes the login throttle counters
/// whose window has passed: they can refuse nothing any more, and a flood of
/// made-up usernames would otherwise stay in the table.
async fn delete_old_throttle_counters(app: Weak<App>) {
    let mut interval = tokio::time::interval(THROTTLE_CLEANUP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(app) = still_running(&app) else {
            return;
        };
        match app
            .store
            .delete_old_throttle_counters(throttle::LONGEST_WINDOW)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted old login throttle counters"),
            Err(_) if app.store.is_closed() => return,
            Err(error) => tracing::warn!(%error, "cannot delete old login throttle counters"),
        }
    }
}

/// Every hour (and at start), deletes audit rows older than
/// `--audit-retention` and reset tokens that expired a day ago.
async fn delete_old_account_records(app: Weak<App>) {
    let mut interval = tokio::time::interval(ACCOUNTS_CLEANUP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(app) = still_running(&app) else {
            return;
        };
        let now = UnixMillis::now();
        match app
            .store
            .delete_audit_before(now.minus(app.config.audit_retention))
            .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted audit rows past the retention"),
            Err(_) if app.store.is_closed() => return,
            Err(error) => tracing::warn!(%error, "cannot delete old audit rows"),
        }
        // Expired tokens are refused by the confirmation itself; they are
        // kept a day longer, harmless (hashed, refused), so that the
        // cleanup never decides what the confirmation answers.
        let expired_before = now.minus(Duration::from_secs(86_400));
        match app
            .store
            .delete_expired_password_resets(expired_before)
            .await
        {
            Ok(_) => {}
            Err(_) if app.store.is_closed() => return,
            Err(error) => tracing::warn!(%error, "cannot delete expired password-reset tokens"),
        }
    }
}
