//! tollgate: a stateless, token-issuing auth gateway.
//!
//! # Layout
//! A request arrives at [`server`] (accept loop, tower stack: request id,
//! panic catching, one log line) and goes to [`routes`], a small explicit
//! table, after [`paths`] normalised the path and [`browser`] applied CORS and
//! CSRF. The gateway's own routes (`/api/auth/…`, `/.well-known/…`,
//! `/health…`) answer from [`auth`] (passwords, keys, tokens, cookies) and
//! [`store`] (the only module that speaks SQL, Postgres or SQLite); every
//! other path goes through [`proxy`] to the upstream once the access token
//! checks out (or the path is public).
//! [`revocation`] keeps the set of revoked sessions that every instance
//! refuses. Failures become [`error::ApiError`], the one HTTP-facing error.
//! [`config`] and [`cli`] turn flags and environment into one typed
//! [`config::Config`]; [`commands`] runs each command of the command line, and
//! [`probe`] checks a running deployment from the outside, as a client would.

pub mod app;
pub mod auth;
pub mod body;
pub mod browser;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod domain;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod paths;
pub mod probe;
pub mod proxy;
pub mod revocation;
pub mod routes;
pub mod server;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod throttle;
