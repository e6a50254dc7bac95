//! `tollgate probe`: checks a running deployment end to end, the way a
//! frontend and an upstream use it, and says for every problem what to change.
//!
//! The checks run in order; one that needs what an earlier one failed to
//! produce (a token, a cookie) is reported as skipped, and counts as failed.
//! Every check prints one line as soon as it is done. Tokens, cookie values
//! and the password never appear in the output.

mod client;
mod cookies;

use std::fmt;
use std::process::ExitCode;

use http::{Method, StatusCode};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::auth::cookies::ACCESS_COOKIE;
use crate::auth::tokens::LEEWAY;
use crate::cli::ProbeArgs;
use crate::domain::{Email, Password, Secret};
use client::{Failure, ProbeClient, Reply, Target};

const LOGIN_PATH: &str = "/api/auth/login";
const RESET_PATH: &str = "/api/auth/password-reset";
const TEST_MAIL_PATH: &str = "/api/admin/mail/test";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        })
    }
}

/// The result of one check: `fix` is set on every warning and failure.
#[derive(Debug)]
pub struct Outcome {
    pub level: Level,
    pub detail: String,
    pub fix: Option<String>,
}

impl Outcome {
    fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(detail: impl Into<String>, fix: impl Into<String>) -> Outcome {
        Outcome {
            level: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A check that needs what an earlier, failed one should have produced.
    fn skipped(after: &str) -> Outcome {
        Outcome::fail(
            format!("skipped because the {after} check failed"),
            format!("resolve the {after} check's failure above first."),
        )
    }

    /// A request that got no answer.
    fn unreachable(what: &str, failure: &Failure, target: &Target) -> Outcome {
        Outcome::fail(
            format!("{what}: {}", failure.describe()),
            failure.fix(target),
        )
    }

    /// An answer no rule below expected.
    fn unexpected(what: &str, reply: &Reply) -> Outcome {
        let fix = match reply.status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                "check that the base URL points at tollgate itself, path prefix included."
                    .to_string()
            }
            StatusCode::SERVICE_UNAVAILABLE => database_fix().to_string(),
            _ => match reply.request_id() {
                Some(id) => format!("look for request id {id} in the gateway's log."),
                None => "look for this request in the gateway's log.".to_string(),
            },
        };
        Outcome::fail(format!("{what}: {}", reply.describe()), fix)
    }
}

fn database_fix() -> &'static str {
    "the gateway cannot reach its database: check that the database named by --database-url \
     (DATABASE_URL) is up and reachable from the gateway."
}

/// Prints one line. A closed stdout (`tollgate probe … | head -3`) is no
/// reason to panic, nor to skip the remaining checks and the logout.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints each check's line as it completes and counts the levels.
#[derive(Default)]
struct Report {
    counts: [usize; 3],
}

impl Report {
    fn record(&mut self, name: &str, outcome: Outcome) {
        self.counts[outcome.level as usize] += 1;
        let mut line = format!("{:<4}  {:<9}  {}", outcome.level, name, outcome.detail);
        if let Some(fix) = outcome.fix.filter(|_| outcome.level != Level::Ok) {
            line.push_str(" -- fix: ");
            line.push_str(&fix);
        }
        say(&line);
    }

    fn failed(&self) -> bool {
        self.counts[Level::Fail as usize] > 0
    }
}

/// What a successful login yields.
struct Session {
    username: String,
    access: Secret,
    refresh: Secret,
    set_cookies: Vec<String>,
}

