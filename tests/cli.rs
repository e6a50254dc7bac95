//! The real binary, as an operator runs it: help, bad flags, keys, users,
//! sessions, migrations, token inspection, and `serve` itself.

#[path = "support/database.rs"]
mod database;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tollgate::auth::password::{Passwords, Verification};
use tollgate::domain::{Password, SessionId, Username};
use tollgate::store::{NewSession, Store, User};
use tollgate::time::UnixMillis;

use database::{Backend, TestDatabase};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "battery staple horse";

/// The binary, with no configuration inherited from the machine running the
/// tests.
fn tollgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (name, _) in std::env::vars_os() {
        let inherited = name.to_str().is_some_and(|name| {
            name.starts_with("TOLLGATE_") || matches!(name, "DATABASE_URL" | "PORT" | "RUST_LOG")
        });
        if inherited {
            command.env_remove(name);
        }
    }
    command
}

/// How a command ended and what it printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(command: &mut Command, stdin: &str) -> Run {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        Run {
            status: output.status,
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    /// Asserts the command succeeded; its output.
    #[track_caller]
    fn succeeded(&self) -> &str {
        assert!(
            self.status.success(),
            "{}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts the command failed with one line on stderr and no panic;
    /// that line.
    #[track_caller]
    fn failed_in_one_line(&self) -> &str {
        assert!(!self.status.success(), "stdout: {}", self.stdout);
        assert_eq!(self.stderr.lines().count(), 1, "stderr: {}", self.stderr);
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self.stderr.trim_end()
    }
}

/// One line of `keys list`.
#[derive(Debug, PartialEq)]
struct Key {
    kid: String,
    alg: String,
    state: String,
}

/// A deployment as the command line sees it: a database and a key store
/// (a keys directory, or the database with a key-encryption key), passed to
/// every command as flags and environment.
struct Operator {
    database: Arc<TestDatabase>,
    keys: tempfile::TempDir,
    key_encryption_key: Option<String>,
}

impl Operator {
    async fn new(backend: Backend) -> Operator {
        Operator {
            database: TestDatabase::new(backend).await,
            keys: tempfile::tempdir().unwrap(),
            key_encryption_key: None,
        }
    }

    /// Keeps the keys in the database, sealed under a key of its own.
    fn with_keys_in_the_database(self) -> Operator {
        Operator {
            key_encryption_key: Some(new_key_encryption_key()),
            ..self
        }
    }

    /// The same deployment seen with another key-encryption key.
    fn with_key_encryption_key(&self, key: &str) -> Operator {
        Operator {
            database: self.database.clone(),
            keys: tempfile::tempdir().unwrap(),
            key_encryption_key: Some(key.to_string()),
        }
    }

    /// Where the keys directory is, or would be: the gateway creates it only
    /// when it keeps the keys there.
    fn keys_dir(&self) -> PathBuf {
        self.keys.path().join("keys")
    }

    /// `tollgate <args> --database-url … --keys-dir …`, with the key store's
    /// flag and key.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = tollgate();
        command
            .args(args)
            .arg("--database-url")
            .arg(&self.database.url)
            .arg("--keys-dir")
            .arg(self.keys_dir());
        if let Some(key) = &self.key_encryption_key {
            command
                .args(["--key-store", "database"])
                .env("TOLLGATE_KEY_ENCRYPTION_KEY", key);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::of(&mut self.command(args), "")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        Run::of(&mut self.command(args), stdin)
    }

    /// `users add <username> --password-stdin` with [`PASSWORD`].
    fn add_user(&self, username: &str) {
        self.run_with_stdin(
            &["users", "add", username, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        )
        .succeeded();
    }

    /// The keys as `keys list` shows them.
    fn keys(&self) -> Vec<Key> {
        self.run(&["keys", "list"])
            .succeeded()
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.splitn(4, "  ").collect();
                assert_eq!(fields.len(), 4, "{line}");
                assert!(fields[2].starts_with("created "), "{line}");
                Key {
                    kid: fields[0].to_string(),
                    alg: fields[1].trim().to_string(),
                    state: fields[3].to_string(),
                }
            })
            .collect()
    }

    /// The rows of `users list`, split into their columns.
    fn users(&self) -> Vec<Vec<String>> {
        let list = self.run(&["users", "list"]);
        let mut lines = list.succeeded().lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["username", "roles", "disabled", "created", "email"]
        );
        lines
            .map(|line| line.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    async fn store(&self) -> Store {
        self.database.store().await
    }

    /// Starts `tollgate serve` on port 0 and waits until it serves.
    fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// `serve` with `extra` flags.
    fn serve_with(&self, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(extra);
        Server::start(self.command(&args))
    }
}

/// `tollgate serve` as a child process.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Its log up to the line saying it serves.
    log: Vec<String>,
    lines: Receiver<String>,
}

