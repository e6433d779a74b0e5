//! A grant belongs to its grantor: a sharer cannot replace or remove a grant
//! drawn by someone above them, while the grantor, anyone up the chain, the
//! owner and admins can, and the grantee can always leave.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;

struct Household {
    app: TestApp,
    admin: String,
    olga: String,
    bob: String,
    carol: String,
}

async fn household() -> Household {
    let app = TestApp::new();
    let admin = app.setup_admin().await;
    let olga = app.add_user(&admin, "olga", "olga-password").await;
    let bob = app.add_user(&admin, "bob", "bob-password").await;
    let carol = app.add_user(&admin, "carol", "carol-password").await;
    let r = app.post("/api/agents", &olga, json!({"name": "ada"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    Household {
        app,
        admin,
        olga,
        bob,
        carol,
    }
}

impl Household {
    async fn share(&self, token: &str, user: &str, level: &str) -> StatusCode {
        self.app
            .post(
                "/api/agents/ada/shares",
                token,
                json!({"user": user, "level": level}),
            )
            .await
            .status
    }

    async fn unshare(&self, token: &str, user: &str) -> StatusCode {
        self.app
            .delete(&format!("/api/agents/ada/shares/{user}"), token)
            .await
            .status
    }

    async fn access(&self, token: &str) -> Option<String> {
        let r = self.app.get("/api/agents/ada", token).await;
        r.body["access"].as_str().map(str::to_owned)
    }
}

#[tokio::test]
async fn a_sharee_cannot_overwrite_the_grant_they_draw_on() {
    let h = household().await;
    assert_eq!(h.share(&h.olga, "bob", "share").await, StatusCode::OK);
    assert_eq!(h.share(&h.bob, "carol", "share").await, StatusCode::OK);
    // Carol re-sharing with bob would replace olga's grant and leave a cycle
    // in which neither has access.
    assert_eq!(
        h.share(&h.carol, "bob", "view").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(h.unshare(&h.carol, "bob").await, StatusCode::FORBIDDEN);
    assert_eq!(h.access(&h.bob).await.as_deref(), Some("share"));
    assert_eq!(h.access(&h.carol).await.as_deref(), Some("share"));
}

#[tokio::test]
async fn a_sharer_cannot_remove_a_grant_a_peer_holds_from_above() {
    let h = household().await;
    assert_eq!(h.share(&h.olga, "bob", "share").await, StatusCode::OK);
    assert_eq!(h.share(&h.olga, "carol", "share").await, StatusCode::OK);
    assert_eq!(h.unshare(&h.carol, "bob").await, StatusCode::FORBIDDEN);
    assert_eq!(h.share(&h.carol, "bob", "use").await, StatusCode::FORBIDDEN);
    assert_eq!(h.access(&h.bob).await.as_deref(), Some("share"));
}

#[tokio::test]
async fn the_grantor_the_chain_above_the_owner_and_admins_keep_control() {
    let h = household().await;
    assert_eq!(h.share(&h.olga, "bob", "share").await, StatusCode::OK);
    assert_eq!(h.share(&h.bob, "carol", "edit").await, StatusCode::OK);
    // The grantor changes their own grant.
    assert_eq!(h.share(&h.bob, "carol", "use").await, StatusCode::OK);
    assert_eq!(h.access(&h.carol).await.as_deref(), Some("use"));
    // The owner, up the chain, replaces it; it is now drawn on the owner.
    assert_eq!(h.share(&h.olga, "carol", "share").await, StatusCode::OK);
    let shares = h.app.get("/api/agents/ada/shares", &h.olga).await;
    let carol = shares.body["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user"]["username"] == "carol")
        .unwrap()
        .clone();
    assert_eq!(carol["granted_by"]["username"], "olga");
    // ... and bob can no longer touch it.
    assert_eq!(h.unshare(&h.bob, "carol").await, StatusCode::FORBIDDEN);
    // An admin can, on the owner's behalf.
    assert_eq!(h.unshare(&h.admin, "carol").await, StatusCode::OK);
    assert_eq!(h.access(&h.carol).await, None);
    // And a grantee may always leave.
    assert_eq!(h.unshare(&h.bob, "bob").await, StatusCode::OK);
    assert_eq!(h.access(&h.bob).await, None);
}

#[tokio::test]
async fn anyone_up_the_chain_may_remove_a_grant_drawn_below_them() {
    let h = household().await;
    let dave = h.app.add_user(&h.admin, "dave", "dave-password").await;
    assert_eq!(h.share(&h.olga, "bob", "share").await, StatusCode::OK);
    assert_eq!(h.share(&h.bob, "carol", "share").await, StatusCode::OK);
    assert_eq!(h.share(&h.carol, "dave", "view").await, StatusCode::OK);
    // Bob is above carol, who drew dave's grant.
    assert_eq!(h.unshare(&h.bob, "dave").await, StatusCode::OK);
    assert_eq!(h.access(&dave).await, None);
    assert_eq!(h.share(&h.carol, "dave", "view").await, StatusCode::OK);
    assert_eq!(h.share(&h.bob, "dave", "use").await, StatusCode::OK);
    assert_eq!(h.access(&dave).await.as_deref(), Some("use"));
    // Dave, below, cannot touch the grants of those above him.
    assert_eq!(h.unshare(&dave, "carol").await, StatusCode::FORBIDDEN);
}
