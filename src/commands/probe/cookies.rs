//! The login's cookies judged the way a browser would: would it store them,
//! send them back where they are needed, and from a frontend on another site?

use cookie::time::OffsetDateTime;
use cookie::{Cookie, SameSite};

use super::client::Target;
use super::{Level, Outcome};
use crate::auth::cookies::{ACCESS_COOKIE, REFRESH_COOKIE};
use crate::domain::Secret;

/// What the login's `Set-Cookie` headers are worth.
pub struct Judgement {
    pub outcome: Outcome,
    /// The access cookie's value, to try it on its own.
    pub access: Option<Secret>,
}

/// One thing found about one or more cookies. Findings with the same text
/// are reported once, naming every cookie they concern.
#[derive(Debug, PartialEq, Eq)]
struct Finding {
    level: Level,
    names: Vec<&'static str>,
    text: String,
    fix: Option<String>,
}

/// Judges the `Set-Cookie` headers of a login to `login_path`; the access
/// cookie must reach `/api/auth/me` and `proxied_path`.
pub fn judge(
    set_cookies: &[String],
    target: &Target,
    login_path: &str,
    proxied_path: &str,
) -> Judgement {
    let proxied_path = proxied_path.split('?').next().unwrap_or(proxied_path);
    let wanted: [(&'static str, Vec<String>); 2] = [
        (
            ACCESS_COOKIE,
            vec![target.path("/api/auth/me"), target.path(proxied_path)],
        ),
        (REFRESH_COOKIE, vec![target.path("/api/auth/refresh")]),
    ];
    let mut findings: Vec<Finding> = Vec::new();
    let mut summaries = Vec::new();
    let mut access = None;
    for (name, must_reach) in wanted {
        // Browsers apply Set-Cookie headers in order: the last one wins.
        let parsed = set_cookies
            .iter()
            .rev()
            .filter_map(|raw| Cookie::parse(raw.as_str()).ok())
            .find(|cookie| cookie.name() == name);
        let Some(cookie) = parsed else {
            add(
                &mut findings,
                name,
                Level::Fail,
                "the login set no such cookie".to_string(),
                Some(
                    "make sure nothing in front of the gateway (proxy, CDN, load balancer) drops \
                     its Set-Cookie headers."
                        .to_string(),
                ),
            );
            continue;
        };
        if name == ACCESS_COOKIE {
            access = Some(Secret::new(cookie.value().to_string()));
        }
        summaries.push(format!("{name} ({})", attributes(&cookie)));
        for (level, text, fix) in judge_one(&cookie, target, login_path, &must_reach) {
            add(&mut findings, name, level, text, fix);
        }
    }

    let level = findings
        .iter()
        .map(|finding| finding.level)
        .max()
        .unwrap_or(Level::Ok);
    let render = |finding: &Finding| format!("{}: {}", finding.names.join(" and "), finding.text);
    let notes: Vec<String> = findings
        .iter()
        .filter(|finding| finding.level == Level::Ok)
        .map(render)
        .collect();
    let problems: Vec<String> = findings
        .iter()
        .filter(|finding| finding.level != Level::Ok)
        .map(render)
        .collect();
    let mut detail = if problems.is_empty() {
        summaries.join(", ")
    } else {
        problems.join("; ")
    };
    if !notes.is_empty() {
        detail.push_str(&format!("; note: {}", notes.join("; ")));
    }
    let mut fixes: Vec<String> = Vec::new();
    for fix in findings.iter().filter_map(|finding| finding.fix.clone()) {
        if !fixes.contains(&fix) {
            fixes.push(fix);
        }
    }
    Judgement {
        outcome: Outcome {
            level,
            detail,
            fix: (!fixes.is_empty()).then(|| fixes.join(" ")),
        },
        access,
    }
}

fn add(
    findings: &mut Vec<Finding>,
    name: &'static str,
    level: Level,
    text: String,
    fix: Option<String>,
) {
    match findings
        .iter_mut()
        .find(|finding| finding.level == level && finding.text == text && finding.fix == fix)
    {
        Some(same) => same.names.push(name),
        None => findings.push(Finding {
            level,
            names: vec![name],
            text,
            fix,
        }),
    }
}

/// The attributes a browser acts on, never the value.
fn attributes(cookie: &Cookie<'_>) -> String {
    let mut parts = Vec::new();
    if cookie.http_only() == Some(true) {
        parts.push("HttpOnly".to_string());
    }
    if cookie.secure() == Some(true) {
        parts.push("Secure".to_string());
    }
    if let Some(same_site) = cookie.same_site() {
        parts.push(format!("SameSite={same_site}"));
    }
    if cookie.partitioned() == Some(true) {
        parts.push("Partitioned".to_string());
    }
    if let Some(path) = cookie.path() {
        parts.push(format!("Path={path}"));
    }
    if let Some(domain) = cookie.domain() {
        parts.push(format!("Domain={domain}"));
    }
    if let Some(max_age) = cookie.max_age() {
        parts.push(format!("Max-Age={}", max_age.whole_seconds()));
    }
    parts.join("; ")
}

type Found = (Level, String, Option<String>);

fn judge_one(
    cookie: &Cookie<'_>,
    target: &Target,
    login_path: &str,
    must_reach: &[String],
) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let secure = cookie.secure() == Some(true);
    let fail = |text: String, fix: &str| (Level::Fail, text, Some(fix.to_string()));
    let warn = |text: String, fix: &str| (Level::Warn, text, Some(fix.to_string()));
    let note = |text: &str| (Level::Ok, text.to_string(), None);

    let expired = match (cookie.max_age(), cookie.expires_datetime()) {
        (Some(max_age), _) => max_age.whole_seconds() <= 0,
        (None, Some(expires)) => expires <= OffsetDateTime::now_utc(),
        (None, None) => false,
    };
    if expired {
        found.push(fail(
            "it arrives already expired, so browsers delete it".to_string(),
            "check --access-ttl and --refresh-ttl, and that nothing in front of the gateway \
             rewrites its Set-Cookie headers.",
        ));
    }

    if let Some(domain) = cookie.domain() {
        let domain = domain.trim_start_matches('.').to_ascii_lowercase();
        let host = target.host();
        if host != domain && !host.ends_with(&format!(".{domain}")) {
            found.push(fail(
                format!("Domain={domain} does not match the host {host}, so browsers reject it"),
                "make sure nothing in front of the gateway adds a Domain to its cookies \
                 (tollgate sets none).",
            ));
        }
    }

    let path = match cookie.path() {
        Some(path) if path.starts_with('/') => path.to_string(),
        _ => default_path(&target.path(login_path)),
    };
    for needed in must_reach {
        if !path_matches(&path, needed) {
            found.push(fail(
                format!("Path={path} does not cover {needed}, so browsers will not send it there"),
                "serve the gateway at the root of its host, or have the proxy in front rewrite \
                 the cookie paths to include its prefix (nginx: proxy_cookie_path).",
            ));
        }
    }

    if cookie.http_only() != Some(true) {
        found.push(warn(
            "it is not HttpOnly, so page scripts (and any XSS) can read it".to_string(),
            "make sure nothing in front of the gateway rewrites its Set-Cookie headers \
             (tollgate always sets HttpOnly).",
        ));
    }

    match cookie.same_site() {
        Some(SameSite::None) if !secure => found.push(fail(
            "SameSite=None without Secure: browsers reject such cookies".to_string(),
            "start the gateway with --cookie-secure=true (TOLLGATE_COOKIE_SECURE=true) and \
             serve it over HTTPS.",
        )),
        Some(SameSite::None) if cookie.partitioned() != Some(true) => found.push(warn(
            "SameSite=None without Partitioned: browsers that block third-party cookies (Safari, \
             Firefox in strict mode, Chrome when the user opts in) drop it for a frontend on \
             another site"
                .to_string(),
            "have a frontend on another site use bearer mode (the login body's access_token in \
             Authorization: Bearer), or keep Partitioned (CHIPS) on the cookies: tollgate adds it \
             with SameSite=None and Secure, so check that nothing in front of it strips it.",
        )),
        Some(SameSite::None) => found.push(note(
            "SameSite=None; Secure; Partitioned: a frontend on another site keeps its session, \
             also where third-party cookies are blocked",
        )),
        Some(same_site) => found.push((
            Level::Ok,
            format!(
                "a frontend on another site will not send SameSite={same_site} cookies; such a \
                 frontend should use bearer mode (or run the gateway with --cookie-samesite none \
                 over HTTPS)"
            ),
            None,
        )),
        None => found.push(note(
            "browsers treat cookies without SameSite as Lax, so a frontend on another site will \
             not send them; such a frontend should use bearer mode",
        )),
    }

    if secure && !target.is_https() && !target.is_local() {
        found.push(warn(
            format!(
                "Secure over plain http://{}: browsers neither store nor send Secure cookies \
                 for http pages",
                target.host()
            ),
            "serve the gateway over HTTPS; if TLS already ends in front of it, probe that \
             https:// address instead.",
        ));
    }
    if !secure && target.is_https() && cookie.same_site() != Some(SameSite::None) {
        found.push(warn(
            "it is not Secure although the gateway is served over HTTPS, so it also travels \
             over plain HTTP"
                .to_string(),
            "start the gateway with --cookie-secure=true.",
        ));
    }
    found
}

