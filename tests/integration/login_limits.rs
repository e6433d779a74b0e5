//! Login limits count failures only, per address and per account; the
//! address comes from `X-Forwarded-For` only behind a configured trusted
//! proxy.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::helpers::{Response, TestApp, ADMIN_PASSWORD};

fn app() -> TestApp {
    TestApp::with_config(|c| {
        c.rate_limit.per_address = 30;
        c.rate_limit.per_account = 10;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
}

async fn login_from(
    app: &TestApp,
    peer: &str,
    forwarded: Option<&str>,
    username: &str,
    password: &str,
) -> Response {
    let mut req = Request::post("/auth/login").header("content-type", "application/json");
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let mut req = req
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap();
    let addr: SocketAddr = format!("{peer}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    app.send(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_correct_logins_from_one_address_all_succeed() {
    let app = app();
    app.setup_admin().await;
    for i in 0..100 {
        let r = login_from(&app, "10.1.1.1", None, "alice", ADMIN_PASSWORD).await;
        assert_eq!(r.status, StatusCode::OK, "login {i}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_the_limit_and_spoofed_forwarding_changes_nothing() {
    let app = app();
    app.setup_admin().await;
    // An untrusted peer: whatever X-Forwarded-For says, its own address counts.
    for i in 0..30 {
        let forged = format!("192.0.2.{i}");
        let r = login_from(
            &app,
            "10.1.1.2",
            Some(&forged),
            &format!("nobody{i}"),
            "wrong-password",
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    let r = login_from(
        &app,
        "10.1.1.2",
        Some("198.51.100.1"),
        "alice",
        ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    // Another address is untouched.
    let r = login_from(&app, "10.1.1.3", None, "alice", ADMIN_PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // Behind the trusted proxy each forwarded client has its own count.
    for i in 0..30 {
        let r = login_from(
            &app,
            "127.0.0.1",
            Some("203.0.113.5"),
            &format!("ghost{i}"),
            "wrong-password",
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    }
    let r = login_from(
        &app,
        "127.0.0.1",
        Some("203.0.113.5"),
        "alice",
        ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let r = login_from(
        &app,
        "127.0.0.1",
        Some("203.0.113.6"),
        "alice",
        ADMIN_PASSWORD,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
