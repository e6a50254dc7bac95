//! tollgate: a stateless, token-issuing auth gateway.
//!
//! # Layout
//! [`runtime`] says where work runs: client connections and proxied
//! requests on one single-threaded worker per core (the data plane), the
//! database, the gateway's own routes and background tasks on the runtime
//! it was started on (the control plane).
//! A connection arrives at [`server`] (listeners, the workers' accept loops,
//! the tower stack: request id, panic catching; signals and graceful
//! shutdown), which
//! hands every request to [`pipeline`], the gateway's central decision in one
//! place: the client info ([`client_addr`]), one span, path normalisation
//! ([`paths`]), the route, the browser rules ([`browser`]: CORS, CSRF), then
//! either one of the gateway's own routes ([`routes`]: `/api/auth/…`, the
//! forward-auth check `/api/auth/verify` among them, the admin API
//! `/api/admin/…`, `/.well-known/…`, `/health…`, `/metrics`) or authentication and forwarding through
//! [`proxy`] to the upstream route with the longest matching prefix. What
//! both share about a request (its context, authenticating it, answering a
//! failure) is in [`request`], so that routes never import the pipeline.
//!
//! [`auth`] is a leaf: credentials, passwords, keys, tokens, cookies, sealing.
//! [`store`] is the only module that speaks SQL (Postgres or SQLite).
//! [`revocation`] keeps the set of revoked sessions every instance refuses
//! (and, apart, their ordered log for the revocation feed); [`throttle`]
//! the login budgets. [`password_reset`] turns a reset request
//! into a token and a mail off the request path; [`mail`] delivers mail (SMTP
//! or a webhook) from a bounded, retrying queue; [`audit`] writes the audit
//! trail, whose failures never fail what it records. Failures become
//! [`error::ApiError`], the one HTTP-facing error. [`cli`] turns flags and
//! environment into one typed [`config::Config`]; [`commands`] runs each
//! command of the command line (the probe among them). [`domain`] and
//! [`time`] are the types that say what a value is and in which unit.
//! [`logging`] writes the log lines, each carrying its request's span
//! fields; [`otel`] exports the request spans (with their store and upstream
//! child spans) when `--otlp-endpoint` is set.

pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod browser;
pub mod cli;
pub mod client_addr;
pub mod commands;
pub mod config;
pub mod domain;
pub mod error;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod otel;
pub mod password_reset;
pub mod paths;
pub mod pipeline;
pub mod proxy;
pub mod request;
pub mod revocation;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod throttle;
pub mod time;
pub mod tls;