pub async fn run(args: ProbeArgs, password: Password) -> anyhow::Result<ExitCode> {
    let target = Target::parse(&args.base_url)?;
    let proxied_path = if args.path.starts_with('/') {
        args.path.clone()
    } else {
        format!("/{}", args.path)
    };
    let check_mail = args
        .check_mail
        .as_deref()
        .map(|address| {
            Email::parse(address).map_err(|e| anyhow::anyhow!("invalid --check-mail: {e}"))
        })
        .transpose()?;
    let http = ProbeClient::new(target.clone())?;
    say(&format!("probing {target} as {}", args.username));
    let mut report = Report::default();

    let (outcome, reachable) = health(&http).await;
    report.record("health", outcome);
    let mut after_login = vec![
        "cookies",
        "me-bearer",
        "me-cookie",
        "refresh",
        "jwks",
        "proxy",
    ];
    if check_mail.is_some() {
        after_login.push("mail");
    }
    after_login.push("logout");
    if !reachable {
        for name in ["reset", "login"].into_iter().chain(after_login) {
            report.record(name, Outcome::skipped("health"));
        }
        return Ok(finish(&report));
    }
    report.record("reset", password_reset(&http).await);

    let (outcome, session) = login(&http, &args.username, &password).await;
    report.record("login", outcome);
    let Some(session) = session else {
        for name in after_login {
            report.record(name, Outcome::skipped("login"));
        }
        return Ok(finish(&report));
    };

    let judgement = cookies::judge(&session.set_cookies, &target, LOGIN_PATH, &proxied_path);
    report.record("cookies", judgement.outcome);
    report.record("me-bearer", me_by_bearer(&http, &session).await);
    report.record(
        "me-cookie",
        match &judgement.access {
            Some(cookie) => me_by_cookie(&http, &session, cookie).await,
            None => Outcome::fail(
                "skipped because the login set no tollgate_access cookie",
                "resolve the cookies check's failure above first.",
            ),
        },
    );
    let (outcome, refreshed) = refresh(&http, &session).await;
    report.record("refresh", outcome);
    // The newest token from here on: the refreshed one proves most.
    let access = refreshed.as_ref().unwrap_or(&session.access);
    report.record("jwks", jwks(&http, access).await);
    report.record("proxy", proxied(&http, access, &proxied_path).await);
    if let Some(to) = &check_mail {
        report.record("mail", test_mail(&http, access, to).await);
    }
    report.record("logout", logout(&http, access).await);
    Ok(finish(&report))
}

fn finish(report: &Report) -> ExitCode {
    let [ok, warn, fail] = report.counts;
    say(&format!("probe: {ok} ok, {warn} warn, {fail} fail"));
    if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `GET /health`; also says whether the gateway could be reached at all.
async fn health(http: &ProbeClient) -> (Outcome, bool) {
    let reply = match http.send(Method::GET, "/health", &[], None).await {
        Ok(reply) => reply,
        Err(failure) => {
            return (
                Outcome::unreachable("GET /health", &failure, http.target()),
                false,
            );
        }
    };
    let outcome =
        if reply.status == StatusCode::OK && reply.field("status").as_deref() == Some("ok") {
            Outcome::ok(r#"GET /health: 200 {"status":"ok"}"#)
        } else if reply.status == StatusCode::OK {
            Outcome::fail(
                "GET /health: 200, but not tollgate's {\"status\":\"ok\"}",
                "check that the base URL points at tollgate itself, path prefix included.",
            )
        } else {
            Outcome::unexpected("GET /health", &reply)
        };
    (outcome, true)
}

async fn login(
    http: &ProbeClient,
    username: &str,
    password: &Password,
) -> (Outcome, Option<Session>) {
    let body = json!({ "username": username, "password": password.expose() });
    let what = "POST /api/auth/login";
    let reply = match http.send(Method::POST, LOGIN_PATH, &[], Some(&body)).await {
        Ok(reply) => reply,
        Err(failure) => return (Outcome::unreachable(what, &failure, http.target()), None),
    };
    let outcome = match (reply.status, reply.field("error").as_deref()) {
        (StatusCode::OK, _) => {
            let token_body = reply.json().and_then(|json| {
                Some((
                    json.get("access_token")?.as_str()?.to_string(),
                    json.get("refresh_token")?.as_str()?.to_string(),
                    json.get("user").cloned().unwrap_or(Value::Null),
                    json.get("expires_in").and_then(Value::as_i64),
                ))
            });
            let Some((access, refresh, user, expires_in)) = token_body else {
                return (
                    Outcome::fail(
                        format!("{what}: 200 without a token body"),
                        "check that the base URL points at tollgate itself and that nothing in \
                         front of it rewrites its answers.",
                    ),
                    None,
                );
            };
            let username = user["username"].as_str().unwrap_or(username).to_string();
            let roles = roles_of(&user);
            let expiry = expires_in
                .map(|secs| format!(", access token for {secs} s"))
                .unwrap_or_default();
            let session = Session {
                username: username.clone(),
                access: Secret::new(access),
                refresh: Secret::new(refresh),
                set_cookies: reply.set_cookies(),
            };
            return (
                Outcome::ok(format!(
                    "{what}: 200, token body for {username} (roles: {roles}){expiry}"
                )),
                Some(session),
            );
        }
        (StatusCode::UNAUTHORIZED, _) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            format!(
                "check the username/password; the user must exist in the database this \
                 deployment uses (tollgate users add {username}, or tollgate users set-password \
                 {username})."
            ),
        ),
        (StatusCode::TOO_MANY_REQUESTS, _) => {
            let wait = reply
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .map(|secs| format!("{secs} s (Retry-After)"))
                .unwrap_or_else(|| "the 15-minute window".to_string());
            Outcome::fail(
                format!(
                    "{what}: {} (throttled after failed logins)",
                    reply.describe()
                ),
                format!(
                    "logins for this user from this address are throttled: wait {wait}, then \
                     probe again with the right password."
                ),
            )
        }
        (StatusCode::FORBIDDEN, Some("account_disabled")) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            format!("enable the account (tollgate users enable {username}) or probe with another."),
        ),
        (StatusCode::BAD_REQUEST, _) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "pass a valid username (1 to 64 of A-Z a-z 0-9 . _ @ -) and a password of 8 to 1024 \
             bytes.",
        ),
        (StatusCode::SERVICE_UNAVAILABLE, _) => Outcome::fail(
            format!("{what}: {} (database down)", reply.describe()),
            database_fix(),
        ),
        _ => Outcome::unexpected(what, &reply),
    };
    (outcome, None)
}

