//! What the gateway leaves on disk.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::helpers::{Backend, TestApp};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_readable_by_their_owner_only() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // A write, so that the write-ahead log and its index exist.
    app.signed_up("alice").await;
    let url = &app.deployment.database.url;
    let database = Path::new(url.strip_prefix("sqlite://").expect("an SQLite URL"));

    // This process's umask lets others read what it creates, as most do: the
    // gateway must not rely on it.
    let control = database.with_file_name("control");
    std::fs::write(&control, b"").unwrap();
    assert_ne!(mode(&control) & 0o044, 0, "the umask hides the difference");

    for suffix in ["", "-wal", "-shm"] {
        let file = database.with_file_name(format!("tollgate.db{suffix}"));
        assert_eq!(
            mode(&file),
            0o600,
            "{} holds password hashes",
            file.display()
        );
    }
}
