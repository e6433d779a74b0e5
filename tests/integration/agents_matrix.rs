//! Every agent route × every kind of caller, with the expected status for
//! each cell. Read a row left to right: who may do that, who is refused
//! (403: they can see the agent), who is told it does not exist (404), and
//! whose token is dead (401).
//!
//! To extend: add a row to `MATRIX` (and a `Route` arm), or a column to
//! `COLUMNS` (and a `Who` arm in `World::caller`).

use axum::http::{Method, StatusCode};
use base64::Engine;
use biscuit_auth::macros::block;
use serde_json::{json, Value};

use crate::helpers::{Auth, TestApp};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Owner,
    Admin,
    Stranger,
    /// A grant at this level, made by the owner.
    Direct(&'static str),
    /// A grant at this level, made by someone the owner granted `share`.
    Reshared(&'static str),
    /// A delegated token at this level, minted by the owner.
    Token(&'static str),
    /// The owner's `manage` token, narrowed by its holder to reading only.
    Narrowed,
    Revoked,
    Expired,
    /// A member of a group olive shared with at this level.
    Member(&'static str),
    /// Someone taken out of a group olive shared with at `share`.
    FormerMember,
    /// Anyone on the host, the agent being shared with everyone at `use`.
    Everyone,
    /// A grant at `share` from olive that has run out.
    ExpiredGrant,
}

const COLUMNS: [Who; 29] = [
    Who::Owner,
    Who::Admin,
    Who::Stranger,
    Who::Direct("view"),
    Who::Direct("use"),
    Who::Direct("edit"),
    Who::Direct("manage"),
    Who::Direct("share"),
    Who::Reshared("view"),
    Who::Reshared("use"),
    Who::Reshared("edit"),
    Who::Reshared("manage"),
    Who::Reshared("share"),
    Who::Token("view"),
    Who::Token("use"),
    Who::Token("edit"),
    Who::Token("manage"),
    Who::Token("share"),
    Who::Narrowed,
    Who::Revoked,
    Who::Expired,
    Who::Member("view"),
    Who::Member("use"),
    Who::Member("edit"),
    Who::Member("manage"),
    Who::Member("share"),
    Who::FormerMember,
    Who::Everyone,
    Who::ExpiredGrant,
];

#[derive(Clone, Copy, Debug)]
enum Route {
    Read,
    /// `GET /api/agents`: 200 means the agent is listed, 404 that it is not.
    List,
    Update,
    Archive,
    Restore,
    SharesRead,
    Share,
    Unshare,
    MintToken,
    Transfer,
    Delete,
}

/// Expected status per column, in `COLUMNS` order:
///   owner admin stranger | direct v u e m s | reshared v u e m s | token v u e m s | narrowed revoked expired
///   | group member v u e m s | former member, everyone (use), expired grant
#[rustfmt::skip]
const MATRIX: &[(Route, [u16; 29])] = &[
    (Route::Read,       [200, 200, 404,  200, 200, 200, 200, 200,  200, 200, 200, 200, 200,  200, 200, 200, 200, 200,  200, 401, 401,  200, 200, 200, 200, 200,  404, 200, 404]),
    (Route::List,       [200, 200, 404,  200, 200, 200, 200, 200,  200, 200, 200, 200, 200,  200, 200, 200, 200, 200,  200, 401, 401,  200, 200, 200, 200, 200,  404, 200, 404]),
    (Route::Update,     [200, 200, 404,  403, 403, 200, 200, 200,  403, 403, 200, 200, 200,  403, 403, 200, 200, 200,  403, 401, 401,  403, 403, 200, 200, 200,  404, 403, 404]),
    (Route::Archive,    [200, 200, 404,  403, 403, 403, 200, 200,  403, 403, 403, 200, 200,  403, 403, 403, 200, 200,  403, 401, 401,  403, 403, 403, 200, 200,  404, 403, 404]),
    (Route::Restore,    [200, 200, 404,  403, 403, 403, 200, 200,  403, 403, 403, 200, 200,  403, 403, 403, 200, 200,  403, 401, 401,  403, 403, 403, 200, 200,  404, 403, 404]),
    (Route::SharesRead, [200, 200, 404,  403, 403, 403, 403, 200,  403, 403, 403, 403, 200,  403, 403, 403, 403, 403,  403, 401, 401,  403, 403, 403, 403, 200,  404, 403, 404]),
    (Route::Share,      [200, 200, 404,  403, 403, 403, 403, 200,  403, 403, 403, 403, 200,  403, 403, 403, 403, 403,  403, 401, 401,  403, 403, 403, 403, 200,  404, 403, 404]),
    // tina's grant is olive's: sharers below her cannot remove it.
    (Route::Unshare,    [200, 200, 404,  403, 403, 403, 403, 403,  403, 403, 403, 403, 403,  403, 403, 403, 403, 403,  403, 401, 401,  403, 403, 403, 403, 403,  404, 403, 404]),
    (Route::MintToken,  [200, 200, 404,  403, 403, 403, 200, 200,  403, 403, 403, 200, 200,  403, 403, 403, 403, 403,  403, 401, 401,  403, 403, 403, 200, 200,  404, 403, 404]),
    (Route::Transfer,   [200, 200, 404,  403, 403, 403, 403, 403,  403, 403, 403, 403, 403,  403, 403, 403, 403, 403,  403, 401, 401,  403, 403, 403, 403, 403,  404, 403, 404]),
    (Route::Delete,     [200, 403, 404,  403, 403, 403, 403, 403,  403, 403, 403, 403, 403,  403, 403, 403, 403, 403,  403, 401, 401,  403, 403, 403, 403, 403,  404, 403, 404]),
];

/// One host: `olive` owns `helper`; `alice` is the admin; `tina` holds a
/// `view` grant from olive (the target of unshare); `zed` is a bystander
/// (the target of share and transfer); plus whoever the column needs.
struct World {
    app: TestApp,
    olive: String,
}

/// The store a matrix runs on: the same rows hold on every engine.
#[derive(Clone, Copy, Debug)]
pub enum StoreKind {
    Memory,
    /// A fresh database per host in the tests' PostgreSQL cluster.
    Postgres,
}

impl World {
    async fn new(engine: StoreKind) -> Self {
        let app = match engine {
            StoreKind::Memory => TestApp::new(),
            StoreKind::Postgres => TestApp::on_postgres(),
        };
        let alice = app.setup_admin().await;
        let olive = app.add_user(&alice, "olive", "olive-password").await;
        app.add_user(&alice, "zed", "zed-password").await;
        app.add_user(&alice, "tina", "tina-password").await;
        let r = app
            .post(
                "/api/agents",
                &olive,
                json!({"name": "helper", "display_name": "Helper"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        share(&app, &olive, "tina", "view").await;
        Self { app, olive }
    }

    async fn token(&self, level: &str, expires_in: i64) -> Value {
        let r = self
            .app
            .post(
                "/api/tokens",
                &self.olive,
                json!({"agent": "helper", "level": level, "expires_in": expires_in}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body
    }

    /// The token that acts as `who`.
    async fn caller(&self, who: Who) -> String {
        let app = &self.app;
        match who {
            Who::Owner => self.olive.clone(),
            Who::Admin => app
                .login("alice", crate::helpers::ADMIN_PASSWORD)
                .await
                .token(),
            Who::Stranger => self.user("sam").await,
            Who::Direct(level) => {
                let t = self.user("gina").await;
                share(app, &self.olive, "gina", level).await;
                t
            }
            Who::Reshared(level) => {
                let sharer = self.user("sharon").await;
                share(app, &self.olive, "sharon", "share").await;
                let t = self.user("rita").await;
                share(app, &sharer, "rita", level).await;
                t
            }
            Who::Token(level) => self.token(level, 3600).await["token"]
                .as_str()
                .unwrap()
                .to_owned(),
            Who::Narrowed => {
                let token = self.token("manage", 3600).await["token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                // Offline, with nothing but the token: any holder can do this.
                let bytes = base64::engine::general_purpose::URL_SAFE
                    .decode(&token)
                    .unwrap();
                let unverified = biscuit_auth::UnverifiedBiscuit::from(&bytes).unwrap();
                let narrowed = unverified
                    .append(block!(r#"check if operation("agent:read");"#))
                    .unwrap();
                narrowed.to_base64().unwrap()
            }
            Who::Revoked => {
                let minted = self.token("share", 3600).await;
                let id = minted["id"].as_str().unwrap();
                let r = app.delete(&format!("/api/tokens/{id}"), &self.olive).await;
                assert_eq!(r.status, StatusCode::OK);
                minted["token"].as_str().unwrap().to_owned()
            }
            Who::Member(level) => {
                let t = self.user("mia").await;
                self.team(&["mia"]).await;
                share_with(app, &self.olive, json!({"group": "team"}), level).await;
                t
            }
            Who::FormerMember => {
                let t = self.user("fred").await;
                self.team(&["fred"]).await;
                share_with(app, &self.olive, json!({"group": "team"}), "share").await;
                assert_eq!(
                    app.get("/api/agents/helper", &t).await.status,
                    StatusCode::OK
                );
                let r = app
                    .delete("/api/groups/team/members/fred", &self.olive)
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                t
            }
            Who::Everyone => {
                share_with(app, &self.olive, json!({"everyone": true}), "use").await;
                self.user("eve").await
            }
            Who::ExpiredGrant => {
                let t = self.user("xena").await;
                let until = app.state.now() + 60;
                let r = app
                    .post(
                        "/api/agents/helper/shares",
                        &self.olive,
                        json!({"user": "xena", "level": "share", "expires_at": until}),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.body);
                assert_eq!(
                    app.get("/api/agents/helper", &t).await.status,
                    StatusCode::OK
                );
                app.state.config.clock.advance(61);
                t
            }
            Who::Expired => {
                // A live record, but a token whose own expiry has passed.
                let minted = self.token("share", 3600).await;
                let id = minted["id"].as_str().unwrap();
                let olive = app.state.accounts.find("olive").unwrap().unwrap();
                let past = tessera::domain::now() - 10;
                app.state
                    .authz
                    .mint_delegated(&olive.id, id, "helper", 5, past)
                    .unwrap()
            }
        }
    }

    /// olive's group `team`, with `members`.
    async fn team(&self, members: &[&str]) {
        let r = self
            .app
            .post("/api/groups", &self.olive, json!({"name": "team"}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        for member in members {
            let r = self
                .app
                .call(
                    Method::PUT,
                    &format!("/api/groups/team/members/{member}"),
                    Auth::Bearer(&self.olive),
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
    }

    async fn user(&self, name: &str) -> String {
        let admin = self
            .app
            .login("alice", crate::helpers::ADMIN_PASSWORD)
            .await
            .token();
        self.app
            .add_user(&admin, name, &format!("{name}-password"))
            .await
    }

    async fn call(&self, route: Route, token: &str) -> StatusCode {
        let app = &self.app;
        let a = "/api/agents/helper";
        let r = match route {
            Route::Read => app.get(a, token).await,
            Route::List => {
                let r = app.get("/api/agents", token).await;
                if r.status != StatusCode::OK {
                    return r.status;
                }
                let listed = r
                    .body
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["name"] == "helper");
                return if listed {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
            }
            Route::Update => {
                app.call(
                    Method::PUT,
                    a,
                    Auth::Bearer(token),
                    Some(json!({"model": "m2"})),
                )
                .await
            }
            Route::Archive => app.post(&format!("{a}/archive"), token, json!({})).await,
            Route::Restore => app.post(&format!("{a}/restore"), token, json!({})).await,
            Route::SharesRead => app.get(&format!("{a}/shares"), token).await,
            Route::Share => {
                app.post(
                    &format!("{a}/shares"),
                    token,
                    json!({"user": "zed", "level": "view"}),
                )
                .await
            }
            Route::Unshare => app.delete(&format!("{a}/shares/tina"), token).await,
            Route::MintToken => {
                app.post(
                    "/api/tokens",
                    token,
                    json!({"agent": "helper", "level": "view", "expires_in": 60}),
                )
                .await
            }
            Route::Transfer => {
                app.post(&format!("{a}/transfer"), token, json!({"to": "zed"}))
                    .await
            }
            Route::Delete => app.delete(a, token).await,
        };
        if r.status.is_client_error() {
            assert!(r.body["error"].is_string(), "{route:?}: errors are JSON");
        }
        r.status
    }
}

async fn share(app: &TestApp, by: &str, user: &str, level: &str) {
    let r = app
        .post(
            "/api/agents/helper/shares",
            by,
            json!({"user": user, "level": level}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{by} shares with {user}: {}",
        r.body
    );
}

async fn share_with(app: &TestApp, by: &str, mut to: Value, level: &str) {
    to["level"] = json!(level);
    let r = app.post("/api/agents/helper/shares", by, to.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{by} shares with {to}: {}",
        r.body
    );
}

fn is_destructive(route: Route) -> bool {
    matches!(route, Route::Transfer | Route::Delete)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_route_for_every_caller() {
    check_matrix(StoreKind::Memory).await;
}

/// Every cell of `MATRIX` on hosts backed by `engine` (the PostgreSQL run
/// is `replicas::the_agent_route_matrix_holds_on_postgres`).
pub async fn check_matrix(engine: StoreKind) {
    let mut failures = Vec::new();
    let mut tasks = Vec::new();
    for (col, who) in COLUMNS.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            // The non-destructive routes share one host, in table order; each
            // destructive one gets a fresh host.
            let shared = World::new(engine).await;
            let token = shared.caller(who).await;
            for (route, row) in MATRIX {
                let (world, token) = if is_destructive(*route) {
                    let w = World::new(engine).await;
                    let t = w.caller(who).await;
                    (Some(w), t)
                } else {
                    (None, token.clone())
                };
                let world = world.as_ref().unwrap_or(&shared);
                let got = world.call(*route, &token).await.as_u16();
                if got != row[col] {
                    failures.push(format!(
                        "{route:?} as {who:?}: expected {}, got {got}",
                        row[col]
                    ));
                }
            }
            failures
        }));
    }
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
