//! The probe's HTTP client: one deployment's base URL, plain HTTP or HTTPS
//! (rustls with the aws-lc-rs provider, trusting the public web roots plus
//! whatever the system store holds), every exchange bounded in time and size.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one request, body included, may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Larger answers are cut off: nothing the probe reads is anywhere near this.
const MAX_BODY: usize = 1024 * 1024;

/// Where the deployment is: scheme, authority and an optional path prefix
/// (a gateway mounted under `/auth` behind a proxy).
#[derive(Clone, Debug)]
pub struct Target {
    https: bool,
    authority: String,
    host: String,
    prefix: String,
}

impl Target {
    pub fn parse(raw: &str) -> anyhow::Result<Target> {
        let uri: Uri = raw.trim().parse().with_context(|| {
            format!("invalid base URL `{raw}`: expected e.g. https://auth.example.com")
        })?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => bail!("invalid base URL `{raw}`: it must start with http:// or https://"),
        };
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            bail!("invalid base URL `{raw}`: it names no host");
        };
        if uri.query().is_some() {
            bail!("invalid base URL `{raw}`: it must not carry a query");
        }
        Ok(Target {
            https,
            authority: authority.as_str().to_string(),
            host: host.trim_matches(['[', ']']).to_ascii_lowercase(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host, lowercase, without the brackets of an IPv6 literal.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether browsers treat the origin as secure although it is plain
    /// HTTP: `localhost`, `*.localhost` and loopback addresses.
    pub fn is_local(&self) -> bool {
        self.host == "localhost"
            || self.host.ends_with(".localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The path a browser sees for one of the gateway's paths.
    pub fn path(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path(path))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url(""))
    }
}

/// A complete answer.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A string field of a JSON body.
    pub fn field(&self, name: &str) -> Option<String> {
        self.json()?.get(name)?.as_str().map(str::to_string)
    }

    /// `401 invalid_token (reason: expired)` and the like: status, error code
    /// and reason of an error body; never any other part of it.
    pub fn describe(&self) -> String {
        let mut text = self.status.as_u16().to_string();
        if let Some(code) = self.field("error") {
            text.push(' ');
            text.push_str(&code);
        }
        if let Some(reason) = self.field("reason") {
            text.push_str(&format!(" (reason: {reason})"));
        }
        if let Some(message) = self.field("message") {
            text.push_str(&format!(": {}", message.trim_end_matches('.')));
        }
        text
    }

    /// The gateway's request id, to find its log line.
    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_string)
            .collect()
    }
}

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    Timeout,
    Refused,
    Tls(String),
    Other(String),
}

impl Failure {
    /// What happened, for the check's line.
    pub fn describe(&self) -> String {
        match self {
            Failure::Timeout => format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()),
            Failure::Refused => "connection refused".to_string(),
            Failure::Tls(detail) => format!("TLS failed ({detail})"),
            Failure::Other(detail) => format!("request failed ({detail})"),
        }
    }

    /// What the operator should change.
    pub fn fix(&self, target: &Target) -> String {
        match self {
            Failure::Timeout => format!(
                "check that the gateway at {target} is running and reachable from here (firewall, \
                 load balancer, DNS), and that it is not stalled on its database."
            ),
            Failure::Refused => format!(
                "nothing listens at {target}: start the gateway, or check the base URL's host and \
                 port (the gateway listens on --listen, or 0.0.0.0:$PORT in a container)."
            ),
            Failure::Tls(_) => format!(
                "serve a certificate for {} that chains to a public root or the system's trust \
                 store, or probe the plain http:// address if TLS ends in front of the gateway.",
                target.host()
            ),
            Failure::Other(_) => {
                format!("check the base URL {target} and that the gateway is reachable from here.")
            }
        }
    }
}

pub struct ProbeClient {
    target: Target,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    user_agent: String,
}

impl ProbeClient {
    pub fn new(target: Target) -> anyhow::Result<ProbeClient> {
        let tls = crate::tls::client_config()?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(ProbeClient {
            target,
            client: Client::builder(TokioExecutor::new()).build(connector),
            user_agent: format!("tollgate-probe/{}", env!("CARGO_PKG_VERSION")),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends one request to one of the gateway's paths; `body` goes as JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.target.url(path))
            .header("user-agent", &self.user_agent)
            .header("accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bytes = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(json).expect("a JSON value serialises"))
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .map_err(|error| Failure::Other(error.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| classify(&error))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|error| Failure::Other(format!("reading the body: {error}")))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }
}

/// Sorts a client error by the cause an operator can act on.
fn classify(error: &(dyn std::error::Error + 'static)) -> Failure {
    let mut chain = Vec::new();
    let mut refused = false;
    let mut tls = false;
    let mut source = Some(error);
    while let Some(cause) = source {
        chain.push(cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            tls |= wraps_tls_error(io);
        }
        tls |= cause.downcast_ref::<rustls::Error>().is_some();
        source = cause.source();
    }
    // The outermost messages are hyper-util's generic "client error (Connect)".
    let detail = chain.last().cloned().unwrap_or_default();
    if refused {
        Failure::Refused
    } else if tls {
        Failure::Tls(detail)
    } else {
        Failure::Other(chain.join(": "))
    }
}

/// tokio-rustls reports a failed handshake as an `io::Error` around the
/// `rustls::Error`, which hyper-rustls wraps in another `io::Error`; neither
/// shows the inner error as its `source`.
fn wraps_tls_error(io: &std::io::Error) -> bool {
    io.get_ref().is_some_and(|inner| {
        inner.is::<rustls::Error>()
            || inner
                .downcast_ref::<std::io::Error>()
                .is_some_and(wraps_tls_error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_their_path_prefix() {
        let target = Target::parse("https://example.com/auth/").unwrap();
        assert!(target.is_https());
        assert_eq!(target.url("/health"), "https://example.com/auth/health");
        assert_eq!(target.path("/api/auth"), "/auth/api/auth");
        assert_eq!(target.to_string(), "https://example.com/auth");
    }

    #[test]
    fn loopback_and_localhost_are_local() {
        for local in [
            "http://localhost:8080",
            "http://app.localhost",
            "http://127.0.0.1:1",
            "http://[::1]:8080",
        ] {
            assert!(Target::parse(local).unwrap().is_local(), "{local}");
        }
        assert!(!Target::parse("http://10.0.0.5").unwrap().is_local());
        assert!(!Target::parse("http://auth.example.com").unwrap().is_local());
    }

    #[test]
    fn other_schemes_and_queries_are_refused() {
        assert!(Target::parse("ftp://example.com").is_err());
        assert!(Target::parse("example.com").is_err());
        assert!(Target::parse("https://example.com/?x=1").is_err());
    }
}
