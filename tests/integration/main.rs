//! The integration suite: one binary, shared helpers, one module per concern.

mod helpers;

mod hostile;

mod accounts;
mod agents_matrix;
mod agents_model;
mod binary;
mod browser;
mod check;
mod concurrency;
mod crash;
mod damage;
mod data_dir;
mod delegation;
mod factors;
mod forward_auth;
mod grantors;
mod groups;
mod legacy_import;
mod legacy_replay;
mod login_limits;
mod logs;
mod lookups;
mod migrations;
mod openapi;
mod passkeys;
mod private_data;
mod private_property;
mod proxies;
mod remembered;
mod replicas;
mod runtime_tokens;
mod scoped_listings;
mod secrets_at_rest;
mod sessions;
mod slow_clients;
mod store_ops;
mod tokens;
mod web_admin;
mod web_agents;
mod web_data;
mod web_pages;
