//! What differs between Postgres and SQLite: connection setup, migrations,
//! how a write transaction starts and how to read the database clock.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::AnyConnection;
use sqlx::Executor;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> anyhow::Result<Backend> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
        match scheme {
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "sqlite" => Ok(Backend::Sqlite),
            _ => anyhow::bail!("unsupported database URL: expected postgres://… or sqlite://…"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The embedded SQLite file is created when missing.
    pub(super) fn connect_url(self, url: &str) -> String {
        match self {
            Backend::Sqlite if !url.contains("mode=") => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}mode=rwc")
            }
            _ => url.to_string(),
        }
    }

    /// Creates the embedded SQLite file, readable by its owner only, before
    /// SQLite would create it with the umask's mode (usually 0644): it holds
    /// password hashes. SQLite gives the `-wal` and `-shm` files the mode of
    /// the database file. An existing file is left as it is.
    pub(super) fn create_private_file(self, connect_url: &str) -> anyhow::Result<()> {
        let Some(path) = (match self {
            Backend::Sqlite => sqlite_file_to_create(connect_url),
            Backend::Postgres => None,
        }) else {
            return Ok(());
        };
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(_) => Ok(()),
            // Another instance (or `tollgate migrate`) was first.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(anyhow::anyhow!(
                "cannot create the SQLite database {}: {error}",
                path.display()
            )),
        }
    }

    /// The file whose lock serialises migrations of an SQLite database:
    /// `<database file>.lock` beside it. SQLite's own locking does not: two
    /// processes migrating a new file at once each see no migrations table,
    /// and one of them fails. An in-memory database belongs to one process,
    /// and Postgres has sqlx's advisory lock.
    pub(super) fn migration_lock_file(self, connect_url: &str) -> Option<PathBuf> {
        match self {
            Backend::Sqlite => sqlite_file(connect_url).map(|file| {
                let mut lock = file.into_os_string();
                lock.push(".lock");
                PathBuf::from(lock)
            }),
            Backend::Postgres => None,
        }
    }

    pub(super) fn max_connections(self) -> u32 {
        match self {
            Backend::Postgres => 16,
            // One writer at a time anyway; a few readers alongside it.
            Backend::Sqlite => 4,
        }
    }

    pub(super) async fn prepare_connection(self, conn: &mut AnyConnection) -> sqlx::Result<()> {
        match self {
            // Server-side bound on every statement; the client-side bound is
            // `Store::bounded`. Lock waits are bounded too.
            Backend::Postgres => {
                conn.execute("SET statement_timeout = 5000; SET lock_timeout = 5000")
                    .await?;
            }
            // WAL lets readers run beside the writer; a writer waits up to 5 s
            // for the lock instead of failing at once.
            Backend::Sqlite => {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
                     PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL",
                )
                .await?;
            }
        }
        Ok(())
    }

    pub(super) fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        }
    }

    pub(super) fn begin_write_sql(self) -> &'static str {
        match self {
            Backend::Postgres => "BEGIN",
            Backend::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    /// The database clock in unix milliseconds, as an SQL expression.
    pub(super) fn now_ms_sql(self) -> &'static str {
        match self {
            Backend::Postgres => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            }
            Backend::Sqlite => "SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        }
    }
}

/// The file an SQLite URL (as [`Backend::connect_url`] made it) lets SQLite
/// create: read the way sqlx reads it, and `None` for in-memory databases,
/// SQLite `file:` URIs and the modes that never create (`ro`, `rw`).
fn sqlite_file_to_create(connect_url: &str) -> Option<PathBuf> {
    let (_, mode) = sqlite_database_and_mode(connect_url);
    if mode != Some("rwc") {
        return None;
    }
    sqlite_file(connect_url)
}

