//! One typed, validated configuration, built once at start and passed
//! explicitly. The value parsers here are what the command line uses; bad
//! values are refused before any port is bound, with one line naming the
//! problem. This module knows nothing of the command line itself.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use base64::Engine;
use http::{HeaderName, HeaderValue, Uri};
use ipnet::IpNet;

pub use crate::auth::cookies::SameSite;
use crate::auth::seal::{KEY_LEN, SealingKey};
use crate::domain::{Role, Secret};
use crate::paths;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `/metrics` and `/health/detailed` are served instead of `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// May carry a password: never logged unredacted.
    pub database_url: String,
    /// The upstream routes, longest prefix first.
    pub routes: Vec<RouteConfig>,
    pub keys_dir: PathBuf,
    pub key_store: KeyStoreConfig,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub session_idle_timeout: Option<Duration>,
    pub cors_origins: Vec<CorsOrigin>,
    pub cookie_samesite: SameSite,
    pub cookie_secure: bool,
    pub public_paths: Vec<String>,
    pub allow_registration: bool,
    pub trusted_proxies: Vec<TrustedProxy>,
    pub client_ip_header: Option<HeaderName>,
    pub public_url: Option<PublicUrl>,
    pub mail: MailConfig,
    pub audit_retention: Duration,
    pub max_body: u64,
    pub upstream_timeout: Duration,
    pub debug_endpoints: bool,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<Uri>,
    /// Client connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// Connections to each upstream, idle or busy, across the gateway.
    pub upstream_max_connections: usize,
    /// Verified access tokens remembered, so that only a token's first use
    /// pays for its signature check.
    pub token_cache_capacity: u64,
}

// The database URL, the SMTP URL and the key-encryption key may be secrets.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &redact_url(&self.database_url))
            .field("routes", &self.routes)
            .field("keys_dir", &self.keys_dir)
            .field("key_store", &self.key_store)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("cookie_samesite", &self.cookie_samesite)
            .field("cookie_secure", &self.cookie_secure)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The `/` route of `--upstream`, or whatever route serves the root.
    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty()
    }

    /// Configurations that parse but cannot work in a browser; each is one
    /// warning at start.
    pub fn browser_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.cookie_samesite == SameSite::None && !self.cookie_secure {
            warnings.push(
                "cookies are SameSite=None without Secure: browsers drop them; \
                 set --cookie-secure=true (and serve over HTTPS)"
                    .to_string(),
            );
        }
        if self.cookie_samesite != SameSite::None {
            let gateway_host = self
                .public_url
                .as_ref()
                .map(|url| url.host().to_string())
                .or_else(|| Uri::from_str(&self.issuer).ok()?.host().map(str::to_string));
            for origin in &self.cors_origins {
                let cross_site = match &gateway_host {
                    Some(gateway_host) => site_of(gateway_host) != site_of(origin.host()),
                    None => !is_loopback_host(origin.host()),
                };
                if cross_site {
                    warnings.push(format!(
                        "CORS origin {} is another site than the gateway while cookies are \
                         SameSite={}: browsers will not send the cookies from there; serve the \
                         frontend through a route on the gateway's origin, use bearer tokens, \
                         or set --cookie-samesite=none",
                        origin.as_str(),
                        self.cookie_samesite.attribute()
                    ));
                }
            }
        }
        warnings
    }
}

/// One `--route`: requests whose normalised path is under `prefix` go to
/// `upstream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// `/` or a path without a trailing slash.
    pub prefix: String,
    pub upstream: UpstreamUrl,
    /// Proxied without a token (a valid one still adds the identity).
    pub public: bool,
    /// The prefix is removed before forwarding.
    pub strip: bool,
    /// A token without this role gets 403.
    pub role: Option<Role>,
}

/// An upstream's base URL: `http://host:port[/base]` or `https://…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl(Uri);