/// Whether the gateway has mail set up, which password reset needs. An
/// empty request tells without side effects: the gateway refuses its body
/// (400) before it looks anything up, counts an attempt or sends a mail,
/// and answers 404 on a gateway without mail.
async fn password_reset(http: &ProbeClient) -> Outcome {
    let what = format!("POST {RESET_PATH} with {{}}");
    let reply = match http
        .send(Method::POST, RESET_PATH, &[], Some(&json!({})))
        .await
    {
        Ok(reply) => reply,
        Err(failure) => return Outcome::unreachable(&what, &failure, http.target()),
    };
    match (reply.status, reply.field("error").as_deref()) {
        (StatusCode::BAD_REQUEST, Some("invalid_request")) => {
            Outcome::ok(format!("{what}: 400, password reset by mail is configured"))
        }
        (StatusCode::NOT_FOUND, _) => Outcome::ok(format!(
            "{what}: 404, password reset is not configured: users cannot reset a forgotten \
             password themselves (the gateway needs --smtp-url or --mail-webhook, and \
             --public-url)"
        )),
        _ => Outcome::unexpected(&what, &reply),
    }
}

/// `--check-mail`: one test mail sent by the gateway, through its own mail
/// setup, to `to`; the probe's user needs the role `admin`.
async fn test_mail(http: &ProbeClient, access: &Secret, to: &Email) -> Outcome {
    let what = format!("POST {TEST_MAIL_PATH} to {to}");
    let bearer = format!("Bearer {}", access.expose());
    let reply = match http
        .send(
            Method::POST,
            TEST_MAIL_PATH,
            &[("authorization", &bearer)],
            Some(&json!({ "to": to.as_str() })),
        )
        .await
    {
        Ok(reply) => reply,
        Err(failure) => return Outcome::unreachable(&what, &failure, http.target()),
    };
    match (reply.status, reply.field("error").as_deref()) {
        (StatusCode::NO_CONTENT, _) => Outcome::ok(format!(
            "{what}: 204, the gateway's mail server (or webhook) took it: check that it arrived"
        )),
        (StatusCode::FORBIDDEN, Some("insufficient_role")) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "a test mail needs the role admin: probe as a user who has it (tollgate users add \
             NAME --role admin).",
        ),
        (StatusCode::NOT_FOUND, _) => Outcome::fail(
            format!("{what}: {} (mail is not set up)", reply.describe()),
            "start the gateway with --smtp-url (or --mail-webhook) and --public-url.",
        ),
        (StatusCode::BAD_GATEWAY, _) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "check --smtp-url (host, port, user and password; smtps:// for TLS from the first \
             byte) or the --mail-webhook endpoint: the reason above is the mail server's.",
        ),
        _ => Outcome::unexpected(&what, &reply),
    }
}

