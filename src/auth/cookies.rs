//! The two cookies and their exact attributes, and reading cookies back.

use std::str::FromStr;
use std::time::Duration;

use cookie::Cookie;
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

pub const ACCESS_COOKIE: &str = "tollgate_access";
pub const REFRESH_COOKIE: &str = "tollgate_refresh";
/// The refresh cookie goes only to the auth routes.
const REFRESH_PATH: &str = "/api/auth";

/// The cookies' `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub const NAMES: [&str; 3] = ["lax", "strict", "none"];

    pub fn attribute(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

impl FromStr for SameSite {
    type Err = String;

    fn from_str(raw: &str) -> Result<SameSite, String> {
        match raw.to_ascii_lowercase().as_str() {
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            "none" => Ok(SameSite::None),
            _ => Err(format!("invalid SameSite `{raw}`: use lax, strict or none")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CookiePolicy {
    same_site: SameSite,
    secure: bool,
    access_max_age: Duration,
    refresh_max_age: Duration,
}

impl CookiePolicy {
    /// The cookies live as long as their tokens: `access_ttl` and `refresh_ttl`.
    pub fn new(
        same_site: SameSite,
        secure: bool,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> CookiePolicy {
        CookiePolicy {
            same_site,
            secure,
            access_max_age: access_ttl,
            refresh_max_age: refresh_ttl,
        }
    }

    pub fn set_access(&self, token: &str) -> HeaderValue {
        self.build(ACCESS_COOKIE, token, "/", self.access_max_age)
    }

    pub fn set_refresh(&self, token: &str) -> HeaderValue {
        self.build(REFRESH_COOKIE, token, REFRESH_PATH, self.refresh_max_age)
    }

    /// Both cookies, expired, for logout.
    pub fn clear_both(&self) -> [HeaderValue; 2] {
        [
            self.build(ACCESS_COOKIE, "", "/", Duration::ZERO),
            self.build(REFRESH_COOKIE, "", REFRESH_PATH, Duration::ZERO),
        ]
    }

    fn build(&self, name: &str, value: &str, path: &str, max_age: Duration) -> HeaderValue {
        let same_site = match self.same_site {
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::None => cookie::SameSite::None,
        };
        let max_age = cookie::time::Duration::seconds(max_age.as_secs() as i64);
        let cookie = Cookie::build((name, value))
            .path(path)
            .max_age(max_age)
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            // CHIPS: a frontend on another site keeps its session even where
            // third-party cookies are blocked.
            .partitioned(self.same_site == SameSite::None && self.secure)
            .build();
        HeaderValue::from_str(&cookie.to_string()).expect("tokens are cookie-safe ASCII")
    }
}

/// The value of the first cookie called `name`, across every `Cookie` header.
///
/// A `Cookie` header is `name=value` pairs separated by `; ` (RFC 6265 4.2.1),
/// read here directly: this runs on every cookie-authenticated request, and
/// the `cookie` crate's full parser (which builds each cookie) costs eight
/// times as much.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        // Cookies of other applications may carry UTF-8, which `to_str`
        // refuses; ours are ASCII either way.
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            // RFC 6265's whitespace: a no-break space before a name makes
            // another name, which the proxy removes all the same.
            let (key, value) = pair.split_once('=')?;
            let trim = |s: &'a str| s.trim_matches([' ', '\t']);
            (trim(key) == name).then(|| trim(value).trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(same_site: SameSite, secure: bool) -> CookiePolicy {
        CookiePolicy::new(
            same_site,
            secure,
            Duration::from_secs(900),
            Duration::from_secs(2_678_400),
        )
    }

    fn attributes(value: &HeaderValue) -> Vec<String> {
        let mut parts: Vec<String> = value
            .to_str()
            .unwrap()
            .split("; ")
            .map(str::to_string)
            .collect();
        parts.sort();
        parts
    }

    #[test]
    fn access_cookie_has_the_contract_attributes() {
        let value = policy(SameSite::Lax, true).set_access("abc");
        assert_eq!(
            attributes(&value),
            [
                "HttpOnly",
                "Max-Age=900",
                "Path=/",
                "SameSite=Lax",
                "Secure",
                "tollgate_access=abc"
            ]
        );
    }

    #[test]
    fn refresh_cookie_is_scoped_to_the_auth_routes() {
        let value = policy(SameSite::Strict, false).set_refresh("xyz");
        assert_eq!(
            attributes(&value),
            [
                "HttpOnly",
                "Max-Age=2678400",
                "Path=/api/auth",
                "SameSite=Strict",
                "tollgate_refresh=xyz"
            ]
        );
    }

    #[test]
    fn cross_site_cookies_are_partitioned() {
        let value = policy(SameSite::None, true).set_access("abc");
        assert!(attributes(&value).contains(&"Partitioned".to_string()));
        let insecure = policy(SameSite::None, false).set_access("abc");
        assert!(!attributes(&insecure).contains(&"Partitioned".to_string()));
    }

    #[test]
    fn clearing_expires_both() {
        for value in policy(SameSite::Lax, true).clear_both() {
            assert!(value.to_str().unwrap().contains("Max-Age=0"));
        }
    }

    #[test]
    fn cookies_are_found_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; tollgate_accessx=no"));
        headers.append(COOKIE, HeaderValue::from_static("b=2;tollgate_access=yes"));
        assert_eq!(find_cookie(&headers, ACCESS_COOKIE), Some("yes"));
        assert_eq!(find_cookie(&headers, REFRESH_COOKIE), None);
    }

    #[test]
    fn names_are_trimmed_of_spaces_and_tabs_only() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1;\t tollgate_access = yes "),
        );
        headers.append(
            COOKIE,
            HeaderValue::from_str("\u{a0}tollgate_refresh=no").unwrap(),
        );
        assert_eq!(find_cookie(&headers, ACCESS_COOKIE), Some("yes"));
        assert_eq!(find_cookie(&headers, REFRESH_COOKIE), None);
    }
}
