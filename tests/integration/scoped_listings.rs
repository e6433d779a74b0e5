//! Scoped tokens stay in their lane on listings: a channel-bot or agent
//! runtime token is refused (403) on every listing, like every other route
//! it may not use; a delegated token lists only its own agent, at its level.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

const LISTINGS: &[&str] = &[
    "/api/agents",
    "/api/tokens",
    "/api/audit",
    "/api/secrets",
    "/api/channels",
    "/api/chat/channels",
    "/api/chat/unread",
    "/api/user-memory/stats",
    "/api/user-memory/browse",
    "/api/user-memory/collections",
    "/api/user-memory/grants",
    "/api/user-memory/search?q=x",
    "/auth/users",
];

#[tokio::test]
async fn bot_and_runtime_tokens_are_refused_on_every_listing() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    for name in ["helper", "other"] {
        let r = app.post("/api/agents", &alice, json!({"name": name})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let bot = app
        .post(
            "/api/channels",
            &alice,
            json!({"agent_name": "helper", "type": "webhook", "config": {}}),
        )
        .await;
    assert_eq!(bot.status, StatusCode::OK, "{}", bot.body);
    let bot = bot.token();
    let runtime = app
        .post("/api/agents/helper/runtime-token", &alice, json!({}))
        .await;
    assert_eq!(runtime.status, StatusCode::OK, "{}", runtime.body);
    let runtime = runtime.token();
    for path in LISTINGS {
        for (kind, token) in [("channel bot", &bot), ("agent runtime", &runtime)] {
            let r = app.get(path, token).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{kind} token on {path}: {}",
                r.body
            );
        }
        // The owner's own session still lists.
        let r = app.get(path, &alice).await;
        assert_eq!(r.status, StatusCode::OK, "alice on {path}: {}", r.body);
    }
}

#[tokio::test]
async fn a_delegated_token_lists_only_its_agent_at_its_level() {
    let app = TestApp::new();
    let alice = app.setup_admin().await;
    for name in ["helper", "other"] {
        let r = app.post("/api/agents", &alice, json!({"name": name})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let minted = app
        .post(
            "/api/tokens",
            &alice,
            json!({"agent": "helper", "level": "view", "expires_in": 3600}),
        )
        .await;
    assert_eq!(minted.status, StatusCode::OK, "{}", minted.body);
    let token = minted.token();
    let r = app.get("/api/agents", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let listed = r.body.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{}", r.body);
    assert_eq!(listed[0]["name"], "helper");
    assert_eq!(listed[0]["access"], "view");
}
