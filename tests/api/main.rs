//! Integration tests of the HTTP API: a real gateway on port 0, real HTTP,
//! real Postgres and SQLite databases.

mod helpers;

mod auth;
mod faults;
mod operations;
mod process;
mod proxy;
mod upstream;
