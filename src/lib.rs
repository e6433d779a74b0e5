//! tessera: the authorization server for self-hosted, multi-user AI agent
//! hosts. Users log in and get Biscuit tokens; every request is verified
//! offline and decided by the Datalog policy in `datalog/`.
//!
//! Layers, outermost first: `http` (routes, extractors) → `authz` (tokens,
//! policy) and `domain` (accounts, sessions) → `store` (one key-value trait,
//! sled, PostgreSQL and in-memory engines).

pub mod authz;
pub mod config;
pub mod datadir;
pub mod domain;
pub mod error;
pub mod forward;
pub mod http;
pub mod maintenance;
pub mod migrate;
pub mod pgcluster;
pub mod state;
pub mod store;
pub mod storecopy;
pub mod web;

pub use config::Config;
pub use state::AppState;

/// The whole HTTP application, ready to serve or to drive with `oneshot`.
pub fn app(state: AppState) -> axum::Router {
    http::router(state)
}