/// `admin,ops`, or `-` for none.
fn roles_of(user: &Value) -> String {
    let roles: Vec<&str> = user["roles"]
        .as_array()
        .map(|roles| roles.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if roles.is_empty() {
        "-".to_string()
    } else {
        roles.join(",")
    }
}

async fn me_by_bearer(http: &ProbeClient, session: &Session) -> Outcome {
    let bearer = format!("Bearer {}", session.access.expose());
    let what = "GET /api/auth/me with Authorization: Bearer";
    match http
        .send(
            Method::GET,
            "/api/auth/me",
            &[("authorization", &bearer)],
            None,
        )
        .await
    {
        Ok(reply) => judge_me(what, &reply, session, "the Authorization header"),
        Err(failure) => Outcome::unreachable(what, &failure, http.target()),
    }
}

async fn me_by_cookie(http: &ProbeClient, session: &Session, cookie: &Secret) -> Outcome {
    let header = format!("{ACCESS_COOKIE}={}", cookie.expose());
    let what = "GET /api/auth/me with only the access cookie";
    match http
        .send(Method::GET, "/api/auth/me", &[("cookie", &header)], None)
        .await
    {
        Ok(reply) => judge_me(what, &reply, session, "the Cookie header"),
        Err(failure) => Outcome::unreachable(what, &failure, http.target()),
    }
}

fn judge_me(what: &str, reply: &Reply, session: &Session, credential: &str) -> Outcome {
    match reply.status {
        StatusCode::OK => {
            let username = reply.field("username").unwrap_or_default();
            if username.eq_ignore_ascii_case(&session.username) {
                let roles = reply.json().map(|json| roles_of(&json)).unwrap_or_default();
                Outcome::ok(format!("{what}: 200, {username} (roles: {roles})"))
            } else {
                Outcome::fail(
                    format!("{what}: 200, but for another user than the one logged in"),
                    "check that nothing in front of the gateway caches /api/auth/me; it must \
                     not be cached.",
                )
            }
        }
        StatusCode::UNAUTHORIZED => rejected(what, reply, credential),
        _ => Outcome::unexpected(what, reply),
    }
}

/// A 401 for a token this deployment issued moments ago: say what its
/// `reason` means for a deployment.
fn rejected(what: &str, reply: &Reply, credential: &str) -> Outcome {
    let fix = match (
        reply.field("error").as_deref(),
        reply.field("reason").as_deref(),
    ) {
        (Some("unauthorized"), _) => format!(
            "the gateway saw no credentials: make sure the proxy or load balancer in front of it \
             forwards {credential}."
        ),
        (_, Some("unknown_kid")) => "the instance that answered does not know the key that \
             signed the token: point every instance at the same database (--database-url), \
             where the keys are recorded."
            .to_string(),
        (_, Some("bad_signature")) => "another instance holds a different key under the same \
             kid: give every instance the same database and never copy key files between keys \
             directories by hand."
            .to_string(),
        (_, Some("wrong_issuer")) => {
            "instances disagree on --issuer: give every instance the same --issuer \
             (TOLLGATE_ISSUER)."
                .to_string()
        }
        (_, Some("wrong_audience")) => {
            "instances disagree on --audience: give every instance the same --audience \
             (TOLLGATE_AUDIENCE)."
                .to_string()
        }
        (_, Some("expired" | "not_yet_valid")) => "the instances' clocks disagree, or \
             --access-ttl is shorter than the clock skew: synchronise the clocks (NTP) and check \
             --access-ttl."
            .to_string(),
        (_, Some("revoked")) => "the session was revoked right after login: check that every \
             instance uses the same database and that no one ran tollgate sessions revoke or \
             users disable for this user."
            .to_string(),
        (_, Some("malformed" | "disallowed_alg")) => format!(
            "something between the probe and the gateway alters {credential}, or instances \
             disagree on their keys: check the proxies in front of the gateway."
        ),
        _ => "look for this request in the gateway's log.".to_string(),
    };
    Outcome::fail(format!("{what}: {}", reply.describe()), fix)
}

/// Rotates the refresh token; yields the new access token.
async fn refresh(http: &ProbeClient, session: &Session) -> (Outcome, Option<Secret>) {
    let what = "POST /api/auth/refresh";
    let body = json!({ "refresh_token": session.refresh.expose() });
    let reply = match http
        .send(Method::POST, "/api/auth/refresh", &[], Some(&body))
        .await
    {
        Ok(reply) => reply,
        Err(failure) => return (Outcome::unreachable(what, &failure, http.target()), None),
    };
    let outcome = match (reply.status, reply.field("error").as_deref()) {
        (StatusCode::OK, _) => {
            let rotated = reply.field("refresh_token");
            let access = reply.field("access_token");
            match (rotated, access) {
                (Some(rotated), Some(access)) if rotated != session.refresh.expose() => {
                    return (
                        Outcome::ok(format!("{what}: 200, a new refresh token and access token")),
                        Some(Secret::new(access)),
                    );
                }
                (Some(_), Some(_)) => Outcome::fail(
                    format!("{what}: 200, but the same refresh token came back"),
                    "refresh tokens must rotate on every use: check that nothing in front of \
                     the gateway caches POST answers.",
                ),
                _ => Outcome::fail(
                    format!("{what}: 200 without a token body"),
                    "check that nothing in front of the gateway rewrites its answers.",
                ),
            }
        }
        (StatusCode::UNAUTHORIZED, Some("invalid_refresh_token")) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "the instance that answered does not find the session the login created: point \
             every instance at the same database (--database-url).",
        ),
        (StatusCode::UNAUTHORIZED, Some("refresh_token_reused")) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "the refresh token was spent before the probe used it: make sure nothing in front \
             of the gateway retries or replays POST requests.",
        ),
        (StatusCode::FORBIDDEN, Some("account_disabled")) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            format!(
                "the account was disabled during the probe: tollgate users enable {}.",
                session.username
            ),
        ),
        (StatusCode::SERVICE_UNAVAILABLE, _) => Outcome::fail(
            format!("{what}: {} (database down)", reply.describe()),
            database_fix(),
        ),
        _ => Outcome::unexpected(what, &reply),
    };
    (outcome, None)
}

