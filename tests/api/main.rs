//! Integration tests of the HTTP API: a real gateway on port 0, real HTTP,
//! real Postgres and SQLite databases.

#[path = "../support/database.rs"]
mod database;
mod helpers;
mod ingress;
mod mailbox;

mod accounts;
mod admin;
mod audit;
mod auth;
mod browser;
mod connections;
mod example;
mod faults;
mod forward_auth;
mod header_properties;
mod keystore;
mod observability;
mod operations;
mod platform;
mod pool;
mod probe;
mod process;
mod proxy;
mod refresh;
mod reset;
mod restart;
mod revocation_feed;
mod rolling;
mod routes;
mod routing;
mod sessions;
mod storage;
mod test_ca;
mod throttle;
mod tokens;
mod upstream;
mod websocket;
mod wellknown;
