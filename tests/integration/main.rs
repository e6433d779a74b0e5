//! The integration suite: one binary, shared helpers, one module per concern.

mod helpers;

mod accounts;
mod binary;
mod concurrency;
mod legacy_replay;
mod logs;
mod sessions;
mod tokens;