/// Verifies the access token the way an upstream does: from the JWKS alone.
async fn jwks(http: &ProbeClient, access: &Secret) -> Outcome {
    let what = "GET /.well-known/jwks.json";
    let reply = match http
        .send(Method::GET, "/.well-known/jwks.json", &[], None)
        .await
    {
        Ok(reply) => reply,
        Err(failure) => return Outcome::unreachable(what, &failure, http.target()),
    };
    if reply.status != StatusCode::OK {
        return Outcome::unexpected(what, &reply);
    }
    let Ok(set) = serde_json::from_slice::<JwkSet>(&reply.body) else {
        return Outcome::fail(
            format!("{what}: 200, but not a JWK set"),
            "check that the base URL points at tollgate itself and that nothing in front of it \
             rewrites /.well-known/.",
        );
    };
    verify_with(&set, access.expose())
}

fn verify_with(set: &JwkSet, token: &str) -> Outcome {
    let header = match jsonwebtoken::decode_header(token) {
        Ok(header) => header,
        Err(error) => {
            return Outcome::fail(
                format!("the access token's header does not decode ({error})"),
                "check that nothing in front of the gateway rewrites its answers.",
            );
        }
    };
    let Some(kid) = header.kid else {
        return Outcome::fail(
            "the access token names no kid, so verifiers cannot pick a key",
            "check that nothing in front of the gateway rewrites its answers.",
        );
    };
    let Some(jwk) = set.find(&kid) else {
        return Outcome::fail(
            format!(
                "the JWKS ({} key(s)) does not publish kid {kid}, so upstreams reject the token",
                set.keys.len()
            ),
            "the instances do not share the database or keys: point every instance at the same \
             database (--database-url), where each records its keys, and keep each keys \
             directory on persistent storage.",
        );
    };
    let Some(alg) = jwk
        .common
        .key_algorithm
        .and_then(|alg| Algorithm::try_from(alg).ok())
    else {
        return Outcome::fail(
            format!("the JWK of kid {kid} names no signing alg, so verifiers cannot use it"),
            "check that nothing in front of the gateway rewrites /.well-known/jwks.json.",
        );
    };
    if alg != header.alg {
        return Outcome::fail(
            format!(
                "kid {kid} is published for {alg:?}, but the token says {:?}",
                header.alg
            ),
            "instances disagree on the key's algorithm: give every instance the same database \
             and keys.",
        );
    }
    let key = match DecodingKey::from_jwk(jwk) {
        Ok(key) => key,
        Err(error) => {
            return Outcome::fail(
                format!("the JWK of kid {kid} is not a usable key ({error})"),
                "check that nothing in front of the gateway rewrites /.well-known/jwks.json.",
            );
        }
    };
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY.as_secs();
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // The probe does not know the configured audience: it checks that `aud`
    // is present and shows it instead.
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(token, &key, &validation) {
        Ok(data) => {
            let iss = data.claims["iss"].as_str().unwrap_or("?");
            let aud = match &data.claims["aud"] {
                Value::String(one) => one.clone(),
                other => other.to_string(),
            };
            Outcome::ok(format!(
                "kid {kid} ({alg:?}) is published and verifies the access token; iss {iss}, aud {aud}"
            ))
        }
        Err(error) => {
            use jsonwebtoken::errors::ErrorKind;
            let fix = match error.kind() {
                ErrorKind::InvalidSignature => {
                    "the key published under this kid is not the one that signed: give every \
                     instance the same database and never copy key files between keys \
                     directories by hand."
                }
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                    "the clocks of this machine and the gateway disagree: synchronise them (NTP)."
                }
                ErrorKind::MissingRequiredClaim(_) => {
                    "upstreams that verify tokens need iss, aud, sub and exp: check that the \
                     gateway is tollgate and up to date."
                }
                _ => "look at the token with tollgate token inspect on the gateway's host.",
            };
            Outcome::fail(
                format!(
                    "kid {kid} ({alg:?}) is published, but the access token does not verify: {error}"
                ),
                fix,
            )
        }
    }
}