/// RFC 6265 5.1.4: the directory of the path that set the cookie.
fn default_path(request_path: &str) -> String {
    match request_path.rfind('/') {
        Some(0) | None => "/".to_string(),
        Some(end) => request_path[..end].to_string(),
    }
}

/// RFC 6265 5.1.4: whether a cookie with `cookie_path` is sent to `request_path`.
fn path_matches(cookie_path: &str, request_path: &str) -> bool {
    request_path == cookie_path
        || (request_path.starts_with(cookie_path)
            && (cookie_path.ends_with('/') || request_path[cookie_path.len()..].starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: &str = "/api/auth/login";

    fn cookies(attributes: &str) -> Vec<String> {
        vec![
            format!("tollgate_access=a.b.c; Path=/; Max-Age=900; HttpOnly{attributes}"),
            format!("tollgate_refresh=r; Path=/api/auth; Max-Age=2678400; HttpOnly{attributes}"),
        ]
    }

    fn judged(set_cookies: &[String], base: &str) -> Outcome {
        let target = Target::parse(base).unwrap();
        judge(set_cookies, &target, LOGIN, "/api/tickets").outcome
    }

    #[test]
    fn lax_secure_cookies_over_https_are_ok_with_a_note_on_cross_site_frontends() {
        let outcome = judged(
            &cookies("; Secure; SameSite=Lax"),
            "https://auth.example.com",
        );
        assert_eq!(outcome.level, Level::Ok, "{}", outcome.detail);
        assert!(outcome.detail.contains("bearer mode"), "{}", outcome.detail);
        assert!(!outcome.detail.contains("a.b.c"));
        assert!(outcome.fix.is_none());
    }

    #[test]
    fn same_site_none_without_secure_fails() {
        let outcome = judged(&cookies("; SameSite=None"), "https://auth.example.com");
        assert_eq!(outcome.level, Level::Fail);
        assert!(
            outcome
                .detail
                .contains("tollgate_access and tollgate_refresh")
        );
        assert!(outcome.fix.unwrap().contains("--cookie-secure=true"));
    }

    #[test]
    fn secure_cookies_over_plain_http_warn_unless_local() {
        let remote = judged(
            &cookies("; Secure; SameSite=Lax"),
            "http://auth.example.com",
        );
        assert_eq!(remote.level, Level::Warn);
        assert!(remote.fix.unwrap().contains("HTTPS"));
        let local = judged(&cookies("; Secure; SameSite=Lax"), "http://127.0.0.1:8080");
        assert_eq!(local.level, Level::Ok);
    }

    #[test]
    fn unpartitioned_cross_site_cookies_warn_and_partitioned_ones_pass() {
        let outcome = judged(
            &cookies("; Secure; SameSite=None"),
            "https://auth.example.com",
        );
        assert_eq!(outcome.level, Level::Warn);
        let fix = outcome.fix.unwrap();
        assert!(fix.contains("bearer") && fix.contains("CHIPS"), "{fix}");
        let partitioned = judged(
            &cookies("; Secure; SameSite=None; Partitioned"),
            "https://auth.example.com",
        );
        assert_eq!(partitioned.level, Level::Ok, "{}", partitioned.detail);
    }

    #[test]
    fn missing_cookies_and_paths_that_miss_the_routes_fail() {
        let only_refresh = vec![cookies("; Secure; SameSite=Lax")[1].clone()];
        let outcome = judged(&only_refresh, "https://auth.example.com");
        assert_eq!(outcome.level, Level::Fail);
        assert!(
            outcome
                .detail
                .contains("tollgate_access: the login set no such cookie")
        );

        // Behind a proxy that mounts the gateway under /auth, Path=/api/auth
        // no longer covers the refresh route.
        let outcome = judged(
            &cookies("; Secure; SameSite=Lax"),
            "https://example.com/auth",
        );
        assert_eq!(outcome.level, Level::Fail);
        assert!(
            outcome
                .detail
                .contains("does not cover /auth/api/auth/refresh"),
            "{}",
            outcome.detail
        );
    }

    #[test]
    fn the_last_set_cookie_of_a_name_wins_and_expired_ones_fail() {
        let mut set = cookies("; Secure; SameSite=Lax");
        set.push("tollgate_access=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax".into());
        let outcome = judged(&set, "https://auth.example.com");
        assert_eq!(outcome.level, Level::Fail);
        assert!(outcome.detail.contains("already expired"));
    }

    #[test]
    fn cookie_paths_match_whole_segments() {
        assert!(path_matches("/", "/api/tickets"));
        assert!(path_matches("/api/auth", "/api/auth/refresh"));
        assert!(path_matches("/api/auth", "/api/auth"));
        assert!(!path_matches("/api/auth", "/api/authx"));
        assert!(!path_matches("/api/auth", "/api/tickets"));
        assert_eq!(default_path("/api/auth/login"), "/api/auth");
        assert_eq!(default_path("/login"), "/");
    }
}
