//! Secrets stay out of the logs: passwords, invite codes and tokens never
//! appear, even at the most verbose level.
//!
//! The real binary runs with `RUST_LOG=trace` and its log is read from
//! stderr: a subscriber installed inside the test process would share
//! tracing's global call-site cache with every test running beside it, and
//! miss events another thread registered first.

use std::process::Stdio;

use serde_json::json;

use crate::helpers::{command, http, spawn, ADMIN_PASSWORD};

#[test]
fn no_credential_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tessera.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut cmd = command(&dir.path().join("data"));
    cmd.env("RUST_LOG", "trace").stderr(Stdio::from(log_file));
    let server = spawn(cmd);
    let addr = server.addr;
    let token = |body: &serde_json::Value| body["token"].as_str().unwrap().to_owned();

    let (_, body) = http(
        addr,
        "POST",
        "/auth/setup",
        None,
        Some(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
    );
    let admin = token(&body);
    let (_, body) = http(
        addr,
        "POST",
        "/auth/users",
        Some(&admin),
        Some(&json!({"username": "bob"})),
    );
    let code = body["invite_code"].as_str().unwrap().to_owned();
    let (_, body) = http(
        addr,
        "POST",
        "/auth/login",
        None,
        Some(&json!({"username": "bob", "password": code})),
    );
    let pending = token(&body);
    let (_, body) = http(
        addr,
        "POST",
        "/auth/complete",
        None,
        Some(&json!({"username": "bob", "invite_code": code, "password": "bob-secret-pw"})),
    );
    let bob = token(&body);
    let (status, _) = http(
        addr,
        "POST",
        "/auth/login",
        None,
        Some(&json!({"username": "bob", "password": "wrong-secret-pw"})),
    );
    assert_eq!(status, 401);
    let (status, _) = http(
        addr,
        "POST",
        "/auth/users/bob/password",
        Some(&bob),
        Some(&json!({"current": "bob-secret-pw", "new": "bob-newer-pw"})),
    );
    assert_eq!(status, 200);
    let (status, _) = http(addr, "GET", "/auth/me", Some("garbage-token-value"), None);
    assert_eq!(status, 401);
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("login failed"), "the log is captured: {log}");
    for secret in [
        ADMIN_PASSWORD,
        "bob-secret-pw",
        "wrong-secret-pw",
        "bob-newer-pw",
        code.as_str(),
        admin.as_str(),
        pending.as_str(),
        bob.as_str(),
        "garbage-token-value",
    ] {
        assert!(!log.contains(secret), "{secret:?} leaked into the log");
    }
}