/// One request through the gateway to the upstream.
async fn proxied(http: &ProbeClient, access: &Secret, path: &str) -> Outcome {
    let bearer = format!("Bearer {}", access.expose());
    let what = format!("GET {path} with the bearer token");
    let reply = match http
        .send(Method::GET, path, &[("authorization", &bearer)], None)
        .await
    {
        Ok(reply) => reply,
        Err(failure) => return Outcome::unreachable(&what, &failure, http.target()),
    };
    let status = reply.status;
    let code = reply.field("error");
    match (status.as_u16(), code.as_deref()) {
        (401, _) => rejected(&what, &reply, "the Authorization header"),
        (502, Some("upstream_not_configured")) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "start the gateway with --upstream (TOLLGATE_UPSTREAM) set to the ticket API's base \
             URL, e.g. --upstream http://127.0.0.1:3000.",
        ),
        (502, _) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "the upstream refused or failed: check that it is running and reachable from the \
             gateway at the --upstream address.",
        ),
        (504, _) => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            "the upstream answered slower than --upstream-timeout: check the upstream's health, \
             or raise --upstream-timeout (TOLLGATE_UPSTREAM_TIMEOUT).",
        ),
        (200..=499, _) => {
            let note = match status {
                StatusCode::NOT_FOUND => {
                    " (the request went through; pass --path with a path \
                                          the upstream serves for a 200)"
                }
                _ => "",
            };
            Outcome::ok(format!("{what}: {}{note}", status.as_u16()))
        }
        _ => Outcome::fail(
            format!("{what}: {}", reply.describe()),
            match reply.request_id() {
                Some(id) => {
                    format!("look for request id {id} in the gateway's and the upstream's logs.")
                }
                None => {
                    "look for this request in the gateway's and the upstream's logs.".to_string()
                }
            },
        ),
    }
}

/// Ends the probe's session, so that probes do not pile up sessions.
async fn logout(http: &ProbeClient, access: &Secret) -> Outcome {
    let bearer = format!("Bearer {}", access.expose());
    let what = "POST /api/auth/logout";
    match http
        .send(
            Method::POST,
            "/api/auth/logout",
            &[("authorization", &bearer)],
            None,
        )
        .await
    {
        Ok(reply) if reply.status == StatusCode::NO_CONTENT => {
            Outcome::ok(format!("{what}: 204, the probe's session is revoked"))
        }
        Ok(reply) if reply.status == StatusCode::UNAUTHORIZED => {
            rejected(what, &reply, "the Authorization header")
        }
        Ok(reply) => Outcome::unexpected(what, &reply),
        Err(failure) => Outcome::unreachable(what, &failure, http.target()),
    }
}