impl Server {
    /// Starts `command` (a `serve`) and waits until it serves.
    fn start(mut command: Command) -> Server {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut log = Vec::new();
        let addr = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("serve never said it was serving: {log:#?}"));
            let addr = line
                .contains("tollgate is serving")
                .then(|| {
                    line.split_whitespace()
                        .find_map(|field| field.strip_prefix("listen="))
                })
                .flatten()
                .map(|addr| addr.parse::<SocketAddr>().expect("a socket address"));
            log.push(line);
            if let Some(addr) = addr {
                break addr;
            }
        };
        Server {
            child,
            addr,
            log,
            lines,
        }
    }

    /// One HTTP/1.1 request; the status and body of the answer.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        self.request_with(method, path, "", body)
    }

    /// A GET with `Authorization: Bearer <token>`.
    fn request_with_token(&self, path: &str, token: &str) -> (u16, String) {
        self.request_with(
            "GET",
            path,
            &format!("Authorization: Bearer {token}\r\n"),
            None,
        )
    }

    /// A request with `headers` (each line ending in CRLF) added.
    fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    /// Sends SIGTERM and waits for the process to end.
    fn terminate(&mut self) -> ExitStatus {
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything it logged after it started serving, once it has ended.
    fn rest_of_log(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn user(store: &Store, username: &str) -> User {
    store
        .user_by_username(&Username::parse(username).unwrap())
        .await
        .unwrap()
        .expect("the user exists")
}

/// A session of `username`, recorded as a login would.
async fn session_of(store: &Store, username: &str) -> SessionId {
    let user = user(store, username).await;
    let now = UnixMillis::now();
    store
        .start_session(NewSession {
            user_id: &user.id,
            user_agent: None,
            ip: None,
            now,
            expires_at: now.plus(std::time::Duration::from_secs(3600)),
            refresh_hash: &uuid::Uuid::new_v4().simple().to_string(),
        })
        .await
        .unwrap()
}

async fn is_live(store: &Store, session: &SessionId) -> bool {
    store
        .live_session(session, UnixMillis::now())
        .await
        .unwrap()
        .is_some()
}

async fn password_is(store: &Store, username: &str, password: &str) -> bool {
    let user = user(store, username).await;
    let password = Password::parse(password.to_string()).unwrap();
    let verification = Passwords::new(1)
        .unwrap()
        .verify(&password, Some(user.password_hash.expose()))
        .await
        .unwrap();
    matches!(verification, Verification::Valid { .. })
}

#[test]
fn help_and_version_exit_zero() {
    let version = Run::of(tollgate().arg("--version"), "");
    assert_eq!(
        version.succeeded(),
        format!("tollgate {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = Run::of(tollgate().arg("--help"), "");
    for mention in ["Usage:", "serve", "keys", "users", "--database-url"] {
        assert!(help.succeeded().contains(mention), "{mention}");
    }
    let keys_help = Run::of(tollgate().args(["keys", "--help"]), "");
    assert!(keys_help.succeeded().contains("rotate"));
}

#[test]
fn bad_flag_values_are_one_line_errors() {
    for (args, named) in [
        (&["--access-ttl", "soon"][..], "soon"),
        (&["--cookie-samesite", "sometimes"], "sometimes"),
        (&["--listen", "not-an-address"], "not-an-address"),
        (&["keys", "generate", "--alg", "HS256"], "HS256"),
        (
            &["--access-ttl", "1m", "--refresh-ttl", "30s"],
            "--refresh-ttl",
        ),
        (
            &["migrate", "--database-url", "mysql://localhost/x"],
            "database URL",
        ),
    ] {
        // Were it to panic, it would say so at length.
        let run = Run::of(tollgate().args(args).env("RUST_BACKTRACE", "1"), "");
        let line = run.failed_in_one_line();
        assert!(line.contains(named), "{args:?}: {line}");
    }
}

#[test]
fn bad_routes_are_one_line_errors_with_exit_2() {
    for (args, routes_env, named) in [
        (
            &["--route", "/app=http://127.0.0.1:3000 cached"][..],
            None,
            "unknown option `cached`",
        ),
        (&["--route", "/app=web:3000"], None, "must be absolute"),
        (&["--route", "/app=/static"], None, "must be absolute"),
        (
            &["--route", "app=http://web:3000"],
            None,
            "must start with /",
        ),
        (&["--route", "/app"], None, "expected PREFIX=URL"),
        (
            &["--route", "/a=http://x:1", "--route", "/a/=http://y:1"],
            None,
            "two routes for the prefix /a",
        ),
        (
            &["--upstream", "http://x:1", "--route", "/=http://y:1"],
            None,
            "two routes for the prefix /",
        ),
        (&["--route", "/api/auth=http://x:1"], None, "gateway's own"),
        (&["--route", "/metrics=http://x:1"], None, "gateway's own"),
        (
            &["--route", "/a=http://x:1 public role=admin"],
            None,
            "contradict",
        ),
        (
            &[],
            Some("/=http://x:1; /=http://y:1"),
            "two routes for the prefix /",
        ),
        (
            &[],
            Some("/a=http://x:1; b=http://y:1"),
            "must start with /",
        ),
    ] {
        let mut command = tollgate();
        command.args(args).env("RUST_BACKTRACE", "1");
        if let Some(routes) = routes_env {
            command.env("TOLLGATE_ROUTES", routes);
        }
        let run = Run::of(&mut command, "");
        let line = run.failed_in_one_line();
        assert!(line.contains(named), "{args:?} {routes_env:?}: {line}");
        assert_eq!(
            run.status.code(),
            Some(2),
            "{args:?} {routes_env:?}: {line}"
        );
    }
}

#[test]
fn an_unusable_keys_directory_or_database_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "").unwrap();
    let run = Run::of(
        tollgate()
            .args(["keys", "list", "--keys-dir"])
            .arg(&file)
            .env("RUST_BACKTRACE", "1"),
        "",
    );
    assert!(run.failed_in_one_line().contains("not a directory"));

    // Nothing listens on port 1.
    let run = Run::of(
        tollgate()
            .args(["users", "list", "--database-url"])
            .arg("postgres://postgres@127.0.0.1:1/tollgate")
            .env("RUST_BACKTRACE", "1"),
        "",
    );
    assert!(run.failed_in_one_line().contains("database"));
}

#[tokio::test]
async fn keys_generate_creates_an_active_and_a_next_key_once() {
    let operator = Operator::new(Backend::Sqlite).await;
    let first = operator.run(&["keys", "generate"]);
    assert!(first.succeeded().contains("created"), "{}", first.stdout);
    let keys = operator.keys();
    let states: Vec<&str> = keys.iter().map(|key| key.state.as_str()).collect();
    assert_eq!(states, ["active", "next"]);
    for key in &keys {
        assert_eq!(key.alg, "EdDSA");
        let pem = operator.keys_dir().join(format!("{}.pem", key.kid));
        let mode = std::fs::metadata(&pem).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", pem.display());
        let contents = std::fs::read_to_string(&pem).unwrap();
        assert!(contents.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    let again = operator.run(&["keys", "generate"]);
    assert!(
        again.succeeded().contains("nothing to do"),
        "{}",
        again.stdout
    );
    assert_eq!(operator.keys(), keys);
}

#[tokio::test]
async fn keys_generate_takes_the_algorithm() {
    let operator = Operator::new(Backend::Sqlite).await;
    operator
        .run(&["keys", "generate", "--alg", "ES256"])
        .succeeded();
    let algs: Vec<String> = operator.keys().into_iter().map(|key| key.alg).collect();
    assert_eq!(algs, ["ES256", "ES256"]);
}

#[tokio::test]
async fn rotation_promotes_the_next_key_and_retires_the_active_one() {
    let operator = Operator::new(Backend::Sqlite).await;
    let nothing_to_rotate = operator.run(&["keys", "rotate"]);
    assert!(
        nothing_to_rotate
            .failed_in_one_line()
            .contains("keys generate")
    );
    operator.run(&["keys", "generate"]).succeeded();
    for rotation in [&["keys", "rotate"][..], &["--rotate-key"]] {
        let before = operator.keys();
        let active = before.iter().find(|key| key.state == "active").unwrap();
        let next = before.iter().find(|key| key.state == "next").unwrap();
        operator.run(rotation).succeeded();

        let after = operator.keys();
        assert_eq!(after.len(), before.len() + 1, "{rotation:?}: {after:?}");
        let state_of = |kid: &str| {
            after
                .iter()
                .find(|key| key.kid == kid)
                .map(|key| key.state.clone())
                .unwrap()
        };
        assert_eq!(state_of(&next.kid), "active", "{rotation:?}");
        assert!(
            state_of(&active.kid).starts_with("retired since "),
            "{rotation:?}: {after:?}"
        );
        let new_next: Vec<&Key> = after.iter().filter(|key| key.state == "next").collect();
        assert_eq!(new_next.len(), 1, "{after:?}");
        assert!(before.iter().all(|key| key.kid != new_next[0].kid));
    }
    // Tokens of the keys retired just now are still live: nothing to prune.
    let pruned = operator.run(&["keys", "prune"]);
    assert!(
        pruned.succeeded().contains("pruned 0 key(s)"),
        "{}",
        pruned.stdout
    );
    assert_eq!(operator.keys().len(), 4);
}

#[tokio::test]
async fn configuration_flags_may_come_before_the_command() {
    let operator = Operator::new(Backend::Sqlite).await;
    let keys_dir = operator.keys_dir();
    let keys_dir = keys_dir.to_str().unwrap();
    let database_url = operator.database.url.as_str();
    for args in [
        &["--keys-dir", keys_dir, "keys", "generate"][..],
        &["--database-url", database_url, "migrate"],
        &["--database-url", database_url, "users", "list"],
    ] {
        Run::of(tollgate().args(args), "").succeeded();
    }
    assert_eq!(operator.keys().len(), 2);
    // The flag form of a rotation is a command of its own.
    Run::of(
        tollgate().args(["--keys-dir", keys_dir, "--rotate-key", "keys", "list"]),
        "",
    )
    .failed_in_one_line();
    assert_eq!(operator.keys().len(), 2);
}

#[tokio::test]
async fn migrate_prepares_an_empty_database() {
    let operator = Operator::new(Backend::Sqlite).await;
    let migrated = operator.run(&["migrate"]);
    assert!(
        migrated.succeeded().contains("migrations applied"),
        "{}",
        migrated.stdout
    );
    // The store itself does not migrate; the tables are there.
    assert!(
        operator
            .store()
            .await
            .list_users()
            .await
            .unwrap()
            .is_empty()
    );
    operator.run(&["migrate"]).succeeded();
}

#[tokio::test]
async fn processes_started_at_once_on_a_new_sqlite_file_all_migrate_it() {
    // A few rounds, each on a new file: one round alone may not race.
    for _ in 0..3 {
        let operator = Operator::new(Backend::Sqlite).await;
        let children: Vec<Child> = (0..8)
            .map(|i| {
                let mut command = if i % 2 == 0 {
                    operator.command(&["migrate"])
                } else {
                    operator.command(&["users", "add", &format!("user{i}"), "--password-stdin"])
                };
                let mut child = command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("the binary starts");
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{PASSWORD}\n").as_bytes())
                    .unwrap();
                child
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}\nstderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut users: Vec<String> = operator
            .users()
            .into_iter()
            .map(|row| row[0].clone())
            .collect();
        users.sort();
        assert_eq!(users, ["user1", "user3", "user5", "user7"]);
    }
}

async fn users_can_be_added_and_listed(backend: Backend) {
    let operator = Operator::new(backend).await;
    let added = operator.run_with_stdin(
        &[
            "users",
            "add",
            "alice",
            "--role",
            "admin",
            "--role",
            "ops",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(
        added.succeeded().contains("created user alice"),
        "{}",
        added.stdout
    );
    operator.add_user("bob");

    let users = operator.users();
    assert_eq!(users.len(), 2, "{users:?}");
    assert_eq!(users[0][..3], ["alice", "admin,ops", "no"]);
    assert_eq!(users[1][..3], ["bob", "-", "no"]);
    for user in &users {
        assert!(humantime::parse_rfc3339(&user[3]).is_ok(), "{user:?}");
    }
    // The line read from stdin, without its newline, is the password.
    assert!(password_is(&operator.store().await, "alice", PASSWORD).await);

    let taken = operator.run_with_stdin(
        &["users", "add", "ALICE", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(taken.failed_in_one_line().contains("taken"));
    let short = operator.run_with_stdin(&["users", "add", "carol", "--password-stdin"], "short\n");
    assert!(short.failed_in_one_line().contains("password"));
    let bad_role = operator.run_with_stdin(
        &["users", "add", "carol", "--role", "a,b", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(bad_role.failed_in_one_line().contains("role"));
    assert_eq!(operator.users().len(), 2);
}

#[tokio::test]
async fn users_can_be_added_and_listed_on_postgres() {
    users_can_be_added_and_listed(Backend::Postgres).await;
}

#[tokio::test]
async fn users_can_be_added_and_listed_on_sqlite() {
    users_can_be_added_and_listed(Backend::Sqlite).await;
}

async fn users_get_an_email_at_creation_or_later(backend: Backend) {
    let operator = Operator::new(backend).await;
    operator
        .run_with_stdin(
            &[
                "users",
                "add",
                "alice",
                "--email",
                "Alice@Example.com",
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        )
        .succeeded();
    operator.add_user("bob");
    let users = operator.users();
    assert_eq!(users[0][4], "Alice@Example.com");
    assert_eq!(users[1][4], "-");

    let set = operator.run(&["users", "set-email", "bob", "bob@example.com"]);
    assert!(
        set.succeeded().contains("bob@example.com"),
        "{}",
        set.stdout
    );
    assert_eq!(operator.users()[1][4], "bob@example.com");
    let store = operator.store().await;
    assert_eq!(
        user(&store, "bob").await.email.unwrap().as_str(),
        "bob@example.com"
    );

    // Unique without regard to case, on both ways in.
    let taken = operator.run(&["users", "set-email", "bob", "ALICE@example.COM"]);
    assert!(
        taken.failed_in_one_line().contains("another user"),
        "{}",
        taken.stderr
    );
    let taken = operator.run_with_stdin(
        &[
            "users",
            "add",
            "carol",
            "--email",
            "alice@example.com",
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert!(taken.failed_in_one_line().contains("another user"));
    let malformed = operator.run(&["users", "set-email", "bob", "not-an-address"]);
    assert!(malformed.failed_in_one_line().contains("email"));
    let unknown = operator.run(&["users", "set-email", "nobody", "n@example.com"]);
    assert!(unknown.failed_in_one_line().contains("nobody"));
    assert_eq!(operator.users().len(), 2);
}

#[tokio::test]
async fn users_get_an_email_at_creation_or_later_on_postgres() {
    users_get_an_email_at_creation_or_later(Backend::Postgres).await;
}

#[tokio::test]
async fn users_get_an_email_at_creation_or_later_on_sqlite() {
    users_get_an_email_at_creation_or_later(Backend::Sqlite).await;
}

#[tokio::test]
async fn disabling_a_user_revokes_their_sessions_for_good() {
    let operator = Operator::new(Backend::Sqlite).await;
    operator.add_user("alice");
    let store = operator.store().await;
    let session = session_of(&store, "alice").await;

    let disabled = operator.run(&["users", "disable", "alice"]);
    assert!(
        disabled.succeeded().contains("revoked 1 session(s)"),
        "{}",
        disabled.stdout
    );
    assert_eq!(operator.users()[0][2], "yes");
    assert!(user(&store, "alice").await.is_disabled());

    operator.run(&["users", "enable", "alice"]).succeeded();
    assert_eq!(operator.users()[0][2], "no");
    assert!(!user(&store, "alice").await.is_disabled());
    assert!(
        !is_live(&store, &session).await,
        "enabling does not bring sessions back"
    );
    let fresh = session_of(&store, "alice").await;
    assert!(is_live(&store, &fresh).await);
}

#[tokio::test]
async fn set_password_changes_the_password_and_revokes_the_sessions() {
    let operator = Operator::new(Backend::Sqlite).await;
    operator.add_user("alice");
    let store = operator.store().await;
    let session = session_of(&store, "alice").await;

    let changed = operator.run_with_stdin(
        &["users", "set-password", "alice", "--password-stdin"],
        &format!("{NEW_PASSWORD}\n"),
    );
    assert!(
        changed.succeeded().contains("revoked 1 session(s)"),
        "{}",
        changed.stdout
    );
    assert!(!is_live(&store, &session).await);
    assert!(password_is(&store, "alice", NEW_PASSWORD).await);
    assert!(!password_is(&store, "alice", PASSWORD).await);
}

#[tokio::test]
async fn sessions_revoke_logs_one_user_out_everywhere() {
    let operator = Operator::new(Backend::Sqlite).await;
    operator.add_user("alice");
    operator.add_user("bob");
    let store = operator.store().await;
    let alices = [
        session_of(&store, "alice").await,
        session_of(&store, "alice").await,
    ];
    let bobs = session_of(&store, "bob").await;

    let revoked = operator.run(&["sessions", "revoke", "--user", "alice"]);
    assert!(
        revoked
            .succeeded()
            .contains("revoked 2 session(s) of alice"),
        "{}",
        revoked.stdout
    );
    for session in &alices {
        assert!(!is_live(&store, session).await);
    }
    assert!(is_live(&store, &bobs).await);
    let unknown = operator.run(&["sessions", "revoke", "--user", "nobody"]);
    assert!(unknown.failed_in_one_line().contains("nobody"));
}

#[tokio::test]
async fn serve_generates_missing_keys_with_a_warning_and_stops_on_sigterm() {
    let operator = Operator::new(Backend::Sqlite).await;
    let mut server = operator.serve();
    let warned = |log: &[String]| {
        log.iter()
            .any(|line| line.contains("WARN") && line.contains("generated a signing key just now"))
    };
    assert!(warned(&server.log), "{:#?}", server.log);
    let states: Vec<String> = operator.keys().into_iter().map(|key| key.state).collect();
    assert_eq!(states, ["active", "next"]);
    assert_eq!(
        server.request("GET", "/health", None),
        (200, json!({ "status": "ok" }).to_string())
    );
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{:#?}", server.rest_of_log());

    let mut again = operator.serve();
    assert!(!warned(&again.log), "{:#?}", again.log);
    assert_eq!(again.terminate().code(), Some(0));
}

#[tokio::test]
async fn token_inspect_tells_a_valid_token_from_a_tampered_or_revoked_one() {
    let operator = Operator::new(Backend::Sqlite).await;
    operator.add_user("alice");
    let mut server = operator.serve();
    let (status, body) = server.request(
        "POST",
        "/api/auth/login",
        Some(json!({ "username": "alice", "password": PASSWORD })),
    );
    assert_eq!(status, 200, "{body}");
    server.terminate();
    let body: Value = serde_json::from_str(&body).unwrap();
    let token = body["access_token"].as_str().unwrap();

    let valid = operator.run(&["token", "inspect", token]);
    let output = valid.succeeded();
    assert!(output.lines().any(|line| line == "valid"), "{output}");
    assert!(
        output.contains("\"preferred_username\": \"alice\""),
        "{output}"
    );

    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["roles"] = json!(["admin"]);
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = operator.run(&["token", "inspect", &parts.join(".")]);
    assert!(!tampered.status.success());
    assert!(
        tampered.stdout.contains("invalid: bad_signature"),
        "{}",
        tampered.stdout
    );

    let garbage = operator.run(&["token", "inspect", "not-a-token"]);
    assert!(!garbage.status.success());
    assert!(
        garbage.stdout.contains("invalid: malformed"),
        "{}",
        garbage.stdout
    );

    operator
        .run(&["sessions", "revoke", "--user", "alice"])
        .succeeded();
    let revoked = operator.run(&["token", "inspect", token]);
    assert!(!revoked.status.success());
    assert!(
        revoked.stdout.contains("invalid: revoked"),
        "{}",
        revoked.stdout
    );
}

/// 32 random bytes, base64: what `openssl rand -base64 32` makes.
fn new_key_encryption_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// The files in `dir`, to show nothing was written there.
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn bad_key_encryption_keys_and_unreadable_secret_files_are_refused_before_anything_is_written() {
    let sixteen_bytes = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let database = ["--key-store", "database"];
    // Flags, environment, and what the one line must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 7] = [
        (&database, &[], "TOLLGATE_KEY_ENCRYPTION_KEY"),
        (
            &database,
            &[("TOLLGATE_KEY_ENCRYPTION_KEY", "not base64!!")],
            "TOLLGATE_KEY_ENCRYPTION_KEY: not base64",
        ),
        (
            &database,
            &[("TOLLGATE_KEY_ENCRYPTION_KEY", &sixteen_bytes)],
            "TOLLGATE_KEY_ENCRYPTION_KEY: 16 bytes, expected 32",
        ),
        (
            &database,
            &[("TOLLGATE_KEY_ENCRYPTION_KEY_FILE", "/nonexistent/kek")],
            "TOLLGATE_KEY_ENCRYPTION_KEY_FILE (/nonexistent/kek)",
        ),
        (
            &[],
            &[("DATABASE_URL_FILE", "/nonexistent/database-url")],
            "DATABASE_URL_FILE (/nonexistent/database-url)",
        ),
        (
            &[],
            &[("TOLLGATE_SMTP_URL_FILE", "/nonexistent/smtp-url")],
            "TOLLGATE_SMTP_URL_FILE (/nonexistent/smtp-url)",
        ),
        // A directory cannot be read as a file.
        (
            &database,
            &[("TOLLGATE_KEY_ENCRYPTION_KEY_FILE", "/")],
            "TOLLGATE_KEY_ENCRYPTION_KEY_FILE (/)",
        ),
    ];
    for (flags, environment, named) in cases {
        for command in [&[][..], &["serve"], &["keys", "generate"], &["migrate"]] {
            // The defaults put the database and the keys directory here.
            let workdir = tempfile::tempdir().unwrap();
            let run = Run::of(
                tollgate()
                    .current_dir(workdir.path())
                    .args(command)
                    .args(flags)
                    .envs(environment.iter().copied())
                    .env("RUST_BACKTRACE", "1"),
                "",
            );
            let line = run.failed_in_one_line();
            assert_eq!(run.status.code(), Some(2), "{command:?} {flags:?}: {line}");
            assert!(line.contains(named), "{command:?} {flags:?}: {line}");
            assert_eq!(
                entries(workdir.path()),
                Vec::<String>::new(),
                "{command:?} {flags:?} wrote something"
            );
        }
    }
}

async fn keys_in_the_database_are_generated_listed_rotated_and_pruned(backend: Backend) {
    let operator = Operator::new(backend).await.with_keys_in_the_database();
    let generated = operator.run(&["keys", "generate"]);
    assert!(
        generated.succeeded().contains("in the database"),
        "{}",
        generated.stdout
    );
    let keys = operator.keys();
    let states: Vec<&str> = keys.iter().map(|key| key.state.as_str()).collect();
    assert_eq!(states, ["active", "next"]);
    assert!(
        operator
            .run(&["keys", "generate"])
            .succeeded()
            .contains("nothing to do")
    );
    assert_eq!(operator.keys(), keys);

    let rotated = operator.run(&["--rotate-key"]);
    assert!(
        rotated.succeeded().contains("every instance"),
        "{}",
        rotated.stdout
    );
    let after = operator.keys();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[0].kid, keys[0].kid);
    assert!(after[0].state.starts_with("retired since "), "{after:?}");
    assert_eq!(after[1].kid, keys[1].kid);
    assert_eq!(after[1].state, "active");
    assert_eq!(after[2].state, "next");
    let pruned = operator.run(&["keys", "prune"]);
    assert!(
        pruned.succeeded().contains("pruned 0 key(s)"),
        "tokens of a key retired just now are live: {}",
        pruned.stdout
    );

    // Retired long ago: no live token can carry it any more.
    let store = operator.store().await;
    let mut stored = store.sealed_keys().await.unwrap();
    for key in &mut stored.keys {
        if key.state == "retired" {
            key.retired_at = Some(UnixMillis::new(1));
        }
    }
    assert!(
        store
            .replace_sealed_keys(stored.generation, stored.token_lifetime_ms, &stored.keys)
            .await
            .unwrap()
    );
    let pruned = operator.run(&["keys", "prune"]);
    assert!(
        pruned
            .succeeded()
            .contains(&format!("pruned 1 key(s): {}", keys[0].kid)),
        "{}",
        pruned.stdout
    );
    let left: Vec<String> = operator.keys().into_iter().map(|key| key.kid).collect();
    assert_eq!(left, [after[1].kid.clone(), after[2].kid.clone()]);
    assert!(
        !operator.keys_dir().exists(),
        "the keys directory is not even created"
    );
}

#[tokio::test]
async fn keys_in_the_database_are_generated_listed_rotated_and_pruned_on_postgres() {
    keys_in_the_database_are_generated_listed_rotated_and_pruned(Backend::Postgres).await;
}

#[tokio::test]
async fn keys_in_the_database_are_generated_listed_rotated_and_pruned_on_sqlite() {
    keys_in_the_database_are_generated_listed_rotated_and_pruned(Backend::Sqlite).await;
}

/// A login's access token, from a running gateway.
fn access_token(server: &Server, username: &str) -> String {
    let (status, body) = server.request(
        "POST",
        "/api/auth/login",
        Some(json!({ "username": username, "password": PASSWORD })),
    );
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn keys_import_moves_a_keys_directory_into_the_database_with_its_states() {
    let on_disk = Operator::new(Backend::Postgres).await;
    on_disk.add_user("alice");
    on_disk.run(&["keys", "generate"]).succeeded();
    on_disk.run(&["keys", "rotate"]).succeeded();
    let mut server = on_disk.serve();
    let before = access_token(&server, "alice");
    server.terminate();
    let keys = on_disk.keys();

    let in_database = on_disk.with_key_encryption_key(&new_key_encryption_key());
    let missing = in_database.run(&["keys", "import"]);
    assert!(
        missing
            .failed_in_one_line()
            .contains("there is no keys directory"),
        "the default is --keys-dir"
    );
    assert!(!in_database.keys_dir().exists(), "and it is not created");

    let dir = on_disk.keys_dir();
    let imported = in_database.run(&["keys", "import", dir.to_str().unwrap()]);
    assert!(
        imported.succeeded().contains("imported 3 key(s)"),
        "{}",
        imported.stdout
    );
    assert_eq!(in_database.keys(), keys, "kids, algorithms and states");
    assert_eq!(on_disk.keys(), keys, "the directory is left as it was");
    let again = in_database.run(&["keys", "import", dir.to_str().unwrap()]);
    assert!(
        again.succeeded().contains("nothing to do"),
        "{}",
        again.stdout
    );

    // The fleet moves to the database: it signs with the same key, and
    // tokens from before the move keep working.
    let server = in_database.serve();
    let (status, body) = server.request_with_token("/api/auth/me", &before);
    assert_eq!(status, 200, "{body}");
    assert_eq!(kid_of(&access_token(&server, "alice")), kid_of(&before));
    let inspected = in_database.run(&["token", "inspect", &before]);
    assert!(
        inspected.succeeded().lines().any(|line| line == "valid"),
        "{}",
        inspected.stdout
    );
    assert!(!in_database.keys_dir().exists());

    // Another directory's keys never mix with those in the database.
    let elsewhere = Operator::new(Backend::Sqlite).await;
    elsewhere.run(&["keys", "generate"]).succeeded();
    let other = elsewhere.keys_dir();
    let refused = in_database.run(&["keys", "import", other.to_str().unwrap()]);
    assert!(
        refused
            .failed_in_one_line()
            .contains("already holds other signing keys"),
        "{}",
        refused.stderr
    );
    assert_eq!(in_database.keys(), keys);
    let with_dir_store = on_disk.run(&["keys", "import"]);
    assert!(
        with_dir_store
            .failed_in_one_line()
            .contains("--key-store database")
    );
}

#[tokio::test]
async fn a_wrong_key_encryption_key_is_one_line_at_start_and_changes_nothing() {
    let operator = Operator::new(Backend::Sqlite)
        .await
        .with_keys_in_the_database();
    operator.run(&["keys", "generate"]).succeeded();
    let keys = operator.keys();
    let wrong = operator.with_key_encryption_key(&new_key_encryption_key());

    let serve = wrong.run(&["serve", "--listen", "127.0.0.1:0"]);
    let errors: Vec<&str> = serve
        .stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect();
    assert!(!serve.status.success(), "{}", serve.stderr);
    assert_eq!(errors.len(), 1, "{}", serve.stderr);
    assert!(
        errors[0].contains("does not open with this TOLLGATE_KEY_ENCRYPTION_KEY"),
        "{}",
        errors[0]
    );
    assert!(!serve.stderr.contains("panicked"), "{}", serve.stderr);
    for command in [
        &["--rotate-key"][..],
        &["keys", "generate"],
        &["keys", "list"],
        &["keys", "prune"],
    ] {
        let line = wrong.run(command).failed_in_one_line().to_string();
        assert!(
            line.contains("TOLLGATE_KEY_ENCRYPTION_KEY"),
            "{command:?}: {line}"
        );
    }
    assert_eq!(operator.keys(), keys, "nothing was added or changed");
    assert!(!wrong.keys_dir().exists() && !operator.keys_dir().exists());
}

#[tokio::test]
async fn secrets_are_read_from_files_with_one_trailing_newline_ignored() {
    let operator = Operator::new(Backend::Sqlite)
        .await
        .with_keys_in_the_database();
    let secrets = tempfile::tempdir().unwrap();
    let database_url_file = secrets.path().join("database-url");
    let key_file = secrets.path().join("key-encryption-key");
    std::fs::write(&database_url_file, format!("{}\n", operator.database.url)).unwrap();
    std::fs::write(
        &key_file,
        format!("{}\n", operator.key_encryption_key.as_ref().unwrap()),
    )
    .unwrap();
    let from_files = |args: &[&str]| {
        let mut command = tollgate();
        command
            .args(args)
            .args(["--key-store", "database", "--keys-dir"])
            .arg(operator.keys_dir())
            .env("DATABASE_URL_FILE", &database_url_file)
            .env("TOLLGATE_KEY_ENCRYPTION_KEY_FILE", &key_file);
        command
    };
    Run::of(&mut from_files(&["keys", "generate"]), "").succeeded();
    // The same keys, read with the secrets given directly.
    assert_eq!(operator.keys().len(), 2);
    let server = Server::start(from_files(&["serve", "--listen", "127.0.0.1:0"]));
    assert_eq!(server.request("GET", "/health", None).0, 200);
    let database_dir = Path::new(operator.database.url.trim_start_matches("sqlite://"))
        .parent()
        .unwrap();
    assert_eq!(
        entries(database_dir)
            .iter()
            .filter(|name| name.contains('\n'))
            .count(),
        0,
        "the newline is not part of the path"
    );
}

#[tokio::test]
async fn the_samesite_warning_follows_the_public_suffix_list() {
    let operator = Operator::new(Backend::Sqlite).await;
    let warned = |server: &Server| {
        server
            .log
            .iter()
            .any(|line| line.contains("WARN") && line.contains("is another site than the gateway"))
    };
    let mut railway = operator.serve_with(&[
        "--public-url",
        "https://api.up.railway.app",
        "--cors-origins",
        "https://web.up.railway.app",
    ]);
    assert!(warned(&railway), "{:#?}", railway.log);
    railway.terminate();
    let mut one_site = operator.serve_with(&[
        "--public-url",
        "https://api.example.com",
        "--cors-origins",
        "https://app.example.com",
    ]);
    assert!(!warned(&one_site), "{:#?}", one_site.log);
    one_site.terminate();
}

/// `tollgate audit --json <extra>`: its rows, newest first.
fn audit_rows(operator: &Operator, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "--json"];
    args.extend(extra);
    operator
        .run(&args)
        .succeeded()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn actions(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .map(|row| row["action"].as_str().unwrap())
        .collect()
}

async fn the_audit_command_shows_what_the_command_line_did(backend: Backend) {
    let operator = Operator::new(backend).await.with_keys_in_the_database();
    operator.run(&["keys", "generate"]).succeeded();
    operator.run(&["keys", "rotate"]).succeeded();
    // Retired long ago: prunable.
    let store = operator.store().await;
    let mut stored = store.sealed_keys().await.unwrap();
    for key in &mut stored.keys {
        if key.state == "retired" {
            key.retired_at = Some(UnixMillis::new(1));
        }
    }
    store
        .replace_sealed_keys(stored.generation, stored.token_lifetime_ms, &stored.keys)
        .await
        .unwrap();
    operator.run(&["keys", "prune"]).succeeded();
    operator.add_user("alice");
    operator.add_user("bob");
    operator.run(&["users", "disable", "alice"]).succeeded();
    operator.run(&["users", "enable", "alice"]).succeeded();
    operator
        .run_with_stdin(
            &["users", "set-password", "alice", "--password-stdin"],
            &format!("{NEW_PASSWORD}\n"),
        )
        .succeeded();
    operator
        .run(&["sessions", "revoke", "--user", "alice"])
        .succeeded();

    let rows = audit_rows(&operator, &[]);
    assert_eq!(
        actions(&rows),
        [
            "session_revoked",
            "password_changed",
            "user_enabled",
            "user_disabled",
            "user_added",
            "user_added",
            "key_pruned",
            "key_rotated",
            "key_generated",
            "key_generated",
        ]
    );
    let alice = user(&store, "alice").await.id.to_string();
    let bob = user(&store, "bob").await.id.to_string();
    for row in &rows {
        assert_eq!(row["actor"], "cli", "{row}");
        assert_eq!(row["outcome"], "ok", "{row}");
        assert!(row["ip"].is_null() && row["request_id"].is_null(), "{row}");
        let fields: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            [
                "action",
                "actor",
                "ip",
                "outcome",
                "request_id",
                "target",
                "time"
            ]
        );
    }
    assert_eq!(rows[5]["target"], alice.as_str());
    assert_eq!(rows[4]["target"], bob.as_str());
    let keys = operator.keys();
    let active = keys.iter().find(|key| key.state == "active").unwrap();
    assert_eq!(rows[7]["target"], active.kid.as_str());
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains(PASSWORD) && !text.contains(NEW_PASSWORD));

    // Only alice's rows, newest first.
    assert_eq!(
        actions(&audit_rows(&operator, &["--user", "ALICE"])),
        [
            "session_revoked",
            "password_changed",
            "user_enabled",
            "user_disabled",
            "user_added",
        ]
    );
    let unknown = operator.run(&["audit", "--user", "nobody"]);
    assert!(unknown.failed_in_one_line().contains("nobody"));

    // The key rows, moved two hours back, are older than --since 1h.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&operator.database.url)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET at = at - 7200000 WHERE action LIKE 'key_%'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(audit_rows(&operator, &["--since", "1h"]).len(), 6);
    assert_eq!(audit_rows(&operator, &["--since", "3h"]).len(), 10);
    let bad = operator.run(&["audit", "--since", "yesterday"]);
    assert!(bad.failed_in_one_line().contains("yesterday"));

    // The table: a header, then one line per row with usernames for ids.
    let table = operator.run(&["audit", "--user", "bob"]);
    let lines: Vec<&str> = table.succeeded().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "time",
            "action",
            "outcome",
            "actor",
            "target",
            "ip",
            "request_id"
        ]
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(fields[1..], ["user_added", "ok", "cli", "bob", "-", "-"]);
}

#[tokio::test]
async fn the_audit_command_shows_what_the_command_line_did_on_postgres() {
    the_audit_command_shows_what_the_command_line_did(Backend::Postgres).await;
}

#[tokio::test]
async fn the_audit_command_shows_what_the_command_line_did_on_sqlite() {
    the_audit_command_shows_what_the_command_line_did(Backend::Sqlite).await;
}

#[tokio::test]
async fn key_commands_on_a_keys_directory_write_the_trail_when_the_database_exists() {
    let operator = Operator::new(Backend::Sqlite).await;
    // No database yet: the keys are made, the trail is not (nor the file).
    let generated = operator.run(&["keys", "generate"]);
    generated.succeeded();
    assert!(
        generated.stderr.contains("audit trail was not written"),
        "{}",
        generated.stderr
    );
    operator.run(&["migrate"]).succeeded();
    operator.run(&["keys", "rotate"]).succeeded();
    operator.run(&["--rotate-key"]).succeeded();
    assert_eq!(
        actions(&audit_rows(&operator, &[])),
        ["key_rotated", "key_rotated"]
    );
}
