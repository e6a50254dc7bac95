//! The command line, as clap definitions only. Every configuration flag also
//! reads an environment variable; the flag wins.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::builder::{BoolishValueParser, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use http::{HeaderName, Uri};

use crate::auth::KeyAlg;
use crate::config::{
    self, Config, CorsOrigin, KeyEncryptionKey, KeyStoreConfig, KeyStoreKind, LogFormat,
    MailConfig, PublicUrl, RouteConfig, SameSite, TrustedProxy, UpstreamUrl,
};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A stateless token-issuing auth gateway: restarts never log anyone out."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Rotate the signing keys (next becomes active, active retires, a new next
    /// key is created) and exit. A command of its own: takes no subcommand.
    #[arg(long)]
    pub rotate_key: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default); applies pending migrations first.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage user accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Inspect access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check a running deployment end to end.
    Probe(ProbeArgs),
    /// The audit trail, newest first.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events whose actor or target is this user.
    #[arg(long, value_name = "USERNAME")]
    pub user: Option<String>,
    /// Only events this recent (30m, 1h, 7d).
    #[arg(long, value_parser = config::parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the active and the next key if there are none.
    Generate {
        #[arg(long, default_value = "EdDSA", value_parser = key_alg())]
        alg: KeyAlg,
    },
    /// Promote the next key to signing, retire the active one, create a new next key.
    Rotate {
        /// Algorithm of the new next key (default: that of the key being promoted).
        #[arg(long, value_parser = key_alg())]
        alg: Option<KeyAlg>,
    },
    /// One line per key: kid, alg, created, state.
    List,
    /// Delete retired keys that can no longer have unexpired tokens.
    Prune,
    /// With --key-store database: move a keys directory's keys into the database.
    Import {
        /// The keys directory to import [default: --keys-dir]
        dir: Option<PathBuf>,
    },
}

