//! Integration tests of the HTTP API: a real gateway on port 0, real HTTP,
//! real Postgres and SQLite databases.

#[path = "../support/database.rs"]
mod database;
mod helpers;

mod accounts;
mod auth;
mod faults;
mod operations;
mod pool;
mod probe;
mod process;
mod proxy;
mod refresh;
mod restart;
mod rolling;
mod routes;
mod sessions;
mod tokens;
mod upstream;
mod wellknown;
