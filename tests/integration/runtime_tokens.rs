//! The runtime token is the owner's: only the owner mints it, those who
//! manage the agent may end it, and it dies when the agent changes hands, is
//! archived or deleted, or its owner is deleted. A new owner's runtime reads
//! nothing people entrusted to the agent before.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Auth, TestApp};

const SECRET: &str = "sk-canary-owner-secret";
const MEMORY: &str = "canarymemoryword";

struct World {
    app: TestApp,
    admin: String,
    alice: String,
    bob: String,
}

/// alice owns helper, with a secret bound to it, her memory granted to it
/// and a conversation with it; bob manages it.
async fn world() -> World {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let alice = app.add_user(&admin, "al", "al-password").await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let r = app
        .post("/api/agents", &alice, json!({"name": "helper"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            "/api/agents/helper/shares",
            &alice,
            json!({"user": "bob", "level": "share"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            "/api/secrets",
            &alice,
            json!({"name": "KEY", "value": SECRET, "agents": ["helper"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .post(
            "/api/user-memory/save",
            &alice,
            json!({"content": format!("note {MEMORY}")}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = app
        .call(
            Method::PUT,
            "/api/user-memory/grants/helper",
            Auth::Bearer(&alice),
            Some(json!({"allowed": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let dm = app
        .post("/api/chat/channels", &alice, json!({"agent": "helper"}))
        .await;
    assert_eq!(dm.status, StatusCode::OK, "{}", dm.body);
    World {
        app,
        admin,
        alice,
        bob,
    }
}

impl World {
    async fn mint(&self, token: &str) -> (StatusCode, Option<String>) {
        let r = self
            .app
            .post("/api/agents/helper/runtime-token", token, json!({}))
            .await;
        (r.status, r.body["token"].as_str().map(str::to_owned))
    }

    /// Everything a runtime could read of alice's, as one text.
    async fn reads(&self, runtime: &str) -> (StatusCode, String) {
        let secrets = self.app.get("/api/secrets/agent/helper", runtime).await;
        let memory = self
            .app
            .get(
                &format!("/api/user-memory/agent-search?user=al&q={MEMORY}"),
                runtime,
            )
            .await;
        let chats = self.app.get("/api/chat/channels", runtime).await;
        (
            secrets.status,
            format!("{} {} {}", secrets.body, memory.body, chats.body),
        )
    }
}

#[tokio::test]
async fn only_the_owner_mints_and_managers_may_only_revoke() {
    let w = world().await;
    for who in [&w.admin, &w.bob] {
        let (status, token) = w.mint(who).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(token.is_none());
    }
    let (status, token) = w.mint(&w.alice).await;
    assert_eq!(status, StatusCode::OK);
    let runtime = token.unwrap();
    let (status, seen) = w.reads(&runtime).await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen.contains(SECRET), "{seen}");
    // Bob (manage) and the admin end it; neither obtains one. Audited.
    let r = w
        .app
        .delete("/api/agents/helper/runtime-token", &w.bob)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        w.app
            .get("/api/secrets/agent/helper", &runtime)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let (_, runtime) = w.mint(&w.alice).await;
    let r = w
        .app
        .delete("/api/agents/helper/runtime-token", &w.admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        w.app
            .get("/api/secrets/agent/helper", &runtime.unwrap())
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let audit = w.app.get("/api/audit", &w.alice).await;
    let revokes = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent.runtime_revoke")
        .count();
    assert_eq!(revokes, 2, "{}", audit.body);
}

#[tokio::test]
async fn the_token_dies_with_transfer_archive_deletion_and_its_owner() {
    // Transfer: the old owner's token dies, and the new owner's reads none
    // of what alice gave the agent.
    let w = world().await;
    let (_, old) = w.mint(&w.alice).await;
    let r = w
        .app
        .post(
            "/api/agents/helper/transfer",
            &w.admin,
            json!({"to": "bob"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(w.reads(&old.unwrap()).await.0, StatusCode::UNAUTHORIZED);
    let (status, new) = w.mint(&w.bob).await;
    assert_eq!(status, StatusCode::OK);
    let (_, seen) = w.reads(&new.unwrap()).await;
    assert!(!seen.contains(SECRET) && !seen.contains(MEMORY), "{seen}");

    // Archive: dead, stays dead after restore, and none is minted meanwhile.
    let w = world().await;
    let (_, token) = w.mint(&w.alice).await;
    let token = token.unwrap();
    let r = w
        .app
        .post("/api/agents/helper/archive", &w.alice, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(w.reads(&token).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(w.mint(&w.alice).await.0, StatusCode::FORBIDDEN);
    let r = w
        .app
        .post("/api/agents/helper/restore", &w.alice, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(w.reads(&token).await.0, StatusCode::UNAUTHORIZED);

    // The owner deleted, agents handed to bob.
    let w = world().await;
    let (_, token) = w.mint(&w.alice).await;
    let r = w
        .app
        .delete("/auth/users/al?agents=transfer:bob", &w.admin)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(w.reads(&token.unwrap()).await.0, StatusCode::UNAUTHORIZED);

    // The agent deleted.
    let w = world().await;
    let (_, token) = w.mint(&w.alice).await;
    let r = w.app.delete("/api/agents/helper", &w.alice).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(w.reads(&token.unwrap()).await.0, StatusCode::UNAUTHORIZED);
}

/// Archiving freezes: read, restore, transfer, delete and taking access
/// away still work; updating, sharing, minting, channels, bindings and chat
/// wait until it is restored.
#[tokio::test]
async fn an_archived_agent_is_frozen_until_restored() {
    let w = world().await;
    let r = w
        .app
        .post("/api/agents/helper/archive", &w.alice, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let refused = [
        w.app
            .call(
                Method::PUT,
                "/api/agents/helper",
                Auth::Bearer(&w.alice),
                Some(json!({"model": "other"})),
            )
            .await,
        w.app
            .post(
                "/api/agents/helper/shares",
                &w.alice,
                json!({"user": "bob", "level": "view"}),
            )
            .await,
        w.app
            .post(
                "/api/tokens",
                &w.alice,
                json!({"agent": "helper", "level": "view", "expires_in": 60}),
            )
            .await,
        w.app
            .post(
                "/api/channels",
                &w.alice,
                json!({"agent_name": "helper", "type": "webhook", "config": {}}),
            )
            .await,
        w.app
            .post("/api/chat/channels", &w.alice, json!({"agent": "helper"}))
            .await,
        w.app
            .post("/api/agents/helper/runtime-token", &w.alice, json!({}))
            .await,
    ];
    for r in &refused {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    assert_eq!(
        w.app.get("/api/agents/helper", &w.bob).await.status,
        StatusCode::OK
    );
    let r = w
        .app
        .delete("/api/agents/helper/shares/bob", &w.alice)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = w
        .app
        .post("/api/agents/helper/restore", &w.alice, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = w
        .app
        .call(
            Method::PUT,
            "/api/agents/helper",
            Auth::Bearer(&w.alice),
            Some(json!({"model": "other"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}