/// The database file of an SQLite URL, read the way sqlx reads it; `None`
/// for in-memory databases and SQLite `file:` URIs.
fn sqlite_file(connect_url: &str) -> Option<PathBuf> {
    let (database, mode) = sqlite_database_and_mode(connect_url);
    if mode == Some("memory")
        || database.is_empty()
        || database == ":memory:"
        || database.starts_with("file:")
    {
        return None;
    }
    let options = SqliteConnectOptions::from_str(connect_url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// The database part of an SQLite URL, and its `mode` (sqlx lets the last
/// one win).
fn sqlite_database_and_mode(connect_url: &str) -> (&str, Option<&str>) {
    let rest = connect_url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    let mode = params
        .split('&')
        .filter_map(|param| param.strip_prefix("mode="))
        .next_back();
    (database, mode)
}

/// Database error codes that mean "the database cannot serve you right now"
/// rather than "this query is wrong".
pub(super) fn is_transient(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    // SQLSTATEs are five characters; SQLite's (extended) codes are at most four digits.
    if let (true, Ok(sqlite_code)) = (code.len() < 5, code.parse::<i32>()) {
        // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes.
        return matches!(sqlite_code & 0xff, 5 | 6);
    }
    code.starts_with("08") // connection exception
        || matches!(code, "57014" | "57P01" | "57P02" | "57P03" | "53300" | "55P03")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(
            Backend::from_url("postgres://x/y").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://x/y").unwrap(),
            Backend::Postgres
        );
        assert_eq!(Backend::from_url("sqlite://t.db").unwrap(), Backend::Sqlite);
        assert!(Backend::from_url("mysql://x").is_err());
        assert!(Backend::from_url("nonsense").is_err());
    }

    #[test]
    fn sqlite_files_are_created_when_missing() {
        assert_eq!(
            Backend::Sqlite.connect_url("sqlite://t.db"),
            "sqlite://t.db?mode=rwc"
        );
        assert_eq!(
            Backend::Sqlite.connect_url("sqlite://t.db?mode=ro"),
            "sqlite://t.db?mode=ro"
        );
        assert_eq!(
            Backend::Postgres.connect_url("postgres://h/d"),
            "postgres://h/d"
        );
    }

    #[test]
    fn only_files_sqlite_may_create_are_created_ahead() {
        let file = |url: &str| sqlite_file_to_create(&Backend::Sqlite.connect_url(url));
        assert_eq!(file("sqlite://t.db"), Some(PathBuf::from("t.db")));
        assert_eq!(
            file("sqlite:///var/lib/t.db"),
            Some(PathBuf::from("/var/lib/t.db"))
        );
        assert_eq!(file("sqlite:t%20x.db"), Some(PathBuf::from("t x.db")));
        assert_eq!(file("sqlite://t.db?mode=ro"), None);
        assert_eq!(file("sqlite://t.db?mode=rw"), None);
        assert_eq!(file("sqlite::memory:"), None);
        assert_eq!(file("sqlite://?mode=memory"), None);
        assert_eq!(file("sqlite://t.db?mode=memory"), None);
    }

    #[test]
    fn sqlite_files_are_migrated_under_a_lock_file_beside_them() {
        let lock =
            |backend: Backend, url: &str| backend.migration_lock_file(&backend.connect_url(url));
        assert_eq!(
            lock(Backend::Sqlite, "sqlite:///var/lib/t.db"),
            Some(PathBuf::from("/var/lib/t.db.lock"))
        );
        assert_eq!(
            lock(Backend::Sqlite, "sqlite://t.db?mode=rw"),
            Some(PathBuf::from("t.db.lock"))
        );
        assert_eq!(lock(Backend::Sqlite, "sqlite::memory:"), None);
        assert_eq!(lock(Backend::Sqlite, "sqlite://t.db?mode=memory"), None);
        assert_eq!(lock(Backend::Postgres, "postgres://h/d"), None);
    }

    #[test]
    fn busy_and_connection_errors_are_transient() {
        assert!(is_transient(Some("5")));
        assert!(is_transient(Some("517")));
        assert!(is_transient(Some("08006")));
        assert!(is_transient(Some("57014")));
        assert!(!is_transient(Some("23505")));
        assert!(!is_transient(Some("19")));
        assert!(!is_transient(None));
    }
}
