//! A database of its own for one test: a fresh, uniquely named Postgres
//! database or a fresh SQLite file, dropped with the test. Shared by the API
//! tests and the command-line tests.

use std::sync::Arc;

use sqlx::Connection;
use tollgate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The base URL of the Postgres server the tests create databases on.
fn postgres_server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|url| url.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database of its own for one test, dropped with it.
pub struct TestDatabase {
    pub url: String,
    postgres_name: Option<String>,
    _sqlite_dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Arc<TestDatabase> {
        match backend {
            Backend::Postgres => {
                let server = postgres_server_url();
                let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .expect("the tests need a Postgres server (TEST_DATABASE_URL)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .expect("creating a test database");
                let (base, _) = server.rsplit_once('/').expect("a database URL has a path");
                Arc::new(TestDatabase {
                    url: format!("{base}/{name}"),
                    postgres_name: Some(name),
                    _sqlite_dir: None,
                })
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
                Arc::new(TestDatabase {
                    url,
                    postgres_name: None,
                    _sqlite_dir: Some(dir),
                })
            }
        }
    }

    /// A store on this database, for setting up and checking state.
    pub async fn store(&self) -> Store {
        Store::connect(&self.url)
            .await
            .expect("connecting to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        let server = postgres_server_url();
        // Drop runs outside any runtime we may block; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&server).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