impl UpstreamUrl {
    pub fn uri(&self) -> &Uri {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Where the signing keys' private halves live.
#[derive(Clone)]
pub enum KeyStoreConfig {
    /// PEM files in `--keys-dir`.
    Dir,
    /// In the database, sealed under the key-encryption key.
    Database(KeyEncryptionKey),
}

impl fmt::Debug for KeyStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyStoreConfig::Dir => "Dir",
            KeyStoreConfig::Database(_) => "Database",
        })
    }
}

/// `TOLLGATE_KEY_ENCRYPTION_KEY`: 32 random bytes, base64.
#[derive(Clone)]
pub struct KeyEncryptionKey([u8; KEY_LEN]);

impl KeyEncryptionKey {
    pub fn parse(raw: &str) -> Result<KeyEncryptionKey, String> {
        let raw = raw.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
            .map_err(|_| {
                "invalid TOLLGATE_KEY_ENCRYPTION_KEY: not base64 (make one with \
                 `openssl rand -base64 32`)"
                    .to_string()
            })?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "invalid TOLLGATE_KEY_ENCRYPTION_KEY: {} bytes, expected {KEY_LEN} \
                 (make one with `openssl rand -base64 32`)",
                bytes.len()
            )
        })?;
        Ok(KeyEncryptionKey(bytes))
    }

    pub fn sealing_key(&self) -> SealingKey {
        SealingKey::new(&self.0)
    }
}

/// Where password-reset mail goes.
#[derive(Clone, Debug, Default)]
pub struct MailConfig {
    /// `smtp://user:pass@host:port` (STARTTLS) or `smtps://…`.
    pub smtp_url: Option<Secret>,
    pub from: Option<String>,
    /// Instead of SMTP: each mail POSTed as JSON here.
    pub webhook: Option<Uri>,
}

impl MailConfig {
    pub fn is_configured(&self) -> bool {
        self.smtp_url.is_some() || self.webhook.is_some()
    }
}

/// `--public-url`: where users reach the gateway (`https://auth.example.com`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl {
    /// Without a trailing slash.
    url: String,
    /// `scheme://host[:port]`, lower-case.
    origin: String,
    host: String,
}

impl PublicUrl {
    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

pub fn parse_public_url(raw: &str) -> Result<PublicUrl, String> {
    let invalid = || format!("invalid public URL `{raw}`: expected e.g. https://auth.example.com");
    let uri: Uri = raw.trim().parse().map_err(|_| invalid())?;
    let scheme = uri.scheme_str().ok_or_else(invalid)?.to_ascii_lowercase();
    let authority = uri.authority().ok_or_else(invalid)?;
    if !matches!(scheme.as_str(), "http" | "https")
        || authority.as_str().contains('@')
        || uri.query().is_some()
    {
        return Err(invalid());
    }
    Ok(PublicUrl {
        url: raw.trim().trim_end_matches('/').to_string(),
        origin: format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()),
        host: authority.host().to_ascii_lowercase(),
    })
}

/// Validates a `--public-paths` entry.
pub fn parse_public_path(raw: &str) -> anyhow::Result<String> {
    let path = raw.trim();
    if !path.starts_with('/') || path.contains(['?', '#', '\\']) || path.contains("//") {
        bail!("invalid --public-paths entry `{raw}`: expected an absolute path like /public");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == ".." || segment.contains('%'))
    {
        bail!("invalid --public-paths entry `{raw}`: no dot segments or percent-encoding");
    }
    Ok(path.trim_end_matches('/').to_string())
}

/// Durations as operators write them: `30s`, `15m`, `12h`, `31d`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim())
        .map_err(|_| format!("invalid duration `{raw}`: expected e.g. 30s, 15m, 12h or 31d"))
}

/// Sizes as operators write them: `10MiB`, `512KiB`, `1048576`.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    bytesize::ByteSize::from_str(raw.trim())
        .map(|size| size.as_u64())
        .map_err(|_| format!("invalid size `{raw}`: expected e.g. 10MiB, 512KiB or 1048576"))
}

