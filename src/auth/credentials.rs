//! Where a request's access token is read from: the `Authorization: Bearer`
//! header first, else the access cookie. Tokens in the query string are
//! never read.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

use super::cookies::{ACCESS_COOKIE, find_cookie};

/// Where the access token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Bearer,
    Cookie,
}

/// An access token as presented, before any check.
#[derive(Clone, Copy, Debug)]
pub struct PresentedToken<'a> {
    pub token: &'a str,
    pub source: CredentialSource,
    /// The `Authorization` value a bearer token came from.
    pub header: Option<&'a HeaderValue>,
}

/// An `Authorization: Bearer` header with more than one word after the
/// scheme: a malformed request, not a token to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedAuthorization;

/// The `Authorization: Bearer` token if there is one, else the access cookie.
pub fn presented_token(
    headers: &HeaderMap,
) -> Result<Option<PresentedToken<'_>>, MalformedAuthorization> {
    for value in headers.get_all(AUTHORIZATION) {
        if let Some(token) = bearer_token(value)? {
            return Ok(Some(PresentedToken {
                token,
                source: CredentialSource::Bearer,
                header: Some(value),
            }));
        }
    }
    Ok(find_cookie(headers, ACCESS_COOKIE)
        .filter(|token| !token.is_empty())
        .map(|token| PresentedToken {
            token,
            source: CredentialSource::Cookie,
            header: None,
        }))
}

impl PresentedToken<'_> {
    /// `Authorization: Bearer <token>`, as the upstream is given it: the
    /// client's own value when it is spelled so already (no copy), marked
    /// sensitive so that no HTTP layer logs it.
    pub fn upstream_authorization(&self) -> Option<HeaderValue> {
        const SCHEME: &[u8] = b"Bearer ";
        let mut value = match self.header {
            Some(header)
                if header.as_bytes().starts_with(SCHEME)
                    && header.len() == SCHEME.len() + self.token.len() =>
            {
                header.clone()
            }
            _ => HeaderValue::from_str(&format!("Bearer {}", self.token)).ok()?,
        };
        value.set_sensitive(true);
        Some(value)
    }
}

/// The one reading of `Authorization` values: the `Bearer` scheme, in any
/// case, then whitespace, then exactly one token. Another scheme, or the
/// scheme alone, is no bearer token.
pub fn bearer_token(value: &HeaderValue) -> Result<Option<&str>, MalformedAuthorization> {
    let Ok(value) = value.to_str() else {
        return Ok(None);
    };
    let Some((scheme, rest)) = value.trim().split_once(|c: char| c.is_ascii_whitespace()) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim();
    if token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(MalformedAuthorization);
    }
    Ok(Some(token))
}

/// Whether an `Authorization` value uses the bearer scheme at all, however
/// malformed, so that it can be withheld from the upstream.
pub fn is_bearer_scheme(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    rest.len() >= 6
        && rest[..6].eq_ignore_ascii_case(b"bearer")
        && rest.get(6).is_none_or(|b| b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;

    #[test]
    fn bearer_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("tollgate_access=from-cookie"),
        );
        let cookie = presented_token(&headers).unwrap().unwrap();
        assert_eq!(
            (cookie.token, cookie.source),
            ("from-cookie", CredentialSource::Cookie)
        );

        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("bearer from-header"),
        );
        let bearer = presented_token(&headers).unwrap().unwrap();
        assert_eq!(
            (bearer.token, bearer.source),
            ("from-header", CredentialSource::Bearer)
        );
    }

    #[test]
    fn other_schemes_are_not_tokens() {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert!(presented_token(&headers).unwrap().is_none());
    }

    #[test]
    fn a_bearer_of_two_words_is_malformed() {
        let value = HeaderValue::from_static("Bearer a b");
        assert_eq!(bearer_token(&value), Err(MalformedAuthorization));
        assert_eq!(
            bearer_token(&HeaderValue::from_static("Bearer  a  ")),
            Ok(Some("a"))
        );
        assert_eq!(bearer_token(&HeaderValue::from_static("Bearer")), Ok(None));
    }
}