fn key_alg() -> impl TypedValueParser<Value = KeyAlg> {
    PossibleValuesParser::new(KeyAlg::ALL.map(KeyAlg::as_str))
        .map(|alg| alg.parse::<KeyAlg>().expect("the listed algorithms parse"))
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    Add {
        username: String,
        /// A role to grant; repeat for several.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Where password-reset mail goes.
        #[arg(long)]
        email: Option<String>,
        /// Read the password from stdin (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Record (or change) the address password-reset mail goes to.
    SetEmail { username: String, email: String },
    /// Change a password and revoke that user's sessions.
    SetPassword {
        username: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Forbid logins and refreshes; revokes the user's sessions.
    Disable { username: String },
    /// Allow a disabled user to log in again.
    Enable { username: String },
    /// Username, roles, disabled, created, email.
    List,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Log a user out everywhere.
    Revoke {
        #[arg(long, value_name = "USERNAME")]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Decode a token's header and claims and verify it against the key set.
    Inspect { jwt: String },
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The deployment's base URL, e.g. https://auth.example.com
    pub base_url: String,
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub password_stdin: bool,
    /// A proxied path to request with the token.
    #[arg(long, default_value = "/api/tickets")]
    pub path: String,
    /// Send one test mail to this address through the deployment's mail setup.
    #[arg(long, value_name = "ADDRESS")]
    pub check_mail: Option<String>,
}

/// The gateway's configuration flags, shared by every command.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or [::]:$PORT when PORT is set]
    #[arg(long, env = "TOLLGATE_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Serve /metrics and /health/detailed here instead of on --listen.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_LISTEN",
        global = true,
        value_name = "ADDR"
    )]
    pub admin_listen: Option<SocketAddr>,

    /// sqlite://FILE (embedded, created if missing) or postgres://… [default: sqlite://tollgate.db]
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// The upstream for every path no --route claims: shorthand for --route "/=URL".
    #[arg(long, env = "TOLLGATE_UPSTREAM", global = true, value_name = "URL", value_parser = config::parse_upstream)]
    pub upstream: Option<UpstreamUrl>,

    /// "PREFIX=URL [public] [strip] [role=NAME]"; repeatable (in the environment, separated by ;).
    // Parsed in `into_config`, so that an empty entry (a trailing `;`) is
    // skipped rather than refused.
    #[arg(
        long = "route",
        env = "TOLLGATE_ROUTES",
        global = true,
        value_delimiter = ';',
        value_name = "ROUTE"
    )]
    pub routes: Vec<String>,

    /// Directory holding the signing keys.
    #[arg(
        long,
        env = "TOLLGATE_KEYS_DIR",
        global = true,
        default_value = "keys",
        value_name = "DIR"
    )]
    pub keys_dir: PathBuf,

    /// Where the private keys live: dir (--keys-dir) or database (sealed under TOLLGATE_KEY_ENCRYPTION_KEY).
    #[arg(long, env = "TOLLGATE_KEY_STORE", global = true, default_value = "dir", value_parser = PossibleValuesParser::new(KeyStoreKind::NAMES).map(|kind| kind.parse::<KeyStoreKind>().expect("listed")), ignore_case = true)]
    pub key_store: KeyStoreKind,

    /// `iss` of issued tokens.
    #[arg(
        long,
        env = "TOLLGATE_ISSUER",
        global = true,
        default_value = "tollgate"
    )]
    pub issuer: String,

    /// `aud` of issued tokens.
    #[arg(
        long,
        env = "TOLLGATE_AUDIENCE",
        global = true,
        default_value = "tollgate"
    )]
    pub audience: String,

    /// Lifetime of access tokens (30s, 15m, 12h, 31d).
    #[arg(long, env = "TOLLGATE_ACCESS_TTL", global = true, default_value = "15m", value_parser = config::parse_duration, value_name = "DURATION")]
    pub access_ttl: Duration,

    /// Lifetime of a session, from login.
    #[arg(long, env = "TOLLGATE_REFRESH_TTL", global = true, default_value = "31d", value_parser = config::parse_duration, value_name = "DURATION")]
    pub refresh_ttl: Duration,

    /// How long a spent refresh token still yields its successor (two tabs, a lost answer).
    #[arg(long, env = "TOLLGATE_REFRESH_REUSE_GRACE", global = true, default_value = "10s", value_parser = config::parse_duration, value_name = "DURATION")]
    pub refresh_reuse_grace: Duration,

    /// A session not refreshed for this long cannot be refreshed [default: none]
    #[arg(long, env = "TOLLGATE_SESSION_IDLE_TIMEOUT", global = true, value_parser = config::parse_duration, value_name = "DURATION")]
    pub session_idle_timeout: Option<Duration>,

    /// Comma-separated exact origins allowed to call with credentials.
    #[arg(long, env = "TOLLGATE_CORS_ORIGINS", global = true, value_delimiter = ',', value_parser = config::parse_origin, value_name = "ORIGINS")]
    pub cors_origins: Vec<CorsOrigin>,

    /// SameSite attribute of the cookies (none for a frontend on another site).
    #[arg(long, env = "TOLLGATE_COOKIE_SAMESITE", global = true, default_value = "lax", value_parser = PossibleValuesParser::new(SameSite::NAMES).map(|s| s.parse::<SameSite>().expect("listed")), ignore_case = true)]
    pub cookie_samesite: SameSite,

    /// Secure attribute of the cookies.
    #[arg(long, env = "TOLLGATE_COOKIE_SECURE", global = true, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub cookie_secure: bool,

    /// Comma-separated path prefixes proxied without a token, on every route.
    #[arg(
        long,
        env = "TOLLGATE_PUBLIC_PATHS",
        global = true,
        value_delimiter = ',',
        value_name = "PATHS"
    )]
    pub public_paths: Vec<String>,

    /// Whether POST /api/auth/register creates accounts.
    #[arg(long, env = "TOLLGATE_ALLOW_REGISTRATION", global = true, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub allow_registration: bool,

    /// Comma-separated CIDRs whose X-Forwarded-For (and -Proto, -Host) is believed.
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", global = true, value_delimiter = ',', value_parser = config::parse_trusted_proxy, value_name = "CIDRS")]
    pub trusted_proxies: Vec<TrustedProxy>,

    /// A header naming the client's address (X-Real-IP, Fly-Client-IP), believed from trusted proxies only.
    #[arg(long, env = "TOLLGATE_CLIENT_IP_HEADER", global = true, value_parser = config::parse_header_name, value_name = "HEADER")]
    pub client_ip_header: Option<HeaderName>,

    /// The URL users reach the gateway at (links in mail; the own origin behind a proxy).
    #[arg(long, env = "TOLLGATE_PUBLIC_URL", global = true, value_parser = config::parse_public_url, value_name = "URL")]
    pub public_url: Option<PublicUrl>,

    /// smtp://user:pass@host:port (STARTTLS) or smtps://… for password-reset mail.
    #[arg(
        long,
        env = "TOLLGATE_SMTP_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub smtp_url: Option<String>,

    /// The From of password-reset mail [default: tollgate@<public-url host>]
    #[arg(
        long,
        env = "TOLLGATE_MAIL_FROM",
        global = true,
        value_name = "ADDRESS"
    )]
    pub mail_from: Option<String>,

    /// Instead of SMTP, POST each mail as JSON {to, subject, text, kind, link} to this URL.
    #[arg(long, env = "TOLLGATE_MAIL_WEBHOOK", global = true, value_parser = config::parse_http_url, value_name = "URL")]
    pub mail_webhook: Option<Uri>,

    /// How long audit rows are kept.
    #[arg(long, env = "TOLLGATE_AUDIT_RETENTION", global = true, default_value = "90d", value_parser = config::parse_duration, value_name = "DURATION")]
    pub audit_retention: Duration,

    /// Largest request body proxied (10MiB, 512KiB, …).
    #[arg(long, env = "TOLLGATE_MAX_BODY", global = true, default_value = "10MiB", value_parser = config::parse_size, value_name = "SIZE")]
    pub max_body: u64,

    /// How long the upstream may take to answer.
    #[arg(long, env = "TOLLGATE_UPSTREAM_TIMEOUT", global = true, default_value = "30s", value_parser = config::parse_duration, value_name = "DURATION")]
    pub upstream_timeout: Duration,

    /// Serve GET /api/debug/session.
    #[arg(long, env = "TOLLGATE_DEBUG_ENDPOINTS", global = true, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub debug_endpoints: bool,

    /// Log format; the level comes from RUST_LOG.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", global = true, default_value = "text", value_parser = PossibleValuesParser::new(LogFormat::NAMES).map(|s| s.parse::<LogFormat>().expect("listed")), ignore_case = true)]
    pub log_format: LogFormat,

    /// Export each request's span over OTLP/HTTP to this endpoint (<endpoint>/v1/traces).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true, value_parser = config::parse_http_url, value_name = "URL")]
    pub otlp_endpoint: Option<Uri>,

    /// Client connections served at once; more wait in the listen queue.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS", global = true, default_value = "10000", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Connections to each upstream, idle or busy.
    #[arg(long, env = "TOLLGATE_UPSTREAM_MAX_CONNECTIONS", global = true, default_value = "256", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_max_connections: u32,

    /// Verified access tokens remembered (each costs a few hundred bytes).
    #[arg(
        long,
        env = "TOLLGATE_TOKEN_CACHE_CAPACITY",
        global = true,
        default_value = "100000",
        value_name = "N"
    )]
    pub token_cache_capacity: u64,
}