/// An upstream base URL: `http://` or `https://`, with a host, no query.
pub fn parse_upstream(raw: &str) -> Result<UpstreamUrl, String> {
    let invalid = |why: &str| {
        format!("invalid upstream `{raw}`: {why} (expected e.g. http://127.0.0.1:3000)")
    };
    let uri: Uri = raw.trim().parse().map_err(|_| invalid("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid("the URL must be absolute, http:// or https://"));
    }
    match uri.authority() {
        Some(authority) if !authority.host().is_empty() && !authority.as_str().contains('@') => {}
        _ => return Err(invalid("the URL needs a host and no user information")),
    }
    if uri.query().is_some() {
        return Err(invalid("the URL must not have a query"));
    }
    Ok(UpstreamUrl(uri))
}

/// One `--route "PREFIX=URL [public] [strip] [role=NAME]…"`.
pub fn parse_route(raw: &str) -> Result<RouteConfig, String> {
    let invalid = |why: String| format!("invalid route `{}`: {why}", raw.trim());
    let mut words = raw.split_whitespace();
    let head = words
        .next()
        .ok_or_else(|| invalid("expected PREFIX=URL".into()))?;
    let (prefix, url) = head
        .split_once('=')
        .ok_or_else(|| invalid("expected PREFIX=URL".into()))?;
    let prefix = parse_route_prefix(prefix).map_err(invalid)?;
    let upstream = parse_upstream(url).map_err(invalid)?;
    let mut route = RouteConfig {
        prefix,
        upstream,
        public: false,
        strip: false,
        role: None,
    };
    for option in words {
        match option.split_once('=') {
            None if option == "public" => route.public = true,
            None if option == "strip" => route.strip = true,
            Some(("role", name)) => {
                if route.role.is_some() {
                    return Err(invalid("at most one role= per route".into()));
                }
                route.role = Some(Role::parse(name).map_err(invalid)?);
            }
            _ => {
                return Err(invalid(format!(
                    "unknown option `{option}` (options: public, strip, role=NAME)"
                )));
            }
        }
    }
    if route.public && route.role.is_some() {
        return Err(invalid(
            "public and role= contradict each other: a public route lets callers \
             without a token through"
                .into(),
        ));
    }
    Ok(route)
}

fn parse_route_prefix(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!("the prefix `{raw}` must start with /"));
    }
    match paths::normalize(raw) {
        Ok(normal)
            if normal == raw || normal.trim_end_matches('/') == raw.trim_end_matches('/') => {}
        _ => {
            return Err(format!(
                "the prefix `{raw}` must be a plain path (no dot segments, //, or escapes)"
            ));
        }
    }
    if raw.contains(['?', '#']) {
        return Err(format!("the prefix `{raw}` must be a plain path"));
    }
    let prefix = match raw.trim_end_matches('/') {
        "" => "/".to_string(),
        trimmed => trimmed.to_string(),
    };
    if paths::is_owned(&prefix) {
        return Err(format!(
            "the prefix `{prefix}` is the gateway's own (/api/auth, /api/admin, /.well-known, \
             /health, /metrics, /api/debug are never routed)"
        ));
    }
    Ok(prefix)
}

/// Puts the routes in matching order (longest prefix first) and refuses two
/// routes with one prefix.
pub fn order_routes(mut routes: Vec<RouteConfig>) -> anyhow::Result<Vec<RouteConfig>> {
    routes.sort_by(|a, b| {
        b.prefix
            .len()
            .cmp(&a.prefix.len())
            .then(a.prefix.cmp(&b.prefix))
    });
    if let Some(pair) = routes
        .windows(2)
        .find(|pair| pair[0].prefix == pair[1].prefix)
    {
        bail!(
            "invalid routes: two routes for the prefix {} (--upstream is the route for /)",
            pair[0].prefix
        );
    }
    Ok(routes)
}

/// An exact browser origin (`scheme://host[:port]`), kept as the header value
/// it is compared with and echoed as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsOrigin(HeaderValue);

