//! One typed, validated configuration, built once from the command line and
//! environment and passed explicitly. Bad values are refused here, before any
//! port is bound, with one line naming the problem.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use http::HeaderValue;
use ipnet::IpNet;

use crate::cli::ConfigArgs;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub upstream: Option<http::Uri>,
    pub keys_dir: PathBuf,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub cors_origins: Vec<CorsOrigin>,
    pub cookie_samesite: SameSite,
    pub cookie_secure: bool,
    pub public_paths: Vec<String>,
    pub allow_registration: bool,
    pub trusted_proxies: Vec<TrustedProxy>,
    pub max_body: u64,
    pub upstream_timeout: Duration,
    pub debug_endpoints: bool,
    pub log_format: LogFormat,
}

// The database URL may carry a password.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database", &redact_url(&self.database_url))
            .field("upstream", &self.upstream)
            .field("keys_dir", &self.keys_dir)
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
    /// Validates the parsed flags. `port` is the `PORT` environment variable,
    /// used for the listen address when `--listen` is not given.
    pub fn from_args(args: ConfigArgs, port: Option<&str>) -> anyhow::Result<Config> {
        let listen = match (args.listen, port) {
            (Some(listen), _) => listen,
            (None, Some(port)) => {
                let port: u16 = port
                    .trim()
                    .parse()
                    .with_context(|| format!("invalid PORT `{port}`: expected a port number"))?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, None) => DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
        };
        if args.access_ttl.is_zero() {
            bail!("invalid --access-ttl: must be longer than zero");
        }
        if args.refresh_ttl < args.access_ttl {
            bail!("invalid --refresh-ttl: must be at least --access-ttl");
        }
        if args.issuer.is_empty() || args.audience.is_empty() {
            bail!("invalid --issuer/--audience: must not be empty");
        }
        let public_paths = args
            .public_paths
            .iter()
            .map(|path| parse_public_path(path))
            .collect::<anyhow::Result<_>>()?;
        Ok(Config {
            listen,
            database_url: args.database_url,
            upstream: args.upstream,
            keys_dir: args.keys_dir,
            issuer: args.issuer,
            audience: args.audience,
            access_ttl: args.access_ttl,
            refresh_ttl: args.refresh_ttl,
            refresh_reuse_grace: args.refresh_reuse_grace,
            cors_origins: args.cors_origins,
            cookie_samesite: args.cookie_samesite,
            cookie_secure: args.cookie_secure,
            public_paths,
            allow_registration: args.allow_registration,
            trusted_proxies: args.trusted_proxies,
            max_body: args.max_body,
            upstream_timeout: args.upstream_timeout,
            debug_endpoints: args.debug_endpoints,
            log_format: args.log_format,
        })
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
            let gateway_site = http::Uri::from_str(&self.issuer)
                .ok()
                .and_then(|uri| uri.host().map(site_of));
            for origin in &self.cors_origins {
                let origin_site = site_of(origin.host());
                let cross_site = match &gateway_site {
                    Some(gateway_site) => *gateway_site != origin_site,
                    None => !is_loopback_host(origin.host()),
                };
                if cross_site {
                    warnings.push(format!(
                        "CORS origin {} looks like another site while cookies are SameSite={}: \
                         browsers will not send the cookies from there; use bearer tokens or \
                         --cookie-samesite=none",
                        origin.as_str(),
                        self.cookie_samesite.attribute()
                    ));
                }
            }
        }
        warnings
    }
}

fn parse_public_path(raw: &str) -> anyhow::Result<String> {
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

pub fn parse_upstream(raw: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = raw.trim().parse().map_err(|_| {
        format!("invalid upstream `{raw}`: expected a URL like http://127.0.0.1:3000")
    })?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "invalid upstream `{raw}`: expected an http:// URL with a host"
        ));
    }
    Ok(uri)
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

/// The registrable part of a host, approximated by its last two labels: good
/// enough to warn about cookies that will not cross sites.
fn site_of(host: &str) -> String {
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return host.to_string();
    }
    let labels: Vec<&str> = host.rsplitn(3, '.').collect();
    labels
        .iter()
        .take(2)
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join(".")
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
    let uri: http::Uri = origin.parse().map_err(|_| invalid())?;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn attribute(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    fn sites_are_the_last_two_labels() {
        assert_eq!(site_of("app.example.com"), "example.com");
        assert_eq!(site_of("example.com"), "example.com");
        assert_eq!(site_of("localhost"), "localhost");
        assert_eq!(site_of("127.0.0.1"), "127.0.0.1");
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