/// The default database when none is given: the embedded SQLite file.
const DEFAULT_DATABASE_URL: &str = "sqlite://tollgate.db";

impl ConfigArgs {
    /// Validates the flags into the one [`Config`]. `env` reads the
    /// environment: `PORT`, `TOLLGATE_KEY_ENCRYPTION_KEY`, and the `*_FILE`
    /// variables that hold secrets.
    pub fn into_config(self, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let listen = match (self.listen, env("PORT")) {
            (Some(listen), _) => listen,
            (None, Some(port)) => {
                let port: u16 = port
                    .trim()
                    .parse()
                    .with_context(|| format!("invalid PORT `{port}`: expected a port number"))?;
                // Both IPv4 and IPv6: some platforms' private networks are IPv6-only.
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
            }
            (None, None) => config::DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
        };
        if self.access_ttl.is_zero() {
            bail!("invalid --access-ttl: must be longer than zero");
        }
        if self.refresh_ttl < self.access_ttl {
            bail!("invalid --refresh-ttl: must be at least --access-ttl");
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            bail!("invalid --issuer/--audience: must not be empty");
        }
        let public_paths = self
            .public_paths
            .iter()
            .map(|path| config::parse_public_path(path))
            .collect::<anyhow::Result<_>>()?;
        let mut routes = self
            .routes
            .iter()
            .filter(|raw| !raw.trim().is_empty())
            .map(|raw| config::parse_route(raw).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(upstream) = self.upstream {
            routes.push(RouteConfig {
                prefix: "/".into(),
                upstream,
                public: false,
                strip: false,
                role: None,
            });
        }
        let routes = config::order_routes(routes)?;

        let database_url = secret_from(self.database_url, "DATABASE_URL", env)?
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        let key_encryption_key = secret_from(
            env("TOLLGATE_KEY_ENCRYPTION_KEY"),
            "TOLLGATE_KEY_ENCRYPTION_KEY",
            env,
        )?;
        let key_store = match (self.key_store, key_encryption_key) {
            (KeyStoreKind::Dir, _) => KeyStoreConfig::Dir,
            (KeyStoreKind::Database, Some(key)) => {
                KeyStoreConfig::Database(KeyEncryptionKey::parse(&key).map_err(anyhow::Error::msg)?)
            }
            (KeyStoreKind::Database, None) => bail!(
                "--key-store database needs TOLLGATE_KEY_ENCRYPTION_KEY (or \
                 TOLLGATE_KEY_ENCRYPTION_KEY_FILE): 32 random bytes, base64 \
                 (`openssl rand -base64 32`)"
            ),
        };

        let smtp_url = secret_from(self.smtp_url, "TOLLGATE_SMTP_URL", env)?
            .map(|url| config::parse_smtp_url(&url))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let mail = MailConfig {
            smtp_url,
            from: self.mail_from,
            webhook: self.mail_webhook,
        };
        if mail.smtp_url.is_some() && mail.webhook.is_some() {
            bail!("--smtp-url and --mail-webhook are two ways to send mail: choose one");
        }
        if mail.is_configured() && self.public_url.is_none() {
            bail!(
                "password-reset mail links to the gateway: set --public-url (e.g. \
                 https://auth.example.com) with --smtp-url or --mail-webhook"
            );
        }

        Ok(Config {
            listen,
            admin_listen: self.admin_listen,
            database_url,
            routes,
            keys_dir: self.keys_dir,
            key_store,
            issuer: self.issuer,
            audience: self.audience,
            access_ttl: self.access_ttl,
            refresh_ttl: self.refresh_ttl,
            refresh_reuse_grace: self.refresh_reuse_grace,
            session_idle_timeout: self.session_idle_timeout,
            cors_origins: self.cors_origins,
            cookie_samesite: self.cookie_samesite,
            cookie_secure: self.cookie_secure,
            public_paths,
            allow_registration: self.allow_registration,
            trusted_proxies: self.trusted_proxies,
            client_ip_header: self.client_ip_header,
            public_url: self.public_url,
            mail,
            audit_retention: self.audit_retention,
            max_body: self.max_body,
            upstream_timeout: self.upstream_timeout,
            debug_endpoints: self.debug_endpoints,
            log_format: self.log_format,
            otlp_endpoint: self.otlp_endpoint,
            max_connections: self.max_connections as usize,
            upstream_max_connections: self.upstream_max_connections as usize,
            token_cache_capacity: self.token_cache_capacity,
        })
    }
}

/// A secret given directly (flag or `NAME`), or else read from the file
/// `NAME_FILE` names (Docker and Kubernetes secrets); one trailing newline
/// is ignored.
fn secret_from(
    given: Option<String>,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<String>> {
    if given.is_some() {
        return Ok(given);
    }
    let file_variable = format!("{name}_FILE");
    let Some(path) = env(&file_variable) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(Path::new(&path))
        .with_context(|| format!("cannot read {file_variable} ({path})"))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.is_empty() {
        bail!("{file_variable} ({path}) is empty");
    }
    Ok(Some(text.to_string()))
}