impl CorsOrigin {
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("origins are validated ASCII")
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    fn host(&self) -> &str {
        let without_scheme = self
            .as_str()
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or("");
        match without_scheme.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => without_scheme,
        }
    }
}

/// The site of a host as browsers see it: its registrable domain under the
/// Public Suffix List (`web.up.railway.app` and `api.up.railway.app` are two
/// sites; `app.example.com` and `api.example.com` are one). Addresses and
/// single labels are their own site.
fn site_of(host: &str) -> String {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    if host.parse::<IpAddr>().is_ok() {
        return host;
    }
    psl::domain_str(&host).unwrap_or(&host).to_string()
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub fn parse_origin(raw: &str) -> Result<CorsOrigin, String> {
    let origin = raw.trim().to_ascii_lowercase();
    let invalid = || format!("invalid CORS origin `{raw}`: expected e.g. https://app.example.com");
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    if !matches!(scheme, "http" | "https")
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '@', '*'])
    {
        return Err(invalid());
    }
    let uri: Uri = origin.parse().map_err(|_| invalid())?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    HeaderValue::from_str(&origin)
        .map(CorsOrigin)
        .map_err(|_| invalid())
}

pub type TrustedProxy = IpNet;

/// A CIDR (`10.0.0.0/8`) or a single address.
pub fn parse_trusted_proxy(raw: &str) -> Result<TrustedProxy, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("invalid trusted proxy `{raw}`: expected a CIDR like 10.0.0.0/8"))
}

/// A header naming the client's address (`X-Real-IP`, `Fly-Client-IP`).
pub fn parse_header_name(raw: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(raw.trim().as_bytes())
        .map_err(|_| format!("invalid header name `{raw}`: expected e.g. X-Real-IP"))
}

/// `smtp://user:pass@host:port` or `smtps://…`.
pub fn parse_smtp_url(raw: &str) -> Result<Secret, String> {
    let raw = raw.trim();
    let invalid = || {
        "invalid SMTP URL: expected smtp://user:pass@host:port (STARTTLS) or smtps://…".to_string()
    };
    let uri: Uri = raw.parse().map_err(|_| invalid())?;
    if !matches!(uri.scheme_str(), Some("smtp" | "smtps"))
        || uri.authority().is_none_or(|a| a.host().is_empty())
    {
        return Err(invalid());
    }
    Ok(Secret::new(raw.to_string()))
}

/// An `http://` or `https://` URL to POST to.
pub fn parse_http_url(raw: &str) -> Result<Uri, String> {
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|_| format!("invalid URL `{raw}`: expected http://… or https://…"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(format!(
            "invalid URL `{raw}`: expected http://… or https://…"
        ));
    }
    Ok(uri)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub const NAMES: [&str; 2] = ["text", "json"];
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(raw: &str) -> Result<LogFormat, String> {
        match raw.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("invalid log format `{raw}`: use text or json")),
        }
    }
}

/// The key store named by `--key-store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStoreKind {
    Dir,
    Database,
}

impl KeyStoreKind {
    pub const NAMES: [&str; 2] = ["dir", "database"];
}

impl FromStr for KeyStoreKind {
    type Err = String;

    fn from_str(raw: &str) -> Result<KeyStoreKind, String> {
        match raw.to_ascii_lowercase().as_str() {
            "dir" => Ok(KeyStoreKind::Dir),
            "database" => Ok(KeyStoreKind::Database),
            _ => Err(format!("invalid key store `{raw}`: use dir or database")),
        }
    }
}

