//! The only place that speaks SQL. One `Store` serves Postgres and SQLite
//! through sqlx's `Any` driver, chosen by the `DATABASE_URL` scheme at run
//! time; the few differences between the two live in [`Backend`].
//!
//! Every operation is bounded in time: a database that stops answering makes
//! callers fail with [`StoreError::Unavailable`] instead of hanging.
//!
//! Every operation is a debug-level span, so an exported trace shows a
//! request's database calls. Their arguments are never recorded: some are
//! token and password hashes.

mod audit;
mod backend;
mod keys;
mod resets;
mod sessions;
mod throttle;
mod users;

use std::future::Future;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Transaction};
use sqlx::{AnyConnection, AnyPool};
use tracing::instrument;

use crate::runtime::ControlPlane;
use crate::time::UnixMillis;

pub use audit::{AuditAction, AuditActor, AuditEntry, AuditOutcome, AuditQuery, AuditRecord};
pub use backend::Backend;
pub use keys::{RecordedKey, SealedKey, SealedKeys};
pub use resets::{CompletedReset, NewReset};
pub use sessions::{NewSession, Presented, Rotation, SessionFate, SessionInfo, SessionOwner};
pub use throttle::{Admission, Budget, Charge, Held, Settlement};
pub use users::{NewUser, User, UserQuery};

/// How long one store operation may take, queueing for a connection included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time. The request
    /// may be retried later; nothing was half-written.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint refused the write.
    #[error("conflicting row")]
    Conflict,
    /// Another user already has that email address.
    #[error("the email address belongs to another user")]
    EmailTaken,
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(error.to_string())
            }
            E::Protocol(_) => StoreError::Unavailable(error.to_string()),
            // The one unique index that is not a primary key or a username.
            E::Database(db) if db.is_unique_violation() && db.message().contains("email_key") => {
                StoreError::EmailTaken
            }
            E::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            E::Database(db) if backend::is_transient(db.code().as_deref()) => {
                StoreError::Unavailable(error.to_string())
            }
            _ => StoreError::Query(error),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Held while migrating: see [`Backend::migration_lock_file`].
    migration_lock: Option<PathBuf>,
    /// Where the pool's sockets are driven (see `runtime`).
    control: ControlPlane,
}

impl Store {
    /// Connects (creating an SQLite file if missing) without migrating.
    pub async fn connect(database_url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(database_url)?;
        let url = backend.connect_url(database_url);
        backend.create_private_file(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(backend.max_connections())
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .after_connect(move |conn, _meta| {
                Box::pin(async move { backend.prepare_connection(conn).await })
            })
            .connect(&url)
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            // The pool only says it gave up; one direct attempt says why
            // (connection refused, unknown host, bad password...).
            Err(sqlx::Error::PoolTimedOut) => {
                let cause = match <AnyConnection as sqlx::Connection>::connect(&url).await {
                    Err(error) => error.to_string(),
                    Ok(_) => "no connection within the timeout".to_string(),
                };
                anyhow::bail!("cannot connect to the database: {cause}")
            }
            Err(error) => anyhow::bail!("cannot connect to the database: {error}"),
        };
        Ok(Store {
            pool,
            backend,
            migration_lock: backend.migration_lock_file(&url),
            control: ControlPlane::current(),
        })
    }

    /// Applies pending migrations. Safe when several instances start at once:
    /// Postgres serialises them with an advisory lock, an SQLite file with an
    /// exclusive lock on the file beside it.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let _lock = match &self.migration_lock {
            Some(path) => Some(lock_exclusively(path.clone()).await?),
            None => None,
        };
        self.backend
            .migrator()
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot apply database migrations: {e}"))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The runtime whose reactor drives the pool's connections: a caller on
    /// a data-plane worker runs its queries there.
    pub fn control(&self) -> &ControlPlane {
        &self.control
    }

    /// One round trip to the database; how long it took.
    #[instrument(level = "debug", skip_all)]
    pub async fn ping(&self) -> StoreResult<Duration> {
        self.bounded(async {
            let started = Instant::now();
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(started.elapsed())
        })
        .await
    }

    /// Stops handing out connections; in-flight queries finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether [`Store::close`] was called (it may still be waiting for
    /// in-flight queries): the background loops stop then, instead of
    /// failing against a closed pool until the process exits.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }

    /// Runs one store operation under the overall deadline.
    async fn bounded<T>(&self, operation: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {}s",
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Starts a write transaction: every write goes through one, run
    /// inside [`Store::bounded`] and committed at its end. SQLite takes its
    /// write lock up front so that two writers never deadlock upgrading a
    /// read lock.
    async fn begin_write(&self) -> StoreResult<WriteTx> {
        Ok(self.pool.begin_with(self.backend.begin_write_sql()).await?)
    }

    /// The database clock, so that times written by every instance (when a
    /// session was revoked, when a refresh token was spent) share one clock.
    async fn db_now(&self, conn: &mut AnyConnection) -> StoreResult<UnixMillis> {
        Ok(UnixMillis::new(
            sqlx::query_scalar(self.backend.now_ms_sql())
                .fetch_one(conn)
                .await?,
        ))
    }
}

type WriteTx = Transaction<'static, Any>;

/// Opens (creating it, readable by its owner only) and locks `path`
/// exclusively, waiting for another process that holds it. The lock goes
/// with the file when it is dropped, and with the process if it dies.
async fn lock_exclusively(path: PathBuf) -> anyhow::Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .and_then(|file| file.lock().map(|()| file));
        file.with_context(|| format!("cannot lock {} to migrate the database", path.display()))
    })
    .await
    .context("the migration lock's thread failed")?
}
