//! The command line, as clap definitions only. Every configuration flag also
//! reads an environment variable; the flag wins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, CorsOrigin, LogFormat, SameSite, TrustedProxy};

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
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the active and the next key if there are none.
    Generate {
        #[arg(long, value_enum, default_value_t = KeyAlg::EdDSA, ignore_case = true)]
        alg: KeyAlg,
    },
    /// Promote the next key to signing, retire the active one, create a new next key.
    Rotate {
        /// Algorithm of the new next key (default: that of the key being promoted).
        #[arg(long, value_enum, ignore_case = true)]
        alg: Option<KeyAlg>,
    },
    /// One line per key: kid, alg, created, state.
    List,
    /// Delete retired keys that can no longer have unexpired tokens.
    Prune,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    Add {
        username: String,
        /// A role to grant; repeat for several.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Read the password from stdin (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
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
    /// Username, roles, disabled, created.
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyAlg {
    #[value(name = "EdDSA")]
    EdDSA,
    #[value(name = "ES256")]
    ES256,
    #[value(name = "RS256")]
    RS256,
}

/// The gateway's configuration flags, shared by every command.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or 0.0.0.0:$PORT when PORT is set]
    #[arg(long, env = "TOLLGATE_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// sqlite://FILE (embedded, created if missing) or postgres://…
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "sqlite://tollgate.db",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: String,

    /// Base URL of the upstream API, e.g. http://127.0.0.1:3000
    #[arg(long, env = "TOLLGATE_UPSTREAM", global = true, value_name = "URL", value_parser = config::parse_upstream)]
    pub upstream: Option<http::Uri>,

    /// Directory holding the signing keys.
    #[arg(
        long,
        env = "TOLLGATE_KEYS_DIR",
        global = true,
        default_value = "keys",
        value_name = "DIR"
    )]
    pub keys_dir: PathBuf,

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

    /// How long a spent refresh token may still be presented (two tabs refreshing at once).
    #[arg(long, env = "TOLLGATE_REFRESH_REUSE_GRACE", global = true, default_value = "10s", value_parser = config::parse_duration, value_name = "DURATION")]
    pub refresh_reuse_grace: Duration,

    /// Comma-separated exact origins allowed to call with credentials.
    #[arg(long, env = "TOLLGATE_CORS_ORIGINS", global = true, value_delimiter = ',', value_parser = config::parse_origin, value_name = "ORIGINS")]
    pub cors_origins: Vec<CorsOrigin>,

    /// SameSite attribute of the cookies (none for a frontend on another site).
    #[arg(long, env = "TOLLGATE_COOKIE_SAMESITE", global = true, value_enum, default_value_t = SameSite::Lax, ignore_case = true)]
    pub cookie_samesite: SameSite,

    /// Secure attribute of the cookies.
    #[arg(long, env = "TOLLGATE_COOKIE_SECURE", global = true, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub cookie_secure: bool,

    /// Comma-separated path prefixes proxied without a token.
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

    /// Comma-separated CIDRs whose X-Forwarded-For is believed.
    #[arg(long, env = "TOLLGATE_TRUSTED_PROXIES", global = true, value_delimiter = ',', value_parser = config::parse_trusted_proxy, value_name = "CIDRS")]
    pub trusted_proxies: Vec<TrustedProxy>,

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
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text, ignore_case = true)]
    pub log_format: LogFormat,
}