/// The database URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_operator_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(
            parse_duration("31d").unwrap(),
            Duration::from_secs(31 * 86_400)
        );
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn origins_are_exact_and_lowercased() {
        assert_eq!(
            parse_origin("https://App.Example.com").unwrap().as_str(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://localhost:3000").unwrap().as_str(),
            "http://localhost:3000"
        );
        assert!(parse_origin("https://app.example.com/").is_err());
        assert!(parse_origin("*").is_err());
        assert!(parse_origin("ftp://x").is_err());
        assert!(parse_origin("https://").is_err());
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_addresses() {
        assert!(
            parse_trusted_proxy("10.0.0.0/8")
                .unwrap()
                .contains(&"10.1.2.3".parse::<IpAddr>().unwrap())
        );
        assert!(
            parse_trusted_proxy("127.0.0.1")
                .unwrap()
                .contains(&"127.0.0.1".parse::<IpAddr>().unwrap())
        );
        assert!(parse_trusted_proxy("::1/128").is_ok());
        assert!(parse_trusted_proxy("nope").is_err());
    }

    #[test]
    fn public_paths_must_be_plain_absolute_paths() {
        assert_eq!(parse_public_path("/public/").unwrap(), "/public");
        assert!(parse_public_path("public").is_err());
        assert!(parse_public_path("/a/../b").is_err());
        assert!(parse_public_path("/a%2fb").is_err());
    }

    #[test]
    fn sites_follow_the_public_suffix_list() {
        assert_eq!(site_of("app.example.com"), "example.com");
        assert_eq!(site_of("example.com"), "example.com");
        assert_eq!(site_of("localhost"), "localhost");
        assert_eq!(site_of("127.0.0.1"), "127.0.0.1");
        assert_ne!(
            site_of("web.up.railway.app"),
            site_of("api.up.railway.app"),
            "up.railway.app is a public suffix: its subdomains are separate sites"
        );
        assert_eq!(site_of("a.example.co.uk"), site_of("b.example.co.uk"));
    }

    #[test]
    fn routes_parse_with_their_options() {
        let route = parse_route("/app=http://web:3000 strip role=staff").unwrap();
        assert_eq!(route.prefix, "/app");
        assert_eq!(route.upstream.uri().to_string(), "http://web:3000/");
        assert!(route.strip && !route.public);
        assert_eq!(route.role.unwrap().as_str(), "staff");
        let route = parse_route("/=http://web:3000  public strip").unwrap();
        assert!(route.public && route.strip && route.role.is_none());
        assert_eq!(
            parse_route("/=https://api.example.com/v1").unwrap().prefix,
            "/"
        );
        assert_eq!(parse_route("/api/=http://a:1").unwrap().prefix, "/api");
        for bad in [
            "/app=http://web:3000 cached",
            "/app=web:3000",
            "/app=/relative",
            "app=http://web:3000",
            "/app",
            "/a/../b=http://x:1",
            "/api/auth=http://x:1",
            "/health/x=http://x:1",
            "/app=ftp://x",
            "/app=http://x:1 role=a,b",
            "/app=http://x:1 role=a role=b",
            "/app=http://x:1 public role=a",
        ] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
        let twice = vec![
            parse_route("/a=http://x:1").unwrap(),
            parse_route("/a/=http://y:1").unwrap(),
        ];
        assert!(order_routes(twice).is_err());
        let ordered = order_routes(vec![
            parse_route("/=http://x:1").unwrap(),
            parse_route("/api/v1=http://z:1").unwrap(),
            parse_route("/api=http://y:1").unwrap(),
        ])
        .unwrap();
        let prefixes: Vec<&str> = ordered.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/api/v1", "/api", "/"]);
    }

    #[test]
    fn key_encryption_keys_are_32_bytes_of_base64() {
        let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(KeyEncryptionKey::parse(&key).is_ok());
        assert!(
            KeyEncryptionKey::parse("not base64!!")
                .err()
                .unwrap()
                .contains("not base64")
        );
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(
            KeyEncryptionKey::parse(&short)
                .err()
                .unwrap()
                .contains("16 bytes")
        );
    }

    #[test]
    fn public_urls_name_an_origin() {
        let url = parse_public_url("https://Auth.Example.com/").unwrap();
        assert_eq!(url.origin(), "https://auth.example.com");
        assert_eq!(url.as_str(), "https://Auth.Example.com");
        assert!(parse_public_url("auth.example.com").is_err());
        assert!(parse_public_url("ftp://x").is_err());
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://t.db"), "sqlite://t.db");
    }
}
